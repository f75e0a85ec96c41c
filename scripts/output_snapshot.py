"""Write every output the command line makes for a fixed set of inputs, to diff two code versions.

    python scripts/output_snapshot.py OUT_DIR              # write OUT_DIR/<case>/...
    python scripts/output_snapshot.py OUT_DIR --compare REF_DIR   # ... then diff against REF_DIR

A refactoring that must not change behaviour (a re-layout of the package, a faster stage) runs
this once before and once after and compares: the trees must be byte-identical. The cases are the
bundled sample (each format alone, all dialects, graph files, ingest, evaluate, diff), a small
benchmark input from each generator of ``benchmarks/`` (the deep bulk Parquet shape and the
Hubble end-to-end shape), and every flow file in ``../shared/datasets`` (skipped when absent).
Exit status 1 when ``--compare`` finds a difference.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
SAMPLE = ROOT / "sample_flows"


def _recommend(args: list[str], out: Path, log: Path) -> None:
    """Run the CLI; its exit status and both streams are part of the snapshot."""
    env = dict(os.environ, RECOMMENDER_NO_PROGRESS="1", COLUMNS="120")
    done = subprocess.run(
        [sys.executable, "-m", "recommender", *args],
        capture_output=True, text=True, env=env, cwd=out, check=False,
    )
    log.write_text(
        f"$ recommend {' '.join(args)}\nexit {done.returncode}\n"
        f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}"
    )


def _inputs(work: Path) -> dict[str, list[str]]:
    """The named flow inputs: paths, made on demand for the benchmark shapes."""
    cases: dict[str, list[str]] = {
        "sample-parquet": [str(SAMPLE / "flows.parquet")],
        "sample-hubble": [str(SAMPLE / "hubble.jsonl.gz")],
        "sample-calico": [str(SAMPLE / "calico.jsonl.gz")],
    }
    sys.path.insert(0, str(ROOT))
    try:
        from recommender.samples.bulk import write_bulk_parquet
        from recommender.samples.generator import generate_connections, write_hubble_jsonl
    except ImportError:  # the layout before the stage packages
        from recommender.samples.bulk import write_bulk_parquet  # type: ignore[no-redef]
    bulk = work / "bulk-20k.parquet"
    if not bulk.exists():
        write_bulk_parquet(bulk, 20_000, seed=0)
    cases["bench-bulk-parquet"] = [str(bulk)]
    hubble = work / "hubble-2k.jsonl"
    if not hubble.exists():
        write_hubble_jsonl(generate_connections(connections=2_000, seed=0), hubble, seed=0)
    cases["bench-hubble"] = [str(hubble)]
    if SHARED.is_dir():
        for path in sorted(SHARED.rglob("*")):
            if path.suffix in (".json", ".jsonl") and "flow" in path.name:
                cases[f"shared-{path.parent.name}-{path.stem}"] = [str(path)]
    return cases


def snapshot(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # One place for the generated inputs, so that their paths (which the outputs name) are the
    # same in every snapshot.
    work = Path(tempfile.gettempdir()) / "recommender-snapshot-inputs"
    work.mkdir(exist_ok=True)
    for name, paths in _inputs(work).items():
        case = out / name
        case.mkdir(exist_ok=True)
        dialects = ["-d", "kubernetes,calico,cilium"]
        _recommend([*paths, "-o", "policies", *dialects], case, case / "run.log")
        _recommend(["ingest", *paths, "-o", "flows.parquet", "--summary"], case,
                   case / "ingest.log")
        _recommend(["graph", *paths, "-o", "graph.json"], case, case / "graph.log")
        _recommend(["graph", *paths, "-o", "graph.svg"], case, case / "graph-svg.log")
        k8s = "policies/kubernetes" if (case / "policies" / "kubernetes").is_dir() else "policies"
        _recommend(["evaluate", k8s, *paths], case, case / "evaluate.log")
        _recommend(["diff", k8s, k8s, *paths], case, case / "diff.log")
    case = out / "sample-all"
    case.mkdir(exist_ok=True)
    _recommend([str(SAMPLE / "flows.parquet"), "-o", "policies", "--holdout", "0.2",
                "--l7", "-d", "kubernetes,cilium"], case, case / "run.log")


def compare(left: Path, right: Path) -> list[str]:
    """Paths that differ between the two trees (missing on one side, or other bytes)."""
    found: list[str] = []

    def walk(cmp: filecmp.dircmp[str], prefix: str) -> None:
        found.extend(f"{prefix}{n} (only one side)" for n in cmp.left_only + cmp.right_only)
        for name in cmp.common_files:
            a, b = Path(cmp.left, name), Path(cmp.right, name)
            if a.read_bytes() != b.read_bytes():
                found.append(f"{prefix}{name}")
        for name, sub in sorted(cmp.subdirs.items()):
            walk(sub, f"{prefix}{name}/")

    walk(filecmp.dircmp(left, right), "")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--compare", type=Path, metavar="REF_DIR")
    args = parser.parse_args(argv)
    snapshot(args.out.resolve())
    if args.compare is None:
        return 0
    diffs = compare(args.compare.resolve(), args.out.resolve())
    for line in diffs:
        print("differs:", line)
    print(f"{len(diffs)} differences" if diffs else "identical")
    return 1 if diffs else 0


if __name__ == "__main__":
    raise SystemExit(main())
