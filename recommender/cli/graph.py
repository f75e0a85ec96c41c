"""``recommend graph``: the communication graph and proposed segments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ._app import (
    FlowsArg,
    FormatOpt,
    WorkersOpt,
    _Last,
    _MinConnections,
    _Since,
    _Until,
    app,
)


@app.command()
def graph(
    flows: FlowsArg,
    output: Annotated[
        Path,
        typer.Option(
            "--output",
            "-o",
            help="File to write; its extension picks the format: .graphml, .json (node-link), "
            ".dot/.gv, .svg (static picture) or .html (interactive page, no network).",
        ),
    ],
    format: FormatOpt = None,
    workers: WorkersOpt = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML file with options (as for `run`)."),
    ] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace",
            "-n",
            help="Only edges with a workload in these namespaces, and their peers (repeat; "
            "shell patterns).",
        ),
    ] = None,
    exclude_namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude-namespace",
            help="Leave out edges whose only workloads are in these namespaces (repeat; shell "
            "patterns). Unlike `run`, no namespace is left out by default.",
        ),
    ] = None,
    since: _Since = None,
    until: _Until = None,
    last: _Last = None,
    min_connections: _MinConnections = None,
    external: Annotated[
        str,
        typer.Option(
            "--external",
            help="Outside peers as one node per 'address' or one per address 'class'.",
        ),
    ] = "address",
    max_nodes: Annotated[
        int | None,
        typer.Option(
            "--max-nodes",
            min=1,
            help="SVG/HTML: draw only this many nodes, the busiest (HTML: 1,000 unless given; "
            "its layout runs in the browser).",
        ),
    ] = None,
    segments: Annotated[
        bool,
        typer.Option(
            "--segments",
            help="Also propose segments (community detection) and show each node's segment "
            "(SVG/HTML tooltips, a 'segment' node attribute otherwise).",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print a summary as JSON.")] = False,
) -> None:
    """Write the communication graph of FLOWS: workloads, outside peers by address class,
    nodes and cluster entities, with ports, connections, bytes, first/last seen and verdicts.

    See docs/graph.md for the attributes and formats. Exit status: 0 written;
    2 bad input or usage (with what to do), 130 interrupted (Ctrl-C), 143
    terminated (SIGTERM), 70 internal error (a bug).
    """
    from ..analysis.graph import build_graph
    from ..config import RecommendConfig, coerce_options, load_config
    from ..errors import ConfigError
    from ..report.graph_io import GRAPH_FORMATS, write_graph

    if output.suffix.lower() not in GRAPH_FORMATS:
        write_graph(None, output)  # raises the format error before reading any flow
    if external not in ("address", "class"):
        raise ConfigError(f"--external must be 'address' or 'class', not {external!r}.")
    config = load_config(config_file) if config_file else RecommendConfig()
    options = coerce_options(
        {
            k: v
            for k, v in {
                "namespaces": namespace or None,
                "since": since,
                "until": until,
                "last": last,
                "min_connections": min_connections,
            }.items()
            if v is not None
        },
        "command line",
    )
    config = config.replace(**options)
    g = build_graph(
        flows,
        config,
        format=format,
        workers=workers,
        exclude_namespaces=tuple(exclude_namespace or ()),
        external=external,  # type: ignore[arg-type]
    )
    assignments = None
    proposal = None
    if segments:
        from ..analysis.segments import propose_segments

        proposal = propose_segments(g)
        assignments = proposal.assignments
        for node, name in assignments.items():
            g.nodes[node]["segment"] = name
    write_graph(g, output, max_nodes=max_nodes, segments=assignments)
    denied = sum(1 for *_, v in g.edges(data="verdict") if v == "denied")
    summary: dict[str, Any] = {
        "output": str(output),
        "nodes": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "denied_edges": denied,
    }
    if proposal is not None:
        summary["segments"] = len(proposal.segments)
        summary["modularity"] = round(proposal.modularity, 4)
    if json_out:
        typer.echo(json.dumps(summary, indent=2, sort_keys=True))
        return
    typer.echo(
        f"wrote {summary['nodes']:,} nodes and {summary['edges']:,} edges "
        f"({denied:,} denied) to {output}"
    )
    if proposal is not None:
        typer.echo(
            f"{len(proposal.segments)} proposed segments, modularity {proposal.modularity:.2f}"
        )


