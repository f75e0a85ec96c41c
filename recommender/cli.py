"""The ``recommend`` command: a thin shell over the library.

Each command parses its options, calls one library function, renders the result and maps
errors to exit codes: 0 success, 1 a finding that should fail a pipeline (see each command),
2 bad input or usage, 70 an internal error (a bug: please report it).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from . import __version__
from ._hubble_worker import block_pandas
from .errors import RecommenderError

__all__ = ["app", "main"]

app = typer.Typer(
    name="recommend",
    help=(
        "Least-privilege Kubernetes network policies from flow logs (Calico, Goldmane, "
        "Whisker, Cilium Hubble, or the canonical Parquet/CSV).\n\n"
        "`recommend FLOWS...` is short for `recommend run FLOWS...`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

FlowsArg = Annotated[
    list[Path],
    typer.Argument(
        help="Flow files, folders or glob patterns (plain, gzip or zstd).",
        show_default=False,
        metavar="FLOWS",
    ),
]
# Text, not Path: a Path would fold the "//" of an object-storage URI (s3://bucket/...).
RunFlowsArg = Annotated[
    list[str],
    typer.Argument(
        help="Flow files, folders or glob patterns (plain, gzip or zstd); with --engine dask "
        "also fsspec URIs such as s3://bucket/flows/.",
        show_default=False,
        metavar="FLOWS",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="Processes for reading Hubble files (default: 2 for inputs over 64 MiB on a "
        "machine with several cores, else 1).",
    ),
]
EngineOpt = Annotated[
    str,
    typer.Option(
        "--engine",
        help="Where ingest and aggregation run: embedded (this process, streaming) or dask "
        "(one task per file or Parquet row-group chunk on a Dask cluster; needs "
        "recommender[dask]; see docs/scaling.md).",
    ),
]
SchedulerOpt = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        metavar="ADDRESS",
        help="With --engine dask: the Dask scheduler (such as tcp://scheduler:8786); "
        "a local cluster is started when omitted.",
    ),
]
ProfileOpt = Annotated[
    bool,
    typer.Option(
        "--profile",
        help="Print the seconds spent per pipeline stage (read, aggregate, synthesize, "
        "render, self-check, report, write) to standard error.",
    ),
]
FormatOpt = Annotated[
    str | None,
    typer.Option(
        "--format",
        "-f",
        help="Input format for every file (detected per file when "
        "omitted): calico, calico-text, csv, goldmane, hubble, parquet, whisker.",
    ),
]


GuardrailsOpt = Annotated[
    Path | None,
    typer.Option(
        "--guardrails",
        metavar="FILE",
        help="Organisation guardrails (docs/guardrails.md): flows they deny get no allow rule "
        "and are reported as conflicts; the report checks compliance; run writes them to "
        "_guardrails/ of each tree, evaluate judges the whole stack.",
    ),
]


#: Kinds the guardrails renderers write; with --guardrails, evaluate takes them from the file.
_GUARDRAIL_KINDS = (
    "AdminNetworkPolicy",
    "BaselineAdminNetworkPolicy",
    "CiliumClusterwideNetworkPolicy",
    "ClusterNetworkPolicy",
    "GlobalNetworkPolicy",
    "Tier",
)


def _guardrails_summary(section: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": section["name"],
        "conflicts": section["conflicts_total"],
        "compliance": {c["check"]: c["status"] for c in section["compliance"]},
    }


# Options shared by the commands that read flows and aggregate them (`run`, `graph`).
_Since = Annotated[
    str | None, typer.Option(help="Use flows starting at or after this ISO 8601 time.")
]
_Until = Annotated[str | None, typer.Option(help="Use flows starting before this ISO 8601 time.")]
_MinConnections = Annotated[
    int | None, typer.Option(help="Leave out edges with fewer connections.")
]


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _progress(enabled: bool) -> Any:
    """A rich progress display on a terminal, or None when quiet."""
    if not enabled:
        return None
    from rich.progress import (
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:,.0f} rows"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        transient=True,
    )


class _RowProgress:
    """A progress bar with rows per second on a terminal; nothing when quiet."""

    def __init__(self, enabled: bool, description: str) -> None:
        self._progress = _progress(enabled)
        self._description = description
        self._started = time.perf_counter()
        self._task: Any = None

    def __enter__(self) -> _RowProgress:
        if self._progress is not None:
            self._progress.__enter__()
            self._task = self._progress.add_task(self._description, total=None, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    @property
    def callback(self) -> Any:
        """The per-batch callback (None when quiet)."""
        return self.advance if self._progress is not None else None

    def advance(self, rows: int) -> None:
        """Count ``rows`` more rows."""
        progress = self._progress
        progress.advance(self._task, rows)
        done = progress.tasks[0].completed
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        progress.update(self._task, rate=f"{done / elapsed:,.0f} rows/s")


_STAGES = {
    "read": "read (ingest)",
    "aggregate": "aggregate",
    "synthesize": "synthesize",
    "render": "render",
    "self_check": "self-check",
    "report": "report",
    "holdout": "holdout validation",
    "report_files": "report files",
    "write": "write",
}


def _print_timings(timings: dict[str, float]) -> None:
    """The --profile table, on standard error."""
    total = sum(timings.values())
    typer.echo("stage                  seconds   share", err=True)
    for name, seconds in timings.items():
        share = seconds / total if total else 0.0
        typer.echo(f"{_STAGES.get(name, name):<20} {seconds:>9.3f} {share:>7.1%}", err=True)
    typer.echo(f"{'total':<20} {total:>9.3f}", err=True)


def _print_ledger(ledger: dict[str, Any]) -> None:
    typer.echo(
        f"records read: {ledger['read']:,}  used: {ledger['used']:,}  "
        f"merged duplicates: {ledger['duplicate']:,}  replies dropped: {ledger['reply']:,}  "
        f"skipped: {ledger['skipped_total']:,}"
    )
    for name in ledger["ignored_files"]:
        typer.echo(f"  passed over (not a flow log): {name}")
    for reason, count in ledger["skipped"].items():
        typer.echo(f"  skipped {reason}: {count:,}")
    for example in ledger["examples"][:5]:
        typer.echo(
            f"  e.g. {example['file']}:{example['row']}: {example['reason']}: {example['detail']}"
        )


@app.command()
def ingest(
    flows: FlowsArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Parquet file to write.")],
    format: FormatOpt = None,
    workers: WorkersOpt = None,
    summary: Annotated[
        bool,
        typer.Option("--summary", help="Print the ingest ledger and a short profile of the flows."),
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print the result as JSON (with --summary, the profile too)."),
    ] = False,
) -> None:
    """Read flow logs into the canonical flow table (zstd Parquet)."""
    from .ingest import iter_flow_batches
    from .ingest._write import write_flows_parquet

    batches = iter_flow_batches(flows, format, workers=workers)
    progress = _progress(sys.stderr.isatty() and not json_out)
    started = time.perf_counter()
    if progress is not None:
        with progress:
            task = progress.add_task("ingesting", total=None, rate="")

            def advance(n: int) -> None:
                progress.advance(task, n)
                done = progress.tasks[0].completed
                elapsed = max(time.perf_counter() - started, 1e-9)
                progress.update(task, rate=f"{done / elapsed:,.0f} rows/s")

            rows = write_flows_parquet(batches, output, ledger=batches.ledger, on_batch=advance)
    else:
        rows = write_flows_parquet(batches, output, ledger=batches.ledger)
    ledger = batches.ledger.to_dict()
    if json_out:
        from .profile import profile_flows

        payload = {"output": str(output), "rows": rows, "ledger": ledger}
        if summary:
            payload["profile"] = profile_flows(str(output)).to_dict()
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
        return
    typer.echo(f"wrote {rows:,} connection rows to {output}")
    _print_ledger(ledger)
    if summary:
        from .profile import profile_flows

        prof = profile_flows(str(output))
        typer.echo(f"time span: {prof.first_seen} .. {prof.last_seen}")
        typer.echo(f"namespaces ({len(prof.namespaces)}): {', '.join(prof.namespaces)}")
        typer.echo(f"workloads: {prof.workloads}")
        typer.echo("verdicts: " + ", ".join(f"{k} {v:,}" for k, v in prof.verdicts.items()))
        typer.echo("protocols: " + ", ".join(f"{k} {v:,}" for k, v in prof.protocols.items()))
        typer.echo("top talkers:")
        for src, dst, count in prof.top_talkers:
            typer.echo(f"  {count:>10,}  {src} -> {dst}")


@app.command()
def run(
    flows: RunFlowsArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the policy tree and reports.")
    ] = Path("recommendations"),
    format: FormatOpt = None,
    workers: WorkersOpt = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file with any of the options below.")
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", help="Only these namespaces get policies (repeat; shell patterns)."
        ),
    ] = None,
    exclude_namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-namespace",
            help="Namespaces that get no policies (repeat; shell patterns); "
            "replaces the default list of system namespaces.",
        ),
    ] = None,
    since: _Since = None,
    until: _Until = None,
    min_connections: _MinConnections = None,
    port_range_budget: Annotated[
        int | None, typer.Option(help="Unobserved ports a port range may add (0: no ranges).")
    ] = None,
    cidr_budget: Annotated[
        int | None,
        typer.Option(help="Unobserved addresses a merged CIDR may add (0: exact addresses)."),
    ] = None,
    trust_all_flows: Annotated[
        bool,
        typer.Option(
            "--trust-all-flows",
            help="Keep flows that look like scanning or lateral movement in the allow rules "
            "(they are still reported under 'anomalies'); by default they get no rule.",
        ),
    ] = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="Workloads of a namespace with identical rules share one policy (a set-based "
            "selector that selects nothing else); see docs/clustering.md.",
        ),
    ] = False,
    compaction_budget: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Unobserved (workload, peer, port) grants a policy shared by a behavioural "
            "cluster may add (implies --compact; 0: identical rules only).",
        ),
    ] = None,
    holdout: Annotated[
        float | None,
        typer.Option(
            "--holdout",
            metavar="FRACTION",
            help="Held-out validation: also learn on the earliest 1-FRACTION of the time span "
            "and replay the latest FRACTION (e.g. 0.2) against those policies; the report's "
            "'holdout' section gives the false-deny rate and rule churn. The policies written "
            "are still learned from all flows.",
        ),
    ] = None,
    split_at: Annotated[
        str | None,
        typer.Option(
            "--split-at",
            metavar="TIME",
            help="Held-out validation split at this ISO 8601 time instead of --holdout.",
        ),
    ] = None,
    guardrails: GuardrailsOpt = None,
    guardrails_format: Annotated[
        str | None,
        typer.Option(
            "--guardrails-format",
            help="How guardrails are written to _guardrails/: cluster-network-policy, "
            "admin-network-policy, calico or cilium (default: the dialect of each tree, "
            "kubernetes giving cluster-network-policy); also whose precedence judges the flows.",
        ),
    ] = None,
    dialect: Annotated[
        list[str] | None,
        typer.Option(
            "--dialect",
            "-d",
            metavar="NAME",
            help="Output dialect: kubernetes (default), calico, cilium; repeat or give a comma "
            "list for several, each written into its own sub-folder of --output.",
        ),
    ] = None,
    staged: Annotated[
        bool | None,
        typer.Option(
            "--staged/--no-staged",
            help="Calico: StagedNetworkPolicy (and StagedGlobalNetworkPolicy) for a safe rollout.",
            show_default=False,
        ),
    ] = None,
    tier: Annotated[
        str | None,
        typer.Option(
            help="Calico: the tier of the recommended policies (recommendations); 'default' "
            "for Calico's default tier."
        ),
    ] = None,
    domains: Annotated[
        bool | None,
        typer.Option(
            "--domains/--no-domains",
            help="Egress to external addresses with observed DNS names by name: Calico "
            "destination.domains (Calico Enterprise/Cloud), Cilium toFQDNs with the DNS proxy "
            "rule.",
            show_default=False,
        ),
    ] = None,
    l7: Annotated[
        bool | None,
        typer.Option(
            "--l7/--no-l7",
            help="Cilium: HTTP method and path rules from observed L7 (HTTP) flows.",
            show_default=False,
        ),
    ] = None,
    service_accounts: Annotated[
        bool | None,
        typer.Option(
            "--service-accounts/--no-service-accounts",
            help="Calico and Cilium: select workloads by service account where flows carry it.",
            show_default=False,
        ),
    ] = None,
    host_policies: Annotated[
        bool | None,
        typer.Option(
            "--host-policies/--no-host-policies",
            help="Calico and Cilium: policies for the nodes seen as flow endpoints (Calico "
            "GlobalNetworkPolicy over HostEndpoints, CiliumClusterwideNetworkPolicy).",
            show_default=False,
        ),
    ] = None,
    network_sets: Annotated[
        bool | None,
        typer.Option(
            "--network-sets/--no-network-sets",
            help="Calico: put each rule's external CIDRs in a NetworkSet the rule selects.",
            show_default=False,
        ),
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            metavar="FILE",
            help="YAML list of machines outside the cluster (name, cidrs, labels; see "
            "docs/dialects.md): their addresses become named groups.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the policies as YAML; write nothing.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report summary as JSON.")
    ] = False,
    engine: EngineOpt = "embedded",
    scheduler: SchedulerOpt = None,
    profile: ProfileOpt = False,
) -> None:
    """Recommend least-privilege NetworkPolicies from flows (the default command)."""
    if engine == "embedded" and holdout is None:
        from .ingest.parallel import prestart

        prestart(flows, format, workers)  # workers import while this process imports the rest
    from .config import RecommendConfig, coerce_options, load_config
    from .pipeline import recommend

    config = load_config(config_file) if config_file else RecommendConfig()
    options = coerce_options(
        {
            k: v
            for k, v in {
                "namespaces": namespace or None,
                "exclude_namespaces": exclude_namespace,
                "since": since,
                "until": until,
                "min_connections": min_connections,
                "port_range_budget": port_range_budget,
                "cidr_budget": cidr_budget,
                "trust_all_flows": True if trust_all_flows else None,
                "compact_policies": True if compact or compaction_budget else None,
                "compaction_budget": compaction_budget,
                "guardrails": str(guardrails) if guardrails is not None else None,
                "guardrails_format": guardrails_format,
                "dialects": dialect or None,
                "staged": staged,
                "tier": tier,
                "domains": domains,
                "l7": l7,
                "service_accounts": service_accounts,
                "host_policies": host_policies,
                "network_sets": network_sets,
                "inventory": str(inventory) if inventory is not None else None,
            }.items()
            if v is not None
        },
        "command line",
    )
    with _RowProgress(sys.stderr.isatty() and not json_out, "reading") as progress:
        result = recommend(
            flows,
            config.replace(**options),
            format=format,
            workers=workers,
            holdout=holdout,
            split_at=split_at,
            engine=engine,
            scheduler=scheduler,
            on_batch=progress.callback,
        )
    if dry_run:
        several = len(result.config.dialects) > 1
        for name in result.config.dialects:
            if several:
                typer.echo(f"# dialect: {name}")
            typer.echo(result.to_yaml(name), nl=False)
        if profile:
            _print_timings(result.timings)
        return
    written = result.write(output)
    if profile:
        _print_timings(result.timings)
    summary = result.report["summary"]
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "output": str(output),
                    "files": len(written),
                    **summary,
                    **({"holdout": result.report["holdout"]} if "holdout" in result.report else {}),
                    **(
                        {"guardrails": _guardrails_summary(result.report["guardrails"])}
                        if "guardrails" in result.report
                        else {}
                    ),
                },
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
        return
    typer.echo(
        f"wrote {summary['policies']} policies ({summary['rules']} rules) for "
        f"{len(summary['namespaces_in_scope'])} namespaces to {output}/"
    )
    if result.report.get("ingest"):
        _print_ledger(result.report["ingest"])
    typer.echo(
        f"{summary['flagged_rules']} rules flagged for review, {summary['denied_edges']} denied "
        f"edges not allowed, {summary['excluded_edges']} edges left out; see {output}/report.md"
    )
    anomalies = result.report.get("anomalies")
    if anomalies and anomalies["flagged"]:
        kept = "kept (--trust-all-flows)" if anomalies["trust_all_flows"] else "left out"
        typer.echo(
            f"{anomalies['flagged']} edges look like scanning or lateral movement "
            f"({anomalies['allowed_edges']} of them allowed in the input: {kept}); see "
            "'Anomalies' in the report"
        )
    if "guardrails" in result.report:
        g = _guardrails_summary(result.report["guardrails"])
        typer.echo(
            f"guardrails {g['name']}: {g['conflicts']} observed edges a guardrail denies (no "
            f"allow rule; see 'Conflicts to resolve'); compliance: "
            + ", ".join(f"{k} {v}" for k, v in g["compliance"].items())
        )
    held = result.report.get("holdout")
    if held:
        typer.echo(
            f"held-out validation (split at {held['split_at']}): false-deny rate "
            f"{held['false_deny_rate']:.2%} ({held['false_deny_connections']:,} of "
            f"{held['observed_connections']:,} later connections), rule stability "
            f"{held['churn']['stability']:.2f}"
        )


@app.command()
def graph(
    flows: FlowsArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="File to write; its extension picks the format: .graphml, .json (node-link), "
            ".dot/.gv, .svg (static picture) or .html (interactive page, no network).",
        ),
    ],
    format: FormatOpt = None,
    workers: WorkersOpt = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file with options (as for `run`)."),
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Only edges with a workload in these namespaces, and their peers (repeat; "
            "shell patterns).",
        ),
    ] = None,
    exclude_namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-namespace",
            help="Leave out edges whose only workloads are in these namespaces (repeat; shell "
            "patterns). Unlike `run`, no namespace is left out by default.",
        ),
    ] = None,
    since: _Since = None,
    until: _Until = None,
    min_connections: _MinConnections = None,
    external: Annotated[
        str,
        typer.Option(
            "--external",
            help="Outside peers as one node per 'address' or one per address 'class'.",
        ),
    ] = "address",
    max_nodes: Annotated[
        int | None,
        typer.Option(
            "--max-nodes", min=1, help="SVG/HTML: draw only this many nodes, the busiest."
        ),
    ] = None,
    segments: Annotated[
        bool,
        typer.Option(
            "--segments",
            help="Also propose segments (community detection) and show each node's segment "
            "(SVG/HTML tooltips, a 'segment' node attribute otherwise).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a summary as JSON.")] = False,
) -> None:
    """Write the communication graph of FLOWS: workloads, outside peers by address class,
    nodes and cluster entities, with ports, connections, bytes, first/last seen and verdicts.

    See docs/graph.md for the attributes and formats.
    """
    from .config import RecommendConfig, coerce_options, load_config
    from .errors import ConfigError
    from .graph import build_graph
    from .graph_io import GRAPH_FORMATS, write_graph

    if output.suffix.lower() not in GRAPH_FORMATS:
        write_graph(None, output)  # raises the format error before reading any flow
    if external not in ("address", "class"):
        raise ConfigError(f"--external must be 'address' or 'class', not {external!r}.")
    config = load_config(config_file) if config_file else RecommendConfig()
    options = coerce_options(
        {
            k: v
            for k, v in {
                "namespaces": namespace or None,
                "since": since,
                "until": until,
                "min_connections": min_connections,
            }.items()
            if v is not None
        },
        "command line",
    )
    config = config.replace(**options)
    g = build_graph(
        flows,
        config,
        format=format,
        workers=workers,
        exclude_namespaces=tuple(exclude_namespace or ()),
        external=external,  # type: ignore[arg-type]
    )
    assignments = None
    proposal = None
    if segments:
        from .segments import propose_segments

        proposal = propose_segments(g)
        assignments = proposal.assignments
        for node, name in assignments.items():
            g.nodes[node]["segment"] = name
    write_graph(g, output, max_nodes=max_nodes, segments=assignments)
    denied = sum(1 for *_, v in g.edges(data="verdict") if v == "denied")
    summary: dict[str, Any] = {
        "output": str(output),
        "nodes": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "denied_edges": denied,
    }
    if proposal is not None:
        summary["segments"] = len(proposal.segments)
        summary["modularity"] = round(proposal.modularity, 4)
    if json_out:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    typer.echo(
        f"wrote {summary['nodes']:,} nodes and {summary['edges']:,} edges "
        f"({denied:,} denied) to {output}"
    )
    if proposal is not None:
        typer.echo(
            f"{len(proposal.segments)} proposed segments, modularity {proposal.modularity:.2f}"
        )


@app.command()
def evaluate(
    policies: Annotated[
        Path,
        typer.Argument(
            help="A NetworkPolicy YAML file, or a folder of them (searched recursively).",
            show_default=False,
        ),
    ],
    flows: FlowsArg,
    format: FormatOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the coverage report as JSON.")
    ] = False,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples printed per list.")
    ] = 10,
    guardrails: GuardrailsOpt = None,
    dialect: Annotated[
        str,
        typer.Option(
            "--precedence",
            help="Whose precedence rules combine guardrails and NetworkPolicies: kubernetes "
            "(ClusterNetworkPolicy Admin, NetworkPolicy, Baseline), calico (tiers) or cilium "
            "(deny over allow).",
        ),
    ] = "kubernetes",
) -> None:
    """Replay FLOWS against POLICIES: coverage, false denies, over-permissiveness, unused,
    redundant (shadowed) and broad rules.

    POLICIES may hold ClusterNetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy
    objects too (a tree written with --guardrails, say): the whole stack is then evaluated.
    Other policy kinds (Calico, Cilium) need --guardrails FILE, which replaces the guardrail
    kinds found in POLICIES.

    Exit status: 0 when the policies allow every observed allowed connection they can judge,
    1 when there are false denies (observed allowed connections the policies would deny),
    2 on bad input (unreadable flows, policies that are not Kubernetes NetworkPolicy).
    """
    from .policy.reader import read_policies
    from .replay import replay

    if dialect not in ("kubernetes", "calico", "cilium"):
        raise typer.BadParameter("--precedence must be kubernetes, calico or cilium.")
    stack: Any = None
    if guardrails is not None:
        from .guardrails import load_guardrails

        stack = load_guardrails(guardrails)
        policy_set = read_policies(policies, skip_kinds=_GUARDRAIL_KINDS)
    else:  # ClusterNetworkPolicy / AdminNetworkPolicy found beside the NetworkPolicies count too
        from .guardrails.reader import read_policy_stack

        policy_set, stack = read_policy_stack(policies)
    coverage = replay(policy_set, flows, format=format, guardrails=stack, dialect=dialect)
    if json_out:
        typer.echo(json.dumps(coverage.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        _print_coverage(coverage, examples)
    if coverage.false_denies:
        # SystemExit, not typer.Exit: click returns an Exit's code instead of raising it when
        # main() runs the app with standalone_mode=False.
        raise SystemExit(1)


@app.command()
def diff(
    existing: Annotated[
        Path,
        typer.Argument(
            help="The policies in force: a NetworkPolicy YAML file or a folder of them.",
            show_default=False,
        ),
    ],
    new: Annotated[
        Path,
        typer.Argument(
            help="The proposed policies: a NetworkPolicy YAML file or a folder of them.",
            show_default=False,
        ),
    ],
    flows: FlowsArg,
    format: FormatOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")] = False,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples printed per list.")
    ] = 10,
) -> None:
    """Compare EXISTING and NEW policies on observed FLOWS: which traffic changes verdict,
    which rules are added or removed.

    For CI and GitOps pipelines: run it on a pull request that changes policies, against
    recent flows. Exit status: 0 when no observed allowed connection becomes denied,
    1 when NEW denies observed allowed traffic that EXISTING allows (it would break it),
    2 on bad input (unreadable flows, policies that are not Kubernetes NetworkPolicy).
    """
    from .diff import diff_policies
    from .policy.reader import read_policies

    result = diff_policies(read_policies(existing), read_policies(new), flows, format=format)
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        _print_diff(result, examples)
    if result.breaks_observed_traffic:
        raise SystemExit(1)  # SystemExit, not typer.Exit: see `evaluate`


@app.command()
def job(
    config_file: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Job file: recommendation options and a 'job:' section (input, output, "
            "state, lifecycle, gitops); see docs/deployment.md.",
        ),
    ],
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="TIME",
            help="Run as of this ISO 8601 time instead of now: the window ends on its day "
            "(re-runs a past night).",
        ),
    ] = None,
    log_format: Annotated[
        str, typer.Option("--log-format", help="Log lines as 'text' or 'json' (one object a line).")
    ] = "text",
    log_level: Annotated[
        str, typer.Option("--log-level", help="Lowest level logged: debug, info, warning, error.")
    ] = "info",
) -> None:
    """Run the scheduled job once: read a rolling window of flows (a folder or s3://), merge
    them into the kept state, write policies, reports and state, and commit the policy tree
    to git when it changed.

    `recommend --config FILE` with a FILE that has a 'job:' section is short for
    `recommend job --config FILE`. Exit status: 0 done (committed, or nothing changed);
    2 invalid configuration, state or input; 3 no flow file in the window (nothing written);
    4 object storage could not be read or written; 5 the commit or push failed (the
    outputs were written); 70 internal error.
    """
    import logging

    from .config import _parse_time
    from .errors import ConfigError, GitOpsError, NoFlowsError, StorageError
    from .job_log import LOG_FORMATS, setup_logging

    if log_format not in LOG_FORMATS:
        raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}.")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError("--log-level must be debug, info, warning or error.")
    restore = setup_logging(log_format, log_level)
    log = logging.getLogger("recommender.job")
    when = _parse_time(as_of, "--as-of")
    if when is not None and when.tzinfo is None:
        from datetime import UTC

        when = when.replace(tzinfo=UTC)
    from .job import run_job

    codes: list[tuple[type[Exception], int]] = [
        (NoFlowsError, 3),
        (StorageError, 4),
        (GitOpsError, 5),
        (RecommenderError, 2),
    ]
    try:
        run_job(config_file, as_of=when)
    except RecommenderError as exc:
        code = next(c for kind, c in codes if isinstance(exc, kind))
        log.error(str(exc), extra={"event": "job.failed", "exit_code": code})
        raise SystemExit(code) from None
    finally:
        restore()


def _print_diff(result: Any, examples: int) -> None:
    """The text rendering of a :class:`~recommender.diff.PolicyDiff`."""

    def edge(e: Any) -> str:
        port = f"{e.protocol}/{e.port}" if e.port is not None else e.protocol
        return (
            f"  {e.connections:>10,}  {e.source} -> {e.destination} {port} "
            f"[{e.input_verdict} in input]: {e.reason}"
        )

    def rule(key: Any) -> str:
        namespace, policy, direction, peers, ports = key
        return (
            f"  {namespace}/{policy} {direction} "
            f"peers: {', '.join(peers) or 'all'}; ports: {', '.join(ports) or 'all'}"
        )

    s = result.summary()
    typer.echo(
        f"coverage of observed allowed connections: {s['existing_coverage']:.2%} -> "
        f"{s['new_coverage']:.2%} ({s['observed_edges']} edges, {s['denied_edges']} denied in "
        f"the input, {s['not_evaluated_edges']} not evaluated)"
    )
    typer.echo(
        f"newly denied: {s['newly_denied_edges']} edges ({s['newly_denied_evidence_edges']} "
        f"observed allowed, {s['newly_denied_evidence_connections']:,} connections)"
    )
    for e in result.newly_denied[:examples]:
        typer.echo(edge(e))
    typer.echo(f"newly allowed: {s['newly_allowed_edges']} edges")
    for e in result.newly_allowed[:examples]:
        typer.echo(edge(e))
    typer.echo(
        f"rules: {s['rules_added']} added, {s['rules_removed']} removed, "
        f"{s['rules_unchanged']} unchanged"
    )
    for key in result.rules_added[:examples]:
        typer.echo("+" + rule(key)[1:])
    for key in result.rules_removed[:examples]:
        typer.echo("-" + rule(key)[1:])
    for name in result.policies_added[:examples]:
        typer.echo(f"policy added: {name}")
    for name in result.policies_removed[:examples]:
        typer.echo(f"policy removed: {name}")
    if result.breaks_observed_traffic:
        typer.echo("NEW would deny observed allowed traffic (exit status 1).")


def _print_coverage(coverage: Any, examples: int) -> None:
    """The text rendering of a :class:`~recommender.replay.Coverage`."""

    def edge(e: Any) -> str:
        port = f"{e.protocol}/{e.port}" if e.port is not None else e.protocol
        return f"  {e.connections:>10,}  {e.source} -> {e.destination} {port}: {e.reason}"

    typer.echo(
        f"coverage: {coverage.coverage:.2%} of observed allowed connections "
        f"({coverage.allowed_connections:,} of {coverage.observed_connections:,}; "
        f"{coverage.allowed_edges} of {coverage.observed_edges} edges)"
    )
    typer.echo(
        f"false denies: {len(coverage.false_denies)} edges, "
        f"{coverage.false_deny_connections:,} connections"
    )
    for e in coverage.false_denies[:examples]:
        typer.echo(edge(e))
    typer.echo(
        f"denied in the input but allowed by the policies: {len(coverage.denied_but_allowed)} "
        f"of {coverage.denied_edges} denied edges"
    )
    for e in coverage.denied_but_allowed[:examples]:
        typer.echo(edge(e))
    over = coverage.over_permissive
    if over.skipped:
        typer.echo(f"over-permissiveness: not computed ({over.skipped})")
    else:
        typer.echo(
            f"over-permissiveness: {over.allowed_unobserved:,} unobserved workload pair x port "
            f"triples allowed ({over.rate:.2%} of {over.candidates - over.observed:,}), "
            f"against {over.observed:,} observed"
        )
        for text in over.examples[:examples]:
            typer.echo(f"  {text}")
    typer.echo(f"unused rules: {len(coverage.unused_rules)} of {coverage.rules}")
    for rule in coverage.unused_rules[:examples]:
        typer.echo(f"  {rule['policy']} {rule['direction']} rule {rule['rule']}")
    redundant = coverage.redundant_rules
    shadowed = sum(f.kind == "shadowed" for f in redundant)
    typer.echo(
        f"redundant rules: {len(redundant)} ({shadowed} shadowed: redundant and matched by no "
        "observed traffic)"
    )
    for f in redundant[:examples]:
        typer.echo(f"  {f.policy} {f.direction} rule {f.rule_index} [{f.kind}]: {f.reason}")
    typer.echo(f"broad rules: {len(coverage.broad_rules)}")
    for f in coverage.broad_rules[:examples]:
        used = f" (utilisation {f.used:,}/{f.allowed:,})" if f.utilisation is not None else ""
        typer.echo(f"  {f.policy} {f.direction} rule {f.rule_index}{used}: {f.reason}")
    if coverage.not_evaluated:
        typer.echo(f"not evaluated: {len(coverage.not_evaluated)} edges")
        for reason, count in coverage.not_evaluated_by_reason().items():
            typer.echo(f"  {count:>6}  {reason}")
    if coverage.excluded_edges:
        typer.echo(
            f"left out by the aggregation (replies, ephemeral ports, rare): "
            f"{coverage.excluded_edges} edges"
        )
    for note in coverage.notes:
        typer.echo(f"note: {note}")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"recommend {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Least-privilege Kubernetes network policies from flow logs."""


_ROOT_OPTIONS = ("--help", "--version")


def _commands() -> set[str]:
    import typer.main

    group = typer.main.get_group(app)
    return set(group.commands)


def _names_job_file(args: list[str]) -> bool:
    """True when ``args`` give ``--config FILE`` of a YAML file with a ``job:`` section."""
    path = None
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            path = args[i + 1]
        elif arg.startswith("--config="):
            path = arg.partition("=")[2]
    if path is None:
        return False
    try:
        import yaml

        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except Exception:  # unreadable or not YAML: `run` reports the file's problem
        return False
    return isinstance(data, dict) and "job" in data


def _prestart_workers(args: list[str]) -> None:
    """Start the Hubble reader's worker processes before the command line is parsed and the
    pipeline imported (about a second), when the files named look like a large Hubble input:
    the workers' own start-up then overlaps it. A guess from the raw arguments (existing
    files; ``--workers``, ``--format`` and ``--engine`` honoured); the read takes the workers
    only when its own choice agrees, else they stop unused at exit."""
    values: dict[str, str] = {}
    files: list[str] = []
    wanted = ("--workers", "--format", "-f", "--engine")
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in wanted:
            if not eq and i + 1 < len(args):
                value = args[i + 1]
                i += 1
            values[name] = value
        elif not arg.startswith("-") and os.path.isfile(arg):
            files.append(arg)
        i += 1
    if not files or values.get("--engine", "embedded") != "embedded":
        return
    try:
        workers = int(values["--workers"]) if "--workers" in values else None
    except ValueError:
        return
    from .ingest.parallel import prestart

    prestart(files, values.get("--format") or values.get("-f"), workers)


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    """Entry point of the ``recommend`` console script; returns the exit status.

    ``own_process``: the caller is the ``recommend`` (or ``python -m recommender``) process
    itself, not a program that goes on afterwards. ``run`` then keeps pandas out of the
    process: nothing in it uses pandas, but pyarrow imports it (0.4 s) on its first conversion
    of a Python object, only to check whether that is a pandas object.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        args = ["--help"]
    elif args[0] not in _commands() and args[0] not in _ROOT_OPTIONS:
        # `recommend FLOWS...` (options first or not) is `recommend run`; `recommend --config
        # FILE` with a job file (a `job:` section) is `recommend job --config FILE`.
        args.insert(0, "job" if _names_job_file(args) else "run")
    if args[0] == "run":
        if own_process:
            block_pandas()
            # OpenBLAS (NumPy's and SciPy's) starts a thread per core on import, which then
            # spins for a while; no stage does linear algebra large enough to gain from it.
            for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
                os.environ.setdefault(name, "1")
        with contextlib.suppress(Exception):  # an optimisation only: `run` reports problems
            _prestart_workers(args[1:])
    try:
        app(args=args, prog_name="recommend", standalone_mode=False)
    except RecommenderError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        _err("interrupted.")
        return 130
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:
        if os.environ.get("RECOMMENDER_DEBUG"):
            raise
        name = type(exc).__name__
        if name in ("UsageError", "BadParameter", "NoSuchOption", "MissingParameter"):
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            _err(f"{message}\nTry 'recommend --help'.")
            return 2
        if name == "Exit":
            return int(getattr(exc, "exit_code", 0))
        _err(
            f"internal error ({name}: {exc}). This is a bug; rerun with RECOMMENDER_DEBUG=1 "
            "for the traceback and report it."
        )
        return 70
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())


def _console() -> None:
    """The console-script wrapper: exit with :func:`main`'s status."""
    exit_now(main(own_process=True))


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` once stdout and stderr are flushed and the exit handlers
    (:mod:`atexit`: multiprocessing, logging, temporary files) have run, without the
    interpreter's teardown: freeing every module and object of a large run takes 0.3-0.5 s and
    changes nothing a user sees (every file the command writes is closed before it returns).
    For the ``recommend`` command only, never for a library caller."""
    import atexit

    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)
