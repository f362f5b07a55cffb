"""The Grafana dashboard in deploy/ only charts metrics that exist (docs/metrics.md lists them)."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_metric_the_dashboard_charts_is_documented_and_every_panel_has_a_query():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "taskgrid.json").read_text())
    documented = set(re.findall(r"`(taskgrid_[a-z_]+)`", (ROOT / "docs" / "metrics.md")
                                .read_text()))
    used = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= {re.sub(r"_(bucket|count|sum)$", "", m)
                     for m in re.findall(r"taskgrid_[a-z_]+", target["expr"])}
    assert used and used <= documented, used - documented
