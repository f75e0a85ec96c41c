"""The docs stay true to the code."""

from __future__ import annotations

import re
from pathlib import Path

from recommender import FLOW_SCHEMA, RecommendConfig
from recommender.report.model import REPORT_VERSION

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_flow_schema_doc_lists_every_column():
    text = (DOCS / "flow-schema.md").read_text()
    documented = set(re.findall(r"`([a-z0-9_]+)`", text))
    missing = [name for name in FLOW_SCHEMA.names if name not in documented]
    assert not missing, f"columns missing from docs/flow-schema.md: {missing}"
    assert FLOW_SCHEMA.metadata[b"recommender.schema_version"].decode() in text


def test_concepts_doc_lists_every_option():
    text = (DOCS / "concepts.md").read_text()
    options = [f for f in RecommendConfig.__dataclass_fields__ if f != "extra"]
    missing = [name for name in options if f"{name}:" not in text]
    assert not missing, f"options missing from docs/concepts.md: {missing}"


def test_report_doc_names_the_version():
    assert f'report_version "{REPORT_VERSION}"' in (DOCS / "report.md").read_text()
