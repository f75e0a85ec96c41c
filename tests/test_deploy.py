"""deploy/: the Dockerfile checked statically (docker is not needed), the kustomize base and
example overlay rendered by reading their resources (no kustomize binary) and validated with
kubernetes-validate and ../shared/tools/validate_manifests.py."""

from __future__ import annotations

import copy
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from recommender.job.config import load_job_config

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"

# --------------------------------------------------------------------------- Dockerfile


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for word, rest in instructions(path):
        if word == "FROM":
            found.append([])
        if found:
            found[-1].append((word, rest))
    return found


def test_dockerfile_base_is_a_pinned_slim_python():
    args = dict(
        rest.split("=", 1) for word, rest in instructions(DEPLOY / "Dockerfile") if word == "ARG"
        and "=" in rest
    )
    base = args["PYTHON_IMAGE"]
    image, _, digest = base.partition("@")
    name, _, tag = image.partition(":")
    assert name == "python" and re.fullmatch(r"3\.\d+-slim-\w+", tag), base
    assert "latest" not in base
    assert digest == "" or re.fullmatch(r"sha256:[0-9a-f]{64}", digest)
    locked = re.search(r"\(Python (3\.\d+)", (DEPLOY / "requirements.lock").read_text())
    assert locked and tag.startswith(f"{locked[1]}-"), "the lock is made on the image's Python"
    froms = [rest for word, rest in instructions(DEPLOY / "Dockerfile") if word == "FROM"]
    assert all(f.startswith("${PYTHON_IMAGE}") for f in froms)


def test_dockerfile_runtime_stage_is_non_root_and_has_no_build_tools():
    *_, runtime = stages(DEPLOY / "Dockerfile")
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the final stage must set USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it
    runs = " ".join(rest for word, rest in runtime if word == "RUN")
    for tool in ("gcc", "g++", "build-essential", "make ", "clang", "python3-dev", "pip install"):
        assert tool not in runs
    assert "--no-install-recommends" in runs and "git" in runs  # git: the GitOps commit
    assert yaml.safe_load(
        next(rest for word, rest in runtime if word == "CMD")
    ) == ["job", "--config", "/etc/recommender/job.yaml", "--log-format", "json"]
    build = stages(DEPLOY / "Dockerfile")[0]
    assert any("-r /tmp/requirements.lock" in rest and "--only-binary=:all:" in rest
               for word, rest in build if word == "RUN")


def test_image_builds_the_hubble_scanner():
    """The build stage compiles the optional C scanner and fails without it (pip would
    silently fall back to the slower pure-Python reader); .dockerignore lets setup.py in."""
    build = stages(DEPLOY / "Dockerfile")[0]
    copies = " ".join(rest for word, rest in build if word == "COPY")
    runs = " ".join(rest for word, rest in build if word == "RUN")
    assert "setup.py" in copies and "gcc" in runs
    assert "import recommender.ingest._hubble_scan" in runs
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert "!setup.py" in ignore


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def test_requirements_lock_pins_every_runtime_dependency():
    lines = [
        line for line in (DEPLOY / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    pins = {}
    for line in lines:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][^\s;]*)", line)
        assert match, f"not an exact pin: {line}"
        pins[_name(match[1])] = match[2]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        assert _name(re.split(r"[<>=!~\[ ;]", dep, maxsplit=1)[0]) in pins, dep
    assert lines == sorted(lines, key=lambda line: _name(line.split("==")[0]))


# --------------------------------------------------------------------------- kustomize


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge patch, for what the overlays use: maps merge, lists of named items
    (containers, env, volumes, volumeMounts) merge by name, other lists are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (
        isinstance(base, list) and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        merged = {item["name"]: item for item in base}
        for item in patch:
            merged[item["name"]] = _merge(merged.get(item["name"], {}), item)
        return list(merged.values())
    return copy.deepcopy(patch)


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    return []


def render(folder: Path) -> list[dict[str, Any]]:
    """``kustomize build folder`` for the features deploy/ uses."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    known = {"apiVersion", "kind", "resources", "namespace", "images", "patches", "labels"}
    assert set(kustomization) <= known, set(kustomization) - known
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (folder / resource).resolve()
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load((folder / patch["path"]).read_text())
        targets = [
            i for i, d in enumerate(docs)
            if d["kind"] == body["kind"] and d["metadata"]["name"] == body["metadata"]["name"]
        ]
        assert len(targets) == 1, f"patch {patch['path']} matches {len(targets)} resources"
        docs[targets[0]] = _merge(docs[targets[0]], body)
    for entry in kustomization.get("labels", []):
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(entry["pairs"])
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in _containers(doc):
                repo, _, _tag = container["image"].rpartition(":")
                if repo == image["name"]:
                    container["image"] = f"{image.get('newName', repo)}:{image['newTag']}"
    namespace = kustomization.get("namespace")
    if namespace:
        for doc in docs:
            if doc["kind"] != "Namespace":
                doc["metadata"]["namespace"] = namespace
    return docs


@pytest.fixture(scope="module", params=["base", "overlays/example"])
def rendered(request) -> list[dict[str, Any]]:
    return render(DEPLOY / request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def test_manifests_pass_kubernetes_validate(rendered):
    kv = pytest.importorskip("kubernetes_validate")
    for doc in rendered:
        kv.validate(doc, kv.latest_version(), strict=True)
    assert {d["kind"] for d in rendered} <= {"Namespace", "ServiceAccount", "ConfigMap", "CronJob"}


def test_manifests_pass_the_shared_validator(shared, tmp_path):
    files = []
    for name in ("base", "overlays/example"):
        out = tmp_path / f"{name.replace('/', '-')}.yaml"
        out.write_text(yaml.safe_dump_all(render(DEPLOY / name), sort_keys=False))
        files.append(str(out))
    done = subprocess.run(
        [sys.executable, str(shared / "tools/validate_manifests.py"), *files],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout


def test_the_job_runs_locked_down_with_no_api_access(rendered):
    account = by_kind(rendered, "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert not {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"} & {
        d["kind"] for d in rendered
    }
    cron = by_kind(rendered, "CronJob")
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    volumes = {v["name"] for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert set(mounts) <= volumes
    assert {"/tmp", "/work", "/etc/recommender"} <= set(mounts.values())  # writable scratch
    config_map = by_kind(rendered, "ConfigMap")
    assert {"name": "config", "configMap": {"name": config_map["metadata"]["name"]}} in pod[
        "volumes"
    ]
    # The pod fails at once on exit status 2 (bad configuration), retries others.
    rules = spec["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["onExitCodes"]["values"] == [2] and pod["restartPolicy"] == "Never"


def test_the_container_command_and_config_are_what_the_cli_accepts(rendered, tmp_path):
    import typer.main

    from recommender.cli import app

    config_map = by_kind(rendered, "ConfigMap")
    path = tmp_path / "job.yaml"
    path.write_text(config_map["data"]["job.yaml"])
    options, job = load_job_config(path)
    assert job.input_uri.startswith("s3://") and job.output_uri.startswith("s3://")
    assert job.work_dir == "/work" and options.min_connections >= 1
    (container,) = _containers(by_kind(rendered, "CronJob"))
    args = [str(path) if a == "/etc/recommender/job.yaml" else a for a in container["args"]]
    command = typer.main.get_group(app).commands[args[0]]
    context = command.make_context(args[0], args[1:])
    assert context.params["log_format"] == "json"


def test_the_overlay_changes_what_it_says():
    docs = render(DEPLOY / "overlays/example")
    (container,) = _containers(by_kind(docs, "CronJob"))
    assert container["image"] == "registry.example.com/platform/recommender:0.1.0"
    assert {e["name"] for e in container["env"]} == {
        "HOME", "GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0"
    }
    assert all(d["metadata"].get("namespace") == "recommender" for d in docs
               if d["kind"] != "Namespace")
    account = by_kind(docs, "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" in account["metadata"]["annotations"]
    assert account["automountServiceAccountToken"] is False  # kept from the base
