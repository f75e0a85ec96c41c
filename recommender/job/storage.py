"""Local paths and S3-compatible object storage behind one interface: pyarrow file systems.

:func:`open_location` turns a path or URI (``/data/flows``, ``file:///data/flows``,
``s3://bucket/prefix``) into a :class:`Location`: a :class:`pyarrow.fs.FileSystem` and the path
within it. The rest of the module works on any pyarrow file system: list the files under a
folder (:func:`list_files`), list a rolling window of date partitions (:func:`window_partitions`,
:func:`list_window`), copy objects to a local folder (:func:`fetch`) and a local folder back
(:func:`upload_tree`), read and write one object.

Credentials are never part of a configuration file: S3 uses the AWS SDK's default chain
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, or a web identity token such as
EKS IRSA's ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``). An S3-compatible service (MinIO,
Ceph, ...) is reached through ``endpoint_url`` (or ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``), with path-style addressing.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from ..errors import ConfigError, StorageError

__all__ = [
    "Location",
    "StorageOptions",
    "delete_dir",
    "fetch",
    "list_files",
    "list_window",
    "open_location",
    "read_bytes",
    "upload_tree",
    "window_partitions",
    "write_bytes",
]


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage (never credentials: those come from the environment).

    Attributes
    ----------
    endpoint_url
        An S3-compatible endpoint such as ``http://minio.storage:9000``; None uses
        ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` when set, else AWS itself.
    region
        The bucket's region; None uses ``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (else
        ``us-east-1``).
    anonymous
        Connect without credentials (public buckets).
    """

    endpoint_url: str | None = None
    region: str | None = None
    anonymous: bool = False


@dataclass(frozen=True)
class Location:
    """A folder or object prefix: a pyarrow file system and the path within it.

    Attributes
    ----------
    filesystem
        The pyarrow file system.
    path
        The path within it (``bucket/prefix`` for S3, an absolute path for local files),
        without a trailing slash.
    uri
        The URI or path given, for messages and reports.
    """

    filesystem: pafs.FileSystem
    path: str
    uri: str

    @property
    def is_local(self) -> bool:
        """True for the local file system."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)

    def join(self, *parts: str) -> str:
        """``path/part/...`` within the file system."""
        return posixpath.join(self.path, *parts)

    def child(self, *parts: str) -> Location:
        """The location ``path/part/...``."""
        return Location(
            self.filesystem, self.join(*parts), posixpath.join(self.uri.rstrip("/"), *parts)
        )


def open_location(uri: str | os.PathLike[str], options: StorageOptions | None = None) -> Location:
    """The :class:`Location` of a local path, a ``file://`` URI or an ``s3://bucket/prefix`` URI.

    Parameters
    ----------
    uri : str or path
        Where the folder or prefix is.
    options : StorageOptions, optional
        Endpoint and region for ``s3://`` URIs.

    Returns
    -------
    Location

    Raises
    ------
    ConfigError
        For an unsupported scheme or an S3 URI without a bucket.
    StorageError
        If the S3 client cannot be created.

    Examples
    --------
    >>> loc = open_location("/data/flows")
    >>> loc.path, loc.is_local
    ('/data/flows', True)
    """
    text = os.fspath(uri)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        local = parts.path if scheme == "file" else text
        path = Path(local).expanduser().absolute().as_posix().rstrip("/") or "/"
        return Location(pafs.LocalFileSystem(), path, text)
    if scheme not in ("s3", "s3a"):
        raise ConfigError(
            f"{text}: unsupported storage scheme {parts.scheme!r}; use a local path, file:// "
            "or s3:// (S3-compatible object storage)."
        )
    if not parts.netloc:
        raise ConfigError(f"{text}: an S3 URI needs a bucket: s3://BUCKET/PREFIX.")
    path = posixpath.normpath(f"{parts.netloc}/{parts.path.strip('/')}").rstrip("/")
    return Location(_s3(options or StorageOptions()), path, text)


def _s3(options: StorageOptions) -> pafs.FileSystem:
    """A pyarrow S3 file system for ``options`` (endpoint and region from the environment when
    not given)."""
    endpoint = (
        options.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    region = (
        options.region
        or os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or "us-east-1"
    )
    kwargs: dict[str, object] = {"region": region, "anonymous": options.anonymous}
    if endpoint:
        parsed = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigError(
                f"endpoint_url {endpoint!r} must be http(s)://HOST[:PORT] of an S3-compatible "
                "service."
            )
        kwargs["endpoint_override"] = parsed.netloc
        kwargs["scheme"] = parsed.scheme
        kwargs["force_virtual_addressing"] = False
    try:
        return pafs.S3FileSystem(**kwargs)
    except (pa.ArrowException, OSError) as exc:
        raise StorageError(f"Cannot create the S3 client: {exc}") from None


def _error(what: str, where: str, exc: BaseException) -> StorageError:
    return StorageError(f"{where}: cannot {what}: {exc}")


def list_files(location: Location) -> list[tuple[str, int]]:
    """Every file under ``location`` (recursively) as ``(path, size)``, sorted by path.

    Hidden files and folders (a part starting with ``.``) are passed over. A missing folder
    lists as empty.

    Raises
    ------
    StorageError
        If the file system cannot be listed (unreachable endpoint, no permission).
    """
    selector = pafs.FileSelector(location.path, recursive=True, allow_not_found=True)
    try:
        infos = location.filesystem.get_file_info(selector)
    except (pa.ArrowException, OSError) as exc:
        raise _error("list files", location.uri, exc) from None
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        relative = posixpath.relpath(info.path, location.path)
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        out.append((info.path, int(info.size or 0)))
    return sorted(out)


def window_partitions(pattern: str, as_of: date, days: int) -> list[tuple[date, str]]:
    """The partition folders of the ``days`` days ending with ``as_of`` (inclusive), oldest first.

    Parameters
    ----------
    pattern : str
        A :func:`~datetime.date.strftime` pattern of one day's folder relative to the root,
        such as ``date=%Y-%m-%d`` or ``%Y/%m/%d``.
    as_of : date
        The last day of the window.
    days : int
        The window's length in days (>= 1).

    Examples
    --------
    >>> window_partitions("date=%Y-%m-%d", date(2026, 1, 2), 2)
    [(datetime.date(2026, 1, 1), 'date=2026-01-01'), (datetime.date(2026, 1, 2), 'date=2026-01-02')]
    """
    if days < 1:
        raise ConfigError(f"window_days must be at least 1, not {days}.")
    out = []
    for back in range(days - 1, -1, -1):
        day = as_of - timedelta(days=back)
        folder = day.strftime(pattern).strip("/")
        if not folder or ".." in folder.split("/"):
            raise ConfigError(f"partition pattern {pattern!r} gives the folder {folder!r}.")
        out.append((day, folder))
    return out


def list_window(
    location: Location, pattern: str | None, as_of: date, days: int
) -> list[tuple[str, int]]:
    """The files of a rolling window of date partitions under ``location``.

    With ``pattern`` None, every file under ``location``. Missing partitions list as empty
    (a day without flows).
    """
    if pattern is None:
        return list_files(location)
    out: list[tuple[str, int]] = []
    for _day, folder in window_partitions(pattern, as_of, days):
        out.extend(list_files(location.child(folder)))
    return out


def _safe_relative(path: str, root: str) -> str:
    """``path`` relative to ``root``, refusing anything that could leave a local folder."""
    relative = posixpath.relpath(path, root)
    parts = relative.split("/")
    if relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise StorageError(f"{path}: the object name cannot be used as a local file name.")
    return relative


def fetch(location: Location, paths: Iterable[str], into: Path) -> list[Path]:
    """Copy files under ``location`` into the local folder ``into``, keeping their relative
    paths; returns the local paths in the order given.

    Raises
    ------
    StorageError
        If an object cannot be read or names a path outside ``into``.
    """
    local_fs = pafs.LocalFileSystem()
    out = []
    for path in paths:
        target = into.joinpath(*_safe_relative(path, location.path).split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            pafs.copy_files(
                path,
                target.as_posix(),
                source_filesystem=location.filesystem,
                destination_filesystem=local_fs,
            )
        except (pa.ArrowException, OSError) as exc:
            raise _error("copy", f"{location.uri} ({path})", exc) from None
        out.append(target)
    return out


def upload_tree(source: Path, location: Location) -> list[str]:
    """Copy every file of the local folder ``source`` to ``location`` (sorted; relative paths
    kept); returns the paths written."""
    written = []
    for file in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = file.relative_to(source).as_posix()
        write_bytes(location.child(relative), file.read_bytes())
        written.append(location.join(relative))
    return written


def read_bytes(location: Location) -> bytes | None:
    """The content of one file, or None when it does not exist."""
    try:
        info = location.filesystem.get_file_info(location.path)
        if info.type != pafs.FileType.File:
            return None
        with location.filesystem.open_input_stream(location.path) as stream:
            return bytes(stream.read())
    except (pa.ArrowException, OSError) as exc:
        raise _error("read", location.uri, exc) from None


def write_bytes(location: Location, data: bytes) -> None:
    """Write one file (an object PUT on S3: atomic for a reader of that object)."""
    try:
        parent = posixpath.dirname(location.path)
        if location.is_local and parent:
            location.filesystem.create_dir(parent, recursive=True)
        with location.filesystem.open_output_stream(location.path) as stream:
            stream.write(data)
    except (pa.ArrowException, OSError) as exc:
        raise _error("write", location.uri, exc) from None


def delete_dir(location: Location) -> None:
    """Delete a folder or prefix and everything under it (missing is fine)."""
    try:
        info = location.filesystem.get_file_info(location.path)
        if info.type != pafs.FileType.NotFound:
            location.filesystem.delete_dir(location.path)
    except (pa.ArrowException, OSError) as exc:
        raise _error("delete", location.uri, exc) from None
