"""The scheduled job: a rolling window of flows in, policies, reports, state and a commit out.

:func:`run_job` is what ``recommend job --config job.yaml`` (a Kubernetes CronJob) runs:

1. read the previous run's state and policies from the output location;
2. list the window's date partitions under the input URI (a folder or ``s3://``), copy the
   files of object storage into the scratch folder, and read them;
3. aggregate the window into edges, merge them into the state (:mod:`recommender.job.state`),
   synthesise the policies from the merged edges, update each namespace's lifecycle, and
   compare with the previous run (:mod:`recommender.evaluation.diff`);
4. write the policy tree, the reports, ``changes.json``/``changes.md`` and the state, all at
   once: a local folder is swapped in with renames (:func:`~recommender.policy.writer.
   write_policy_tree`), object storage gets a new ``runs/<id>/`` prefix and then the one object
   ``current.json`` that points to it;
5. commit the policy tree to git and push, when something changed (:mod:`recommender.job.gitops`).

A run that dies at any point leaves the previous outputs as they were. See
``docs/deployment.md``.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import pyarrow as pa
import pyarrow.fs as pafs

from ..aggregate.edges import aggregate_edges
from ..config import RecommendConfig
from ..errors import ConfigError, NoFlowsError
from ..evaluation.diff import compare_rules, diff_policies, rule_dict
from ..evaluation.staged import staged_evidence
from ..pipeline import recommend_edges, resolve_guardrails
from ..policy.model import PolicySet
from ..policy.writer import MARKER_FILE, STAGED_FOLDER, write_policy_trees
from ..report.model import finish_report
from ..synthesis.decided import DecisionRun
from ..synthesis.decisions import dump_decisions, load_decisions
from .config import JobConfig, load_job_config
from .rollout import render_trees
from .state import (
    State,
    merge_edges,
    namespace_digests,
    stale_rows,
    update_lifecycle,
    update_rollout,
)
from .storage import (
    Location,
    delete_dir,
    fetch,
    list_window,
    open_location,
    read_bytes,
    upload_tree,
    window_partitions,
    write_bytes,
)

__all__ = ["CURRENT_FILE", "JobResult", "run_job"]

logger = logging.getLogger("recommender.job")  # the name the job's log lines have always carried

#: On object storage, the object naming the current run's prefix.
CURRENT_FILE: Final = "current.json"
#: Most rules listed in changes.json and in a commit message.
_MAX_LISTED: Final = 200
_MESSAGE_RULES: Final = 50

#: The decisions file (``config.decisions``) as written next to the policies, in the outputs
#: and in the GitOps folder, so a reviewer edits the copy that shaped them.
DECISIONS_FILE: Final = "decisions.yaml"


@dataclass(frozen=True)
class JobResult:
    """What a run did.

    Attributes
    ----------
    run_id
        The run's name (``YYYYMMDDTHHMMSSZ-xxxxxx``).
    output
        Where the outputs are: the folder, or the ``runs/<id>`` URI on object storage.
    changes
        The content of ``changes.json`` (what changed since the previous run).
    commit
        The git commit made, or None (no gitops, or nothing changed).
    files
        Flow files read.
    """

    run_id: str
    output: str
    changes: dict[str, Any]
    commit: str | None
    files: int
    summary: dict[str, Any] = field(default_factory=dict)


def _event(message: str, event: str, **fields: Any) -> None:
    logger.info(message, extra={"event": event, **fields})


@contextmanager
def _scratch(job: JobConfig) -> Iterator[Path]:
    """The scratch folder: ``work_dir`` (emptied) or a temporary folder, removed afterwards."""
    if job.work_dir is None:
        with tempfile.TemporaryDirectory(prefix="recommender-job-") as tmp:
            yield Path(tmp)
        return
    root = Path(job.work_dir)
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_job(
    config_path: str | os.PathLike[str] | None = None,
    *,
    config: RecommendConfig | None = None,
    job: JobConfig | None = None,
    as_of: datetime | None = None,
    decisions: str | os.PathLike[str] | None = None,
) -> JobResult:
    """Run the scheduled job once (see the module docstring).

    Parameters
    ----------
    config_path : path, optional
        A job file (recommendation options and a ``job:`` section).
    config, job : RecommendConfig, JobConfig, optional
        The same, already parsed (instead of ``config_path``).
    as_of : datetime, optional
        The run's time: the window ends on its day and ages are measured from it (default:
        now). An earlier time re-runs a past night.
    decisions : path, optional
        A decisions file (``docs/decisions.md``) instead of the configuration's
        ``decisions``; it is applied on the day of ``as_of`` and written next to the policies.

    Returns
    -------
    JobResult

    Raises
    ------
    NoFlowsError
        If the window holds no flow file; nothing is written.
    StorageError
        If the input or output location cannot be read or written.
    GitOpsError
        If the commit or push fails (the outputs are written by then).
    RecommenderError
        On an invalid configuration, state or input.
    """
    started = time.perf_counter()
    if config_path is not None:
        config, job = load_job_config(config_path)
    if config is None or job is None:
        raise TypeError("run_job needs config_path, or both config and job.")
    if decisions is not None:
        config = config.replace(decisions=os.fspath(decisions))
    if job.gitops is not None and job.gitops.promote == "stable" and len(config.dialects) > 1:
        raise ConfigError(
            "gitops.promote: stable keeps the repository's policies of namespaces that are not "
            "stable, which works with one dialect only; with several dialects use "
            "job.rollout.staged: true instead (docs/deployment.md)."
        )
    guardrails = resolve_guardrails(config)  # a file that cannot be read fails before any work
    as_of = (as_of or datetime.now(UTC)).astimezone(UTC)
    run_id = f"{as_of:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"
    _event("run started", "job.start", run_id=run_id, as_of=as_of.isoformat())
    output = open_location(job.output_uri, job.storage)
    source = open_location(job.input_uri, job.storage)
    with _scratch(job) as work:
        previous_dir = _previous_outputs(output, work)
        state = State.from_files(_file_reader(previous_dir))
        previous_set = _read_previous_policies(previous_dir)
        _event(
            "previous state read",
            "job.state",
            runs=state.runs,
            edges=0 if state.edges is None else state.edges.num_rows,
            namespaces=len(state.namespaces),
        )
        table, inputs = _read_window(source, job, as_of, work, config.last)
        window = aggregate_edges(table, config)
        decided = None
        if config.decisions:  # judged on the run's own day, so a re-run gives the same result
            decided = DecisionRun.start(load_decisions(config.decisions), as_of.date())
        from ..analysis.anomaly import screen_flows

        # Scans, one replica's peers and raw-IP egress get no rule from the job either, and are
        # never remembered in the state (docs/concepts.md, "Learning from a dirty window").
        screening = screen_flows(
            window, table, config, trusted=decided.trusted() if decided is not None else None
        )
        window = screening.tables
        merge = merge_edges(state, window, as_of, job.lifecycle)
        ledger = json.loads((table.schema.metadata or {}).get(b"recommender.ledger", b"null"))
        # The step `recommend run` takes after its read: decisions, guardrails, synthesis,
        # host policies, self-check and report (pipeline.recommend_edges).
        rec = recommend_edges(
            merge.tables(window),
            config,
            ledger=ledger,
            screening=screening,
            guardrails=guardrails,
            decided=decided,
            finish=False,
        )
        policy_set, report, tables = rec.policy_set, rec.report, rec.tables
        staged_seen = staged_evidence(table, rec.evidence.edges)
        del table
        lifecycle, moves = update_lifecycle(
            state.namespaces, namespace_digests(policy_set), as_of, job.lifecycle
        )
        rollout_moves: list[dict[str, Any]] = []
        if job.rollout.staged:
            would: dict[str, int] = {}
            for w in staged_seen.would_deny:
                for ns in w.namespaces:
                    would[ns] = would.get(ns, 0) + w.connections
            lifecycle, rollout_moves = update_rollout(lifecycle, would, as_of, job.rollout)
        _event(
            "policies synthesised",
            "job.synthesised",
            policies=len(policy_set.policies),
            rules=report["summary"]["rules"],
            edges_window=window.edges.num_rows,
            edges_active=merge.active.num_rows,
            edges_new=merge.new_edges,
            edges_stale=merge.stale.num_rows,
        )
        changes = _changes(
            run_id, as_of, job, inputs, state, merge, previous_set, policy_set, tables,
            lifecycle, moves, window.edges.num_rows,
        )
        if job.rollout.staged or staged_seen.flows:
            changes["rollout"] = {
                "staged": job.rollout.staged,
                "promote_after_days": job.rollout.promote_after.total_seconds() / 86400,
                "enforcing": sorted(ns for ns in lifecycle if lifecycle[ns].enforcing),
                "staged_namespaces": sorted(
                    ns for ns in lifecycle if job.rollout.staged and not lifecycle[ns].enforcing
                ),
                "moves": rollout_moves,
                **staged_seen.to_dict(),
            }
            report["staged_verdicts"] = changes["rollout"]
        finish_report(report)  # the verdict weighs the staged verdicts too
        if job.gitops is not None:
            changes["gitops"] = {
                "held_back": [
                    ns
                    for ns in sorted(lifecycle)
                    if job.gitops.promote == "stable" and lifecycle[ns].status != "stable"
                ],
                "promote": job.gitops.promote,
            }
        new_state = State(
            edges=merge.remembered,
            labels=merge.labels,
            namespaces=lifecycle,
            run_at=as_of,
            runs=state.runs + 1,
        )
        trees, staged_trees = render_trees(
            rec,
            [ns for ns in sorted(lifecycle) if not lifecycle[ns].enforcing]
            if job.rollout.staged
            else None,
        )
        extra: dict[str, bytes | str] = {
            **rec.report_files(),  # as `recommend run` writes them
            "changes.json": json.dumps(changes, indent=2, sort_keys=True) + "\n",
            "changes.md": _changes_markdown(changes),
            **new_state.to_files(),
        }
        if decided is not None:
            extra[DECISIONS_FILE] = dump_decisions(decided.decisions)
        where = _publish(output, trees, staged_trees, extra, run_id, as_of, job, work)
        _event("outputs written", "job.written", output=where)
        commit = None
        if job.gitops is not None:
            from .gitops import publish_tree

            held = set(changes["gitops"]["held_back"])
            tree = work / "gitops-tree"
            write_policy_trees(
                {d: {ns: m for ns, m in t.items() if ns not in held} for d, t in trees.items()},
                tree,
                staged=staged_trees,
            )
            (tree / MARKER_FILE).unlink()
            if decided is not None:  # reviewed next to the policies it shaped
                (tree / DECISIONS_FILE).write_text(
                    dump_decisions(decided.decisions), encoding="utf-8"
                )
            commit = publish_tree(
                tree,
                job.gitops,
                work,
                _commit_message(changes),
                keep=held,
                finish=_relist_namespaces if held else None,
            )
            if commit:
                _event("policy tree committed", "git.commit", commit=commit,
                       branch=job.gitops.branch, pushed=job.gitops.push)
        summary = {
            "duration_s": round(time.perf_counter() - started, 3),
            "policies": len(policy_set.policies),
            "rules": report["summary"]["rules"],
            "rules_added": len(changes["rules"]["added"]),
            "rules_removed": len(changes["rules"]["removed"]),
        }
        _event(
            "run finished",
            "job.finish",
            run_id=run_id,
            commit=commit,
            verdict=report["verdict"]["verdict"],
            **summary,
        )
        return JobResult(run_id, where, changes, commit, inputs["files"], summary)


# --------------------------------------------------------------------------- input


def _read_window(
    source: Location, job: JobConfig, as_of: datetime, work: Path,
    last: timedelta | None = None,
) -> tuple[pa.Table, dict[str, Any]]:
    """The window's flows as a canonical table, and a description of what was read; with
    ``last`` (the option ``last`` of the job file) only the latest part of the flows read, that
    long, as ``run --last`` keeps (docs/conventions.md)."""
    from ..ingest import read_flows

    files = list_window(source, job.partition, as_of.date(), job.window_days)
    partitions = (
        [folder for _, folder in window_partitions(job.partition, as_of.date(), job.window_days)]
        if job.partition
        else []
    )
    inputs = {
        "uri": source.uri,
        "partitions": partitions,
        "files": len(files),
        "bytes": sum(size for _, size in files),
    }
    _event("input listed", "job.listed", uri=source.uri, files=inputs["files"],
           bytes=inputs["bytes"], partitions=len(partitions))
    if not files:
        raise NoFlowsError(
            f"{source.uri}: no flow file in the window ({', '.join(partitions) or 'any folder'}); "
            "nothing was written and the previous outputs are kept."
        )
    if source.is_local:
        local = [Path(path) for path, _ in files]
        table = read_flows(local, job.format, last=last)
    else:
        stage = work / "input"
        local = fetch(source, [path for path, _ in files], stage)
        _event("input copied", "job.fetched", files=len(local))
        table = read_flows(local, job.format, last=last)
        table = _rename_files(table, stage.as_posix(), source.uri.rstrip("/"))
    _event("flows read", "job.read", rows=table.num_rows)
    if table.num_rows == 0:
        raise NoFlowsError(
            f"{source.uri}: the window's {len(files)} files hold no flow record; nothing was "
            "written and the previous outputs are kept."
        )
    return table, inputs


def _rename_files(table: pa.Table, local: str, uri: str) -> pa.Table:
    """The table with staged file names in its ledger replaced by their object URIs."""
    meta = dict(table.schema.metadata or {})
    raw = meta.get(b"recommender.ledger")
    if raw:
        text = raw.decode()
        meta[b"recommender.ledger"] = text.replace(json.dumps(local)[1:-1], uri).encode()
    return table.replace_schema_metadata(meta)


# --------------------------------------------------------------------------- outputs


def _file_reader(folder: Path | None) -> Any:
    def read(name: str) -> bytes | None:
        if folder is None:
            return None
        path = folder / name
        return path.read_bytes() if path.is_file() else None

    return read


def _read_previous_policies(folder: Path | None) -> PolicySet | None:
    """The previous run's policies (None before the first run, or when it wrote no
    Kubernetes tree): its Kubernetes tree, at the top or in ``kubernetes/`` when it wrote
    several dialects, staged namespaces included."""
    if folder is None or not (folder / MARKER_FILE).is_file():
        return None
    from ..policy.reader import read_policies

    base = folder
    if not (folder / "kustomization.yaml").is_file():
        base = folder / "kubernetes"
        if not (base / "kustomization.yaml").is_file():
            return None
    namespaces = [
        p for p in base.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_"))
    ]
    staged = base / STAGED_FOLDER
    if staged.is_dir():
        namespaces += [p for p in staged.iterdir() if p.is_dir() and not p.name.startswith("_")]
    namespaces.sort()
    return read_policies(namespaces) if namespaces else PolicySet(())


def _previous_outputs(output: Location, work: Path) -> Path | None:
    """A local folder holding the previous run's outputs, or None before the first run."""
    if output.is_local:
        folder = Path(output.path)
        _recover_local(folder)
        if folder.is_dir() and not (folder / MARKER_FILE).is_file() and any(folder.iterdir()):
            # Checked again when writing; failing now spares the whole run.
            raise ConfigError(
                f"The output folder {folder} is not empty and was not written by recommender "
                f"(no {MARKER_FILE} file); choose an empty or new folder."
            )
        return folder if (folder / MARKER_FILE).is_file() else None
    pointer = read_bytes(output.child(CURRENT_FILE))
    if pointer is None:
        return None
    try:
        run = json.loads(pointer).get("run")
    except (ValueError, AttributeError):
        run = None
    if not isinstance(run, str) or not run or "/" in run or run.startswith("."):
        raise ConfigError(
            f"{output.child(CURRENT_FILE).uri} does not name a run; restore it or delete it to "
            "start learning afresh."
        )
    previous = work / "previous"
    from .storage import list_files

    prefix = output.child("runs", run)
    fetch(prefix, [p for p, _ in list_files(prefix)], previous)
    previous.mkdir(exist_ok=True)
    # Hidden files are not listed; current.json vouches that this is a tree of ours.
    (previous / MARKER_FILE).touch()
    return previous


def _recover_local(folder: Path) -> None:
    """Undo what a killed run may have left beside ``folder``.

    :func:`~recommender.policy.writer.write_policy_tree` builds ``.NAME.tmp-*`` and swaps the
    old tree out to ``.NAME.old-*`` for a moment; a run killed between its two renames leaves
    no ``folder`` but the previous tree under ``.NAME.old-*``: it is put back. Leftover trees of
    ours (holding the marker file) are then deleted.
    """
    parent = folder.parent
    if not parent.is_dir():
        return
    ours = [
        p
        for p in parent.iterdir()
        if p.name.startswith((f".{folder.name}.tmp-", f".{folder.name}.old-"))
        and p.is_dir()
        and not p.is_symlink()
        and (p / MARKER_FILE).is_file()
    ]
    backups = sorted(
        (p for p in ours if p.name.startswith(f".{folder.name}.old-")),
        key=lambda p: p.stat().st_mtime,
    )
    if not folder.exists() and backups:
        os.rename(backups[-1], folder)
        logger.warning(
            "restored the previous outputs left by a run that was killed while swapping them in",
            extra={"event": "job.recovered", "output": str(folder)},
        )
        ours.remove(backups[-1])
    for leftover in ours:
        shutil.rmtree(leftover, ignore_errors=True)


def _publish(
    output: Location,
    trees: dict[str, dict[str, list[dict[str, Any]]]],
    staged: dict[str, dict[str, list[dict[str, Any]]]],
    extra: dict[str, bytes | str],
    run_id: str,
    as_of: datetime,
    job: JobConfig,
    work: Path,
) -> str:
    """Write the outputs all at once; returns where they are."""
    if output.is_local:
        write_policy_trees(trees, Path(output.path), extra_files=extra, staged=staged)
        return output.uri
    tree = work / "output"
    write_policy_trees(trees, tree, extra_files=extra, staged=staged)
    target = output.child("runs", run_id)
    upload_tree(tree, target)
    pointer = {"as_of": as_of.isoformat(), "path": f"runs/{run_id}", "run": run_id}
    write_bytes(output.child(CURRENT_FILE), (json.dumps(pointer, sort_keys=True) + "\n").encode())
    _prune_runs(output, job.keep_runs, run_id)
    return target.uri


def _prune_runs(output: Location, keep: int, current: str) -> None:
    """Delete all but the newest ``keep`` run prefixes (never the current one)."""
    runs = output.child("runs")
    try:
        infos = runs.filesystem.get_file_info(pafs.FileSelector(runs.path, allow_not_found=True))
    except (pa.ArrowException, OSError) as exc:  # pruning is housekeeping: warn, go on
        logger.warning("could not list old runs: %s", exc, extra={"event": "job.prune_failed"})
        return
    names = sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)
    for name in names[: max(len(names) - keep, 0)]:
        if name != current:
            delete_dir(runs.child(name))


# --------------------------------------------------------------------------- changes


def _changes(
    run_id: str,
    as_of: datetime,
    job: JobConfig,
    inputs: dict[str, Any],
    state: State,
    merge: Any,
    previous_set: PolicySet | None,
    policy_set: PolicySet,
    tables: Any,
    lifecycle: dict[str, Any],
    moves: list[dict[str, Any]],
    window_edges: int,
) -> dict[str, Any]:
    """The content of ``changes.json``."""
    added, removed, unchanged = compare_rules(previous_set or PolicySet(()), policy_set)
    old_names = {f"{p.namespace}/{p.name}" for p in (previous_set or PolicySet(())).policies}
    new_names = {f"{p.namespace}/{p.name}" for p in policy_set.policies}
    traffic = None
    if previous_set is not None:
        traffic = diff_policies(previous_set, policy_set, tables).summary()
    start = as_of.date() - timedelta(days=job.window_days - 1)
    return {
        "edges": {
            "active": merge.active.num_rows,
            "forgotten": merge.forgotten,
            "new": merge.new_edges,
            "newly_stale": merge.newly_stale,
            "remembered": merge.remembered.num_rows,
            "stale": merge.stale.num_rows,
            "stale_edges": stale_rows(merge.stale, _MAX_LISTED),
            "stale_pruned": job.lifecycle.prune_stale,
            "window": window_edges,
        },
        "first_run": previous_set is None,
        "input": inputs,
        "namespaces": [lifecycle[ns].to_dict() for ns in sorted(lifecycle)],
        "policies": {
            "added": sorted(new_names - old_names),
            "removed": sorted(old_names - new_names),
        },
        "rules": {
            "added": [rule_dict(k) for k in added[:_MAX_LISTED]],
            "added_total": len(added),
            "removed": [rule_dict(k) for k in removed[:_MAX_LISTED]],
            "removed_total": len(removed),
            "unchanged": len(unchanged),
        },
        "run": {
            "as_of": as_of.isoformat(),
            "id": run_id,
            "previous_run_at": state.run_at.isoformat() if state.run_at else None,
            "runs": state.runs + 1,
            "window": {
                "days": job.window_days if job.partition else None,
                "from": start.isoformat() if job.partition else None,
                "to": as_of.date().isoformat() if job.partition else None,
            },
        },
        "traffic": traffic,
        "transitions": moves,
    }


def _rule_line(rule: dict[str, Any]) -> str:
    return (
        f"{rule['namespace']}/{rule['policy']} {rule['direction']} "
        f"peers: {', '.join(rule['peers']) or 'all'}; ports: {', '.join(rule['ports']) or 'all'}"
    )


def _rollout_markdown(rollout: dict[str, Any] | None) -> list[str]:
    """The staged rollout, first in ``changes.md``: what the staged policies would break, the
    resets and promotions, then each staged rule's would-be verdicts."""
    if not rollout:
        return []
    lines = ["## Staged policies", ""]
    breaking = rollout["would_break"]
    if breaking:
        lines += [f"- **{w['line']}**" for w in breaking] + [""]
    else:
        lines += ["No wanted traffic would be denied by the staged policies.", ""]
    for move in rollout["moves"]:
        lines.append(f"- {move['namespace']}: {move['from']} -> {move['to']} ({move['reason']})")
    if rollout["staged"]:
        lines += [
            f"- enforcing: {', '.join(rollout['enforcing']) or 'none yet'}",
            f"- staged: {', '.join(rollout['staged_namespaces']) or 'none'}",
        ]
    if rollout["rules"]:
        lines += [
            "",
            "| staged policy | rule | would deny | would allow | last evaluated | examples |",
            "|---|---|---|---|---|---|",
        ]
        for r in rollout["rules"]:
            lines.append(
                f"| {r['policy'] or '(audit mode)'} | {r['rule']} | {r['would_deny']} "
                f"| {r['would_allow']} | {r['last_evaluated'] or ''} "
                f"| {'; '.join(r['examples'])} |"
            )
    return [*lines, ""]


def _changes_markdown(changes: dict[str, Any]) -> str:
    """``changes.md``: the human reading of ``changes.json``."""
    run, rules, edges = changes["run"], changes["rules"], changes["edges"]
    lines = [
        f"# Changes in run {run['id']}",
        "",
        f"As of {run['as_of']}; previous run: {run['previous_run_at'] or 'none (first run)'}.",
        f"Input: {changes['input']['files']} files from {changes['input']['uri']}"
        + (f", days {run['window']['from']} to {run['window']['to']}." if run["window"]["from"]
           else "."),
        "",
        *_rollout_markdown(changes.get("rollout")),
        "## Namespaces",
        "",
        "| namespace | status | unchanged runs | policies | rules | changed at |",
        "|---|---|---|---|---|---|",
    ]
    for ns in changes["namespaces"]:
        lines.append(
            f"| {ns['namespace']} | {ns['status']} | {ns['unchanged_runs']} | {ns['policies']} "
            f"| {ns['rules']} | {ns['changed_at']} |"
        )
    if changes["transitions"]:
        lines.append("")
    for move in changes["transitions"]:
        lines.append(f"- {move['namespace']}: {move['from'] or 'new'} -> {move['to'] or 'gone'}")
    lines += [
        "",
        "## Rules",
        "",
        f"{rules['added_total']} added, {rules['removed_total']} removed, "
        f"{rules['unchanged']} unchanged.",
        "",
    ]
    lines += [f"- added: {_rule_line(r)}" for r in rules["added"]]
    lines += [f"- removed: {_rule_line(r)}" for r in rules["removed"]]
    lines += [
        "",
        "## Edges",
        "",
        f"{edges['new']} new, {edges['active']} with rules, {edges['remembered']} remembered, "
        f"{edges['stale']} stale ({edges['newly_stale']} newly), {edges['forgotten']} forgotten; "
        f"stale edges {'get no rule' if edges['stale_pruned'] else 'keep their rule'}.",
        "",
    ]
    for e in edges["stale_edges"]:
        lines.append(
            f"- stale: {e['src_namespace'] or ''}/{e['src_id']} -> "
            f"{e['dst_namespace'] or ''}/{e['dst_id']} {e['protocol']}/{e['dst_port']} "
            f"(last seen {e['last_seen']})"
        )
    return "\n".join(lines).rstrip() + "\n"


def _relist_namespaces(folder: Path) -> None:
    """Rewrite ``folder/kustomization.yaml`` to list exactly its namespace folders (after
    :func:`~recommender.job.gitops.publish_tree` carried held-back ones over)."""
    from ..policy._yaml import dump_yaml

    names = sorted(
        p.name
        for p in folder.iterdir()
        if p.is_dir() and not p.name.startswith(".") and p.name != STAGED_FOLDER
    )
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": names,
    }
    (folder / "kustomization.yaml").write_text(dump_yaml([doc]), encoding="utf-8")


def _commit_message(changes: dict[str, Any]) -> str:
    """A summary line and a body listing namespaces and rule changes."""
    rules = dict(changes["rules"])
    gitops = changes.get("gitops") or {}
    held = gitops.get("held_back") or []
    namespaces = [n for n in changes["namespaces"] if n["namespace"] not in held]
    if gitops.get("promote") == "stable":  # only what is committed: the stable namespaces
        for key in ("added", "removed"):
            rules[key] = [r for r in rules[key] if r["namespace"] not in held]
            rules[f"{key}_total"] = len(rules[key])
    touched = sorted({r["namespace"] for r in rules["added"] + rules["removed"]})
    if gitops.get("promote") == "stable":
        names = [n["namespace"] for n in namespaces]
        head = (
            f"recommender: policies of {len(names)} stable namespaces "
            f"({', '.join(names[:5])}{' and more' if len(names) > 5 else ''})"
            if names
            else "recommender: no stable namespace yet"
        )
    elif changes["first_run"]:
        head = (
            f"recommender: policies for {len(namespaces)} namespaces "
            f"({sum(n['rules'] for n in namespaces)} rules)"
        )
    else:
        where = ", ".join(touched[:5]) + (" and more" if len(touched) > 5 else "")
        head = (
            f"recommender: {rules['added_total']} rules added, {rules['removed_total']} removed"
            + (f" in {where}" if where else "")
        )
    rollout = changes.get("rollout") or {}
    moves = [m for m in rollout.get("moves") or () if "enforcing" in (m["from"], m["to"])]
    if moves and not changes["first_run"]:  # what this commit does: a promotion, a step back
        promoted = [m["namespace"] for m in moves if m["to"] == "enforcing"]
        staged_again = [m["namespace"] for m in moves if m["from"] == "enforcing"]
        parts = []
        if promoted:
            parts.append(f"enforce {', '.join(promoted[:5])}"
                         f"{' and more' if len(promoted) > 5 else ''}")
        if staged_again:
            parts.append(f"stage {', '.join(staged_again[:5])} again"
                         f"{' and more' if len(staged_again) > 5 else ''}")
        if rules["added_total"] or rules["removed_total"]:
            parts.append(f"{rules['added_total']} rules added, {rules['removed_total']} removed")
        head = "recommender: " + "; ".join(parts)
    run = changes["run"]
    body = [
        head,
        "",
        f"Run {run['id']} as of {run['as_of']}, "
        f"{changes['input']['files']} flow files from {changes['input']['uri']}.",
        "",
    ]
    if rollout.get("would_break"):
        body += [w["line"] for w in rollout["would_break"]] + [""]
    if moves:
        body += ["Rollout:"]
        body += [f"  {m['namespace']}: {m['from']} -> {m['to']} ({m['reason']})" for m in moves]
        body += [""]
    form = {}
    if rollout.get("staged"):
        form = {ns: ", enforcing" for ns in rollout.get("enforcing") or ()}
        form |= {ns: ", staged" for ns in rollout.get("staged_namespaces") or ()}
    body += ["Namespaces:"]
    body += [
        f"  {n['namespace']}: {n['status']}{form.get(n['namespace'], '')}, "
        f"{n['policies']} policies, {n['rules']} rules"
        for n in namespaces
    ]
    if held:
        body += ["", f"Held back until stable (the repository keeps their policies): "
                 f"{', '.join(held)}"]
    if rules["added"] or rules["removed"]:
        body += ["", "Rules:"]
        listed = [("+", r) for r in rules["added"]] + [("-", r) for r in rules["removed"]]
        body += [f"  {sign} {_rule_line(r)}" for sign, r in listed[:_MESSAGE_RULES]]
        if len(listed) > _MESSAGE_RULES:
            body.append(f"  ... and {len(listed) - _MESSAGE_RULES} more (see changes.json)")
    return "\n".join(body) + "\n"
