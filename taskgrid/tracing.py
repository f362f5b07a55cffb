"""OpenTelemetry tracing: optional (the `tracing` extra), and nothing imported while off.

Turned on by `--tracing` (coordinator, worker) or `Scheduler(..., tracing=True)`;
spans go to the process's OpenTelemetry tracer provider, which the operator
configures as usual (for example by running the program under
`opentelemetry-instrument`, or by setting one up in the application that uses
the client). The trace follows a task:

- the client's `taskgrid.queue_task` span travels to the coordinator as W3C
  `traceparent` gRPC metadata;
- the coordinator's `QueueTask` span is its child, and its context is stored
  with the task (`scheduler_task.trace_context`);
- the coordinator's `taskgrid.lease` and `taskgrid.report` spans, and the
  worker's `taskgrid.run` span (the Lease carries the context), are children of
  it, so one trace runs from queue to result.

While tracing is off, every function here returns at once and the
`opentelemetry` packages are never imported.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

#: the W3C trace context header, as gRPC metadata
TRACEPARENT = "traceparent"
TRACER_NAME = "taskgrid"

_enabled = False


class TracingUnavailableError(RuntimeError):
    """--tracing was asked for, but OpenTelemetry is not installed."""


def enable() -> None:
    """Trace from now on (imports OpenTelemetry's API).

    Raises:
        TracingUnavailableError: the `tracing` extra is not installed.
    """
    global _enabled
    try:
        import opentelemetry.propagate  # noqa: F401 - the import is the check
        import opentelemetry.trace  # noqa: F401
    except ImportError as exc:
        raise TracingUnavailableError(
            "tracing needs OpenTelemetry: pip install 'taskgrid[tracing]'") from exc
    _enabled = True


def enabled() -> bool:
    """Is tracing on in this process?"""
    return _enabled


def _kind(name: str) -> Any:
    from opentelemetry.trace import SpanKind
    return getattr(SpanKind, name.upper())


def _context(parent: str | None) -> Any:
    from opentelemetry import propagate
    return propagate.extract({TRACEPARENT: parent}) if parent else None


def _traceparent() -> str | None:
    from opentelemetry import propagate
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT)


@contextlib.contextmanager
def span(name: str, parent: str | None = None, kind: str = "internal",
         attributes: Mapping[str, Any] | None = None) -> Iterator[str | None]:
    """A span around the block, child of `parent` (a traceparent) or of the current span.

    Yields the span's own traceparent, to hand on (None while tracing is off).
    """
    if not _enabled:
        yield None
        return
    from opentelemetry import trace
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(name, context=_context(parent), kind=_kind(kind),
                                      attributes=dict(attributes or {})):
        yield _traceparent()


def call_options(traceparent: str | None) -> dict[str, Any]:
    """Keyword arguments of a gRPC call carrying a traceparent ({} while untraced)."""
    return {"metadata": [(TRACEPARENT, traceparent)]} if traceparent else {}


def from_metadata(pairs: Any) -> str | None:
    """The traceparent of a call's invocation metadata, if any (None while off)."""
    if not _enabled or not pairs:
        return None
    for key, value in pairs:
        if key == TRACEPARENT and isinstance(value, str):
            return value
    return None


def start(name: str, parent: str | None, attributes: Mapping[str, Any] | None = None) -> Any:
    """Start a span that ends elsewhere (`finish`); None while tracing is off."""
    if not _enabled:
        return None
    from opentelemetry import trace
    return trace.get_tracer(TRACER_NAME).start_span(
        name, context=_context(parent), kind=_kind("consumer"),
        attributes=dict(attributes or {}))


def finish(handle: Any, outcome: str, error: str = "") -> None:
    """End a span from `start` with the run's outcome (an error status unless COMPLETED)."""
    if handle is None:
        return
    from opentelemetry.trace import Status, StatusCode
    handle.set_attribute("taskgrid.outcome", outcome)
    if outcome != "COMPLETED":
        handle.set_status(Status(StatusCode.ERROR, error[-200:] or outcome))
    handle.end()


def record(name: str, parent: str | None, attributes: Mapping[str, Any] | None = None) -> None:
    """A short span, child of `parent`, for a step with no block of its own."""
    if not _enabled or not parent:
        return
    with span(name, parent, attributes=attributes):
        pass
