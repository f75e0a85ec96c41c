"""Commit a policy tree to a branch of a git repository and push it (GitOps).

:func:`publish_tree` fetches the branch (or starts it when the remote has no such branch),
replaces one folder of the repository with the tree, commits only when something changed, and
pushes. Argo CD or Flux then apply the folder. It drives the ``git`` command line, so every
git transport and credential mechanism works unchanged (SSH keys through ``GIT_SSH_COMMAND``,
HTTPS through a credential helper); nothing is prompted for (``GIT_TERMINAL_PROMPT=0``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import ConfigError, GitOpsError

__all__ = ["GitTarget", "publish_tree"]

logger = logging.getLogger("recommender.gitops")  # the name its log lines have always carried

#: Seconds any one git command may take.
_TIMEOUT = 300


@dataclass(frozen=True)
class GitTarget:
    """Where the policy tree goes.

    Attributes
    ----------
    url
        The repository: any URL or path ``git clone`` accepts.
    branch
        The branch to commit to (created from nothing when the remote lacks it).
    path
        The folder within the repository that holds the tree; replaced as a whole.
    author_name, author_email
        The commits' author and committer.
    push
        Push the commit (False: commit in the local checkout only, for trying things out).
    promote
        ``all``: commit every namespace's policies; ``stable``: only those of namespaces whose
        lifecycle status is ``stable`` (the others keep what the repository holds).
    """

    url: str
    branch: str = "recommendations"
    path: str = "network-policies"
    author_name: str = "recommender"
    author_email: str = "recommender@localhost"
    push: bool = True
    promote: str = "all"

    def __post_init__(self) -> None:
        if self.promote not in ("all", "stable"):
            raise ConfigError(f"gitops.promote must be 'all' or 'stable', not {self.promote!r}.")
        if not self.url:
            raise ConfigError("gitops.url must name a repository.")
        if not re.fullmatch(r"[A-Za-z0-9._/-]+", self.branch) or self.branch.startswith(
            ("-", "/")
        ) or ".." in self.branch:
            raise ConfigError(f"gitops.branch {self.branch!r} is not a usable branch name.")
        parts = PurePosixPath(self.path).parts
        if (
            not parts
            or PurePosixPath(self.path).is_absolute()
            or any(p in ("..", ".", ".git") for p in parts)
        ):
            raise ConfigError(
                f"gitops.path {self.path!r} must be a relative folder inside the repository."
            )


def _redact(text: str) -> str:
    """``text`` with any ``user:password@`` of a URL hidden."""
    return re.sub(r"(?<=://)[^/@\s]+@", "***@", text)


def _git(
    args: list[str], cwd: Path, *, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            input=input,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise GitOpsError("The git command is not installed.") from None
    except subprocess.TimeoutExpired:
        raise GitOpsError(f"git {args[0]} took longer than {_TIMEOUT} s.") from None


def _check(result: subprocess.CompletedProcess[str], what: str) -> str:
    if result.returncode != 0:
        text = (result.stderr or result.stdout).strip()
        detail = _redact(text.splitlines()[-1]) if text else f"exit status {result.returncode}"
        raise GitOpsError(f"git could not {what}: {detail}")
    return result.stdout


def _checkout(target: GitTarget, checkout: Path) -> bool:
    """A fresh checkout of the branch in ``checkout``; False when the branch is new."""
    if checkout.exists():
        shutil.rmtree(checkout)
    checkout.mkdir(parents=True)
    _check(_git(["init", "-q"], checkout), "create a work tree")
    heads = _check(
        _git(["ls-remote", "--heads", "--", target.url, target.branch], checkout),
        f"reach {_redact(target.url)}",
    )
    if not heads.strip():
        _check(_git(["checkout", "-q", "--orphan", target.branch], checkout), "start the branch")
        return False
    _check(
        _git(["fetch", "-q", "--depth", "1", "--", target.url, f"refs/heads/{target.branch}"],
             checkout),
        f"fetch branch {target.branch}",
    )
    _check(_git(["checkout", "-q", "-B", target.branch, "FETCH_HEAD"], checkout), "check out")
    return True


def _replace(tree: Path, folder: Path) -> None:
    """Make ``folder`` hold exactly the files of ``tree``."""
    if folder.is_symlink() or folder.is_file():
        folder.unlink()
    elif folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(tree, folder, symlinks=False)


def publish_tree(
    tree: Path,
    target: GitTarget,
    work_dir: Path,
    message: str,
    *,
    keep: Collection[str] = (),
    finish: Callable[[Path], None] | None = None,
) -> str | None:
    """Commit ``tree`` as ``target.path`` on ``target.branch`` and push it.

    Parameters
    ----------
    tree : Path
        A local folder: the files the repository folder should hold.
    target : GitTarget
        Repository, branch, folder, author.
    work_dir : Path
        A scratch folder for the checkout (``work_dir/checkout`` is replaced).
    message : str
        The commit message (first line: the summary).
    keep : collection of str, optional
        Names of entries of the repository folder to carry over as they are (instead of taking
        them from ``tree``): for example namespace folders whose new policies are held back.
    finish : callable, optional
        Called with the assembled folder (``tree`` plus the kept entries) before it is
        committed, to rewrite files that list its content (a kustomization).

    Returns
    -------
    str or None
        The new commit's hash, or None when the folder already held exactly ``tree`` (no
        commit, nothing pushed).

    Raises
    ------
    GitOpsError
        If git fails (unreachable remote, rejected push, ...). A push rejected because the
        branch moved meanwhile is retried once on the new branch head.
    """
    checkout = work_dir / "checkout"
    for attempt in (1, 2):
        _checkout(target, checkout)
        folder = checkout.joinpath(*PurePosixPath(target.path).parts)
        if not folder.parent.resolve().is_relative_to(checkout.resolve()):
            raise GitOpsError(
                f"gitops.path {target.path!r} leads out of the repository through a symbolic "
                "link in the branch; choose another folder."
            )
        source = tree
        if keep or finish is not None:
            source = work_dir / "assembled"
            if source.exists():
                shutil.rmtree(source)
            shutil.copytree(tree, source, symlinks=False)
            for name in sorted(keep):
                old = folder / name
                if name in ("", ".", "..") or "/" in name or not old.exists():
                    continue
                entry = source / name
                if entry.is_dir():
                    shutil.rmtree(entry)
                elif entry.exists():
                    entry.unlink()
                if old.is_dir() and not old.is_symlink():
                    shutil.copytree(old, entry, symlinks=False)
            if finish is not None:
                finish(source)
        _replace(source, folder)
        _check(_git(["add", "-A", "--", target.path], checkout), "stage the tree")
        if _git(["diff", "--cached", "--quiet"], checkout).returncode == 0:
            logger.info("the repository already holds this tree; nothing to commit",
                        extra={"event": "git.unchanged", "branch": target.branch})
            return None
        identity = [
            "-c", f"user.name={target.author_name}",
            "-c", f"user.email={target.author_email}",
            "-c", "commit.gpgsign=false",
        ]
        _check(
            _git([*identity, "commit", "-q", "--no-verify", "-F", "-"], checkout, input=message),
            "commit",
        )
        sha = _check(_git(["rev-parse", "HEAD"], checkout), "read the commit").strip()
        if not target.push:
            return sha
        pushed = _git(
            ["push", "-q", "--", target.url, f"HEAD:refs/heads/{target.branch}"], checkout
        )
        if pushed.returncode == 0:
            return sha
        rejected = "rejected" in pushed.stderr or "fetch first" in pushed.stderr
        if attempt == 2 or not rejected:
            _check(pushed, f"push to {target.branch}")
        logger.warning("the branch moved during the run; trying again on its new head",
                       extra={"event": "git.retry", "branch": target.branch})
    raise GitOpsError("git push was rejected twice.")  # pragma: no cover - loop returns
