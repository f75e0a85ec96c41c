"""Committing the policy tree to a local bare repository with the real git command line."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from recommender.errors import ConfigError, GitOpsError
from recommender.job.gitops import GitTarget, publish_tree

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    path = tmp_path / "remote.git"
    git("init", "-q", "--bare", str(path))
    return path


def tree(root: Path, files: dict[str, str]) -> Path:
    if root.exists():
        shutil.rmtree(root)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def commits(remote: Path, branch: str) -> list[str]:
    return git("--git-dir", str(remote), "log", "--format=%s", branch).splitlines()


def test_commits_once_then_only_on_change_and_pushes(tmp_path, remote):
    target = GitTarget(url=str(remote), branch="recs", path="clusters/prod/policies")
    src = tree(tmp_path / "t", {"kustomization.yaml": "a\n", "shop/web.yaml": "b\n"})
    sha = publish_tree(src, target, tmp_path / "w", "first\n\nbody\n")
    assert sha is not None and len(sha) == 40
    assert commits(remote, "recs") == ["first"]
    listed = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "recs").split()
    assert listed == ["clusters/prod/policies/kustomization.yaml",
                      "clusters/prod/policies/shop/web.yaml"]
    # The same tree again: no commit.
    assert publish_tree(src, target, tmp_path / "w", "second\n") is None
    assert commits(remote, "recs") == ["first"]
    # A namespace removed and a file changed: one more commit, the folder replaced as a whole.
    src = tree(tmp_path / "t", {"kustomization.yaml": "c\n"})
    assert publish_tree(src, target, tmp_path / "w", "third\n") is not None
    assert commits(remote, "recs") == ["third", "first"]
    listed = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "recs").split()
    assert listed == ["clusters/prod/policies/kustomization.yaml"]
    author = git("--git-dir", str(remote), "log", "-1", "--format=%an <%ae>", "recs").strip()
    assert author == "recommender <recommender@localhost>"


def test_files_outside_the_folder_are_kept(tmp_path, remote):
    seed = tmp_path / "seed"
    git("clone", "-q", str(remote), str(seed))
    (seed / "README.md").write_text("hand-written\n")
    (seed / "apps").mkdir()
    (seed / "apps" / "app.yaml").write_text("x: 1\n")
    git("-c", "user.name=a", "-c", "user.email=a@b", "add", "-A", cwd=seed)
    git("-c", "user.name=a", "-c", "user.email=a@b", "commit", "-q", "-m", "seed", cwd=seed)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=seed)
    target = GitTarget(url=str(remote), branch="main", path="policies")
    publish_tree(tree(tmp_path / "t", {"kustomization.yaml": "a\n"}), target, tmp_path / "w", "p\n")
    listed = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", "main").split()
    assert listed == ["README.md", "apps/app.yaml", "policies/kustomization.yaml"]
    assert commits(remote, "main") == ["p", "seed"]


def test_no_push_commits_locally_only(tmp_path, remote):
    target = GitTarget(url=str(remote), branch="recs", push=False)
    sha = publish_tree(tree(tmp_path / "t", {"a.yaml": "a\n"}), target, tmp_path / "w", "m\n")
    assert sha is not None
    assert git("--git-dir", str(remote), "branch", "--list").strip() == ""


def test_an_unreachable_remote_is_a_gitops_error_without_the_password(tmp_path):
    target = GitTarget(url="https://bot:s3cret@127.0.0.1:9/none.git", branch="recs")
    with pytest.raises(GitOpsError) as err:
        publish_tree(tree(tmp_path / "t", {"a.yaml": "a\n"}), target, tmp_path / "w", "m\n")
    assert "s3cret" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"path": "../outside"},
        {"path": "/abs"},
        {"path": ".git/hooks"},
        {"branch": "--upload-pack=x"},
        {"branch": "a..b"},
        {"url": ""},
    ],
)
def test_targets_that_could_escape_are_refused(kwargs):
    with pytest.raises(ConfigError):
        GitTarget(**{"url": "/r.git", **kwargs})
