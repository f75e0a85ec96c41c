"""``recommend ingest``: any supported input into the canonical flow table."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import (
    FlowsArg,
    FormatOpt,
    WorkersOpt,
    _Last,
    _print_ledger,
    _progress,
    _Since,
    _Until,
    app,
    window_config,
)


@app.command()
def ingest(
    flows: FlowsArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="File to write; its extension picks the format: .parquet (zstd Parquet), .csv "
            "(canonical CSV, readable with --format csv) or .jsonl (canonical rows as JSON "
            "lines).",
        ),
    ],
    format: FormatOpt = None,
    workers: WorkersOpt = None,
    since: _Since = None,
    until: _Until = None,
    last: _Last = None,
    summary: Annotated[
        bool,
        typer.Option("--summary", help="Print the ingest ledger and a short profile of the flows."),
    ] = False,
    json_out: Annotated[
        bool,
        typer.Option("--json", help="Print the result as JSON (with --summary, the profile too)."),
    ] = False,
) -> None:
    """Read flow logs into the canonical flow table (Parquet, CSV or JSON lines).

    Files of different formats holding the same connections are written once, from the most
    detailed (the ledger counts the others' rows as overlap copies); several clusters and
    far-apart windows are warned about. --since/--until/--last keep only the flows of that
    window (the ledger counts the rest as outside the window).

    Exit status: 0 written; 2 bad input or usage (with what to do), 130 interrupted
    (Ctrl-C), 143 terminated (SIGTERM), 70 internal error (a bug).
    """
    import tempfile

    from ..ingest import iter_flow_batches
    from ..ingest._write import convert_parquet, output_format, write_flows_parquet

    fmt = output_format(output)  # refuse an unknown extension before reading anything
    window = window_config(since, until, last)  # and a bad window
    final, scratch = output, None
    if fmt != "parquet":  # written as Parquet first (the profile reads it), then converted
        scratch = tempfile.TemporaryDirectory(prefix="recommender-")
        output = Path(scratch.name) / "flows.parquet"
    try:
        _ingest(flows, output, final, format, workers, summary, json_out, iter_flow_batches,
                write_flows_parquet, convert_parquet if scratch is not None else None, window)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _ingest(flows: list[Path], output: Path, final: Path, format: str | None,
            workers: int | None, summary: bool, json_out: bool, iter_flow_batches: Any,
            write_flows_parquet: Any, convert: Any, window: Any = None) -> None:
    from ..ingest.checked import CheckedFlows

    batches = iter_flow_batches(flows, format, workers=workers)
    with CheckedFlows(
        None,
        batches=batches,
        last=window.last if window else None,
        since=window.since if window else None,
        until=window.until if window else None,
        filter_window=True,
    ) as checked:
        _write(checked, batches, output, final, summary, json_out, write_flows_parquet, convert)


def _write(checked: Any, batches: Any, output: Path, final: Path, summary: bool,
           json_out: bool, write_flows_parquet: Any, convert: Any) -> None:
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

            rows = checked.consume(lambda source: write_flows_parquet(
                source, output, ledger=batches.ledger, on_batch=advance
            ))
    else:
        rows = checked.consume(
            lambda source: write_flows_parquet(source, output, ledger=batches.ledger)
        )
    ledger = batches.ledger.to_dict()
    profile = None
    if summary:
        from ..ingest.profile import profile_flows

        profile = profile_flows(str(output))
    if convert is not None:
        convert(output, final)
    if json_out:
        payload = {"output": str(final), "rows": rows, "ledger": ledger}
        if profile is not None:
            payload["profile"] = profile.to_dict()
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
        return
    typer.echo(f"wrote {rows:,} connection rows to {final}")
    _print_ledger(ledger)
    if profile is not None:
        prof = profile
        typer.echo(f"time span: {prof.first_seen} .. {prof.last_seen}")
        typer.echo(f"namespaces ({len(prof.namespaces)}): {', '.join(prof.namespaces)}")
        typer.echo(f"workloads: {prof.workloads}")
        typer.echo("verdicts: " + ", ".join(f"{k} {v:,}" for k, v in prof.verdicts.items()))
        typer.echo("protocols: " + ", ".join(f"{k} {v:,}" for k, v in prof.protocols.items()))
        typer.echo("top talkers:")
        for src, dst, count in prof.top_talkers:
            typer.echo(f"  {count:>10,}  {src} -> {dst}")


