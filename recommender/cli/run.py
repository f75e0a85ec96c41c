"""``recommend run`` (and ``recommend FLOWS...``): policies and the report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import (
    DecisionsOpt,
    EngineOpt,
    FormatOpt,
    GuardrailsOpt,
    ProfileOpt,
    RunFlowsArg,
    SchedulerOpt,
    WorkersOpt,
    _guardrails_summary,
    _Last,
    _MinConnections,
    _print_ledger,
    _print_timings,
    _RowProgress,
    _Since,
    _Until,
    app,
    verbosity,
)


@app.command()
def run(
    flows: RunFlowsArg,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the policy tree and reports.")
    ] = Path("recommendations"),
    format: FormatOpt = None,
    workers: WorkersOpt = None,
    config_file: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML file with any of the options below.")
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", "-n", help="Only these namespaces get policies (repeat; shell patterns)."
        ),
    ] = None,
    exclude_namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-namespace",
            help="Namespaces that get no policies (repeat; shell patterns); "
            "replaces the default list of system namespaces.",
        ),
    ] = None,
    since: _Since = None,
    until: _Until = None,
    last: _Last = None,
    min_connections: _MinConnections = None,
    port_range_budget: Annotated[
        int | None, typer.Option(help="Unobserved ports a port range may add (0: no ranges).")
    ] = None,
    cidr_budget: Annotated[
        int | None,
        typer.Option(help="Unobserved addresses a merged CIDR may add (0: exact addresses)."),
    ] = None,
    allow_unestablished: Annotated[
        bool,
        typer.Option(
            "--allow-unestablished",
            help="Give rules to edges whose connections were all attempted but never "
            "established (resets, unanswered retried SYNs, no answer counted); by default they "
            "get none and the report lists them under 'Attempted, never established'.",
        ),
    ] = False,
    trust_all_flows: Annotated[
        bool,
        typer.Option(
            "--trust-all-flows",
            help="Keep flows that look like scanning or lateral movement in the allow rules "
            "(they are still reported under 'anomalies'); by default they get no rule.",
        ),
    ] = False,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact",
            help="Workloads of a namespace with identical rules share one policy (a set-based "
            "selector that selects nothing else); see docs/clustering.md.",
        ),
    ] = False,
    compaction_budget: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Unobserved (workload, peer, port) grants a policy shared by a behavioural "
            "cluster may add (implies --compact; 0: identical rules only).",
        ),
    ] = None,
    holdout: Annotated[
        float | None,
        typer.Option(
            "--holdout",
            metavar="FRACTION",
            help="Held-out validation: also learn on the earliest 1-FRACTION of the time span "
            "and replay the latest FRACTION (e.g. 0.2) against those policies; the report's "
            "'holdout' section gives the false-deny rate and rule churn. The policies written "
            "are still learned from all flows.",
        ),
    ] = None,
    split_at: Annotated[
        str | None,
        typer.Option(
            "--split-at",
            metavar="TIME",
            help="Held-out validation split at this ISO 8601 time instead of --holdout.",
        ),
    ] = None,
    guardrails: GuardrailsOpt = None,
    decisions: DecisionsOpt = None,
    guardrails_format: Annotated[
        str | None,
        typer.Option(
            "--guardrails-format",
            help="How guardrails are written to _guardrails/: cluster-network-policy, "
            "admin-network-policy, calico or cilium (default: the dialect of each tree, "
            "kubernetes giving cluster-network-policy); also whose precedence judges the flows.",
        ),
    ] = None,
    dialect: Annotated[
        list[str] | None,
        typer.Option(
            "--dialect",
            "-d",
            metavar="NAME",
            help="Output dialect: kubernetes (default), calico, cilium, istio "
            "(AuthorizationPolicy); repeat or give a comma list for several, each written into "
            "its own sub-folder of --output.",
        ),
    ] = None,
    staged: Annotated[
        bool | None,
        typer.Option(
            "--staged/--no-staged",
            help="Calico: StagedNetworkPolicy (and StagedGlobalNetworkPolicy) for a safe rollout.",
            show_default=False,
        ),
    ] = None,
    tier: Annotated[
        str | None,
        typer.Option(
            help="Calico: the tier of the recommended policies (recommendations); 'default' "
            "for Calico's default tier."
        ),
    ] = None,
    domains: Annotated[
        bool | None,
        typer.Option(
            "--domains/--no-domains",
            help="Egress to external addresses with observed DNS names by name: Calico "
            "destination.domains (Calico Enterprise/Cloud), Cilium toFQDNs with the DNS proxy "
            "rule.",
            show_default=False,
        ),
    ] = None,
    l7: Annotated[
        bool | None,
        typer.Option(
            "--l7/--no-l7",
            help="Cilium and Istio: HTTP method and path rules from observed L7 (HTTP) flows.",
            show_default=False,
        ),
    ] = None,
    service_accounts: Annotated[
        bool | None,
        typer.Option(
            "--service-accounts/--no-service-accounts",
            help="Calico and Cilium: select workloads by service account where flows carry it.",
            show_default=False,
        ),
    ] = None,
    host_policies: Annotated[
        bool | None,
        typer.Option(
            "--host-policies/--no-host-policies",
            help="Calico and Cilium: policies for the nodes seen as flow endpoints (Calico "
            "GlobalNetworkPolicy over HostEndpoints, CiliumClusterwideNetworkPolicy).",
            show_default=False,
        ),
    ] = None,
    network_sets: Annotated[
        bool | None,
        typer.Option(
            "--network-sets/--no-network-sets",
            help="Calico: put each rule's external CIDRs in a NetworkSet the rule selects.",
            show_default=False,
        ),
    ] = None,
    trust_domain: Annotated[
        str | None,
        typer.Option(
            "--trust-domain",
            metavar="DOMAIN",
            help="Istio: the mesh's trust domain, first part of the principals "
            "(DOMAIN/ns/NS/sa/SA; default cluster.local).",
        ),
    ] = None,
    mtls: Annotated[
        str | None,
        typer.Option(
            "--mtls",
            metavar="MODE",
            help="Istio: 'strict' adds a STRICT PeerAuthentication per namespace; the report "
            "lists the plain-text peers it would cut off.",
        ),
    ] = None,
    inventory: Annotated[
        Path | None,
        typer.Option(
            "--inventory",
            metavar="FILE",
            help="YAML list of machines outside the cluster (name, cidrs, labels; see "
            "docs/dialects.md): their addresses become named groups.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the policies as YAML (as JSON with --json); write nothing."
        ),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report summary as JSON.")
    ] = False,
    engine: EngineOpt = "embedded",
    scheduler: SchedulerOpt = None,
    profile: ProfileOpt = False,
) -> None:
    """Recommend least-privilege NetworkPolicies from flows (the default command).

    FLOWS may be - (standard input) or a pipe: hubble observe -o json | recommend -.
    Exit status: 0 when the self-check passed; 3 when it failed: the policies would deny
    observed allowed traffic, or allow flows the input shows as denied or never established
    (one line per problem on stderr; the policies and the report are still written, and the
    report's first lines say the same); 2 on bad input or options (with what to do); 130
    interrupted (Ctrl-C), 143 terminated (SIGTERM); 70 internal error (a bug).

    The last line printed is the report's verdict: ready, review first or not ready, with the
    number of reasons (docs/report.md); the verdict alone does not change the exit status.
    """
    if engine == "embedded" and holdout is None:
        from ..ingest.parallel import prestart

        prestart(flows, format, workers)  # workers import while this process imports the rest
    from ..config import RecommendConfig, coerce_options, load_config
    from ..pipeline import recommend

    config = load_config(config_file) if config_file else RecommendConfig()
    options = coerce_options(
        {
            k: v
            for k, v in {
                "namespaces": namespace or None,
                "exclude_namespaces": exclude_namespace,
                "since": since,
                "until": until,
                "last": last,
                "min_connections": min_connections,
                "port_range_budget": port_range_budget,
                "cidr_budget": cidr_budget,
                "allow_unestablished": True if allow_unestablished else None,
                "trust_all_flows": True if trust_all_flows else None,
                "compact_policies": True if compact or compaction_budget else None,
                "compaction_budget": compaction_budget,
                "guardrails": str(guardrails) if guardrails is not None else None,
                "guardrails_format": guardrails_format,
                "decisions": str(decisions) if decisions is not None else None,
                "dialects": dialect or None,
                "staged": staged,
                "tier": tier,
                "domains": domains,
                "l7": l7,
                "service_accounts": service_accounts,
                "host_policies": host_policies,
                "network_sets": network_sets,
                "inventory": str(inventory) if inventory is not None else None,
                "trust_domain": trust_domain,
                "mtls": mtls,
            }.items()
            if v is not None
        },
        "command line",
    )
    from ..report.text import plural
    from ..report.verdict import verdict_line

    with _RowProgress(sys.stderr.isatty() and not json_out, "reading") as progress:
        result = recommend(
            flows,
            config.replace(**options),
            format=format,
            workers=workers,
            holdout=holdout,
            split_at=split_at,
            engine=engine,
            scheduler=scheduler,
            on_batch=progress.callback,
            output=None if dry_run else output,  # written while the report is computed
        )
    if dry_run and json_out:  # the policies as JSON, with the report summary; nothing written
        payload = {
            "dry_run": True,
            "manifests": {name: result.manifests(name) for name in result.config.dialects},
            **result.report["summary"],
        }
        typer.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))
        if profile or verbosity() > 0:
            _print_timings(result.timings)
        return
    if dry_run:
        several = len(result.config.dialects) > 1
        for name in result.config.dialects:
            if several:
                typer.echo(f"# dialect: {name}")
            typer.echo(result.to_yaml(name), nl=False)
        if profile or verbosity() > 0:
            _print_timings(result.timings)
        typer.echo(verdict_line(result.report["verdict"]), err=True)  # stdout holds the YAML
        _fail_on_self_check(result.report)
        return
    written = result.written
    if profile or verbosity() > 0:
        _print_timings(result.timings)
    summary = result.report["summary"]
    if json_out:
        typer.echo(
            json.dumps(
                {
                    "output": str(output),
                    "files": len(written),
                    **summary,
                    "verdict": result.report["verdict"],
                    **(
                        {"decisions": _decisions_summary(result.report["decisions"])}
                        if "decisions" in result.report
                        else {}
                    ),
                    **({"holdout": result.report["holdout"]} if "holdout" in result.report else {}),
                    **(
                        {"guardrails": _guardrails_summary(result.report["guardrails"])}
                        if "guardrails" in result.report
                        else {}
                    ),
                },
                indent=2,
                sort_keys=True,
                default=str,
            )
        )
        _fail_on_self_check(result.report)
        return
    typer.echo(
        f"wrote {plural(summary['policies'], 'policy', 'policies')} "
        f"({plural(summary['rules'], 'rule')}) for "
        f"{plural(len(summary['namespaces_in_scope']), 'namespace')} to {output}/"
    )
    if result.report.get("ingest"):
        _print_ledger(result.report["ingest"])
    mixed = int(((result.report.get("self_check") or {}).get("mixed_verdicts") or {}).get(
        "edges") or 0)  # fmt: skip
    both = f" ({mixed} also allowed in the input, so allowed)" if mixed else ""
    typer.echo(
        f"{summary['flagged_rules']} rules flagged for review, {summary['denied_edges'] - mixed} "
        f"denied edges not allowed{both}, {summary['excluded_edges']} edges left out; see "
        f"{output}/report.md"
    )
    anomalies = result.report.get("anomalies")
    if anomalies and anomalies["flagged"]:
        kept = "kept (--trust-all-flows)" if anomalies["trust_all_flows"] else "left out"
        typer.echo(
            f"{anomalies['flagged']} edges look like scanning or lateral movement "
            f"({anomalies['allowed_edges']} of them allowed in the input: {kept}); see "
            "'Anomalies' in the report"
        )
    if "guardrails" in result.report:
        g = _guardrails_summary(result.report["guardrails"])
        typer.echo(
            f"guardrails {g['name']}: {g['conflicts']} observed edges a guardrail denies (no "
            "allow rule; see 'Conflicts to resolve'); control checks (evidence, not an "
            "assessment): "
            + ", ".join(f"{k} {v}" for k, v in g["compliance"].items())
        )
    held = result.report.get("holdout")
    if held:
        typer.echo(
            f"held-out validation (split at {held['split_at']}): false-deny rate "
            f"{held['false_deny_rate']:.2%} ({held['false_deny_connections']:,} of "
            f"{held['observed_connections']:,} later connections), rule stability "
            f"{held['churn']['stability']:.2f}"
        )
    if "decisions" in result.report:
        d = _decisions_summary(result.report["decisions"])
        typer.echo(
            f"decisions: {d['applied']} applied, {d['stale']} matched nothing, {d['expired']} "
            "expired; see 'Decisions' in the report"
        )
    typer.echo(verdict_line(result.report["verdict"], f"{output}/report.md"))
    _fail_on_self_check(result.report)


def _decisions_summary(section: dict[str, Any]) -> dict[str, Any]:
    return {k: section[k] for k in ("total", "applied", "stale", "expired")}


#: Exit status of ``recommend run`` when its self-check fails (see the docstring of run).
SELF_CHECK_FAILED = 3


def _fail_on_self_check(report: dict[str, Any]) -> None:
    """One line per self-check problem on stderr, and exit status 3, when there are any."""
    problems = (report.get("self_check") or {}).get("problems") or []
    for problem in problems:
        typer.echo(f"self-check failed: {problem['message']}", err=True)
    if problems:
        # SystemExit, not typer.Exit: see `evaluate`.
        raise SystemExit(SELF_CHECK_FAILED)
