"""``recommend diff``: which observed flows change verdict between two policy sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import FlowsArg, FormatOpt, RootNamespaceOpt, TrustDomainOpt, app


@app.command()
def diff(
    existing: Annotated[
        Path,
        typer.Argument(
            help="The policies in force: a NetworkPolicy YAML file or a folder of them.",
            show_default=False,
        ),
    ],
    new: Annotated[
        Path,
        typer.Argument(
            help="The proposed policies: a NetworkPolicy YAML file or a folder of them.",
            show_default=False,
        ),
    ],
    flows: FlowsArg,
    format: FormatOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")] = False,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples printed per list.")
    ] = 10,
    trust_domain: TrustDomainOpt = "cluster.local",
    root_namespace: RootNamespaceOpt = "istio-system",
) -> None:
    """Compare EXISTING and NEW policies on observed FLOWS: which traffic changes verdict,
    which rules are added or removed.

    For CI and GitOps pipelines: run it on a pull request that changes policies, against
    recent flows. Istio AuthorizationPolicies and PeerAuthentications in EXISTING and NEW are
    judged with Istio's semantics too (see `recommend evaluate`). Exit status: 0 when no
    observed allowed connection becomes denied, 1 when NEW denies observed allowed traffic
    that EXISTING allows (it would break it), 2 on bad input (unreadable flows, policies
    that are not Kubernetes NetworkPolicy).
    """
    from ..evaluation.diff import diff_policies
    from ..policy.reader import read_istio_policies, read_policies

    result = diff_policies(
        read_policies(existing),
        read_policies(new),
        flows,
        format=format,
        existing_istio=read_istio_policies(existing),
        new_istio=read_istio_policies(new),
        trust_domain=trust_domain,
        root_namespace=root_namespace,
    )
    if json_out:
        typer.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        _print_diff(result, examples)
    if result.breaks_observed_traffic:
        raise SystemExit(1)  # SystemExit, not typer.Exit: see `evaluate`



def _print_diff(result: Any, examples: int) -> None:
    """The text rendering of a :class:`~recommender.evaluation.diff.PolicyDiff`."""

    def edge(e: Any) -> str:
        port = f"{e.protocol}/{e.port}" if e.port is not None else e.protocol
        return (
            f"  {e.connections:>10,}  {e.source} -> {e.destination} {port} "
            f"[{e.input_verdict} in input]: {e.reason}"
        )

    def rule(key: Any) -> str:
        namespace, policy, direction, peers, ports = key
        return (
            f"  {namespace}/{policy} {direction} "
            f"peers: {', '.join(peers) or 'all'}; ports: {', '.join(ports) or 'all'}"
        )

    s = result.summary()
    typer.echo(
        f"coverage of observed allowed connections: {s['existing_coverage']:.2%} -> "
        f"{s['new_coverage']:.2%} ({s['observed_edges']} edges, {s['denied_edges']} denied in "
        f"the input, {s['not_evaluated_edges']} not evaluated)"
    )
    typer.echo(
        f"newly denied: {s['newly_denied_edges']} edges ({s['newly_denied_evidence_edges']} "
        f"observed allowed, {s['newly_denied_evidence_connections']:,} connections)"
    )
    for e in result.newly_denied[:examples]:
        typer.echo(edge(e))
    typer.echo(f"newly allowed: {s['newly_allowed_edges']} edges")
    for e in result.newly_allowed[:examples]:
        typer.echo(edge(e))
    typer.echo(
        f"rules: {s['rules_added']} added, {s['rules_removed']} removed, "
        f"{s['rules_unchanged']} unchanged"
    )
    for key in result.rules_added[:examples]:
        typer.echo("+" + rule(key)[1:])
    for key in result.rules_removed[:examples]:
        typer.echo("-" + rule(key)[1:])
    for name in result.policies_added[:examples]:
        typer.echo(f"policy added: {name}")
    for name in result.policies_removed[:examples]:
        typer.echo(f"policy removed: {name}")
    if result.breaks_observed_traffic:
        typer.echo("NEW would deny observed allowed traffic (exit status 1).")


