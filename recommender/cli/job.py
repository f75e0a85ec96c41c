"""``recommend job``: the scheduled job (rolling window, state, GitOps)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import RecommenderError
from ._app import DecisionsOpt, app


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
    decisions: DecisionsOpt = None,
) -> None:
    """Run the scheduled job once: read a rolling window of flows (a folder or s3://), merge
    them into the kept state, write policies, reports and state, and commit the policy tree
    to git when it changed. --decisions FILE (or the key 'decisions' of the job file) is
    applied on the day of the run and committed next to the policies (docs/decisions.md).

    `recommend --config FILE` with a FILE that has a 'job:' section is short for
    `recommend job --config FILE`. Exit status: 0 done (committed, or nothing changed);
    2 invalid configuration, state or input; 3 no flow file in the window (nothing written);
    4 object storage could not be read or written; 5 the commit or push failed (the
    outputs were written); 130 interrupted (Ctrl-C), 143 terminated (SIGTERM), nothing
    half-written either way; 70 internal error.
    """
    import logging

    from ..config import _parse_time
    from ..errors import ConfigError, GitOpsError, NoFlowsError, StorageError
    from ..job.log import LOG_FORMATS, setup_logging

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
    from ..job.runner import run_job

    codes: list[tuple[type[Exception], int]] = [
        (NoFlowsError, 3),
        (StorageError, 4),
        (GitOpsError, 5),
        (RecommenderError, 2),
    ]
    try:
        run_job(config_file, as_of=when, decisions=decisions)
    except RecommenderError as exc:
        code = next(c for kind, c in codes if isinstance(exc, kind))
        log.error(str(exc), extra={"event": "job.failed", "exit_code": code})
        raise SystemExit(code) from None
    finally:
        restore()


