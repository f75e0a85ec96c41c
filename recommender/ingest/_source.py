"""Finding input files, opening them (plain, gzip, zstd) and cutting them into lines."""

from __future__ import annotations

import contextlib
import glob
import io
import logging
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import pyarrow as pa

from ..errors import FlowSourceError

__all__ = [
    "STDIN",
    "expand_paths",
    "expand_paths_explicit",
    "is_stream",
    "iter_line_chunks",
    "open_decompressed",
    "read_head",
    "stream_error",
]

_log = logging.getLogger("recommender.ingest")

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
CHUNK_BYTES = 4 << 20


#: The path that names standard input (``recommend -``).
STDIN = Path("-")
#: Bytes of a stream's start kept for re-reading: format detection and the readers' probes
#: open a source several times before the read proper, which then streams the rest.
_REPLAY_BYTES = 1 << 20


class _StreamSource:
    """A pipe, FIFO or standard input: read once, its first bytes kept so that it can be
    opened again (detection, probes) as long as no one has read past them.

    While the stream is read, SIGINT (Ctrl-C) ends it instead of the program: the read returns
    end of file within a quarter of a second (whichever thread reads), and the records read so
    far are used (``hubble observe --follow | recommend -``); a second Ctrl-C stops the
    program as usual."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._fd: int | None = None
        self._own_fd = False
        self.kept = bytearray()
        self.read_total = 0
        self.beyond = False  # someone read past the kept bytes: no more re-opening
        self.ended = False
        self.interrupted = False
        self._handled = 0  # Ctrl-Cs the Python handler has seen
        self._previous: Any = None
        self._wakeup: tuple[int, int] | None = None
        self._previous_wakeup = -1
        self._watch_interrupts()

    def _open_fd(self) -> int:
        if self._fd is None:
            if self.name == "-":
                try:
                    self._fd = sys.stdin.fileno()
                except (AttributeError, ValueError, OSError):
                    raise FlowSourceError("-: standard input cannot be read.") from None
            else:
                try:
                    self._fd = os.open(self.name, os.O_RDONLY)
                except OSError as exc:
                    raise FlowSourceError(
                        f"{self.name}: cannot be read: {exc.strerror or exc}."
                    ) from None
                self._own_fd = True
        return self._fd

    def _watch_interrupts(self) -> None:
        """Take SIGINT while the stream is read. Python runs signal handlers on the main
        thread only, which may be blocked in a query that another thread feeds from this
        stream; so the signal also wakes the reader through a wake-up pipe."""
        if threading.current_thread() is not threading.main_thread():
            return
        with contextlib.suppress(ValueError, OSError):
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
            r, w = os.pipe()
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            self._previous_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            self._wakeup = (r, w)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        # The first Ctrl-C ends the stream, even when it has just ended by itself: in a
        # terminal the writer (``hubble observe``) gets the same Ctrl-C and closes the pipe
        # first. A second one stops the program.
        self._handled += 1
        if self._handled > 1:
            self._restore()
            raise KeyboardInterrupt
        if self.ended and not self.interrupted:
            _log.warning("Ctrl-C: the input has ended; going on with the records read (press "
                         "Ctrl-C again to stop).")
        self.interrupted = True
        if self.ended:
            self._restore()

    def _restore(self) -> None:
        """Give SIGINT back to its previous handler (from the main thread only)."""
        if self._previous is None:
            return
        with contextlib.suppress(ValueError, OSError):
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
            signal.set_wakeup_fd(self._previous_wakeup)
            if self._wakeup is not None:
                for fd in self._wakeup:
                    os.close(fd)
                self._wakeup = None

    def _finish(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._restore()
        if self._own_fd and self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        if self.interrupted:
            _log.warning(
                "%s: reading stopped by Ctrl-C after %s bytes; using the records read so far.",
                "standard input" if self.name == "-" else self.name,
                f"{self.read_total:,}",
            )

    def _wait(self, fd: int) -> bool:
        """Wait until ``fd`` has data or Ctrl-C came; False on Ctrl-C."""
        import select

        wakeup = self._wakeup
        while not self.interrupted:
            watched = [fd] if wakeup is None else [fd, wakeup[0]]
            try:
                ready, _, _ = select.select(watched, [], [], 0.25)
            except (OSError, ValueError):  # no select() for this file: a blocking read
                return True
            if wakeup is not None and wakeup[0] in ready:
                with contextlib.suppress(OSError):
                    if signal.SIGINT in os.read(wakeup[0], 64):
                        self.interrupted = True
                        return False
            if fd in ready:
                return True
        return False

    def chunk(self, size: int) -> bytes:
        """Up to ``size`` more bytes from the stream (b"" at its end or after Ctrl-C)."""
        if self.ended:
            return b""
        fd = self._open_fd()
        data = b""
        try:
            if self._wait(fd):
                data = os.read(fd, size)
        except KeyboardInterrupt:
            self.interrupted = True
        except OSError as exc:
            raise FlowSourceError(f"{self.name}: cannot be read: {exc.strerror or exc}.") from None
        if not data:
            self._finish()
            return b""
        self.read_total += len(data)
        return data


class _Replay(io.RawIOBase):
    """One opening of a :class:`_StreamSource`: the kept bytes, then the stream itself."""

    def __init__(self, source: _StreamSource) -> None:
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        source = self._source
        view = memoryview(buffer).cast("B")
        if self._pos < len(source.kept):
            n = min(len(view), len(source.kept) - self._pos)
            view[:n] = source.kept[self._pos : self._pos + n]
            self._pos += n
            return n
        if self._pos < source.read_total:
            raise FlowSourceError(
                f"{source.name}: a stream can be read only once; save it to a file first."
            )
        data = source.chunk(len(view))
        if not source.beyond and len(source.kept) + len(data) <= _REPLAY_BYTES:
            source.kept += data
        elif data:
            source.beyond = True
            source.kept = bytearray()  # the bytes before are gone for every later opening
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


#: Stream sources by name, for the run (a stream can be read once).
_STREAMS: dict[str, _StreamSource] = {}


def is_stream(path: str | os.PathLike[str]) -> bool:
    """True for ``-`` (standard input) and for pipes, FIFOs and character devices
    (``/dev/stdin``, ``<(command)``): sources read once, as they arrive."""
    text = os.fspath(path)
    if text == "-":
        return True
    try:
        mode = os.stat(text).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)


def _stream(path: Path) -> _StreamSource:
    key = str(path)
    source = _STREAMS.get(key)
    if source is None:
        source = _STREAMS[key] = _StreamSource(key)
    return source


def _open_stream(path: Path) -> BinaryIO:
    return cast(BinaryIO, io.BufferedReader(_Replay(_stream(path)), buffer_size=1 << 16))


def _url_hint(url: str) -> str:
    """What to do with an object-store URL given where local paths are read."""
    import importlib.util

    scheme = url.partition("://")[0].lower()
    package = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "abfs": "adlfs",
               "az": "adlfs", "abfss": "adlfs"}.get(scheme)
    missing = [
        name for name in ("dask", "fsspec", package)
        if name is not None and importlib.util.find_spec(name) is None
    ]
    install = ""
    if missing:
        extra = f" {package}" if package in missing else ""
        install = f" after installing it: pip install 'recommender[dask]'{extra}"
    return (
        f"{url}: object-store URLs are read by the Dask engine: add --engine dask{install} "
        "(the scheduled job, `recommend job`, reads s3:// on its own)."
    )


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files, folders (recursively) and glob patterns into a list of files.

    Files named directly come in the order given; a folder's or a pattern's files sorted.
    """
    return [p for p, _ in expand_paths_explicit(paths)]


def expand_paths_explicit(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[Path, bool]]:
    """Like :func:`expand_paths`, with whether each file was named directly (True) or found in
    a folder (False): a folder may hold other files, which are then passed over, not refused.

    Raises
    ------
    FlowSourceError
        When a path does not exist, a glob matches nothing, or nothing at all is given.
    """
    found: list[tuple[Path, bool]] = []
    for raw in paths:
        text = os.fspath(raw)
        path = Path(text)
        if "://" in text and not path.exists():
            raise FlowSourceError(_url_hint(text))
        if is_stream(text):
            found.append((path, True))
        elif path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and not _hidden(p.relative_to(path))
            )
            if not files:
                raise FlowSourceError(f"{text}: the folder holds no files.")
            found.extend((p, False) for p in files)
        elif path.is_file():
            found.append((path, True))
        elif glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                raise FlowSourceError(f"{text}: the pattern matches no file.")
            found.extend((p, True) for p in matches)
        elif path.exists():
            raise FlowSourceError(f"{text}: not a regular file or folder.")
        else:
            raise FlowSourceError(f"{text}: no such file or folder.")
    if not found:
        raise FlowSourceError("No flow file was given.")
    unique: dict[str, tuple[Path, bool]] = {}
    for p, explicit in found:
        unique.setdefault(str(p), (p, explicit))
    return list(unique.values())


def _compression(path: Path) -> str | None:
    try:
        with (_open_stream(path) if is_stream(path) else path.open("rb")) as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise FlowSourceError(f"{path}: cannot be read: {exc.strerror or exc}.") from None
    if magic.startswith(_GZIP):
        return "gzip"
    if magic.startswith(_ZSTD):
        return "zstd"
    return None


class _Gunzip(io.RawIOBase):
    """gzip decompression (every member) that hands out every byte it could decompress: a
    file that breaks off (a truncated copy) ends early, with :attr:`error` saying why, instead
    of failing a whole read and losing the complete lines before the break."""

    def __init__(self, fh: BinaryIO) -> None:
        import zlib

        self._zlib = zlib
        self._fh = fh
        self._d = zlib.decompressobj(31)
        self._started = False  # the current member has input
        self._out = memoryview(b"")
        self._done = False
        self.error: str | None = None

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._fh.close()
        super().close()

    def _fill(self) -> None:
        while not self._out and not self._done:
            data = self._fh.read(1 << 18)
            if not data:
                self._done = True
                if self._started and not self._d.eof:
                    self.error = "the file breaks off: Truncated compressed stream"
                return
            try:
                out = self._d.decompress(data)
                self._started = True
                while self._d.eof and self._d.unused_data:  # another gzip member follows
                    rest = self._d.unused_data
                    self._d = self._zlib.decompressobj(31)
                    out += self._d.decompress(rest)
            except self._zlib.error as exc:
                self._done = True
                self.error = f"the file breaks off: corrupt compressed data ({exc})"
                return
            if self._d.eof and not self._d.unused_data:
                self._started = False
            self._out = memoryview(out)

    def readinto(self, buffer: Any) -> int:
        self._fill()
        view = memoryview(buffer).cast("B")
        n = min(len(view), len(self._out))
        view[:n] = self._out[:n]
        self._out = self._out[n:]
        return n


def stream_error(fh: Any) -> str | None:
    """Why a stream from :func:`open_decompressed` ended early (a truncated gzip file), or None."""
    raw = getattr(fh, "raw", fh)
    return getattr(raw, "error", None)


def open_decompressed(path: Path) -> BinaryIO:
    """Open ``path`` for reading bytes, decompressing gzip or zstd (detected by magic bytes).

    A gzip file that breaks off reads as far as it can be decompressed; then
    :func:`stream_error` says so."""
    codec = _compression(path)
    try:
        if is_stream(path):
            stream = _open_stream(path)
            if codec is None:
                return stream
            if codec == "gzip":
                return cast(BinaryIO, io.BufferedReader(_Gunzip(stream), buffer_size=1 << 16))
            return cast(BinaryIO, pa.CompressedInputStream(pa.PythonFile(stream, "r"), codec))
        if codec is None:
            return path.open("rb")
        if codec == "gzip":
            raw_file = cast(BinaryIO, path.open("rb"))
            return cast(BinaryIO, io.BufferedReader(_Gunzip(raw_file), buffer_size=1 << 16))
        raw = pa.OSFile(str(path), "rb")
        return cast(BinaryIO, pa.CompressedInputStream(raw, codec))
    except (OSError, pa.ArrowException) as exc:
        raise FlowSourceError(f"{path}: cannot be opened: {exc}.") from None


def read_head(path: Path, size: int = 65536) -> bytes:
    """The first ``size`` decompressed bytes of ``path`` (fewer at the end of the file, or
    where a compressed stream breaks off)."""
    parts: list[bytes] = []
    got = 0
    with open_decompressed(path) as fh:
        while got < size:
            try:
                part = fh.read(min(16384, size - got))
            except (OSError, EOFError, pa.ArrowException):
                break
            if not part:
                break
            parts.append(part)
            got += len(part)
    return b"".join(parts)


def iter_line_chunks(
    path: Path, chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[int, list[bytes], str | None]]:
    """Yield ``(first_line_number, lines, error)`` for ``path`` in chunks of about ``chunk_bytes``.

    Lines keep their line terminator (JSON decoders ignore it); line numbers start at 1. When
    the compressed stream breaks off (a truncated gzip file, say), the last item carries an
    ``error`` text; the caller records it in the ledger and goes on with the next file.
    """
    line_no = 1
    with open_decompressed(path) as fh:
        # pyarrow's decompressing streams have no readlines(): buffer them.
        stream = io.BufferedReader(fh) if isinstance(fh, pa.NativeFile) else fh
        while True:
            try:
                lines = stream.readlines(chunk_bytes)
            except (OSError, EOFError, pa.ArrowException) as exc:
                yield line_no, [], f"the file breaks off: {exc}"
                return
            if lines and not lines[-1].endswith(b"\n") and stream_error(stream) is not None:
                lines.pop()  # the unfinished line where a compressed file breaks off
            if not lines:
                error = stream_error(stream)
                if error is not None:
                    yield line_no, [], error
                return
            yield line_no, lines, None
            line_no += len(lines)
