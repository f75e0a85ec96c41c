"""Finding input files, opening them (plain, gzip, zstd) and cutting them into lines."""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

import pyarrow as pa

from ..errors import FlowSourceError

__all__ = [
    "expand_paths",
    "expand_paths_explicit",
    "iter_line_chunks",
    "open_decompressed",
    "read_head",
]

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
CHUNK_BYTES = 4 << 20


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
        if path.is_dir():
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
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise FlowSourceError(f"{path}: cannot be read: {exc.strerror or exc}.") from None
    if magic.startswith(_GZIP):
        return "gzip"
    if magic.startswith(_ZSTD):
        return "zstd"
    return None


def open_decompressed(path: Path) -> BinaryIO:
    """Open ``path`` for reading bytes, decompressing gzip or zstd (detected by magic bytes)."""
    codec = _compression(path)
    try:
        if codec is None:
            return path.open("rb")
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
            if not lines:
                return
            yield line_no, lines, None
            line_no += len(lines)
