"""Compute a pure function in a forked child process while this process goes on.

After the read, a run is one Python process doing independent pieces of work one after the
other on one core: the self-check replays every edge against the policies while the report
is built from the same inputs, and the policy files are rendered and written while the
report files are. :func:`forked` runs such a piece in a child made with ``fork()``, which
starts at once with everything in memory (nothing is pickled on the way in), computes on the
other core without the parent's GIL, and sends its answer back pickled through a pipe.

The answer is the function's return value, exactly as if called here, or nothing:

- where forking is not possible or not wise (not Linux, the ``RECOMMENDER_NO_FORK``
  environment variable set, a child that cannot start), the function is called here, the
  first time :meth:`Forked.result` asks;
- where the child fails in any way (an exception, killed, out of memory, an answer that
  cannot be pickled), the parent calls the function itself, so that an error surfaces
  exactly as without a child, with its traceback, warnings and logging.

So the function must be pure: a value computed from its arguments, no effect the parent needs
(a cache it fills, a file it writes, a mutation of an argument). The child ignores Ctrl-C
(the parent, which gets it too, stops it), ends with its parent however the parent ends, and
leaves by ``os._exit``: none of the parent's clean-up (atexit handlers, buffered output,
temporary folders) runs twice.

Forking a process that has threads copies only the calling thread: a lock another thread
held is held forever in the child. The children here run Python, NumPy and Arrow code only:
Arrow and the C library reset their own locks at a fork, and DuckDB's idle worker threads,
the only other threads of a run, are never entered by the function (DuckDB is not called by
the functions forked here).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Generic, TypeVar

__all__ = ["Forked", "can_fork", "die_with_parent", "forked", "join_before_fork"]

_log = logging.getLogger(__name__)

T = TypeVar("T")

#: Set (to anything but ``""`` or ``0``) to compute everything in this process.
NO_FORK_ENV: Final = "RECOMMENDER_NO_FORK"


def can_fork() -> bool:
    """True where :func:`forked` makes a child: Linux (macOS system libraries do not survive
    a fork, which is why Python spawns there), unless :data:`NO_FORK_ENV` says no."""
    return (
        sys.platform.startswith("linux")
        and hasattr(os, "fork")
        and os.environ.get(NO_FORK_ENV, "") in ("", "0")
    )


def die_with_parent(parent: int) -> None:
    """On Linux, have the kernel send this child SIGTERM when its parent ``parent`` ends,
    however it ends (killed, crashed, ``os._exit``): the parent's own clean-up does not run
    then, and a child blocked writing to a pipe nobody reads would live on forever."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before the request took effect
        os._exit(0)


class Forked(Generic[T]):
    """The answer of ``fn(*args, **kwargs)``, being computed in a child process (or, without
    one, computed here when first asked). Use :func:`forked` to make one."""

    def __init__(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> None:
        self._call = (fn, args, kwargs)
        self._pid: int | None = None
        self._read: int | None = None
        self._done = False
        self._value: T | None = None
        #: Seconds the child took (from its fork to its answer); None without a child.
        self.child_seconds: float | None = None

    @property
    def in_child(self) -> bool:
        """True while a child is computing (or holds) the answer."""
        return self._pid is not None

    def _start(self) -> None:
        fn, args, kwargs = self._call
        parent = os.getpid()
        read, write = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:  # no memory or process slots: compute here instead
            os.close(read)
            os.close(write)
            _log.debug("not forking %s: %s", getattr(fn, "__name__", fn), exc)
            return
        if pid == 0:  # the child: never returns
            os.close(read)
            _child(fn, args, kwargs, write, parent)
        os.close(write)
        self._pid, self._read = pid, read

    def result(self) -> T:
        """The answer: the child's, or computed here (see the module's docs)."""
        if self._done:
            return self._value  # type: ignore[return-value]
        answer = self._collect()
        if answer is None:
            fn, args, kwargs = self._call
            answer = (fn(*args, **kwargs),)
        self._value = answer[0]
        self._done = True
        self._call = (self._call[0], (), {})  # drop the arguments
        return self._value

    def _collect(self) -> tuple[T] | None:
        """The child's answer as a 1-tuple, or None when there is none (no child, or it
        failed)."""
        if self._pid is None or self._read is None:
            return None
        pid, read = self._pid, self._read
        self._pid = self._read = None
        chunks = []
        try:
            with os.fdopen(read, "rb", closefd=True) as pipe:
                while chunk := pipe.read(1 << 20):
                    chunks.append(chunk)
        finally:
            _, status = os.waitpid(pid, 0)
        if not chunks or os.waitstatus_to_exitcode(status) != 0:
            return None
        try:
            ok, seconds, value = pickle.loads(b"".join(chunks))
        except Exception:  # a broken answer: compute it here
            return None
        if not ok:
            return None
        self.child_seconds = seconds
        return (value,)

    def cancel(self) -> None:
        """Stop the child, if any, and forget the answer (used when the run is abandoned)."""
        pid, read = self._pid, self._read
        self._pid = self._read = None
        self._done = True
        self._call = (self._call[0], (), {})
        if read is not None:
            os.close(read)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)

    def __del__(self) -> None:  # an answer nobody asked for: no child left behind
        if getattr(self, "_pid", None) is not None:
            with contextlib.suppress(Exception):
                self.cancel()


#: Threads to finish before a fork (:func:`join_before_fork`).
_JOIN: list[threading.Thread] = []


def join_before_fork(thread: threading.Thread) -> None:
    """Have :func:`forked` wait for ``thread`` before it forks: a short-lived thread (one
    importing modules ahead of need) whose half-done work a child must not inherit."""
    _JOIN.append(thread)


def forked(fn: Callable[..., T], *args: Any, **kwargs: Any) -> Forked[T]:
    """Start computing ``fn(*args, **kwargs)`` in a forked child (see the module's docs);
    ``.result()`` gives the answer. ``fn`` must be pure."""
    job: Forked[T] = Forked(fn, *args, **kwargs)
    if can_fork():
        while _JOIN:
            _JOIN.pop().join()
        job._start()
    return job


def _child(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], write: int, parent: int
) -> None:
    """The child's whole life: compute, send ``(ok, seconds, value)``, leave by ``os._exit``."""
    code = 1
    try:
        # Ctrl-C in a terminal reaches the whole process group: the parent stops the child.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the CLI's handler is the parent's
        die_with_parent(parent)
        gc.disable()  # short-lived: a collection would only copy the parent's pages
        started = time.perf_counter()
        try:
            value = fn(*args, **kwargs)
            payload = pickle.dumps(
                (True, time.perf_counter() - started, value), pickle.HIGHEST_PROTOCOL
            )
        except BaseException:  # the parent computes it again and raises it properly
            payload = pickle.dumps((False, 0.0, None))
        view = memoryview(payload)
        while view:
            view = view[os.write(write, view) :]
        code = 0
    finally:
        os._exit(code)
