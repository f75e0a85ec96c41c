"""Owners, not pods or runs: the controller a workload endpoint's policy is written for.

Readers name each pod's workload as best their format allows (``infer_workload`` in
:mod:`recommender.ingest._common`, Hubble's ``workloads`` field, a canonical file's own
column), and those names can still carry what changes from one day to the next:

* Hubble names a CronJob's pods by their **Job** (``workloads: [{kind: Job, name:
  nightly-report-29383920}]``): the CronJob controller names every Job
  ``<cronjob>-<scheduled time in minutes since the epoch>``, so every run is a new name;
* a **ReplicaSet** (``web-5d8f7c9b6``) is one rollout of a Deployment;
* a pod of unknown owner whose name prefix ends in a plausible scheduled time
  (``nightly-report-29383920-x7k2p`` in a Calico or canonical row without labels);
* a StatefulSet's pod ``db-0`` in a Calico row without labels (its aggregated name is the pod
  name: such pods have no generateName).

:func:`resolve_owner` maps such a name to its owner: ``nightly-report`` (``CronJob``),
``web`` (``Deployment``). It runs on every batch before aggregation
(:func:`resolve_batch_owners`), so one policy is written per owner, and policy names, file
names and annotations never carry a pod-template hash, a Job run id or a replica ordinal: the
same cluster learned on two days gives the same files. Names already resolved by a reader pass
through unchanged (the function is idempotent).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache
from typing import Final

import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "CRONJOB_MINUTES_RANGE",
    "resolve_batch_owners",
    "resolve_owner",
]

# Kubernetes draws generated name suffixes from this alphabet (k8s.io/apimachinery
# rand.SafeEncodeString: no vowels, no 0, 1 or 3); a ReplicaSet is <deployment>-<hash>.
_SAFE: Final = "[bcdfghjklmnpqrstvwxz2456789]"
_REPLICASET: Final = re.compile(rf"(?P<name>.+)-{_SAFE}{{6,10}}")
#: A Job the CronJob controller made: <cronjob>-<scheduled minutes> (getJobName in
#: pkg/controller/cronjob/utils.go).
_JOB_OF_CRONJOB: Final = re.compile(r"(?P<name>.+)-(?P<minutes>\d{8,10})")
_EIGHT_DIGITS: Final = re.compile(r"(?P<name>.+)-(?P<minutes>\d{8})")
#: A StatefulSet's pod <set>-<ordinal>, known only as an aggregated name (Calico names such a
#: pod by its full name: it has no generateName).
_ORDINAL: Final = re.compile(r"(?P<name>.+)-(?P<ordinal>0|[1-9]\d{0,4})")


def _minutes(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=UTC).timestamp()) // 60


#: Scheduled minutes a name of *unknown* owner must carry to be read as a CronJob's run:
#: 2015-01-01 to 2100-01-01. The lower bound keeps dates written as ``YYYYMMDD``
#: (``build-20240101``, 20.2 million) out; a ``Job`` named by its controller needs no bound.
CRONJOB_MINUTES_RANGE: Final = (_minutes(2015), _minutes(2100))

_SEP: Final = "\x00"
_NO_KIND: Final = "\x01"

#: Owner kinds whose names never carry a run id or hash (nothing to resolve).
_SETTLED: Final = frozenset({"Deployment", "StatefulSet", "DaemonSet", "CronJob"})


def resolve_owner(name: str | None, kind: str | None) -> tuple[str | None, str | None]:
    """The owning controller ``(name, kind)`` of a workload a reader named ``name`` of ``kind``.

    Parameters
    ----------
    name
        The workload name from the flow row (``src_workload``/``dst_workload``).
    kind
        Its kind (``src_workload_kind``; one of ``WORKLOAD_KINDS`` or None).

    Returns
    -------
    (str or None, str or None)
        ``(cronjob, "CronJob")`` for a Job made by a CronJob, ``(deployment, "Deployment")``
        for a ReplicaSet made by a Deployment, ``(cronjob, "CronJob")`` for a name of unknown
        owner (``prefix``, ``Pod`` or no kind) ending in ``-<8 digits>`` within
        :data:`CRONJOB_MINUTES_RANGE`, ``(set, "StatefulSet")`` for an aggregated name
        (``prefix``) ``<set>-<ordinal>``; anything else unchanged.

    Examples
    --------
    >>> resolve_owner("nightly-report-29383920", "Job")
    ('nightly-report', 'CronJob')
    >>> resolve_owner("web-5d8f7c9b6", "ReplicaSet")
    ('web', 'Deployment')
    >>> resolve_owner("nightly-report-29383920", "prefix")
    ('nightly-report', 'CronJob')
    >>> resolve_owner("build-20240101", "prefix"), resolve_owner("db-migrate", "Job")
    (('build-20240101', 'prefix'), ('db-migrate', 'Job'))
    """
    if not name or kind in _SETTLED:
        return name, kind
    if kind == "Job":
        job = _JOB_OF_CRONJOB.fullmatch(name)
        return (job["name"], "CronJob") if job else (name, kind)
    if kind == "ReplicaSet":
        rs = _REPLICASET.fullmatch(name)
        return (rs["name"], "Deployment") if rs else (name, kind)
    run = _EIGHT_DIGITS.fullmatch(name)
    if run:
        low, high = CRONJOB_MINUTES_RANGE
        if low <= int(run["minutes"]) < high:
            return run["name"], "CronJob"
    if kind == "prefix":
        ordinal = _ORDINAL.fullmatch(name)
        if ordinal:
            return ordinal["name"], "StatefulSet"
    return name, kind


@lru_cache(maxsize=65536)
def _may_change(name: str) -> bool:
    """Whether :func:`resolve_owner` could map ``name`` to another name, for some kind."""
    return any(p.fullmatch(name) for p in (_JOB_OF_CRONJOB, _REPLICASET, _ORDINAL))


def _resolve_side(batch: pa.RecordBatch, side: str) -> pa.RecordBatch:
    names = batch.column(f"{side}_workload")
    kinds = batch.column(f"{side}_workload_kind")
    if names.null_count == len(names):
        return batch
    names, kinds = names.cast(pa.string()), kinds.cast(pa.string())
    # Most batches name only settled owners: one hash pass over the names tells.
    if not any(_may_change(name) for name in pc.unique(names).to_pylist() if name):
        return batch
    # One string per (name, kind) pair; a row without a name keeps its columns as they are.
    keys = pc.binary_join_element_wise(names, pc.fill_null(kinds, _NO_KIND), _SEP)
    distinct = pc.unique(keys).drop_null()
    new_names: list[str | None] = []
    new_kinds: list[str | None] = []
    changed = False
    for key in distinct.to_pylist():
        name, _, kind_text = key.rpartition(_SEP)
        kind = None if kind_text == _NO_KIND else kind_text
        owner, owner_kind = resolve_owner(name, kind)
        changed = changed or (owner, owner_kind) != (name, kind)
        new_names.append(owner)
        new_kinds.append(owner_kind)
    if not changed:
        return batch
    index = pc.index_in(keys, value_set=distinct)
    named = pc.is_valid(keys)
    names = pc.if_else(named, pa.array(new_names, pa.string()).take(index), names)
    kinds = pc.if_else(named, pa.array(new_kinds, pa.string()).take(index), kinds)
    schema = batch.schema
    columns = list(batch.columns)
    fields = list(schema)
    for column, value in ((f"{side}_workload", names), (f"{side}_workload_kind", kinds)):
        i = schema.get_field_index(column)
        columns[i] = value
        fields[i] = fields[i].with_type(pa.string())
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields, schema.metadata))


def resolve_batch_owners(
    batch: pa.RecordBatch, sides: tuple[str, ...] = ("src", "dst")
) -> pa.RecordBatch:
    """``batch`` with ``{src,dst}_workload`` and ``_workload_kind`` mapped by :func:`resolve_owner`.

    Only the distinct (name, kind) pairs of the batch go through Python; a batch with nothing
    to resolve is returned as it is. Pod names, labels and every other column are untouched.
    ``sides`` limits the mapping to one side's columns (a batch may hold only those).
    """
    for side in sides:
        batch = _resolve_side(batch, side)
    return batch

