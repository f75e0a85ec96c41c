"""``recommend review``: review a run in the browser and keep the decisions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import FormatOpt, app


@app.command()
def review(
    out_dir: Annotated[
        Path,
        typer.Argument(
            help="The folder a run wrote (recommend FLOWS -o DIR).",
            show_default=False,
            metavar="DIR",
        ),
    ],
    flows: Annotated[
        list[str] | None,
        typer.Option(
            "--flows",
            metavar="FLOWS",
            help="The run's flows (repeat for several files): the page can then re-run the "
            "recommendation with the decisions, replace DIR and show what changed.",
        ),
    ] = None,
    decisions: Annotated[
        Path | None,
        typer.Option(
            "--decisions",
            metavar="FILE",
            help="The decisions file to read and write (docs/decisions.md). Default: the one "
            "the run used, else decisions.yaml beside DIR. It must not be inside DIR (a re-run "
            "replaces DIR).",
        ),
    ] = None,
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, help="Port on 127.0.0.1; 0 picks a free one."
        ),
    ] = 0,
    format: FormatOpt = None,
) -> None:
    """Open a local web page to review the run in DIR: the verdict, namespaces, every rule
    with its evidence and flags, the excluded traffic and the graph. Accept or reject rules,
    trust excluded edges, exclude workloads, allow an edge: each change is written to the
    decisions file at once. With --flows, re-run from the page and see what changed.

    The server listens on 127.0.0.1 only, at the address printed (it holds a token made for
    this start; requests without it get 403). Stop it with Ctrl-C. Exit status: 0 when
    stopped, 2 on bad input (no report in DIR, an invalid decisions file, a busy port).
    """
    import importlib.util

    from ..errors import ConfigError
    from ..report.review_app import ReviewState, serve

    if any(importlib.util.find_spec(m) is None for m in ("starlette", "uvicorn")):
        raise ConfigError(
            "recommend review needs its web server: pip install 'recommender[review]' "
            "(Starlette and uvicorn)."
        )
    out_dir = out_dir.resolve()
    if not (out_dir / "report.json").is_file():
        raise ConfigError(
            f"{out_dir} holds no report.json: give the folder a run wrote "
            "(recommend FLOWS -o DIR)."
        )
    try:
        used = json.loads((out_dir / "report.json").read_text("utf-8")).get("config") or {}
    except (OSError, ValueError, AttributeError):
        used = {}
    if decisions is None:
        named = used.get("decisions")
        decisions = Path(named) if named else out_dir.parent / "decisions.yaml"
    decisions = decisions.resolve()
    if decisions.is_relative_to(out_dir):
        raise ConfigError(
            f"{decisions} is inside {out_dir}, which a re-run replaces: keep the decisions "
            "file outside it (--decisions FILE)."
        )
    rerun = _rerun_function(flows, out_dir, used, format) if flows else None
    state = ReviewState.open(out_dir, decisions, rerun)

    def ready(url: str) -> None:
        typer.echo(f"Review {out_dir} at {url}")
        typer.echo(f"decisions: {decisions}; Ctrl-C stops the server.")

    serve(state, port, on_ready=ready)


def _rerun_function(
    flows: list[str], out_dir: Path, used: dict[str, Any], format: str | None
) -> Any:
    """The page's re-run: the run's own options (report.json's ``config``), the decisions
    file, the same flows; DIR is replaced."""
    from ..config import RecommendConfig, coerce_options
    from ..errors import ConfigError
    from ..pipeline import recommend

    options = {k: v for k, v in used.items() if v is not None and k != "decisions"}
    try:
        config = RecommendConfig().replace(**coerce_options(options, "report.json config"))
    except (ConfigError, TypeError, ValueError):  # a report of another version: the defaults
        config = RecommendConfig()

    def rerun(decisions_path: Path) -> dict[str, Any]:
        result = recommend(
            flows, config.replace(decisions=str(decisions_path)), format=format
        )
        result.write(out_dir)
        report: dict[str, Any] = result.report
        return report

    return rerun
