"""``recommend diff``: which observed flows change verdict between two policy sets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import (
    DecisionsOpt,
    FlowsArg,
    FormatOpt,
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
def diff(
    existing: Annotated[
        Path,
        typer.Argument(
            metavar="EXISTING",
            help="The policies in force: a NetworkPolicy YAML file or a folder of them.",
            show_default=False,
        ),
    ],
    new: Annotated[
        Path,
        typer.Argument(
            metavar="NEW",
            help="The proposed policies: a NetworkPolicy YAML file or a folder of them.",
            show_default=False,
        ),
    ],
    flows: FlowsArg,
    format: FormatOpt = None,
    since: _Since = None,
    until: _Until = None,
    last: _Last = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the diff as JSON.")] = False,
    examples: Annotated[
        int, typer.Option("--examples", min=0, help="Examples printed per list.")
    ] = 10,
    trust_domain: TrustDomainOpt = "cluster.local",
    root_namespace: RootNamespaceOpt = "istio-system",
    decisions: DecisionsOpt = None,
) -> None:
    """Compare EXISTING and NEW policies on observed FLOWS: which traffic changes verdict,
    which rules are added or removed.

    For CI and GitOps pipelines: run it on a pull request that changes policies, against
    recent flows. Istio AuthorizationPolicies and PeerAuthentications in EXISTING and NEW are
    judged with Istio's semantics too (see `recommend evaluate`). With --decisions FILE,
    observed edges a ``reject`` entry names may become denied: that is intended and listed
    apart. Exit status: 0 when no observed allowed connection becomes denied (other than
    rejected ones), 1 when NEW denies observed allowed traffic that EXISTING allows (it would
    break it), 2 on bad input (unreadable flows or policies, an invalid decisions file), 130
    interrupted (Ctrl-C), 143 terminated (SIGTERM), 70 internal error (a bug). EXISTING and
    NEW may be Kubernetes, Calico or Cilium trees (even different ones: moving from one CNI to
    another), each judged with its own dialect's precedence.
    """
    from ..evaluation.diff import diff_policies
    from ..evaluation.stack import read_policy_tree
    from ..policy.reader import read_istio_policies

    window = window_config(since, until, last)  # a bad window fails before anything is read
    decided: Any = None
    if decisions is not None:
        from ..synthesis.decisions import load_decisions

        decided = load_decisions(decisions)  # a bad file fails before the flows are read
    with swap_hint([existing, new], flows):
        result = diff_policies(
            read_policy_tree(existing),
            read_policy_tree(new),
            flows,
            format=format,
            config=window,
            existing_istio=read_istio_policies(existing),
            new_istio=read_istio_policies(new),
            trust_domain=trust_domain,
            root_namespace=root_namespace,
        )
    breaks = list(result.newly_denied_evidence)
    intended: list[Any] = []
    if decided is not None:
        from ..evaluation.decision_check import describe, split_intended

        intended, breaks = split_intended(result.newly_denied_evidence, decided)
    if json_out:
        out = result.to_dict()
        if decided is not None:
            out["decisions"] = {
                "intended_denies": len(intended),
                "intended": describe(intended, 200),
                "breaking_edges": len(breaks),
            }
        typer.echo(json.dumps(out, indent=2, sort_keys=True, default=str))
    else:
        _print_diff(result, examples, decided is not None)
        if decided is not None:
            typer.echo(
                f"decisions: {len(intended)} newly denied edges are rejected by the decisions "
                f"(intended), {len(breaks)} are not"
            )
            for line in describe(intended, examples):
                typer.echo(f"  rejected: {line}")
            if breaks:
                typer.echo("NEW would deny observed allowed traffic (exit status 1).")
    if breaks:
        raise SystemExit(1)  # SystemExit, not typer.Exit: see `evaluate`



def _print_diff(result: Any, examples: int, decided: bool = False) -> None:
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
    if result.breaks_observed_traffic and not decided:
        typer.echo("NEW would deny observed allowed traffic (exit status 1).")


