"""Folding live output chunks into run_output (the !clear! rule)."""

from __future__ import annotations

from taskgrid.coordinator.output import fold


def c(seq, data, clear=False):
    return {"seq": seq, "data": data, "clear": clear}


def test_chunks_concatenate_in_seq_order_and_duplicates_count_once():
    assert fold([c(2, "b"), c(1, "a"), c(2, "b"), c(3, "c")]) == "abc"


def test_clear_keeps_only_text_from_the_last_clear_chunk():
    assert fold([c(1, "a\n"), c(2, "b\n", True), c(3, "c\n"), c(4, "d\n", True)]) == "d\n"
