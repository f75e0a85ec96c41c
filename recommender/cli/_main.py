"""``main``: the console script's entry point (``recommend FLOWS...`` is ``recommend run``), its
exit codes, and the early start of Hubble reader workers."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from .. import __version__
from ..errors import RecommenderError
from ..ingest._hubble_worker import block_pandas
from ._app import _err, app


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
    from ..ingest.parallel import prestart

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
