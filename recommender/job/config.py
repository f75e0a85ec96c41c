"""The ``job:`` section of a configuration file: where a scheduled run reads and writes.

A job file is a ``recommend run --config`` file (recommendation options at the top level) with
a ``job:`` section; :func:`load_job_config` reads both. Every key is documented in
``docs/deployment.md``::

    namespaces: [shop, payments]
    job:
      input: {uri: s3://flow-logs/hubble, partition: "date=%Y-%m-%d", window_days: 7}
      output: {uri: s3://recommendations/prod}
      storage: {endpoint_url: http://minio.storage:9000}
      state: {retention_days: 30, prune_stale: true}
      lifecycle: {stable_runs: 3}
      gitops: {url: git@git.example.com:platform/policies.git, branch: recommendations,
               path: clusters/prod/network-policies}
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from ..config import RecommendConfig, load_config
from ..errors import ConfigError
from .gitops import GitTarget
from .state import LifecycleOptions, RolloutOptions
from .storage import StorageOptions

__all__ = ["JobConfig", "load_job_config", "parse_job_section"]


@dataclass(frozen=True)
class JobConfig:
    """Settings of a scheduled run (the ``job:`` section).

    Attributes
    ----------
    input_uri
        Folder or ``s3://bucket/prefix`` of the flow logs.
    partition
        :func:`~datetime.date.strftime` pattern of one day's folder under ``input_uri``
        (``date=%Y-%m-%d``, ``%Y/%m/%d``); None reads every file under ``input_uri``.
    window_days
        Days of partitions read, ending with the run's day.
    format
        Input format of every file (None: detected per file).
    output_uri
        Folder or ``s3://bucket/prefix`` for the policy tree, reports and state.
    keep_runs
        On object storage, how many runs' outputs are kept under ``runs/``.
    storage
        Endpoint and region of object storage.
    lifecycle
        Retention, pruning and stability thresholds.
    gitops
        The repository the policy tree is committed to (None: no commit).
    work_dir
        Scratch folder for downloads and the git checkout (None: a temporary folder).
    rollout
        Staged rollout per namespace (off by default): staged policies until stable and clean,
        then the enforcing form.
    """

    input_uri: str
    output_uri: str
    partition: str | None = "date=%Y-%m-%d"
    window_days: int = 7
    format: str | None = None
    keep_runs: int = 3
    storage: StorageOptions = field(default_factory=StorageOptions)
    lifecycle: LifecycleOptions = field(default_factory=LifecycleOptions)
    gitops: GitTarget | None = None
    work_dir: str | None = None
    rollout: RolloutOptions = field(default_factory=RolloutOptions)


_SECTIONS = {
    "input": {"uri", "partition", "window_days", "format"},
    "output": {"uri", "keep_runs"},
    "storage": {"endpoint_url", "region", "anonymous"},
    "state": {"retention_days", "prune_stale"},
    "lifecycle": {"stable_runs", "stable_after_days"},
    "rollout": {"staged", "promote_after_days"},
    "gitops": {"url", "branch", "path", "author_name", "author_email", "push", "promote"},
    "work_dir": None,
}


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping.")
    return value


def _get(section: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
         default: Any = None) -> Any:
    value = section.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ConfigError(f"{where}.{key} must be {_kind(kind)}, not {value!r}.")
    if not isinstance(value, kind):
        raise ConfigError(f"{where}.{key} must be {_kind(kind)}, not {value!r}.")
    return value


def _kind(kind: type | tuple[type, ...]) -> str:
    names = {str: "text", int: "a whole number", bool: "true or false", float: "a number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _days(value: Any, where: str) -> timedelta | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ConfigError(f"{where} must be a number of days above 0, not {value!r}.")
    return timedelta(days=value)


def parse_job_section(data: Any, origin: str = "job") -> JobConfig:
    """A :class:`JobConfig` from the ``job:`` mapping (see the module docstring).

    Raises
    ------
    ConfigError
        On an unknown key, a missing ``input.uri`` or ``output.uri``, or a value of the wrong
        type.
    """
    job = _mapping(data, origin)
    for key in sorted(job):
        if key not in _SECTIONS:
            raise ConfigError(f"{origin}: unknown section {key!r}; known: "
                              f"{', '.join(sorted(_SECTIONS))}.")
        allowed = _SECTIONS[key]
        if allowed is None:
            continue
        section = _mapping(job[key], f"{origin}.{key}")
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise ConfigError(f"{origin}.{key}: unknown key(s) {', '.join(map(repr, unknown))}; "
                              f"known: {', '.join(sorted(allowed))}.")
    inp = _mapping(job.get("input"), f"{origin}.input")
    out = _mapping(job.get("output"), f"{origin}.output")
    where_in, where_out = f"{origin}.input", f"{origin}.output"
    input_uri = _get(inp, "uri", str, where_in)
    output_uri = _get(out, "uri", str, where_out)
    if not input_uri:
        raise ConfigError(f"{where_in}.uri is required: the folder or s3:// URI of the flows.")
    if not output_uri:
        raise ConfigError(f"{where_out}.uri is required: the folder or s3:// URI for outputs.")
    partition = inp.get("partition", "date=%Y-%m-%d")
    if partition is not None and (not isinstance(partition, str) or "%" not in partition):
        raise ConfigError(
            f"{where_in}.partition must be a strftime pattern such as 'date=%Y-%m-%d' or "
            f"'%Y/%m/%d' (or null for no partitions), not {partition!r}."
        )
    window_days = _get(inp, "window_days", int, where_in, 7)
    if window_days < 1:
        raise ConfigError(f"{where_in}.window_days must be at least 1, not {window_days}.")
    keep_runs = _get(out, "keep_runs", int, where_out, 3)
    if keep_runs < 1:
        raise ConfigError(f"{where_out}.keep_runs must be at least 1, not {keep_runs}.")
    st = _mapping(job.get("storage"), f"{origin}.storage")
    storage = StorageOptions(
        endpoint_url=_get(st, "endpoint_url", str, f"{origin}.storage"),
        region=_get(st, "region", str, f"{origin}.storage"),
        anonymous=_get(st, "anonymous", bool, f"{origin}.storage", False),
    )
    state = _mapping(job.get("state"), f"{origin}.state")
    life = _mapping(job.get("lifecycle"), f"{origin}.lifecycle")
    lifecycle = LifecycleOptions(
        retention=_days(state.get("retention_days", 30), f"{origin}.state.retention_days")
        or timedelta(days=30),
        prune_stale=_get(state, "prune_stale", bool, f"{origin}.state", True),
        stable_runs=_get(life, "stable_runs", int, f"{origin}.lifecycle", 3),
        stable_after=_days(life.get("stable_after_days"), f"{origin}.lifecycle.stable_after_days"),
    )
    ro = _mapping(job.get("rollout"), f"{origin}.rollout")
    rollout = RolloutOptions(
        staged=_get(ro, "staged", bool, f"{origin}.rollout", False),
        promote_after=_days(ro.get("promote_after_days", 3), f"{origin}.rollout.promote_after_days")
        or timedelta(0),
    )
    gitops = None
    if job.get("gitops") is not None:
        g = _mapping(job["gitops"], f"{origin}.gitops")
        where = f"{origin}.gitops"
        gitops = GitTarget(
            url=_get(g, "url", str, where, ""),
            branch=_get(g, "branch", str, where, "recommendations"),
            path=_get(g, "path", str, where, "network-policies"),
            author_name=_get(g, "author_name", str, where, "recommender"),
            author_email=_get(g, "author_email", str, where, "recommender@localhost"),
            push=_get(g, "push", bool, where, True),
            promote=_get(g, "promote", str, where, "all"),
        )
    work_dir = job.get("work_dir")
    if work_dir is not None and not isinstance(work_dir, str):
        raise ConfigError(f"{origin}.work_dir must be a folder path, not {work_dir!r}.")
    fmt = _get(inp, "format", str, where_in)
    if fmt is not None:
        from ..ingest import FORMATS

        if fmt not in FORMATS:
            raise ConfigError(f"{where_in}.format {fmt!r} is not one of {', '.join(FORMATS)}.")
    return JobConfig(
        input_uri=input_uri,
        output_uri=output_uri,
        partition=partition,
        window_days=window_days,
        format=fmt,
        keep_runs=keep_runs,
        storage=storage,
        lifecycle=lifecycle,
        gitops=gitops,
        work_dir=work_dir,
        rollout=rollout,
    )


def load_job_config(path: str | os.PathLike[str]) -> tuple[RecommendConfig, JobConfig]:
    """The recommendation options and the ``job:`` section of a job file.

    Raises
    ------
    ConfigError
        If the file cannot be read, has no ``job:`` section, or a value is invalid.
    """
    config = load_config(Path(path))
    job = config.extra.get("job")
    if job is None:
        raise ConfigError(
            f"{path}: no 'job:' section; a scheduled run needs at least job.input.uri and "
            "job.output.uri (see docs/deployment.md)."
        )
    return config, parse_job_section(job, f"{Path(path)}: job")
