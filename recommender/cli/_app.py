"""The ``recommend`` Typer application and what its commands share: argument types, messages,
progress and the ledger's print-out."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="recommend",
    help=(
        "Least-privilege Kubernetes network policies from flow logs (Calico, Goldmane, "
        "Whisker, Cilium Hubble, or the canonical Parquet/CSV).\n\n"
        "`recommend FLOWS...` is short for `recommend run FLOWS...`."
    ),
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _usage_metavar(self: Any, ctx: Any, *, usage: bool = False) -> str:
    """An argument's metavariable as ``FLOWS...`` (upper case, ``...`` when repeated,
    ``[...]`` when optional), not Typer's ``{FLOWS}``."""
    var = self.metavar or (self.name or "").upper()
    if self.nargs != 1 and not var.endswith("..."):
        var += "..."
    return f"[{var}]" if usage and not self.required and not var.startswith("[") else var


def _install_metavars() -> None:
    from typer.core import TyperArgument

    TyperArgument.make_metavar = _usage_metavar  # type: ignore[method-assign]


_install_metavars()

#: What ``-q`` and ``-v`` asked for: -1 quiet, 0 normal, 1 verbose (stage timings), 2 debug.
VERBOSITY: list[int] = [0]


def verbosity() -> int:
    """-1 with ``-q``, 1 with ``-v`` (2 with ``-vv``), else 0."""
    return VERBOSITY[0]

FlowsArg = Annotated[
    list[Path],
    typer.Argument(
        help="Flow files, folders or glob patterns (plain, gzip or zstd).",
        show_default=False,
        metavar="FLOWS...",
    ),
]
# Text, not Path: a Path would fold the "//" of an object-storage URI (s3://bucket/...).
RunFlowsArg = Annotated[
    list[str],
    typer.Argument(
        help="Flow files, folders or glob patterns (plain, gzip or zstd); with --engine dask "
        "also fsspec URIs such as s3://bucket/flows/.",
        show_default=False,
        metavar="FLOWS...",
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
        "and are reported as conflicts; the report checks the stack (evidence toward PCI DSS, "
        "NIST, SOC 2 and GDPR controls); run writes them to "
        "_guardrails/ of each tree, evaluate judges the whole stack.",
    ),
]


TrustDomainOpt = Annotated[
    str,
    typer.Option(
        "--trust-domain",
        metavar="DOMAIN",
        help="Istio: the trust domain of the workloads' principals (DOMAIN/ns/NS/sa/SA), "
        "which come from the service accounts in the flows.",
    ),
]


RootNamespaceOpt = Annotated[
    str,
    typer.Option(
        "--root-namespace",
        metavar="NAMESPACE",
        help="Istio: the root namespace, whose AuthorizationPolicies apply to the whole mesh.",
    ),
]


DecisionsOpt = Annotated[
    Path | None,
    typer.Option(
        "--decisions",
        metavar="FILE",
        help="A reviewer's decisions (docs/decisions.md): rejected edges are never allowed, "
        "allowed ones are although unobserved, trusted ones survive anomaly screening, "
        "excluded workloads or namespaces get no policy; the report gives each entry's status.",
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


# Options shared by the commands that read flows (`run`, `ingest`, `graph`, `evaluate`, `diff`).
_Since = Annotated[
    str | None,
    typer.Option(
        metavar="TIME",
        help="Use flows starting at or after this time: ISO 8601 (2024-05-01T12:00:00Z) or a "
        "duration before now (30m, 6h, 2d).",
    ),
]
_Until = Annotated[
    str | None,
    typer.Option(
        metavar="TIME",
        help="Use flows starting before this time: ISO 8601 or a duration before now.",
    ),
]
_Last = Annotated[
    str | None,
    typer.Option(
        "--last",
        metavar="DURATION",
        help="Use only the latest part of the input's own window, this long (6h, 2d): what "
        "offline files need, where --since counts from now.",
    ),
]
_MinConnections = Annotated[
    int | None, typer.Option(help="Leave out edges with fewer connections.")
]


def window_config(
    since: str | None, until: str | None, last: str | None, config: Any = None
) -> Any:
    """``config`` (a RecommendConfig; None: the defaults) with the time window options of the
    command line (--since, --until, --last: the same meaning for every command that reads
    flows); None when neither is given."""
    from ..config import RecommendConfig, coerce_options

    given = {k: v for k, v in {"since": since, "until": until, "last": last}.items()
             if v is not None}
    if not given and config is None:
        return None
    return (config or RecommendConfig()).replace(**coerce_options(given, "command line"))


def _err(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _progress(enabled: bool) -> Any:
    """A rich progress display on a terminal, or None when quiet (or ``-q``)."""
    if not enabled or verbosity() < 0:
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
        + (f"  overlap copies dropped: {ledger['overlap_dropped']:,}"
           if ledger.get("overlap_dropped") else "")
        + (f"  outside the window: {ledger['outside_window']:,}"
           if ledger.get("outside_window") else "")
    )
    for name in ledger["ignored_files"]:
        typer.echo(f"  passed over (not a flow log): {name}")
    for reason, count in ledger["skipped"].items():
        typer.echo(f"  skipped {reason}: {count:,}")
    for reason, count in (ledger.get("outcome_unknown") or {}).items():
        typer.echo(f"  outcome unknown ({reason}): {count:,}")
    for name, count in (ledger.get("malformed_traces") or {}).items():
        typer.echo(f"  malformed trace ({name}): {count:,}")
    for example in ledger["examples"][:5]:
        typer.echo(
            f"  e.g. {example['file']}:{example['row']}: {example['reason']}: {example['detail']}"
        )


