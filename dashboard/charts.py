"""Inline SVG pictures as plain data for the templates: the last hour's bars and job graphs."""

from __future__ import annotations

from dataclasses import dataclass

from taskgrid.client import JobView, MinuteCount, TaskRecord

CHART_WIDTH = 600
CHART_HEIGHT = 120
_BAR_SLOT = CHART_WIDTH / 60


@dataclass(frozen=True)
class Bar:
    """One bar of the throughput chart."""

    x: float
    y: float
    width: float
    height: float
    kind: str
    """``completed`` or ``failed``."""
    title: str


def throughput_bars(minutes: tuple[MinuteCount, ...]) -> tuple[list[Bar], int]:
    """Completed and failed bars per minute (side by side), and the scale's top value."""
    top = max([1, *(max(m.completed, m.failed) for m in minutes)])
    bars: list[Bar] = []
    half = _BAR_SLOT / 2 - 0.5
    for i, m in enumerate(minutes[-60:]):
        label = m.minute.strftime("%H:%M") if m.minute else ""
        for j, (kind, n) in enumerate((("completed", m.completed), ("failed", m.failed))):
            if n <= 0:
                continue
            h = max(1.0, n / top * (CHART_HEIGHT - 4))
            bars.append(Bar(x=round(i * _BAR_SLOT + j * half, 2), y=round(CHART_HEIGHT - h, 2),
                            width=round(half, 2), height=round(h, 2), kind=kind,
                            title=f"{label} {kind}: {n}"))
    return bars, top


NODE_W = 150
NODE_H = 40
GAP_X = 60
GAP_Y = 20
MARGIN = 10


@dataclass(frozen=True)
class Node:
    """A task of a job graph, placed."""

    task: TaskRecord
    x: int
    y: int
    layer: int


@dataclass(frozen=True)
class Edge:
    """An arrow from a prerequisite to the task that waits for it."""

    x1: int
    y1: int
    x2: int
    y2: int
    met: bool
    task_id: int
    waits_for: int


@dataclass(frozen=True)
class Graph:
    """A laid-out job graph."""

    nodes: list[Node]
    edges: list[Edge]
    width: int
    height: int


def layers(job: JobView) -> dict[int, int]:
    """Each task's topological layer: 0 waits for nothing, else one past its deepest prerequisite.

    A cycle, which the coordinator refuses, is cut at the task count.
    """
    ids = [t.id for t in job.tasks]
    waits: dict[int, list[int]] = {i: [] for i in ids}
    for task_id, waits_for, _ in job.edges:
        waits.setdefault(task_id, []).append(waits_for)
        waits.setdefault(waits_for, [])
    layer = dict.fromkeys(waits, 0)
    for _ in range(len(waits)):
        changed = False
        for task_id, prereqs in waits.items():
            want = max((layer[p] + 1 for p in prereqs), default=0)
            if want > layer[task_id] and want < len(waits):
                layer[task_id] = want
                changed = True
        if not changed:
            break
    return layer


def job_graph(job: JobView) -> Graph:
    """Tasks in columns by layer (left to right), in id order within a column."""
    layer = layers(job)
    by_id = {t.id: t for t in job.tasks}
    columns: dict[int, list[int]] = {}
    for task_id in sorted(by_id):
        columns.setdefault(layer.get(task_id, 0), []).append(task_id)
    nodes: dict[int, Node] = {}
    for col, members in columns.items():
        for row, task_id in enumerate(members):
            nodes[task_id] = Node(task=by_id[task_id], layer=col,
                                  x=MARGIN + col * (NODE_W + GAP_X),
                                  y=MARGIN + row * (NODE_H + GAP_Y))
    edges = []
    for task_id, waits_for, met in job.edges:
        a, b = nodes.get(waits_for), nodes.get(task_id)
        if a is None or b is None:
            continue
        edges.append(Edge(x1=a.x + NODE_W, y1=a.y + NODE_H // 2, x2=b.x - 4,
                          y2=b.y + NODE_H // 2, met=met, task_id=task_id, waits_for=waits_for))
    width = MARGIN * 2 + max((n.x for n in nodes.values()), default=0) + NODE_W
    height = MARGIN * 2 + max((n.y for n in nodes.values()), default=0) + NODE_H
    return Graph(nodes=list(nodes.values()), edges=edges, width=width, height=height)
