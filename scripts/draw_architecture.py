"""Draw docs/img/architecture.svg and docs/img/packages.svg, the pictures of docs/architecture.md.

Usage::

    python scripts/draw_architecture.py      # writes docs/img/architecture.svg and packages.svg
    python scripts/draw_architecture.py --output FILE    # the pipeline picture only

The layout is a fixed grid and the SVG is written by hand (no plotting library, no fonts
measured), so the same script gives the same bytes on every machine; tests/test_docs_site.py
checks the committed file is current and names the same steps as the Mermaid diagram in
docs/architecture.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from xml.sax.saxutils import escape

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "img" / "architecture.svg"
PACKAGES_OUTPUT = ROOT / "docs" / "img" / "packages.svg"
REGENERATE = "python scripts/draw_architecture.py"

# Grid: column x row, each cell COL_W x ROW_H; a box fills BOX_W x BOX_H of its cell.
COL_W, ROW_H = 196, 132
BOX_W, BOX_H = 172, 84
MARGIN_X, MARGIN_Y = 20, 64
FONT = "DejaVu Sans, Helvetica, Arial, sans-serif"

#: (key, column, row, title, detail lines, style). Titles are the step names used in the
#: Mermaid diagram too.
NODES: tuple[tuple[str, int, int, str, tuple[str, ...], str], ...] = (
    ("guardrails", 4, 0, "Guardrails", ("guardrails.yaml: rules", "apps never override"), "data"),
    ("logs", 0, 1, "Flow logs", ("Hubble · Calico", "Goldmane · Parquet/CSV"), "data"),
    ("ingest", 1, 1, "Ingest", ("read_flows", "detect · dedupe · ledger"), "step"),
    ("table", 2, 1, "Canonical flow table", ("FLOW_SCHEMA", "Arrow / Parquet"), "data"),
    ("edges", 3, 1, "Edges", ("aggregate_edges", "DuckDB or Dask"), "step"),
    ("synthesis", 4, 1, "Synthesis", ("selectors · address classes", "synthesize"), "step"),
    ("policyset", 5, 1, "PolicySet", ("policy model", "+ evidence per rule"), "data"),
    ("writers", 6, 1, "Policy files", ("Kubernetes · Calico · Cilium", "kustomize tree"), "out"),
    ("git", 7, 1, "Git repository", ("nightly commit", "Argo CD / Flux apply"), "out"),
    ("profile", 1, 2, "Profile", ("profile_flows", "top talkers, verdicts"), "step"),
    ("validation", 2, 2, "Held-out validation", ("learn early", "replay the later"), "step"),
    ("graph", 3, 2, "Graph + segments", ("build_graph", "propose_segments"), "out"),
    ("clusters", 4, 2, "Clusters + anomalies", ("behaviour clusters", "anomaly screening"), "step"),
    ("replay", 5, 2, "Replay + evaluator", ("coverage · false denies", "over-permissive"), "step"),
    ("report", 6, 2, "Report", ("report.json · report.md", "report.html"), "out"),
    ("existing", 4, 3, "Existing policies", ("YAML files", "read_policies"), "data"),
    ("diff", 5, 3, "Diff", ("verdict changes", "exit 1 if traffic breaks"), "out"),
)

#: (from, to, label).
EDGES: tuple[tuple[str, str, str], ...] = (
    ("logs", "ingest", ""),
    ("ingest", "table", ""),
    ("table", "edges", ""),
    ("edges", "synthesis", ""),
    ("synthesis", "policyset", ""),
    ("policyset", "writers", ""),
    ("writers", "git", ""),
    ("guardrails", "synthesis", ""),
    ("table", "profile", ""),
    ("table", "validation", ""),
    ("edges", "graph", ""),
    ("edges", "clusters", ""),
    ("clusters", "synthesis", ""),
    ("policyset", "replay", ""),
    ("replay", "report", ""),
    ("existing", "replay", ""),
    ("existing", "diff", ""),
    ("replay", "diff", ""),
)

Box = tuple[float, float, float, float]

STYLES = {
    "data": ("#eef4fb", "#3d6fa8"),
    "step": ("#ffffff", "#4a4a4a"),
    "out": ("#eef8ee", "#3b8a3b"),
}


def _box(key: str) -> Box:
    node = next(n for n in NODES if n[0] == key)
    x = MARGIN_X + node[1] * COL_W + (COL_W - BOX_W) / 2
    y = MARGIN_Y + node[2] * ROW_H + (ROW_H - BOX_H) / 2
    return x, y, BOX_W, BOX_H


def _anchor(box: Box, toward: tuple[float, float]) -> tuple[float, float]:
    """Where the line from the box's centre toward ``toward`` leaves the box."""
    x, y, w, h = box
    cx, cy = x + w / 2, y + h / 2
    dx, dy = toward[0] - cx, toward[1] - cy
    if dx == 0 and dy == 0:  # pragma: no cover - no edge joins a box to itself
        return cx, cy
    scale = min(
        (w / 2) / abs(dx) if dx else float("inf"),
        (h / 2) / abs(dy) if dy else float("inf"),
    )
    return cx + dx * scale, cy + dy * scale


def _fmt(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def render() -> str:
    """The whole SVG document."""
    columns = 1 + max(n[1] for n in NODES)
    rows = 1 + max(n[2] for n in NODES)
    width = 2 * MARGIN_X + columns * COL_W
    height = MARGIN_Y + rows * ROW_H + 16
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" role="img" '
        'aria-labelledby="title">',
        '<title id="title">recommender: flow logs in, policies and a report out</title>',
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#555"/></marker>',
        "</defs>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    # The span that recommend() / `recommend run` covers: ingest .. policy files.
    x0 = _box("ingest")[0] - 10
    x1 = _box("writers")[0] + BOX_W + 10
    y0 = _box("ingest")[1] - 34
    y1 = _box("ingest")[1] + BOX_H + 10
    out.append(
        f'<rect x="{_fmt(x0)}" y="{_fmt(y0)}" width="{_fmt(x1 - x0)}" height="{_fmt(y1 - y0)}" '
        'rx="10" fill="none" stroke="#9a9a9a" stroke-dasharray="6 4"/>'
    )
    out.append(
        f'<text x="{_fmt(x0 + 12)}" y="{_fmt(y0 + 20)}" font-size="13" fill="#555">'
        "recommend(flows)  ·  recommend run FLOWS -o DIR  ·  recommend job (nightly)</text>"
    )
    out.append(
        f'<text x="{MARGIN_X}" y="24" font-size="16" font-weight="bold" fill="#222">'
        "recommender: the pipeline</text>"
    )
    for src, dst, label in EDGES:
        a, b = _box(src), _box(dst)
        ca = (a[0] + a[2] / 2, a[1] + a[3] / 2)
        cb = (b[0] + b[2] / 2, b[1] + b[3] / 2)
        start, end = _anchor(a, cb), _anchor(b, ca)
        out.append(
            f'<line x1="{_fmt(start[0])}" y1="{_fmt(start[1])}" x2="{_fmt(end[0])}" '
            f'y2="{_fmt(end[1])}" stroke="#555" stroke-width="1.4" marker-end="url(#arrow)"/>'
        )
        if label:
            mx, my = (start[0] + end[0]) / 2, (start[1] + end[1]) / 2
            out.append(
                f'<text x="{_fmt(mx + 6)}" y="{_fmt(my)}" font-size="11" fill="#555" '
                f'font-style="italic">{escape(label)}</text>'
            )
    for key, _col, _row, title, details, style in NODES:
        x, y, w, h = _box(key)
        fill, stroke = STYLES[style]
        out.append(
            f'<g id="{key}"><rect x="{_fmt(x)}" y="{_fmt(y)}" width="{w}" height="{h}" rx="8" '
            f'fill="{fill}" stroke="{stroke}" stroke-width="1.5"/>'
        )
        cx = _fmt(x + w / 2)
        out.append(
            f'<text x="{cx}" y="{_fmt(y + 26)}" font-size="13.5" font-weight="bold" '
            f'text-anchor="middle" fill="#222">{escape(title)}</text>'
        )
        for i, line in enumerate(details):
            out.append(
                f'<text x="{cx}" y="{_fmt(y + 48 + 17 * i)}" font-size="11.5" '
                f'text-anchor="middle" fill="#444">{escape(line)}</text>'
            )
        out.append("</g>")
    legend_y = height - 10
    legend = (("data", "data"), ("step", "library step"), ("out", "what you get"))
    x = MARGIN_X
    for style, text in legend:
        fill, stroke = STYLES[style]
        out.append(
            f'<rect x="{x}" y="{legend_y - 11}" width="14" height="12" rx="3" fill="{fill}" '
            f'stroke="{stroke}"/>'
        )
        out.append(
            f'<text x="{x + 20}" y="{legend_y}" font-size="11.5" fill="#444">{text}</text>'
        )
        x += 150
    out.append("</svg>")
    return "\n".join(out) + "\n"


#: The package layers, lowest first, with what each holds: a package imports only the layers
#: below it (tests/test_layout.py checks the code against the same list).
LAYERS: tuple[tuple[tuple[str, str], ...], ...] = (
    (("errors", "the one exception tree"), ("_forked", "child processes")),
    (("policy", "model · dialect writers · YAML"),),
    (("config", "RecommendConfig"),),
    (("ingest", "readers · schema · ledger"), ("samples", "generators (not at run time)")),
    (("aggregate", "edges · addresses · selectors"),),
    (("analysis", "graph · anomaly · segments · clustering"),),
    (("synthesis", "rules · L7 · hosts · granularity"),),
    (("guardrails", "model · loading · rendering"),),
    (("evaluation", "semantics · replay · diff · validation"),),
    (("engine", "embedded or Dask"),),
    (("report", "model · Markdown · HTML · graph files"),),
    (("pipeline", "recommend()"),),
    (("job", "the scheduled job"),),
    (("cli", "the recommend command"),),
)


#: The layers that are single modules at the top of the package, not sub-packages.
_MODULES = ("pipeline", "config", "errors", "_forked")


def render_packages() -> str:
    """The packages as layers, the highest at the top, each row importing only rows below."""
    row_h, box_h, box_w, gap = 46, 36, 300, 16
    width = 2 * MARGIN_X + 2 * box_w + gap
    top = 52
    height = top + len(LAYERS) * row_h + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="{FONT}" role="img" '
        'aria-labelledby="title">',
        '<title id="title">recommender packages: each imports only the layers below it</title>',
        f'<text x="{MARGIN_X}" y="28" font-size="15" font-weight="bold" fill="#222">'
        "recommender/: one package per stage (imports point down)</text>",
    ]
    for i, layer in enumerate(reversed(LAYERS)):
        y = top + i * row_h
        for j, (name, detail) in enumerate(layer):
            w = box_w if len(layer) > 1 else 2 * box_w + gap
            x = MARGIN_X + j * (box_w + gap)
            fill, stroke = STYLES["data" if "." not in name else "step"]
            if name in _MODULES:
                fill, stroke = STYLES["step"]
            out.append(
                f'<rect x="{x}" y="{y}" width="{w}" height="{box_h}" rx="6" fill="{fill}" '
                f'stroke="{stroke}" stroke-width="1.4"/>'
            )
            label = f"{name}.py" if name in _MODULES else f"{name}/"
            out.append(
                f'<text x="{x + 12}" y="{y + 23}" font-size="13" font-weight="bold" '
                f'fill="#222">{escape(label)}</text>'
            )
            out.append(
                f'<text x="{x + 122}" y="{y + 23}" font-size="12" fill="#444">'
                f"{escape(detail)}</text>"
            )
    out.append("</svg>")
    return "\n".join(out) + "\n"


def titles() -> list[str]:
    """The step names, as the Mermaid diagram must also use them."""
    return [n[3] for n in NODES]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--output", "-o", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)
    if args.output == OUTPUT:
        PACKAGES_OUTPUT.write_text(render_packages(), encoding="utf-8")
        print(f"wrote {PACKAGES_OUTPUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
