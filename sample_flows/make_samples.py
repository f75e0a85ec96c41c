"""Regenerate the sample flow files in this folder from the project's own generator.

    python sample_flows/make_samples.py [--out sample_flows] [--connections 4000] [--seed 0]

Writes ``flows.parquet`` (the canonical schema, the ground truth), ``hubble.jsonl.gz`` (Hubble
events as ``hubble observe -o json`` prints them) and ``calico.jsonl.gz`` (Calico Enterprise flow
logs): the same connections in three forms. The output is byte-for-byte reproducible.
See ``sample_flows/README.md`` for the scenario.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from recommender.samples.generator import (
    DEFAULT_SCENARIO,
    generate_connections,
    write_calico_jsonl,
    write_canonical_parquet,
    write_hubble_jsonl,
)

#: The files this script writes, in order.
FILES = ("flows.parquet", "hubble.jsonl.gz", "calico.jsonl.gz")


def make_samples(out: Path, *, connections: int | None = None, seed: int = 0) -> dict[str, int]:
    """Write the sample files into ``out``; return the records written per file."""
    out.mkdir(parents=True, exist_ok=True)

    def conns():  # a fresh stream per file: the generator is deterministic
        return generate_connections(DEFAULT_SCENARIO, connections=connections, seed=seed)

    source = f"recommender.samples:{DEFAULT_SCENARIO.name}:seed={seed}"
    return {
        "flows.parquet": write_canonical_parquet(conns(), out / "flows.parquet", source=source),
        "hubble.jsonl.gz": write_hubble_jsonl(conns(), out / "hubble.jsonl.gz", seed=seed,
                                              compresslevel=9),
        "calico.jsonl.gz": write_calico_jsonl(conns(), out / "calico.jsonl.gz", compresslevel=9),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--connections", type=int, default=None,
                        help="connections to generate (default: the scenario's 4000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = make_samples(args.out, connections=args.connections, seed=args.seed)
    for name, n in counts.items():
        size = (args.out / name).stat().st_size
        print(f"{args.out / name}: {n} records, {size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
