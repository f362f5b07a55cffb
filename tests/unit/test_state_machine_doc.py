"""docs/state-machine.md is rendered from the lifecycle tables and must match them."""

from __future__ import annotations

import pathlib

from taskgrid.coordinator import lifecycle

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"


def test_doc_matches_the_transition_table():
    assert DOC.read_text() == lifecycle.render_markdown(), (
        "regenerate: python -m taskgrid.coordinator.lifecycle --markdown > docs/state-machine.md")
