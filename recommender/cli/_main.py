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
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q",
            help="Print nothing but errors and the data asked for (--json, --dry-run); the "
            "exit status tells the result. Also after the command name.",
        ),
    ] = False,
    verbose: Annotated[
        int,
        typer.Option(
            "--verbose", "-v", count=True, show_default=False,
            help="Print the seconds each stage took (as --profile) and what the library logs; "
            "-vv also debug messages. Also after the command name.",
        ),
    ] = 0,
) -> None:
    """Least-privilege Kubernetes network policies from flow logs."""


_ROOT_OPTIONS = ("--help", "-h", "--version", "--install-completion", "--show-completion")
_VERBOSITY_FLAGS = {"-q": -1, "--quiet": -1, "-v": 1, "--verbose": 1, "-vv": 2}


def _take_verbosity(args: list[str]) -> tuple[list[str], int]:
    """``args`` without -q/-v (given anywhere, before or after the command), and the level."""
    level, rest = 0, []
    for arg in args:
        flag = _VERBOSITY_FLAGS.get(arg)
        if flag is None:
            rest.append(arg)
        elif flag < 0:
            level = -1
        elif level >= 0:
            level = min(level + flag, 2)
    return rest, level


def _set_logging(level: int) -> None:
    import logging

    logging.getLogger("recommender").setLevel(
        {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}[level]
    )
    if level > 0 and not logging.getLogger().handlers:
        logging.basicConfig(format="%(name)s: %(message)s")


def _commands() -> set[str]:
    """The command names, without building the Click group (which evaluates the signature of
    every command: a quarter of a second)."""
    from typer.main import get_command_name

    names = {
        info.name or get_command_name(info.callback.__name__)
        for info in app.registered_commands
        if info.callback is not None
    }
    return names | {info.name for info in app.registered_groups if info.name}


def _app_for(command: str) -> typer.Typer:
    """``app`` with only ``command`` (and the root options): Typer builds every registered
    command's Click parameters from its signature on each call, so a run of one command need
    not pay for the others. Help, usage errors and behaviour are those of the full app."""
    import copy

    from typer.main import get_command_name

    only = [
        info
        for info in app.registered_commands
        if info.callback is not None
        and (info.name or get_command_name(info.callback.__name__)) == command
    ]
    if len(only) != 1 or app.registered_groups:
        return app
    slim = copy.copy(app)
    slim.registered_commands = only
    return slim


def _command_typo(word: str) -> str | None:
    """The command ``word`` is a typo of, when it names no file either (``evaluat``)."""
    import difflib

    if word.startswith("-") or os.path.exists(word) or is_stream_name(word) or "/" in word:
        return None
    close = difflib.get_close_matches(word.lower(), sorted(_commands()), n=1, cutoff=0.6)
    return close[0] if close else None


def is_stream_name(word: str) -> bool:
    """``-`` (standard input) or an object-store URL: a source that is not a local path."""
    return word == "-" or "://" in word


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


def _few_collections_for_good() -> None:
    """Keep the cyclic garbage collector's thresholds as high as ``recommend()`` sets them
    for its stages (:func:`recommender.pipeline._few_collections`), for the rest of this
    process. ``recommend()`` puts the previous thresholds back when it returns, and the next
    allocations then set off a full collection of the run's millions of objects (0.3 s at
    2,000 workloads) just before the process exits, which frees them all anyway."""
    import gc

    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 100_000), max(old[1], 50), max(old[2], 100))


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so that it unwinds as for Ctrl-C (temporary
    files removed, workers stopped) and exits 143."""


#: The exit status and the one line printed for each stopping signal.
_STOPPED = {"interrupted": (130, "interrupted; nothing was written."),
            "terminated": (143, "terminated; nothing was written.")}


_SIGNALLED: list[str] = []


def _on_sigterm(signum: int, frame: object) -> None:
    _SIGNALLED.append("terminated")
    raise Terminated


def _on_sigint(signum: int, frame: object) -> None:
    _SIGNALLED.append("interrupted")
    raise KeyboardInterrupt


def _install_handlers() -> dict[int, object]:
    """Turn SIGTERM into :class:`Terminated` and note SIGINT (main thread only), so that an
    error a library makes of either (DuckDB's "Query interrupted") is still known as one;
    returns the handlers replaced."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, object] = {}
    for signum, handler in ((signal.SIGTERM, _on_sigterm), (signal.SIGINT, _on_sigint)):
        with contextlib.suppress(ValueError, OSError):
            previous[signum] = signal.signal(signum, handler)
    return previous


def _stopped(exc: BaseException) -> int:
    terminated = isinstance(exc, Terminated) or "terminated" in _SIGNALLED
    kind = "terminated" if terminated else "interrupted"
    code, message = _STOPPED[kind]
    _err(message)
    return code


def _is_interrupted_query(exc: BaseException) -> bool:
    """DuckDB turns a Ctrl-C during a query into its own error ("Query interrupted", or the
    KeyboardInterrupt of a Python stream it reads)."""
    return bool(_SIGNALLED) or type(exc).__name__ == "InterruptException" or (
        "Query interrupted" in str(exc)
    )


def main(argv: list[str] | None = None, *, own_process: bool = False) -> int:
    """Entry point of the ``recommend`` console script; returns the exit status.

    ``own_process``: the caller is the ``recommend`` (or ``python -m recommender``) process
    itself, not a program that goes on afterwards. ``run`` then keeps pandas out of the
    process: nothing in it uses pandas, but pyarrow imports it (0.4 s) on its first conversion
    of a Python object, only to check whether that is a pandas object.
    """
    _SIGNALLED.clear()
    previous = _install_handlers()
    try:
        return _main(argv, own_process)
    except KeyboardInterrupt as exc:  # before or after the command itself
        return _stopped(exc)
    finally:
        import signal

        for signum, handler in previous.items():
            with contextlib.suppress(ValueError, OSError, TypeError):
                signal.signal(signum, handler)  # type: ignore[arg-type]


def _main(argv: list[str] | None, own_process: bool) -> int:
    from ._app import VERBOSITY

    args, VERBOSITY[0] = _take_verbosity(list(sys.argv[1:] if argv is None else argv))
    _set_logging(VERBOSITY[0])
    if VERBOSITY[0] < 0 and args and not {"--json", "--dry-run", "--help", "-h"} & set(args):
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
            return _dispatch(args, own_process)
    return _dispatch(args, own_process)


def _dispatch(args: list[str], own_process: bool) -> int:
    if not args:
        args = ["--help"]
    elif args[0] not in _commands() and args[0] not in _ROOT_OPTIONS:
        typo = _command_typo(args[0])
        if typo is not None:
            _err(
                f"{args[0]!r} is neither a command nor a file or folder; did you mean {typo}? "
                f"Try 'recommend {typo} --help'."
            )
            return 2
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
            _few_collections_for_good()
        with contextlib.suppress(Exception):  # an optimisation only: `run` reports problems
            _prestart_workers(args[1:])
    try:
        target = _app_for(args[0]) if args[0] not in _ROOT_OPTIONS else app
        status = target(args=args, prog_name="recommend", standalone_mode=False)
        if status == 130 and not isinstance(status, bool):
            # Typer turns a KeyboardInterrupt (Ctrl-C, or SIGTERM as Terminated) into
            # Exit(130), which it returns instead of raising when not in standalone mode.
            return _stopped(Terminated() if "terminated" in _SIGNALLED else KeyboardInterrupt())
    except RecommenderError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt as exc:
        return _stopped(exc)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:
        if os.environ.get("RECOMMENDER_DEBUG"):
            raise
        if _is_interrupted_query(exc):
            return _stopped(exc)
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
