"""The YAML dumper and the policy tree writer: round trips, layout, determinism, atomicity."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recommender._forked import can_fork
from recommender.errors import ConfigError, InputError, SynthesisError
from recommender.policy import writer
from recommender.policy._yaml import dump_yaml, load_yaml_documents
from recommender.policy.kubernetes import render_kubernetes
from recommender.policy.model import LabelSelector, Peer, Policy, PolicySet, PortSpec, Rule
from recommender.policy.writer import MARKER_FILE, write_policy_tree, write_yaml_stream

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
VALIDATOR = SHARED / "tools" / "validate_manifests.py"

HOSTILE = [
    "",
    "80",
    "08",
    "0x1",
    "0o17",
    "1e3",
    "1_000",
    ".5",
    "-.inf",
    ".NaN",
    "12:30:45",
    "2024-01-01",
    "true",
    "True",
    "on",
    "off",
    "yes",
    "y",
    "n",
    "no",
    "null",
    "Null",
    "~",
    "<<",
    "=",
    "a\nb",
    "line\n",
    "\r\n",
    "a: b",
    "key:",
    "{}",
    "[]",
    "{a: 1}",
    "!!python/object:os.system",
    "!!python/object/apply:os.system ['id']",
    "!tag x",
    "&anchor",
    "*alias",
    "- item",
    "? key",
    "| block",
    "> folded",
    "# comment",
    "a # not a comment",
    "%YAML 1.1",
    "---",
    "...",
    "@at",
    "`tick",
    "'single'",
    '"double"',
    "\\back\\slash",
    " leading",
    "trailing ",
    "\ttab",
    "x" * 5000,
    "word " * 1000,
    "h\u00e9llo w\u00f6rld \u4e2d\u6587 \U0001f600",
    "\u2028",
    "\x85",
    "\ufeffbom",
    "nul\x00byte",
    "\x7f",
]


# --- YAML -----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_strings_round_trip(value: str) -> None:
    doc = {
        "apiVersion": "v1",
        "metadata": {"name": value, "labels": {value: value, "app": value}},
        "list": [value, {"k": value}],
    }
    text = dump_yaml([doc, {"second": value}])
    assert load_yaml_documents(text) == [doc, {"second": value}]
    assert "&" not in text.replace(value, "") and "*" not in text.replace(value, "")


@pytest.mark.parametrize(
    "value", ["80", "true", "null", "1e3", "on", "yes", "0x1", "", "y", "~", "12:30", "1_0"]
)
def test_ambiguous_strings_are_quoted(value: str) -> None:
    assert dump_yaml([{"v": value}]) == f"v: '{value}'\n"


def test_dump_layout() -> None:
    docs: list[dict[str, Any]] = [
        {"z": 1, "a": {"c": [1, 2], "b": {}}, "long": "x " * 100 + "end"},
        {"k": "v"},
    ]
    text = dump_yaml(docs)
    assert text == (f"z: 1\na:\n  c:\n  - 1\n  - 2\n  b: {{}}\nlong: {'x ' * 100}end\n---\nk: v\n")
    assert dump_yaml([]) == ""


def test_no_aliases_for_shared_objects() -> None:
    shared = {"app": "x"}
    text = dump_yaml([{"a": shared, "b": shared, "c": [shared, shared]}])
    assert "&" not in text and "*" not in text
    assert load_yaml_documents(text) == [{"a": shared, "b": shared, "c": [shared, shared]}]


def test_load_rejects_non_mappings_and_bad_yaml() -> None:
    assert load_yaml_documents("") == []
    assert load_yaml_documents("---\n---\na: 1\n") == [{"a": 1}]
    with pytest.raises(InputError, match="document 1 is a list"):
        load_yaml_documents("- a\n")
    with pytest.raises(InputError, match="cannot be parsed"):
        load_yaml_documents("a: [\n")
    with pytest.raises(InputError, match="cannot be parsed"):
        load_yaml_documents("!!python/object/apply:os.system ['true']\n")


label_keys = st.text(min_size=0, max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=10,
)


@given(st.lists(st.dictionaries(label_keys, json_values, max_size=6), max_size=4))
def test_round_trip_property(docs: list[dict[str, Any]]) -> None:
    text = dump_yaml(docs)
    assert load_yaml_documents(text) == docs
    assert text == "" or text.endswith("\n")
    assert dump_yaml(docs) == text


def test_write_yaml_stream() -> None:
    manifests = render_kubernetes(
        PolicySet((Policy("b", "ns", LabelSelector()), Policy("a", "ns", LabelSelector())))
    )
    text = write_yaml_stream(manifests)
    assert text == dump_yaml(manifests)
    assert text.count("\n---\n") == 1
    assert [d["metadata"]["name"] for d in load_yaml_documents(text)] == ["a", "b"]


# --- the tree writer -------------------------------------------------------------------------


def policy_set() -> PolicySet:
    web = Policy(
        "web",
        "shop",
        LabelSelector.of({"app": "web"}),
        ingress=(Rule("ingress", (Peer("pods"),), (PortSpec("TCP", 8080),)),),
    )
    return PolicySet(
        (
            Policy("default-deny", "shop", LabelSelector()),
            web,
            Policy("default-deny", "billing", LabelSelector()),
        )
    )


def by_namespace(ps: PolicySet) -> dict[str, list[dict[str, Any]]]:
    manifests = render_kubernetes(ps)
    out: dict[str, list[dict[str, Any]]] = {}
    for manifest in manifests:
        out.setdefault(manifest["metadata"]["namespace"], []).append(manifest)
    return out


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def siblings(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.iterdir() if p.name != out.name)


def test_tree_layout(tmp_path: Path) -> None:
    out = tmp_path / "policies"
    paths = write_policy_tree(
        by_namespace(policy_set()),
        out,
        extra_files={"report.json": '{"ok": true}\n', "report.md": b"# Report\n"},
    )
    relative = [p.relative_to(out).as_posix() for p in paths]
    assert relative == [
        MARKER_FILE,
        "billing/default-deny.yaml",
        "billing/kustomization.yaml",
        "kustomization.yaml",
        "report.json",
        "report.md",
        "shop/default-deny.yaml",
        "shop/kustomization.yaml",
        "shop/web.yaml",
    ]
    assert paths == sorted(paths)
    assert sorted(snapshot(out)) == sorted(relative)
    assert load_yaml_documents((out / "kustomization.yaml").read_text()) == [
        {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": ["billing", "shop"],
        }
    ]
    assert load_yaml_documents((out / "shop" / "kustomization.yaml").read_text())[0][
        "resources"
    ] == ["default-deny.yaml", "web.yaml"]
    [web] = load_yaml_documents((out / "shop" / "web.yaml").read_text())
    assert web == by_namespace(policy_set())["shop"][1]
    assert (out / "report.json").read_text() == '{"ok": true}\n'
    assert (out / "report.md").read_bytes() == b"# Report\n"
    assert siblings(out) == []


def test_second_run_is_byte_identical_and_drops_stale_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_policy_tree(by_namespace(policy_set()), out)
    first = snapshot(out)
    write_policy_tree(by_namespace(policy_set()), out)
    assert snapshot(out) == first

    # A run with fewer policies leaves no file of the earlier run behind.
    fewer = PolicySet((Policy("default-deny", "shop", LabelSelector()),))
    write_policy_tree(by_namespace(fewer), out)
    assert sorted(snapshot(out)) == [
        MARKER_FILE,
        "kustomization.yaml",
        "shop/default-deny.yaml",
        "shop/kustomization.yaml",
    ]
    assert siblings(out) == []


def test_empty_namespace_gets_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_policy_tree({"empty": [], **by_namespace(policy_set())}, out)
    assert not (out / "empty").exists()
    assert "empty" not in (out / "kustomization.yaml").read_text()


def test_failure_mid_write_keeps_old_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    write_policy_tree(by_namespace(policy_set()), out)
    before = snapshot(out)

    calls = []

    def failing_dump(docs: list[dict[str, Any]]) -> str:
        calls.append(docs)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return dump_yaml(docs)

    monkeypatch.setattr(writer, "dump_yaml", failing_dump)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_policy_tree(by_namespace(policy_set()), out, extra_files={"report.json": "{}"})
    assert len(calls) == 3
    assert snapshot(out) == before
    assert siblings(out) == []


def test_failure_on_first_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"

    def failing_dump(docs: list[dict[str, Any]]) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(writer, "dump_yaml", failing_dump)
    with pytest.raises(RuntimeError, match="boom"):
        write_policy_tree(by_namespace(policy_set()), out)
    assert not out.exists()
    assert siblings(out) == []


def test_failed_swap_restores_old_tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    write_policy_tree(by_namespace(policy_set()), out)
    before = snapshot(out)
    real_rename = os.rename

    def rename(src: Any, dst: Any) -> None:
        if Path(src).name.startswith(".out.tmp-"):
            raise OSError("rename refused")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(OSError, match="rename refused"):
        write_policy_tree(by_namespace(PolicySet()), out)
    assert snapshot(out) == before
    assert siblings(out) == []


def test_refuses_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not written by recommender"):
        write_policy_tree(by_namespace(policy_set()), out)
    assert snapshot(out) == {"notes.txt": b"precious"}
    assert siblings(out) == []


def test_refuses_file_and_symlink(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        write_policy_tree({}, target)
    assert target.read_text() == "x"

    real = tmp_path / "real"
    write_policy_tree({}, real)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(ConfigError, match="symbolic link"):
        write_policy_tree({}, link)


def test_empty_existing_folder_is_used(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    write_policy_tree(by_namespace(policy_set()), out)
    assert (out / MARKER_FILE).is_file()


@pytest.mark.parametrize(
    ("tree", "extra", "message"),
    [
        ({"../etc": []}, None, "Namespace '../etc'"),
        ({"Shop": []}, None, "Namespace 'Shop'"),
        ({"a/b": []}, None, "Namespace 'a/b'"),
        (
            {"shop": [{"metadata": {"name": "../../x", "namespace": "shop"}}]},
            None,
            "name '../../x'",
        ),
        ({"shop": [{"metadata": {"name": "/abs", "namespace": "shop"}}]}, None, "'/abs'"),
        ({"shop": [{"metadata": {"namespace": "shop"}}]}, None, "name None"),
        ({"shop": [{"kind": "x"}]}, None, "name None"),
        ({"shop": [{"metadata": {"name": "x", "namespace": "other"}}]}, None, "namespace 'other'"),
        ({"shop": [{"metadata": {"name": "x"}}]}, None, "namespace None"),
        (
            {"shop": [{"metadata": {"name": "kustomization", "namespace": "shop"}}]},
            None,
            "reserved",
        ),
        (
            {
                "shop": [
                    {"metadata": {"name": "x", "namespace": "shop"}},
                    {"metadata": {"name": "x", "namespace": "shop"}},
                ]
            },
            None,
            "Two manifests",
        ),
        ({}, {"../report.json": "x"}, "'../report.json'"),
        ({}, {"/tmp/x": "x"}, "'/tmp/x'"),
        ({}, {"Report.md": "x"}, "'Report.md'"),
        ({}, {"kustomization.yaml": "x"}, "'kustomization.yaml'"),
        ({}, {MARKER_FILE: "x"}, MARKER_FILE),
        ({"shop": [{"metadata": {"name": "x", "namespace": "shop"}}]}, {"shop": "x"}, "'shop'"),
    ],
)
def test_bad_names_raise_before_writing(
    tmp_path: Path, tree: dict[str, Any], extra: dict[str, str] | None, message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SynthesisError) as info:
        write_policy_tree(tree, out, extra_files=extra)
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_hostile_policy_names_never_reach_the_disk(tmp_path: Path) -> None:
    bad = [
        Policy("web", "../etc", LabelSelector()),
        Policy("web", "ns", LabelSelector(), labels=(("app", "a\nb"),)),
    ]
    for policy in bad:
        with pytest.raises(SynthesisError):
            write_policy_tree(by_namespace(PolicySet((policy,))), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.oracle
@pytest.mark.skipif(not VALIDATOR.is_file(), reason=f"the shared validator {VALIDATOR} is absent")
def test_written_tree_passes_validator(tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_policy_tree(by_namespace(policy_set()), out)
    result = subprocess.run(
        [sys.executable, str(VALIDATOR), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 valid, 0 invalid" in result.stdout


# --- the two-step writer (policy files in the background) ------------------------------------


@pytest.fixture(params=["thread", "child"])
def background(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each two-step writer test twice: trees written by a thread (small trees), and by a
    forked child process (large ones; :data:`writer.FORK_MIN_FILES`)."""
    if request.param == "child" and not can_fork():
        pytest.skip("forks only on Linux")
    monkeypatch.setattr(writer, "FORK_MIN_FILES", 0 if request.param == "child" else 10**9)
    return str(request.param)


def _two_dialects() -> dict[str, dict[str, list[dict[str, Any]]]]:
    return {"kubernetes": by_namespace(policy_set()), "calico": by_namespace(policy_set())}


@pytest.mark.parametrize("dialects", [("kubernetes",), ("calico", "kubernetes")])
def test_tree_writer_writes_what_write_policy_trees_writes(
    tmp_path: Path, dialects: tuple[str, ...], background: str
) -> None:
    trees = {k: v for k, v in _two_dialects().items() if k in dialects}
    staged = {dialects[0]: {"shop": by_namespace(policy_set())["shop"]}}
    extra = {"report.json": "{}\n", "report.md": "# R\n"}
    expected = writer.write_policy_trees(trees, tmp_path / "a", extra_files=extra, staged=staged)
    with writer.TreeWriter(tmp_path / "b") as tree:
        tree.start(trees, staged)
        written = tree.finish(extra)
    assert [p.relative_to(tmp_path / "b") for p in written] == [
        p.relative_to(tmp_path / "a") for p in expected
    ]
    assert snapshot(tmp_path / "b") == snapshot(tmp_path / "a")
    assert siblings(tmp_path / "b") == ["a"]


def test_tree_writer_error_in_the_background_keeps_old_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, background: str
) -> None:
    out = tmp_path / "out"
    write_policy_tree(by_namespace(policy_set()), out)
    before = snapshot(out)
    calls = []

    def failing_dump(docs: list[dict[str, Any]]) -> str:
        calls.append(docs)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return dump_yaml(docs)

    monkeypatch.setattr(writer, "dump_yaml", failing_dump)
    with writer.TreeWriter(out) as tree:
        tree.start({"kubernetes": by_namespace(policy_set())})
        with pytest.raises(RuntimeError, match="disk on fire"):
            tree.finish({"report.json": "{}"})
    assert len(calls) == 2  # stopped at its first error (a failed child's work is done again here)
    assert snapshot(out) == before
    assert siblings(out) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_tree_writer_interrupted_before_finish_leaves_nothing(
    tmp_path: Path, error: type[BaseException], background: str
) -> None:
    out = tmp_path / "out"
    write_policy_tree(by_namespace(policy_set()), out)
    before = snapshot(out)
    many = {"shop": [m for i in range(300) for m in render_kubernetes(
        PolicySet((Policy(f"p{i}", "shop", LabelSelector.of({"app": f"a{i}"})),))
    )]}  # fmt: skip
    with pytest.raises(error), writer.TreeWriter(out) as tree:
        tree.start({"kubernetes": many})
        raise error()  # Ctrl-C (or a bug) while the report is computed
    assert snapshot(out) == before
    assert siblings(out) == []


def test_tree_writer_refuses_bad_names_first(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    with pytest.raises(ConfigError, match="not empty"):
        writer.TreeWriter(out)  # before anything is computed
    with writer.TreeWriter(tmp_path / "out") as tree:
        tree.start({"kubernetes": by_namespace(policy_set())})
        with pytest.raises(SynthesisError, match="Extra file name"):
            tree.finish({"kustomization.yaml": "x"})
    assert not (tmp_path / "out").exists()
    assert siblings(tmp_path / "out") == ["mine"]
