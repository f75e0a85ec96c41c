"""Write rendered manifests as a kustomize tree, atomically, or as one YAML stream.

The tree is ``<out>/<namespace>/<name>.yaml`` (one manifest per file), a
``<out>/<namespace>/kustomization.yaml`` listing them, a top-level ``<out>/kustomization.yaml``
listing the namespace folders, any extra files (reports) at the top level, and a marker file
``.recommender-output`` that says the folder is ours to replace.

The whole tree is built in a hidden sibling folder and swapped into place with renames, so a
failure part-way leaves the previous tree as it was. A non-empty folder without the marker is
never replaced: it may hold the user's own files.

:class:`TreeWriter` does the same in two steps: the policy files are written into the hidden
folder in the background while the caller still computes the reports, then the reports are
added and the folder swapped in, with the same guarantees. A large tree is rendered and written
by a forked child process (:mod:`recommender._forked`), on the other core: rendering YAML holds
the GIL, so a thread would only take turns with the caller. A small one is written by a
thread (creating a file is kernel time, during which the thread does not hold the GIL).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

from .._forked import Forked, can_fork, forked
from ..errors import ConfigError, SynthesisError
from ._names import is_dns1123_label, is_dns1123_subdomain
from ._yaml import dump_yaml

__all__ = [
    "CLUSTER_FOLDER",
    "GUARDRAILS_FOLDER",
    "STAGED_FOLDER",
    "MARKER_FILE",
    "TreeWriter",
    "write_policy_tree",
    "write_policy_trees",
    "write_yaml_stream",
]

logger = logging.getLogger(__name__)

#: Present at the top of every tree written here; its absence protects foreign folders.
MARKER_FILE: Final = ".recommender-output"
_MARKER_TEXT: Final = (
    "This folder is written by recommender and replaced as a whole on every run.\n"
    "Do not keep your own files here.\n"
)
_KUSTOMIZATION: Final = "kustomization.yaml"
#: The folder (and ``manifests_by_namespace`` key) of cluster-scoped manifests (Calico Tier,
#: GlobalNetworkPolicy, CiliumClusterwideNetworkPolicy ...): never a namespace, which is a
#: DNS-1123 label.
CLUSTER_FOLDER: Final = "_cluster"
#: The folder (and ``manifests_by_namespace`` key) of rendered guardrails, cluster-scoped too
#: (``docs/guardrails.md``); like ``_cluster`` it can never be a namespace's name.
GUARDRAILS_FOLDER: Final = "_guardrails"
#: The folder of policies under a staged rollout that the cluster cannot evaluate staged
#: (Kubernetes NetworkPolicy; Cilium, whose audit mode is set per endpoint): a kustomize tree of
#: its own that the top kustomization does not list, so ``kubectl apply -k`` leaves it out.
STAGED_FOLDER: Final = "_staged"
_CLUSTER_FOLDERS: Final = (CLUSTER_FOLDER, GUARDRAILS_FOLDER)
#: Files from which :class:`TreeWriter` writes in a child process rather than a thread.
FORK_MIN_FILES: Final = 200
#: Longest file name most file systems accept (bytes; names here are ASCII).
_NAME_MAX: Final = 255


def write_yaml_stream(manifests: list[dict[str, Any]]) -> str:
    """All manifests as one ``---``-separated YAML stream (for ``--dry-run``).

    Parameters
    ----------
    manifests : list of dict
        Rendered manifests, in the order to print them.

    Returns
    -------
    str
        The YAML text, ending with a newline (``""`` for no manifests).

    Examples
    --------
    >>> print(write_yaml_stream([{"kind": "A"}, {"kind": "B"}]), end="")
    kind: A
    ---
    kind: B
    """
    return dump_yaml(manifests)


def write_policy_tree(
    manifests_by_namespace: Mapping[str, list[dict[str, Any]]],
    out_dir: Path,
    *,
    extra_files: Mapping[str, bytes | str] | None = None,
    staged: Mapping[str, list[dict[str, Any]]] | None = None,
) -> list[Path]:
    """Write manifests as a kustomize tree under ``out_dir``, replacing any tree written before.

    Parameters
    ----------
    manifests_by_namespace : mapping of str to list of dict
        Namespaced manifests grouped by namespace; each manifest's ``metadata.namespace`` must
        equal its key. A namespace with no manifests gets no folder.
    out_dir : Path
        The folder to create or replace. An existing folder is replaced only if it is empty or
        holds the ``.recommender-output`` marker of an earlier run.
    extra_files : mapping of str to bytes or str, optional
        Files for the top level, such as ``report.json``; names must be DNS-1123 subdomains
        (lowercase, digits, ``-`` and ``.``). Text is written as UTF-8.
    staged : mapping of str to list of dict, optional
        Manifests by namespace written under :data:`STAGED_FOLDER`, a tree the top
        kustomization does not list (a staged rollout's policies that the cluster cannot
        evaluate without enforcing them).

    Returns
    -------
    list of Path
        Every file written (under ``out_dir``, the marker included), sorted.

    Raises
    ------
    SynthesisError
        If a namespace, manifest name or extra file name is not a valid, unique file name
        built from DNS-1123 names, or a manifest sits under the wrong namespace.
    ConfigError
        If ``out_dir`` is a file, a symbolic link, or a non-empty folder not written by this
        function.
    OSError
        If the file system refuses; the previous tree is then left in place.

    Examples
    --------
    >>> import tempfile
    >>> manifest = {"kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "shop"}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_policy_tree({"shop": [manifest]}, Path(tmp) / "out")
    ...     [p.relative_to(tmp).as_posix() for p in paths]
    ['out/.recommender-output', 'out/kustomization.yaml', 'out/shop/kustomization.yaml', 'out/shop/web.yaml']
    """  # noqa: E501
    files = _plan(manifests_by_namespace, extra_files or {})
    if staged:
        _plan_tree(files, (STAGED_FOLDER,), staged)
    return _write(files, out_dir)


def write_policy_trees(
    trees: Mapping[str, Mapping[str, list[dict[str, Any]]]],
    out_dir: Path,
    *,
    extra_files: Mapping[str, bytes | str] | None = None,
    staged: Mapping[str, Mapping[str, list[dict[str, Any]]]] | None = None,
) -> list[Path]:
    """Write one kustomize tree per dialect into sub-folders of ``out_dir``.

    With one tree this is :func:`write_policy_tree` (the tree at the top); with several, each
    goes to ``out_dir/<key>/`` (``kubernetes/``, ``calico/``, ``cilium/``) with its own
    kustomization, there is no top-level kustomization (the dialects are alternatives, never
    applied together), and ``extra_files`` sit at the top. Same guarantees: names checked
    first, the whole folder replaced atomically, foreign folders refused.

    Parameters
    ----------
    trees : mapping of str to mapping of str to list of dict
        Per dialect (a DNS-1123 label), the manifests by namespace (cluster-scoped ones under
        :data:`CLUSTER_FOLDER`).
    out_dir : Path
        The folder to create or replace.
    extra_files : mapping of str to bytes or str, optional
        Files for the top level (reports).
    staged : mapping of str to mapping of str to list of dict, optional
        Per dialect, manifests by namespace for its unlisted :data:`STAGED_FOLDER`.

    Returns
    -------
    list of Path
        Every file written, sorted.

    Examples
    --------
    >>> import tempfile
    >>> m = {"kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "shop"}}
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_policy_trees({"calico": {"shop": [m]}, "kubernetes": {"shop": [m]}},
    ...                                Path(tmp) / "out")
    ...     [p.relative_to(tmp).as_posix() for p in paths][:3]
    ['out/.recommender-output', 'out/calico/kustomization.yaml', 'out/calico/shop/kustomization.yaml']
    """  # noqa: E501
    files, taken = _plan_trees(trees, staged or {})
    _plan_extra(files, extra_files or {}, taken)
    return _write(files, out_dir)


def _plan_trees(
    trees: Mapping[str, Mapping[str, list[dict[str, Any]]]],
    staged: Mapping[str, Mapping[str, list[dict[str, Any]]]],
) -> tuple[dict[tuple[str, ...], _Content], list[str]]:
    """The files of :func:`write_policy_trees` but the extra ones, all names checked, and the
    top-level names extra files may not take."""
    files: dict[tuple[str, ...], _Content]
    if len(trees) == 1:
        ((key, only),) = trees.items()
        files = _plan(only, {})
        if staged.get(key):
            _plan_tree(files, (STAGED_FOLDER,), staged[key])
        return files, list(only)
    files = {(MARKER_FILE,): _MARKER_TEXT}
    for key in sorted(trees):
        if not is_dns1123_label(key):
            raise SynthesisError(f"Dialect folder name {key!r} is not a DNS-1123 label.")
        _plan_tree(files, (key,), trees[key])
        if staged.get(key):
            _plan_tree(files, (key, STAGED_FOLDER), staged[key])
    return files, list(trees)


class TreeWriter:
    """:func:`write_policy_trees` in two steps, the policy files written in the background.

    :meth:`start` checks every name and begins writing the trees into a hidden sibling of
    ``out_dir`` on a background thread; :meth:`finish` adds the extra files (the reports, which
    the caller computes meanwhile), waits for the thread and swaps the folder into place. Until
    then nothing at ``out_dir`` changes: :meth:`abort` (or leaving the ``with`` block by an
    exception, Ctrl-C included) stops the thread and deletes the hidden folder. The files and
    their bytes are those :func:`write_policy_trees` writes.

    Examples
    --------
    >>> import tempfile
    >>> m = {"kind": "NetworkPolicy", "metadata": {"name": "web", "namespace": "shop"}}
    >>> with tempfile.TemporaryDirectory() as tmp, TreeWriter(Path(tmp) / "out") as tree:
    ...     tree.start({"kubernetes": {"shop": [m]}})
    ...     paths = tree.finish({"report.md": "# Report\\n"})
    ...     [p.relative_to(tmp).as_posix() for p in paths]
    ['out/.recommender-output', 'out/kustomization.yaml', 'out/report.md', 'out/shop/kustomization.yaml', 'out/shop/web.yaml']
    """  # noqa: E501

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        _check_target(self.out_dir)  # early: a folder that may not be replaced is refused now
        self._files: dict[tuple[str, ...], _Content] = {}
        self._taken: list[str] = []
        self._tmp: Path | None = None
        self._thread: threading.Thread | None = None
        self._child: Forked[None] | None = None
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._done = False

    def __enter__(self) -> TreeWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._done:
            self.abort()

    def start(
        self,
        trees: Mapping[str, Mapping[str, list[dict[str, Any]]]],
        staged: Mapping[str, Mapping[str, list[dict[str, Any]]]] | None = None,
    ) -> None:
        """Check the names and the target, then start writing the trees (as
        :func:`write_policy_trees` lays them out) in the background."""
        if self._tmp is not None:
            raise RuntimeError("TreeWriter.start was called twice.")
        self._files, self._taken = _plan_trees(trees, staged or {})
        self._tmp = _staging_folder(self.out_dir)
        files = list(self._files.items())
        if len(files) >= FORK_MIN_FILES and can_fork():
            # Rendering YAML holds the GIL: a child process renders and writes on the other
            # core, where a thread would take turns with the caller's report.
            self._child = forked(_write_files, self._tmp, files, None)
            return
        self._thread = threading.Thread(
            target=self._run, args=(self._tmp, files), name="recommender-writer", daemon=True
        )
        self._thread.start()

    def _run(self, tmp: Path, files: list[tuple[tuple[str, ...], _Content]]) -> None:
        try:
            _write_files(tmp, files, self._stop)
        except BaseException as exc:  # handed to the caller by finish()
            self._error = exc

    def finish(self, extra_files: Mapping[str, bytes | str] | None = None) -> list[Path]:
        """Add ``extra_files`` at the top, wait for the trees, swap the folder into place;
        returns every file written, sorted (as :func:`write_policy_trees` does)."""
        if self._tmp is None or (self._thread is None and self._child is None):
            raise RuntimeError("TreeWriter.finish needs start first.")
        planned = dict(self._files)
        try:
            _plan_extra(planned, extra_files or {}, self._taken)
        except BaseException:
            self.abort()
            raise
        extra = {k: v for k, v in planned.items() if k not in self._files}
        try:
            if self._child is not None:
                self._child.result()  # a child that failed is done again here, and raises
            if self._thread is not None:
                self._thread.join()
            if self._error is not None:
                raise self._error
            _write_files(self._tmp, list(extra.items()), None)
            _swap(self._tmp, self.out_dir)
        except BaseException:
            self.abort()
            raise
        self._done = True
        return sorted(self.out_dir.joinpath(*r) for r in [*self._files, *extra])

    def abort(self) -> None:
        """Stop writing and delete the hidden folder; ``out_dir`` stays as it was."""
        self._done = True
        self._stop.set()
        if self._child is not None:
            self._child.cancel()
        if self._thread is not None:
            self._thread.join()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)


def _write(files: dict[tuple[str, ...], _Content], out_dir: Path) -> list[Path]:
    """Write planned ``files`` under ``out_dir`` through a temporary sibling and a swap."""
    tmp = _staging_folder(out_dir)
    try:
        _write_files(tmp, list(files.items()), None)
        _swap(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return sorted(out_dir.joinpath(*relative) for relative in files)


def _staging_folder(out_dir: Path) -> Path:
    """Check ``out_dir`` may be replaced, then make the hidden sibling the tree is built in."""
    _check_target(out_dir)
    parent = out_dir.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".{out_dir.name}.tmp-{secrets.token_hex(6)}"
    tmp.mkdir()
    return tmp


def _write_files(
    tmp: Path,
    files: list[tuple[tuple[str, ...], _Content]],
    stop: threading.Event | None,
) -> None:
    """Write ``files`` under ``tmp`` (folders made as needed); stop early when ``stop`` is set."""
    root = tmp.resolve()
    made: set[tuple[str, ...]] = set()
    for relative, content in files:
        if stop is not None and stop.is_set():
            return
        folder = relative[:-1]
        if folder not in made:
            path = tmp.joinpath(*relative)
            if not path.resolve().is_relative_to(root):  # pragma: no cover - names are checked
                raise SynthesisError(f"The output path {path} would leave {tmp}.")
            tmp.joinpath(*folder).mkdir(parents=True, exist_ok=True)
            made.add(folder)
        data = content() if callable(content) else content
        raw = data.encode("utf-8") if isinstance(data, str) else data
        fd = os.open(
            os.path.join(tmp, *relative), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o666
        )
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)


#: How each file is opened: as ``Path.write_bytes`` does (binary, not inherited by children).
_O_CLOEXEC: Final = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


#: File content: bytes, text, or YAML rendered only when the file is written.
_Content = bytes | str | Callable[[], str]


def _plan(
    manifests_by_namespace: Mapping[str, list[dict[str, Any]]],
    extra_files: Mapping[str, bytes | str],
) -> dict[tuple[str, ...], _Content]:
    """Every file of the tree as relative path parts → content, all names checked first."""
    files: dict[tuple[str, ...], _Content] = {(MARKER_FILE,): _MARKER_TEXT}
    _plan_tree(files, (), manifests_by_namespace)
    _plan_extra(files, extra_files, manifests_by_namespace)
    return files


def _plan_tree(
    files: dict[tuple[str, ...], _Content],
    prefix: tuple[str, ...],
    manifests_by_namespace: Mapping[str, list[dict[str, Any]]],
) -> None:
    """Add one kustomize tree (a folder per namespace and a kustomization) under ``prefix``."""
    folders: list[str] = []
    for namespace in sorted(manifests_by_namespace):
        manifests = manifests_by_namespace[namespace]
        if namespace in _CLUSTER_FOLDERS:
            pass
        elif not is_dns1123_label(namespace):
            raise SynthesisError(
                f"Namespace {namespace!r} is not a DNS-1123 label, so it cannot name an output "
                "folder."
            )
        if not manifests:
            continue
        names: list[str] = []
        for manifest in manifests:
            file_name = _manifest_file_name(manifest, namespace)
            if (*prefix, namespace, file_name) in files:
                raise SynthesisError(
                    f"Two manifests in namespace {namespace!r} would both be written to "
                    f"{file_name}; manifest names must be unique within a namespace."
                )
            files[(*prefix, namespace, file_name)] = _lazy_dump(manifest)
            names.append(file_name)
        files[(*prefix, namespace, _KUSTOMIZATION)] = _lazy_dump(_kustomization(sorted(names)))
        folders.append(namespace)
    files[(*prefix, _KUSTOMIZATION)] = _lazy_dump(_kustomization(folders))


def _plan_extra(
    files: dict[tuple[str, ...], _Content],
    extra_files: Mapping[str, bytes | str],
    taken: Iterable[str],
) -> None:
    """Add the top-level extra files, refusing names of folders or files already planned."""
    taken = set(taken)
    for name, content in sorted(extra_files.items()):
        if (
            not is_dns1123_subdomain(name)
            or len(name) > _NAME_MAX
            or name in taken
            or (name,) in files
        ):
            raise SynthesisError(
                f"Extra file name {name!r} must be a lowercase DNS-1123 subdomain such as "
                "'report.json' that is not a namespace folder or kustomization.yaml."
            )
        files[(name,)] = content


def _manifest_file_name(manifest: dict[str, Any], namespace: str) -> str:
    """``<metadata.name>.yaml`` after checking the name and namespace."""
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    actual_namespace = metadata.get("namespace") if isinstance(metadata, dict) else None
    if namespace in _CLUSTER_FOLDERS and actual_namespace is None:
        actual_namespace = namespace
    if not isinstance(name, str) or not is_dns1123_subdomain(name):
        raise SynthesisError(
            f"A manifest in namespace {namespace!r} has name {name!r}, which is not a DNS-1123 "
            "subdomain, so it cannot name an output file."
        )
    if actual_namespace != namespace:
        raise SynthesisError(
            f"Manifest {name!r} has namespace {actual_namespace!r} but was given under "
            f"namespace {namespace!r}."
        )
    file_name = f"{name}.yaml"
    if file_name == _KUSTOMIZATION or len(file_name) > _NAME_MAX:
        raise SynthesisError(
            f"Manifest name {name!r} in namespace {namespace!r} cannot be a file name here "
            f"(it is reserved or longer than {_NAME_MAX - 5} characters)."
        )
    return file_name


def _kustomization(resources: list[str]) -> dict[str, Any]:
    """A kustomization listing ``resources``."""
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
    }


def _lazy_dump(doc: dict[str, Any]) -> Callable[[], str]:
    """Dump ``doc`` when its file is written (so a failing dump leaves a partial temp tree)."""
    return lambda: dump_yaml([doc])


def _check_target(out_dir: Path) -> None:
    """Refuse to replace anything that is not an empty folder or a tree of ours."""
    if out_dir.is_symlink():
        raise ConfigError(
            f"The output folder {out_dir} is a symbolic link; give the real folder instead."
        )
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise ConfigError(f"The output path {out_dir} exists and is not a folder.")
    if (out_dir / MARKER_FILE).is_file():
        return
    if any(out_dir.iterdir()):
        raise ConfigError(
            f"The output folder {out_dir} is not empty and was not written by recommender "
            f"(no {MARKER_FILE} file); choose an empty or new folder so no file of yours is "
            "deleted."
        )


def _swap(tmp: Path, out_dir: Path) -> None:
    """Move the finished tree ``tmp`` to ``out_dir``, through a backup of the old tree."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    backup = out_dir.parent / f".{out_dir.name}.old-{secrets.token_hex(6)}"
    os.rename(out_dir, backup)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(backup, out_dir)
        raise
    try:
        shutil.rmtree(backup)
    except OSError as exc:  # the new tree is in place; a leftover backup is only clutter
        logger.warning("Could not delete the previous output %s: %s", backup, exc)
