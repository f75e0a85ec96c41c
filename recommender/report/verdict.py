"""The verdict every report form starts with: can these policies be applied?

:func:`build_verdict` reads the report model (``report.json``'s dict) and answers with one of
:data:`VERDICTS` and the reasons, each naming the report section that holds its evidence:

``not ready``
    the self-check failed (observed traffic denied, or traffic denied in the input allowed);
    the learning window is shorter than an hour; there is no allowed flow at all; the
    namespace filter matched nothing (or no namespace is in scope); a rejected edge is still
    allowed by a broader rule.
``review first``
    the window is shorter than a day, or workloads were seen in only part of it; a namespace
    pattern matched nothing; rules are flagged, generalised or rest on little evidence;
    selectors are assumed; traffic was left out (anomalies, replies and ephemeral ports,
    guardrail conflicts, skipped input records); a decision matched nothing or expired.
``ready``
    none of these.

The reasons are facts with numbers, never advice alone; the CLI's last line repeats the verdict.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from ..config import DEFAULT_EXCLUDED_NAMESPACES
from .text import duration, flag_help, plural

__all__ = ["GENERALISED_FLAGS", "VERDICTS", "build_verdict", "verdict_line"]

VERDICTS: Final = ("ready", "review first", "not ready")
#: Flags that mean a rule allows more than exactly what was observed.
GENERALISED_FLAGS: Final = ("internet", "merged-cidr", "all-ports", "broad:")
_HOUR: Final = 3600.0
_DAY: Final = 86400.0
#: A workload active in less than this share of the window is "seen in part of it".
PARTIAL_SHARE: Final = 0.5


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


def _listing(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit:,} more" if len(items) > limit else "")


def build_verdict(report: Mapping[str, Any]) -> dict[str, Any]:
    """The verdict on a report: ``{"verdict": ..., "reasons": [{"level", "section",
    "text"}]}``, most serious reasons first. ``level`` is ``not ready`` or ``review first``;
    ``section`` is the id of the report section with the evidence."""
    reasons: list[dict[str, str]] = []

    def add(level: str, section: str, text: str) -> None:
        reasons.append({"level": level, "section": section, "text": text})

    s = report.get("summary") or {}
    config = report.get("config") or {}
    check = report.get("self_check") or {}
    # --- a staged rollout that would break wanted traffic
    breaking = (report.get("staged_verdicts") or {}).get("would_break") or []
    if breaking:
        add(
            "not ready",
            "staged",
            f"The staged policies would break wanted traffic: "
            f"{plural(len(breaking), 'observed edge')} the cluster's staged verdicts deny.",
        )
    # --- the input and the window
    rows = int(s.get("connection_rows") or 0)
    edges = int(s.get("edges") or 0)
    if rows == 0:
        read = int((report.get("ingest") or {}).get("used") or 0)
        window = [f"{name} {config[name]}" for name in ("since", "until") if config.get(name)]
        if read and window:
            text = (
                f"The time filter ({', '.join(window)}) matched none of the "
                f"{plural(read, 'flow record')} read: nothing was learned."
            )
        else:
            text = "No flow is in the input: nothing was learned (check the files)."
        add("not ready", "summary", text)
    elif edges == 0:
        add(
            "not ready",
            "summary",
            f"No allowed flow at all: the {plural(rows, 'connection row')} are denied, replies "
            "or left out, so every policy is a bare default deny.",
        )
    first, last = _time(s.get("first_seen")), _time(s.get("last_seen"))
    if first is not None and last is not None:
        span = (last - first).total_seconds()
        if span < _HOUR:
            add(
                "not ready",
                "summary",
                f"The flows cover {duration(span)}, under an hour: daily and weekly traffic "
                "(backups, reports, batch jobs) is missing. Record at least a day.",
            )
        elif span < _DAY:
            add(
                "review first",
                "summary",
                f"The flows cover {duration(span)}, less than a day: traffic that happens "
                "daily or less often may be missing.",
            )
    partial = report.get("partial_workloads") or []
    if partial:
        names = [str(p.get("workload")) for p in partial]
        add(
            "review first",
            "rules",
            f"{plural(len(partial), 'workload')} {'was' if len(partial) == 1 else 'were'} seen in "
            f"less than half of the window (new, scaled down or rolled out): {_listing(names)}; "
            "their rules may be incomplete.",
        )
    # --- scope: filters that matched nothing
    in_scope = list(s.get("namespaces_in_scope") or [])
    out_scope = list(s.get("namespaces_out_of_scope") or [])
    seen = sorted(set(in_scope) | set(out_scope))
    patterns = list(config.get("namespaces") or [])
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(n, p) for n in seen)]
    seen_text = _listing(seen) if seen else "none"
    if patterns and len(unmatched) == len(patterns):
        add(
            "not ready",
            "summary",
            f"The namespace filter ({', '.join(patterns)}) matched no namespace in the flows; "
            f"namespaces seen: {seen_text}.",
        )
    elif unmatched:
        add(
            "review first",
            "summary",
            f"{plural(len(unmatched), 'namespace pattern')} matched nothing: "
            f"{', '.join(unmatched)}; namespaces seen: {seen_text}.",
        )
    elif not in_scope and rows:
        add(
            "not ready",
            "summary",
            f"No namespace is in scope, so no policy was written; namespaces seen: {seen_text}.",
        )
    user_excludes = [
        p for p in config.get("exclude_namespaces") or [] if p not in DEFAULT_EXCLUDED_NAMESPACES
    ]
    unused = [p for p in user_excludes if not any(fnmatch.fnmatchcase(n, p) for n in seen)]
    if unused:
        add(
            "review first",
            "summary",
            f"{plural(len(unused), 'excluded namespace pattern')} matched nothing: "
            f"{', '.join(unused)}; namespaces seen: {seen_text}.",
        )
    # --- the self-check
    if check:
        problems = check.get("problems")
        wrongly = int(check.get("denied_in_input_but_allowed") or 0)
        if problems is not None:  # the self-check's own verdict: each problem fails the run
            for problem in problems:
                add("not ready", "self-check", f"Self-check failed: {problem.get('message')}.")
            governed = sum(
                int(p.get("edges") or 0)
                for p in problems
                if p.get("kind") == "denied-flows-allowed"
            )
        else:  # a report from before the self-check listed its problems
            false_denies = int(check.get("false_denies") or 0)
            coverage = check.get("coverage")
            if false_denies or (isinstance(coverage, int | float) and coverage < 1):
                add(
                    "not ready",
                    "self-check",
                    "The self-check denies observed traffic: "
                    f"{plural(false_denies, 'false deny', 'false denies')}.",
                )
            governed = wrongly
            if wrongly:
                add(
                    "not ready",
                    "self-check",
                    f"{plural(wrongly, 'edge')} denied in the input would be allowed by these "
                    "policies.",
                )
        excluded = report.get("excluded") or []
        later = sum(1 for row in excluded if row.get("reason") == "denied-later")
        if later:
            add(
                "review first",
                "excluded",
                f"{plural(later, 'edge')} allowed earlier in the window "
                f"{'was' if later == 1 else 'were'} denied later in the window: no rule (the "
                f"policy in force at the end refuses {'it' if later == 1 else 'them'}); check "
                f"that {'it' if later == 1 else 'they'} should stay closed.",
            )
        mixed = check.get("mixed_verdicts") or {}
        if mixed:
            n = int(mixed.get("edges") or 0)
            wrongly -= n
            add(
                "review first",
                "self-check",
                f"{plural(n, 'edge')} {'was' if n == 1 else 'were'} both allowed and denied in "
                "the input (a policy changed during the window?): the policies allow "
                f"{'it' if n == 1 else 'them'}, as the allowed connections show; check the "
                "denial was not meant to stay.",
            )
        if wrongly > governed:  # only between namespaces these policies leave alone
            add(
                "review first",
                "self-check",
                f"{plural(wrongly - governed, 'edge')} denied in the input, between namespaces "
                "without policies here, would be allowed if those namespaces had no policy of "
                "their own.",
            )
        decided = check.get("decisions") or {}
        still = int(decided.get("rejected_still_allowed") or 0)
        if still:
            add(
                "not ready",
                "decisions",
                f"{plural(still, 'rejected edge')} {'is' if still == 1 else 'are'} still allowed: "
                "by a broader rule (a merged CIDR, an internet or shared rule), or because "
                "neither end is in a namespace with policies.",
            )
        missing = int(decided.get("allowed_not_allowed") or 0)
        if missing:
            add(
                "not ready",
                "decisions",
                f"{plural(missing, 'allowed edge')} from the decisions "
                f"{'is' if missing == 1 else 'are'} not allowed by the policies.",
            )
    # --- rules that need a decision
    # (rules a reviewer accepted, report.accepted, no longer hold the verdict)
    flagged = [rule for rule in report.get("flagged") or [] if not rule.get("accepted")]
    flags: Counter[str] = Counter(f for rule in flagged for f in rule.get("flags") or [])
    rare = flags.pop("rare", 0)
    flags.pop("decision:allow", None)
    generalised = sum(
        1
        for rule in flagged
        if any(f.startswith(g) for f in rule.get("flags") or [] for g in GENERALISED_FLAGS)
    )
    if generalised:
        add(
            "review first",
            "flagged",
            f"{plural(generalised, 'rule')} {'is' if generalised == 1 else 'are'} generalised "
            "beyond the observed addresses or ports (internet, merged CIDRs, all ports, broad "
            "peers).",
        )
    if rare:
        add(
            "review first",
            "flagged",
            f"{plural(rare, 'rule')} {'rests' if rare == 1 else 'rest'} on little evidence "
            "(flag rare).",
        )
    other = {f: n for f, n in flags.items() if not any(f.startswith(g) for g in GENERALISED_FLAGS)}
    for flag, n in sorted(other.items()):
        add(
            "review first",
            "flagged",
            f"{plural(n, 'rule')} flagged {flag}: {flag_help(flag) or 'see docs/report.md'}.",
        )
    fallbacks = report.get("selector_fallbacks") or []
    if fallbacks:
        add(
            "review first",
            "flagged",
            f"{plural(len(fallbacks), 'selector')} {'is' if len(fallbacks) == 1 else 'are'} "
            "assumed or ambiguous (no observed labels, or matching another workload).",
        )
    # --- traffic left out
    anomalies = report.get("anomalies") or {}
    if anomalies.get("excluded_edges"):
        add(
            "review first",
            "anomalies",
            f"{plural(int(anomalies['excluded_edges']), 'edge')} that look like scanning or "
            "lateral movement "
            f"({plural(int(anomalies.get('excluded_connections') or 0), 'connection')}) got no "
            "rule.",
        )
    elif (
        anomalies.get("flagged")
        and anomalies.get("trust_all_flows")
        and anomalies.get("allowed_edges")
    ):
        add(
            "review first",
            "anomalies",
            f"{plural(int(anomalies['allowed_edges']), 'edge')} that look like scanning or lateral "
            "movement were kept (trust_all_flows).",
        )
    excluded = int(s.get("excluded_edges") or 0) - int(anomalies.get("excluded_edges") or 0)
    # (decisions, and edges denied later in the window, have reasons of their own)
    decided = sum(
        1
        for x in report.get("excluded") or []
        if str(x.get("reason", "")).startswith("decision:") or x.get("reason") == "denied-later"
    )
    if excluded - decided > 0:
        add(
            "review first",
            "excluded",
            f"{plural(excluded - decided, 'edge')} left out on purpose (suspected replies, "
            "ephemeral ports, too few connections).",
        )
    guardrails = report.get("guardrails") or {}
    if guardrails.get("conflicts_total"):
        n = int(guardrails["conflicts_total"])
        add(
            "review first",
            "guardrails",
            f"{plural(n, 'observed edge')} {'is' if n == 1 else 'are'} denied by a guardrail and "
            "got no rule.",
        )
    ingest = report.get("ingest") or {}
    if ingest.get("skipped_total"):
        n = int(ingest["skipped_total"])
        add("review first", "input", f"{plural(n, 'input record')} could not be used.")
    clusters = ingest.get("clusters") or {}
    if len(clusters) > 1:
        add(
            "review first",
            "input",
            f"The input mixes {len(clusters)} clusters ({', '.join(sorted(clusters))}): the "
            "policies allow what any of them saw.",
        )
    decisions = report.get("decisions") or {}
    if decisions.get("stale") or decisions.get("expired"):
        add(
            "review first",
            "decisions",
            f"Decisions: {plural(int(decisions.get('stale') or 0), 'entry', 'entries')} matched "
            f"nothing, {int(decisions.get('expired') or 0)} expired.",
        )
    holdout = report.get("holdout") or {}
    if holdout.get("false_deny_edges"):
        add(
            "review first",
            "holdout",
            f"Held-out validation: {plural(int(holdout['false_deny_edges']), 'later edge')} "
            "would be denied by policies learned from the earlier window.",
        )
    order = {"not ready": 0, "review first": 1}
    reasons.sort(key=lambda r: order[r["level"]])
    verdict = reasons[0]["level"] if reasons else "ready"
    return {"verdict": verdict, "reasons": reasons}


def verdict_line(verdict: Mapping[str, Any], where: str | None = None) -> str:
    """The CLI's last line: ``verdict: review first (3 reasons; see out/report.md)``."""
    reasons = verdict.get("reasons") or []
    tail = f"{plural(len(reasons), 'reason')}" if reasons else "nothing to review"
    if where:
        tail += f"; see {where}"
    return f"verdict: {verdict.get('verdict')} ({tail})"
