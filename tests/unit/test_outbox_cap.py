"""The per-run cap on output a worker holds while the coordinator is unreachable."""

from __future__ import annotations

import re

from taskgrid.worker.capture import Chunk
from taskgrid.worker.outbox import Outbox, cap_output
from taskgrid.worker.records import Outcome, RunResult, TaskRun

MARKER = re.compile(r"\n\[taskgrid: (\d+) characters of output dropped")


def chunks(n: int, size: int = 10, start: int = 1) -> list[Chunk]:
    return [Chunk(seq=i, data=chr(ord("a") + i % 26) * size) for i in range(start, start + n)]


def fold(items: list[Chunk]) -> str:
    text: list[str] = []
    for chunk in sorted(items, key=lambda c: c.seq):
        if chunk.clear:
            text.clear()
        text.append(chunk.data)
    return "".join(text)


def dropped(items: list[Chunk]) -> int:
    return sum(int(m.group(1)) for c in items for m in [MARKER.match(c.data)] if m)


def test_under_the_cap_nothing_changes():
    items = chunks(5)
    assert cap_output(items, 50) is items


def test_the_middle_is_replaced_by_one_marker_and_seqs_stay_ordered():
    items = chunks(100)  # 1000 characters
    capped = cap_output(items, 400)
    assert sum(len(c.data) for c in capped) <= 400
    seqs = [c.seq for c in capped]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert capped[0] == items[0] and capped[-1] == items[-1]
    kept = sum(len(c.data) for c in capped if not MARKER.match(c.data))
    assert kept + dropped(capped) == 1000
    assert sum(1 for c in capped if MARKER.match(c.data)) == 1


def test_repeated_cuts_keep_one_marker_with_the_total():
    outbox = Outbox(max_run_chars=400)
    key = (1, 1)
    for start in range(1, 200, 10):
        outbox.add_chunks(key, chunks(10, start=start))
    held = outbox.take_output()[key]
    assert sum(1 for c in held if MARKER.match(c.data)) == 1
    kept = sum(len(c.data) for c in held if not MARKER.match(c.data))
    assert kept + dropped(held) == 2000
    assert held[-1].seq == 200


def test_chunks_before_a_clear_go_first():
    items = [*chunks(50), Chunk(seq=51, data="fresh", clear=True), *chunks(5, start=52)]
    capped = cap_output(items, 100)
    assert capped[0].seq == 51 and capped[0].clear
    assert fold(capped) == fold(items)


def test_a_dropped_clear_chunk_passes_its_clear_to_the_marker():
    items = [Chunk(seq=1, data="x" * 300, clear=True), *chunks(5, start=2)]
    capped = cap_output(items, 200)
    assert capped[0].clear and MARKER.match(capped[0].data)


def test_a_report_output_is_capped_too():
    outbox = Outbox(max_run_chars=300)
    task = TaskRun(task_id=1, attempt=1, run_id=1, uuid="u", function_name="f", args="[]",
                   vars="{}", timeout=60.0, sync_output=0.0, task_name="f")
    outbox.add_chunks(task.key, chunks(20))
    outbox.add_report(RunResult(task, Outcome.COMPLETED, "null", "", chunks(20, start=21)))
    [report] = outbox.take_reports()
    assert sum(len(c.data) for c in report.output) <= 300
    assert dropped(report.output) > 0 and report.output[-1].seq == 40
