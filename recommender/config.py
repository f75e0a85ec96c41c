"""Every option of a recommendation run, as one frozen dataclass loadable from YAML.

The CLI builds a :class:`RecommendConfig` from ``--config FILE`` and its flags; notebooks pass
keyword arguments to :func:`recommender.recommend`. Both end here, so validation is shared.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import yaml

from .errors import ConfigError
from .policy._names import is_dns1123_label
from .policy._yaml import config_yaml_errors
from .policy.istio import is_trust_domain

__all__ = ["DEFAULT_EXCLUDED_NAMESPACES", "RecommendConfig", "load_config"]

#: Namespaces left out by default (shell patterns): the cluster's own system components.
DEFAULT_EXCLUDED_NAMESPACES: tuple[str, ...] = (
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "calico-system",
    "calico-apiserver",
    "tigera-operator",
    "cilium-system",
    "gke-*",
    "gmp-*",
)


#: Renderings of guardrails (recommender.guardrails.render.FORMATS; kept here to avoid a cycle).
_GUARDRAIL_FORMATS: tuple[str, ...] = (
    "cluster-network-policy",
    "admin-network-policy",
    "calico",
    "cilium",
)


@dataclass(frozen=True)
class RecommendConfig:
    """Options of :func:`recommender.recommend` (see ``docs/concepts.md``).

    Attributes
    ----------
    namespaces
        Only these namespaces (shell patterns) get policies; empty means every namespace seen.
    exclude_namespaces
        Namespaces (shell patterns) that get no policies; system namespaces by default.
    since, until
        Only flows that start in ``[since, until)`` are used. Strings may be ISO 8601 times or
        durations before now (``30m``, ``6h``, ``2d``).
    last
        Only the latest part of the input's own window, this long (``6h``, ``2d``): the flows
        that start at most this long before the latest flow (before ``until`` if set).
    min_connections
        Edges with fewer observed connections are left out (and listed in the report).
    rare_connections
        Edges with fewer connections than this are kept but flagged for review.
    port_range_budget
        How many unobserved ports a port range (``endPort``) may add per rule; 0 = no ranges.
        A range never spans a port refused to one of the rule's peers (denied, failed or
        excluded flows).
    cidr_budget
        How many unobserved addresses merging external addresses into CIDRs may add per rule
        and address class; 0 = exact addresses. Only public addresses are ever added (never a
        special-purpose one), and a block never grows over a refused peer.
    internet_ingress_sources
        Ingress from more distinct public sources than this becomes "from the internet"
        instead of one /32 per client: ``0.0.0.0/0`` and ``2000::/3`` except every IANA
        special-purpose block and every source refused on the rule's ports.
    max_ephemeral_ports
        A peer pair using more distinct destination ports at or above 32768 than this is taken
        for reply or ephemeral traffic: those ports get no rule (they are reported).
    allow_node_probes
        Traffic from the pod's own node (kubelet probes) needs no rule; True records them in the
        report only. False adds ingress rules from the node addresses.
    dns_both_protocols
        Egress to a resolver on port 53 allows both UDP and TCP (DNS falls back to TCP).
    allow_unestablished
        Give rules to edges whose connections were all attempted but never established
        (``outcome`` ``failed``: resets, unanswered retried SYNs, no answer counted); by
        default they get none and the report lists them under "attempted, never
        established" (``docs/concepts.md``).
    trust_all_flows
        Keep edges that anomaly screening flags (scans, sibling deviations, cluster outliers)
        in the allow rules; they are still reported. False leaves them out
        (``docs/clustering.md``).
    scan_min_targets, scan_denied_share, scan_window, scan_min_failed
        A source trying at least ``scan_min_targets`` distinct (peer, port) targets within
        ``scan_window`` seconds, at least ``scan_min_failed`` of them refused (denied or never
        established) and at least ``scan_denied_share`` of them refused or never seen before
        (no other source uses the peer's port, fewer than ``rare_connections`` connections, none
        known to be established), is scanning, whatever the verdicts (``docs/concepts.md``).
    sibling_min_pods
        A peer only one pod of a workload talks to is looked at when at least this many of its
        pods (that one included) were active at the same time (a CronJob's runs count as its
        pods, concurrent or not).
    sibling_max_chance
        ... and flagged when the chance that its connections all came from one pod anyway
        (the sum over the concurrent pods of their share of the workload's connections to
        the power of the edge's connections), times the peer's prior, is at most this.
    sibling_raw_ip_prior
        The prior of a public address with no DNS name in the flows, on a port other than
        53, 80, 123, 443, 853, 8080 and 8443, that no other workload uses (raw-IP egress);
        every other peer's prior is 1. Resolvers, the API server and peers other workloads
        use are never flagged.
    outlier_min_cluster
        A rare edge to a peer no other member uses is flagged in behavioural clusters of at
        least this many workloads.
    cluster_distance
        Distance threshold of behavioural clustering (Jaccard distance, 0..1).
    compact_policies
        Workloads of one namespace whose policies have identical rules share one policy whose
        selector is the union of theirs, when that selects nothing else.
    compaction_budget
        With ``compact_policies``: unobserved (workload, peer, port) grants a shared policy of
        one behavioural cluster may add; 0 merges identical rules only. A merge that would
        grant a member one of its refused flows is not made.
    guardrails
        A guardrails file (``docs/guardrails.md``): observed flows a guardrail denies get no
        allow rule, the report lists them and checks compliance, and the rendered guardrails
        are written to ``_guardrails/`` in the output tree.
    decisions
        A decisions file (``docs/decisions.md``): edges a reviewer rejected, allowed or
        trusted, and workloads or namespaces excluded; they survive re-runs.
    guardrails_format
        How guardrails are rendered: ``cluster-network-policy``, ``admin-network-policy``,
        ``calico`` or ``cilium``; None (default) follows each output dialect (kubernetes:
        ``cluster-network-policy``). It also picks the precedence rules used to judge flows.
    dialects
        Output dialects: ``kubernetes``, ``calico``, ``cilium``, ``istio`` (several write into
        sub-folders; see ``docs/dialects.md``).
    staged
        Calico: StagedNetworkPolicy / StagedGlobalNetworkPolicy for a safe rollout.
    tier, tier_order
        Calico: the tier of the recommended policies and its order (``default`` or null for
        Calico's default tier, with no Tier object).
    domains
        Egress to external addresses with observed DNS names by name (Calico ``domains``,
        Cilium ``toFQDNs`` plus the DNS proxy rule).
    l7
        Cilium and Istio: HTTP method and path rules from observed L7 flows.
    service_accounts
        Calico and Cilium: select workloads by their service account where flows carry one.
    host_policies
        Calico and Cilium: policies for hosts (nodes, host endpoints) from their flows.
    inventory
        A YAML file naming machines outside the cluster (``docs/dialects.md``): their
        addresses become named groups (NetworkSets, named ipBlocks, CIDR groups).
    network_sets
        Calico: the external CIDRs of each rule go to a NetworkSet the rule selects.
    trust_domain
        Istio: the mesh's trust domain, the first part of every principal
        (``cluster.local/ns/NS/sa/SA``).
    mtls
        Istio: ``strict`` writes a PeerAuthentication with mode STRICT per namespace (and the
        report lists the plain-text peers it would cut off); null writes none.
    """

    namespaces: tuple[str, ...] = ()
    exclude_namespaces: tuple[str, ...] = DEFAULT_EXCLUDED_NAMESPACES
    since: datetime | None = None
    until: datetime | None = None
    last: timedelta | None = None
    min_connections: int = 1
    rare_connections: int = 3
    port_range_budget: int = 0
    cidr_budget: int = 0
    internet_ingress_sources: int = 16
    max_ephemeral_ports: int = 3
    allow_node_probes: bool = True
    dns_both_protocols: bool = True
    policy_prefix: str = "allow-"
    allow_unestablished: bool = False
    trust_all_flows: bool = False
    scan_min_targets: int = 10
    scan_denied_share: float = 0.5
    scan_window: int = 300
    scan_min_failed: int = 3
    sibling_min_pods: int = 2
    sibling_max_chance: float = 0.02
    sibling_raw_ip_prior: float = 0.03
    outlier_min_cluster: int = 3
    cluster_distance: float = 0.3
    compact_policies: bool = False
    compaction_budget: int = 0
    guardrails: str | None = None
    guardrails_format: str | None = None
    decisions: str | None = None
    dialects: tuple[str, ...] = ("kubernetes",)
    staged: bool = False
    tier: str | None = "recommendations"
    tier_order: int = 5000
    domains: bool = False
    l7: bool = False
    service_accounts: bool = False
    host_policies: bool = False
    inventory: str | None = None
    network_sets: bool = False
    trust_domain: str = "cluster.local"
    mtls: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in (
            "min_connections",
            "rare_connections",
            "port_range_budget",
            "cidr_budget",
            "internet_ingress_sources",
            "max_ephemeral_ports",
            "scan_min_targets",
            "scan_window",
            "scan_min_failed",
            "sibling_min_pods",
            "outlier_min_cluster",
            "compaction_budget",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name} must be a whole number >= 0, not {value!r}.")
        for name in ("namespaces", "exclude_namespaces"):
            value = getattr(self, name)
            if isinstance(value, str):  # one pattern, not a sequence of one-letter patterns
                value = (value,)
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{name} must be a list of names or patterns, not {value!r}.")
            object.__setattr__(self, name, tuple(value))
        for name, top in (
            ("scan_denied_share", "1]"),
            ("cluster_distance", "1)"),
            ("sibling_max_chance", "1]"),
            ("sibling_raw_ip_prior", "1]"),
        ):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 < value <= 1
                or (top == "1)" and value == 1)
            ):
                raise ConfigError(f"{name} must be a number in (0, {top}, not {value!r}.")
            object.__setattr__(self, name, float(value))
        from .policy.dialects import parse_dialects

        object.__setattr__(self, "dialects", parse_dialects(self.dialects))
        if self.tier == "default":  # Calico's own default tier: no Tier object, no spec.tier
            object.__setattr__(self, "tier", None)
        if self.tier is not None and (
            not isinstance(self.tier, str) or not is_dns1123_label(self.tier)
        ):
            raise ConfigError(
                f"tier must be a DNS-1123 label (lowercase letters, digits and '-') or "
                f"'default', not {self.tier!r}."
            )
        if self.inventory is not None and not isinstance(self.inventory, str):
            object.__setattr__(self, "inventory", str(self.inventory))
        if isinstance(self.tier_order, bool) or not isinstance(self.tier_order, int | float):
            raise ConfigError(f"tier_order must be a number, not {self.tier_order!r}.")
        for name in (
            "allow_node_probes",
            "dns_both_protocols",
            "allow_unestablished",
            "trust_all_flows",
            "compact_policies",
            "staged",
            "domains",
            "l7",
            "service_accounts",
            "host_policies",
            "network_sets",
        ):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise ConfigError(f"{name} must be true or false, not {value!r}.")
        if self.guardrails is not None:
            if isinstance(self.guardrails, Path):
                object.__setattr__(self, "guardrails", str(self.guardrails))
            if not isinstance(self.guardrails, str) or not self.guardrails:
                raise ConfigError(f"guardrails must be a file path, not {self.guardrails!r}.")
        if self.decisions is not None:
            if isinstance(self.decisions, Path):
                object.__setattr__(self, "decisions", str(self.decisions))
            if not isinstance(self.decisions, str) or not self.decisions:
                raise ConfigError(f"decisions must be a file path, not {self.decisions!r}.")
        if self.guardrails_format is not None and self.guardrails_format not in _GUARDRAIL_FORMATS:
            raise ConfigError(
                f"guardrails_format must be one of {', '.join(_GUARDRAIL_FORMATS)}, not "
                f"{self.guardrails_format!r}."
            )
        if not isinstance(self.trust_domain, str) or not is_trust_domain(self.trust_domain):
            raise ConfigError(
                f"trust_domain must be a domain name such as cluster.local, not "
                f"{self.trust_domain!r}."
            )
        if isinstance(self.mtls, str):
            object.__setattr__(self, "mtls", self.mtls.lower())
        if self.mtls is not None and self.mtls != "strict":
            raise ConfigError(f"mtls must be strict or left out, not {self.mtls!r}.")
        if self.mtls is not None and "istio" not in self.dialects:
            raise ConfigError("mtls is an Istio option: add istio to the dialects (-d istio).")
        if not isinstance(self.policy_prefix, str):
            raise ConfigError(f"policy_prefix must be a string, not {self.policy_prefix!r}.")
        for name in ("since", "until"):
            value = _parse_time(getattr(self, name), name)
            if value is not None and value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            object.__setattr__(self, name, value)
        if self.since and self.until and self.since >= self.until:
            raise ConfigError("since must be before until.")
        if self.last is not None:
            object.__setattr__(self, "last", parse_duration(self.last, "last"))

    def replace(self, **changes: Any) -> RecommendConfig:
        """A copy with ``changes`` applied (None values are ignored)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown option(s): {', '.join(unknown)}.")
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


#: Duration units (``30m``, ``6h``, ``2d``, ``1h30m``; Go's units as hubble takes them, and
#: days and weeks).
_UNITS: Final = {
    "ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
    "d": 86400.0, "w": 604800.0,
}
_DURATION: Final = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h|d|w)")
#: The earliest time a duration reaches back to: no flow log is older.
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


def parse_duration(value: Any, name: str = "duration") -> timedelta:
    """A duration such as ``30m``, ``6h``, ``2d`` or ``1h30m`` (units ns, us, ms, s, m, h, d,
    w), or a :class:`~datetime.timedelta`.

    Raises
    ------
    ConfigError
        If ``value`` is not a positive duration.

    Examples
    --------
    >>> parse_duration("1h30m")
    datetime.timedelta(seconds=5400)
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        text = str(value).strip().replace(" ", "")
        pos, seconds = 0, 0.0
        while pos < len(text):
            match = _DURATION.match(text, pos)
            if match is None:
                break
            seconds += float(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if not text or pos != len(text):
            raise ConfigError(
                f"{name}: {value!r} is not a duration; write it as 30m, 6h, 2d or 1h30m."
            )
    if seconds <= 0:
        raise ConfigError(f"{name}: {value!r} must be a positive duration.")
    return timedelta(seconds=min(seconds, timedelta.max.total_seconds() // 2))


def _parse_time(value: Any, name: str) -> datetime | None:
    """An ISO 8601 time, or a duration (``30m``, ``6h``, ``2d``) meaning that long before now
    (as ``hubble observe --since`` takes it; a duration reaching before 1970 means 1970)."""
    if value is None or isinstance(value, datetime):
        return value
    if isinstance(value, timedelta) or (
        isinstance(value, str) and _DURATION.match(value.strip())
    ):
        delta = parse_duration(value, name)
        now = datetime.now(UTC)
        return _EPOCH if delta >= now - _EPOCH else now - delta
    if not isinstance(value, str | date):
        raise ConfigError(f"{name}: {value!r} is not an ISO 8601 time or a duration.")
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{name}: {value!r} is neither an ISO 8601 time (2024-05-01T12:00:00Z) nor a "
            "duration before now (30m, 6h, 2d)."
        ) from None


def coerce_options(options: dict[str, Any], origin: str = "options") -> dict[str, Any]:
    """Turn YAML or CLI values into the types :class:`RecommendConfig` expects."""
    out: dict[str, Any] = {}
    known = {f.name for f in fields(RecommendConfig)}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name not in known or name == "extra":
            raise ConfigError(f"{origin}: unknown option {key!r}.")
        if name in ("namespaces", "exclude_namespaces"):
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{origin}: {key} must be a list of names or patterns.")
            value = tuple(value)
        elif name == "dialects":
            from .policy.dialects import parse_dialects

            value = parse_dialects(value)
        elif name in ("since", "until"):
            value = _parse_time(value, f"{origin}: {key}")
        elif name == "last":
            value = parse_duration(value, f"{origin}: {key}")
        out[name] = value
    return out


def load_config(path: str | Path) -> RecommendConfig:
    """Read a YAML configuration file (keys are :class:`RecommendConfig` field names).

    Keys of other tools' sections (for example ``output`` or ``dialects`` used by the CLI) may
    sit under ``cli:``; they are kept in ``extra``. A ``job:`` section (the scheduled job's
    settings, see ``docs/deployment.md``) is kept in ``extra["job"]``.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read: {exc.strerror or exc}.") from None
    with config_yaml_errors(str(path)):
        data = yaml.safe_load(text) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values.")
    extra = data.pop("cli", {}) or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{path}: 'cli' must be a mapping.")
    if "job" in data:  # read by recommender.job.config
        extra = {**extra, "job": data.pop("job")}
    options = coerce_options(data, str(path))
    guardrails = options.get("guardrails")
    if isinstance(guardrails, str) and guardrails and not Path(guardrails).is_absolute():
        options["guardrails"] = str(Path(path).parent / guardrails)  # next to the config file
    decisions = options.get("decisions")
    if isinstance(decisions, str) and decisions and not Path(decisions).is_absolute():
        options["decisions"] = str(Path(path).parent / decisions)
    try:
        return RecommendConfig(**options, extra=extra)
    except (TypeError, ConfigError) as exc:  # name the file, as coerce_options does
        raise ConfigError(f"{path}: {exc}") from None
