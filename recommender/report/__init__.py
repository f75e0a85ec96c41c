"""The report: every stage's results in; report.json, report.md, report.html and graph files out.

Public modules:

- :mod:`~recommender.report.model`: :func:`build_report` (the JSON-ready model),
  :func:`finish_report` (verdict and section list), :func:`report_json`;
- :mod:`~recommender.report.verdict`: ready, review first or not ready, with the reasons;
- :mod:`~recommender.report.sections`: the section list all three forms follow, grouped findings;
- :mod:`~recommender.report.markdown`: :func:`report_markdown`;
- :mod:`~recommender.report.text`: plurals, durations, times and flag meanings for people;
- :mod:`~recommender.report.html`: :func:`report_html`, the self-contained page;
- :mod:`~recommender.report.guardrails`: the guardrails section;
- :mod:`~recommender.report.graph_svg`, :mod:`~recommender.report.graph_html`: graph pictures;
- :mod:`~recommender.report.graph_io`: :func:`write_graph` (HTML, SVG, GraphML, JSON, DOT).
"""

from .model import REPORT_VERSION, build_report, report_json, report_markdown

__all__ = ["REPORT_VERSION", "build_report", "report_json", "report_markdown"]
