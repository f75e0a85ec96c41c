"""``recommend evaluate``: replay flows against existing policies."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import (
    _GUARDRAIL_KINDS,
    FlowsArg,
    FormatOpt,
    GuardrailsOpt,
    RootNamespaceOpt,
    TrustDomainOpt,
    app,
)


@app.command()
def evaluate(
    policies: Annotated[
        Path,
        typer.Argument(
            help="A NetworkPolicy YAML file, or a folder of them (searched recursively); "
            "Istio AuthorizationPolicies and PeerAuthentications there are judged too.",
            show_default=False,
        ),
    ],
    flows: FlowsArg,
    format: FormatOpt = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the coverage report as JSON.")
    ] = False,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples printed per list.")
    ] = 10,
    guardrails: GuardrailsOpt = None,
    dialect: Annotated[
        str,
        typer.Option(
            "--precedence",
            help="Whose precedence rules combine guardrails and NetworkPolicies: kubernetes "
            "(ClusterNetworkPolicy Admin, NetworkPolicy, Baseline), calico (tiers) or cilium "
            "(deny over allow).",
        ),
    ] = "kubernetes",
    trust_domain: TrustDomainOpt = "cluster.local",
    root_namespace: RootNamespaceOpt = "istio-system",
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
    objects too (a tree written with --guardrails, say): the whole stack is then evaluated.
    Other policy kinds (Calico, Cilium) need --guardrails FILE, which replaces the guardrail
    kinds found in POLICIES. Istio AuthorizationPolicies and PeerAuthentications in POLICIES
    are judged with Istio's semantics after the NetworkPolicies, each HTTP request on its own,
    with every workload's service account (from the flows) as its principal.

    Exit status: 0 when the policies allow every observed allowed connection they can judge,
    1 when there are false denies (observed allowed connections the policies would deny),
    2 on bad input (unreadable flows, policies that are not Kubernetes NetworkPolicy).
    """
    from ..evaluation.replay import replay
    from ..policy.reader import read_istio_policies, read_policies

    if dialect not in ("kubernetes", "calico", "cilium"):
        raise typer.BadParameter("--precedence must be kubernetes, calico or cilium.")
    stack: Any = None
    if guardrails is not None:
        from ..guardrails import load_guardrails

        stack = load_guardrails(guardrails)
        policy_set = read_policies(policies, skip_kinds=_GUARDRAIL_KINDS)
    else:  # ClusterNetworkPolicy / AdminNetworkPolicy found beside the NetworkPolicies count too
        from ..guardrails.reader import read_policy_stack

        policy_set, stack = read_policy_stack(policies)
    if staged_verdicts:
        _compare_staged(policy_set, flows, format, json_out, examples)
        return
    istio = read_istio_policies(policies)
    coverage = replay(
        policy_set,
        flows,
        format=format,
        guardrails=stack,
        dialect=dialect,
        istio=istio or None,
        trust_domain=trust_domain,
        root_namespace=root_namespace,
    )
    if json_out:
        typer.echo(json.dumps(coverage.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        _print_coverage(coverage, examples)
    if coverage.false_denies:
        # SystemExit, not typer.Exit: click returns an Exit's code instead of raising it when
        # main() runs the app with standalone_mode=False.
        raise SystemExit(1)



def _compare_staged(
    policy_set: Any, flows: list[Path], format: str | None, json_out: bool, examples: int
) -> None:
    """``--staged-verdicts``: the cluster's staged verdicts against this evaluator's."""
    from ..evaluation.staged import judge_staged, staged_evidence
    from ..ingest import read_flows

    table = read_flows([str(f) for f in flows], format=format)
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


