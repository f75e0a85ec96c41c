"""``recommend evaluate``: replay flows against existing policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import (
    DecisionsOpt,
    FlowsArg,
    FormatOpt,
    GuardrailsOpt,
    RootNamespaceOpt,
    TrustDomainOpt,
    _Last,
    _Since,
    _Until,
    app,
    window_config,
)
from ._hints import swap_hint


@app.command()
def evaluate(
    policies: Annotated[
        Path,
        typer.Argument(
            metavar="POLICIES",
            help="A policy YAML file (Kubernetes, Calico or Cilium), or a folder of them "
            "(searched recursively); Istio AuthorizationPolicies and PeerAuthentications there "
            "are judged too.",
            show_default=False,
        ),
    ],
    flows: FlowsArg,
    format: FormatOpt = None,
    since: _Since = None,
    until: _Until = None,
    last: _Last = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the coverage report as JSON.")
    ] = False,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples printed per list.")
    ] = 10,
    guardrails: GuardrailsOpt = None,
    dialect: Annotated[
        str | None,
        typer.Option(
            "--precedence",
            metavar="DIALECT",
            help="Whose precedence rules judge the stack: kubernetes (ClusterNetworkPolicy "
            "Admin, NetworkPolicy, Baseline), calico (tiers, order, Pass) or cilium (deny over "
            "allow); default: the dialect of POLICIES (Calico or Cilium objects), else "
            "kubernetes.",
            show_default=False,
        ),
    ] = None,
    trust_domain: TrustDomainOpt = "cluster.local",
    root_namespace: RootNamespaceOpt = "istio-system",
    decisions: DecisionsOpt = None,
    staged_verdicts: Annotated[
        bool,
        typer.Option(
            "--staged-verdicts",
            help="FLOWS carry the cluster's verdicts of staged policies (Calico pending "
            "traces, Cilium AUDIT): list every flow where they disagree with this evaluation "
            "of POLICIES (the staged policies as NetworkPolicies); exit 1 when any does.",
        ),
    ] = False,
) -> None:
    """Replay FLOWS against POLICIES: coverage, false denies, over-permissiveness, unused,
    redundant (shadowed) and broad rules.

    POLICIES may hold ClusterNetworkPolicy, AdminNetworkPolicy and BaselineAdminNetworkPolicy
    objects too (a tree written with --guardrails, say), Calico v3 objects (tiers, global and
    staged policies, network sets) or Cilium v2 ones (CiliumNetworkPolicy,
    CiliumClusterwideNetworkPolicy): the whole stack is evaluated with the precedence of
    --precedence (docs/evaluator.md). --guardrails FILE replaces the guardrails found in
    POLICIES (and leaves out its _guardrails/ folder). Istio AuthorizationPolicies and
    PeerAuthentications in POLICIES are judged with Istio's semantics after the
    NetworkPolicies, each HTTP request on its own, with every workload's service account (from
    the flows) as its principal.

    With --decisions FILE, observed edges a ``reject`` entry names are expected to be denied
    (listed as intended, not as false denies) and every ``allow`` entry is checked to be
    allowed although unobserved.

    Exit status: 0 when the policies allow every observed allowed connection they can judge,
    1 when there are false denies (observed allowed connections the policies would deny, other
    than rejected ones) or an allowed decision is denied, 2 on bad input (unreadable flows or
    policies, what the evaluator cannot judge, an invalid decisions file), 130 interrupted
    (Ctrl-C), 143 terminated (SIGTERM), 70 internal error (a bug).
    """
    from ..evaluation.replay import _edge_tables, replay
    from ..evaluation.stack import read_policy_tree
    from ..policy.reader import read_istio_policies

    if dialect not in (None, "kubernetes", "calico", "cilium"):
        raise typer.BadParameter("--precedence must be kubernetes, calico or cilium.")
    window = window_config(since, until, last)  # a bad window fails before anything is read
    stack: Any = None
    decided: Any = None
    if decisions is not None:
        from ..synthesis.decisions import load_decisions

        decided = load_decisions(decisions)  # a bad file fails before the flows are read
    with swap_hint([policies], flows):
        if guardrails is not None:
            from ..guardrails import load_guardrails

            stack = load_guardrails(guardrails)
        tree = read_policy_tree(
            policies,
            precedence=dialect,
            guardrails=stack,
            skip=("_guardrails",) if stack is not None else (),
        )
        if staged_verdicts:
            _compare_staged(tree.network_policies, flows, format, json_out, examples, window)
            return
        istio = read_istio_policies(policies)
        tables = _edge_tables(flows, window, format)
        coverage = replay(
            tree.network_policies,
            tables,
            guardrails=tree.guardrails,
            dialect=tree.dialect,
            tree=tree,
            istio=istio or None,
            trust_domain=trust_domain,
            root_namespace=root_namespace,
        )
    false_denies = list(coverage.false_denies)
    checked: dict[str, Any] = {}
    if decided is not None:
        from ..evaluation.decision_check import describe, judge_decided, split_intended
        from ..synthesis.decided import DecisionRun

        intended, false_denies = split_intended(coverage.false_denies, decided)
        run = DecisionRun.start(decided)
        run.evidence_with_allows(tables)
        judged = judge_decided(run, tree.network_policies, tables, tree.guardrails, tree.dialect)
        checked = {
            "intended_denies": len(intended),
            "intended": describe(intended, 200),
            "false_denies": len(false_denies),
            "allowed_edges": judged["allowed_edges"],
            "allowed_not_allowed": judged["allowed_not_allowed"],
        }
    if json_out:
        out = coverage.to_dict()
        if checked:
            out["decisions"] = checked
        typer.echo(json.dumps(out, indent=2, sort_keys=True, default=str))
    else:
        _print_coverage(coverage, examples)
        if checked:
            typer.echo(
                f"decisions: {checked['intended_denies']} of the false denies are edges the "
                f"decisions reject (intended), {checked['false_denies']} are not; "
                f"{checked['allowed_edges'] - checked['allowed_not_allowed']} of "
                f"{checked['allowed_edges']} allowed decisions are allowed"
            )
            for line in checked["intended"][:examples]:
                typer.echo(f"  rejected: {line}")
    if false_denies or checked.get("allowed_not_allowed"):
        # SystemExit, not typer.Exit: click returns an Exit's code instead of raising it when
        # main() runs the app with standalone_mode=False.
        raise SystemExit(1)



def _compare_staged(
    policy_set: Any, flows: list[Path], format: str | None, json_out: bool, examples: int,
    window: Any = None,
) -> None:
    """``--staged-verdicts``: the cluster's staged verdicts against this evaluator's."""
    from ..evaluation.staged import judge_staged, staged_evidence
    from ..ingest import read_flows

    table = read_flows(
        [str(f) for f in flows],
        format=format,
        since=window.since if window else None,
        until=window.until if window else None,
        last=window.last if window else None,
    )
    disagreements = judge_staged(policy_set, table)
    judged = staged_evidence(table).flows
    if json_out:
        payload = {"flows_with_staged_verdicts": judged, "disagreements": disagreements}
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
    else:
        typer.echo(
            f"staged verdicts: {judged} flows; {len(disagreements)} disagree with this "
            "evaluation of the policies"
        )
        for d in disagreements[:examples]:
            typer.echo(
                f"  {d['source']} -> {d['destination']} {d['protocol']}/{d['port']}: cluster "
                f"{d['cluster']} ({d['policy'] or 'audit mode'} rule {d['rule']}), recommender "
                f"{d['recommender']}"
            )
    if disagreements:
        raise SystemExit(1)


def _print_coverage(coverage: Any, examples: int) -> None:
    """The text rendering of a :class:`~recommender.evaluation.replay.Coverage`."""

    def edge(e: Any) -> str:
        port = f"{e.protocol}/{e.port}" if e.port is not None else e.protocol
        return f"  {e.connections:>10,}  {e.source} -> {e.destination} {port}: {e.reason}"

    typer.echo(
        f"coverage: {coverage.coverage:.2%} of observed allowed connections "
        f"({coverage.allowed_connections:,} of {coverage.observed_connections:,}; "
        f"{coverage.allowed_edges} of {coverage.observed_edges} edges)"
    )
    typer.echo(
        f"false denies: {len(coverage.false_denies)} edges, "
        f"{coverage.false_deny_connections:,} connections"
    )
    for e in coverage.false_denies[:examples]:
        typer.echo(edge(e))
    typer.echo(
        f"denied in the input but allowed by the policies: {len(coverage.denied_but_allowed)} "
        f"of {coverage.denied_edges} denied edges"
    )
    for e in coverage.denied_but_allowed[:examples]:
        typer.echo(edge(e))
    over = coverage.over_permissive
    if over.skipped:
        typer.echo(f"over-permissiveness: not computed ({over.skipped})")
    else:
        typer.echo(
            f"over-permissiveness: {over.allowed_unobserved:,} unobserved workload pair x port "
            f"triples allowed ({over.rate:.2%} of {over.candidates - over.observed:,}), "
            f"against {over.observed:,} observed"
        )
        if over.estimate:
            typer.echo(f"  (an estimate: {over.estimate})")
        for text in over.examples[:examples]:
            typer.echo(f"  {text}")
    typer.echo(f"unused rules: {len(coverage.unused_rules)} of {coverage.rules}")
    for rule in coverage.unused_rules[:examples]:
        typer.echo(f"  {rule['policy']} {rule['direction']} rule {rule['rule']}")
    redundant = coverage.redundant_rules
    shadowed = sum(f.kind == "shadowed" for f in redundant)
    typer.echo(
        f"redundant rules: {len(redundant)} ({shadowed} shadowed: redundant and matched by no "
        "observed traffic)"
    )
    for f in redundant[:examples]:
        typer.echo(f"  {f.policy} {f.direction} rule {f.rule_index} [{f.kind}]: {f.reason}")
    typer.echo(f"broad rules: {len(coverage.broad_rules)}")
    for f in coverage.broad_rules[:examples]:
        used = f" (utilisation {f.used:,}/{f.allowed:,})" if f.utilisation is not None else ""
        typer.echo(f"  {f.policy} {f.direction} rule {f.rule_index}{used}: {f.reason}")
    if coverage.not_evaluated:
        typer.echo(f"not evaluated: {len(coverage.not_evaluated)} edges")
        for reason, count in coverage.not_evaluated_by_reason().items():
            typer.echo(f"  {count:>6}  {reason}")
    if coverage.excluded_edges:
        typer.echo(
            f"left out by the aggregation (replies, ephemeral ports, rare): "
            f"{coverage.excluded_edges} edges"
        )
    for note in coverage.notes:
        typer.echo(f"note: {note}")



