"""Logging setup shared by `taskgrid coordinator` and `taskgrid worker`: text or JSON lines.

Importing this module quiets gRPC's C core (GRPC_VERBOSITY=ERROR unless the user set it), so
the entry points import it before anything that loads grpc.

The JSON format is one object per line with the keys `time` (RFC 3339, UTC, milliseconds),
`level` (DEBUG, INFO, WARNING, ERROR, CRITICAL), `logger` and `message`, then the fields of
the message: our log lines end with `key=value` pairs ("worker lost worker=w1 silent_s=9.0"),
and each such pair whose value has no space becomes a field (numbers as numbers), as do the
`extra=` attributes of the call. The Go worker writes the same keys (worker/go/worker/logs.go).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import sys
from typing import Any, TextIO

GRPC_VERBOSITY_ENV = "GRPC_VERBOSITY"
os.environ.setdefault(GRPC_VERBOSITY_ENV, "ERROR")

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_FORMAT = "text"
DEFAULT_LEVEL = "INFO"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: the keys every JSON line has, in this order
SCHEMA_KEYS = ("time", "level", "logger", "message")
#: attribute that marks the handler installed by `setup`
_MARK = "_taskgrid_logs"

#: `key=value` with a lowercase identifier key and a value without spaces, not inside a word
_PAIR = re.compile(r"(?<![\w=])([a-z_][a-z0-9_]*)=(\S+)")
_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.\d*|\.\d+|\d+)([eE][-+]?\d+)?")
#: LogRecord attributes that are not `extra=` fields
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


def _scalar(text: str) -> Any:
    """`text` as a bool, an int or a float when it is one, else the text itself."""
    if text in ("True", "False", "true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def message_fields(message: str) -> dict[str, Any]:
    """The `key=value` pairs of a formatted log message (values without spaces)."""
    return {key: _scalar(value.rstrip(",;")) for key, value in _PAIR.findall(message)}


def rfc3339(timestamp: float) -> str:
    """`timestamp` (seconds since the epoch) as RFC 3339 UTC with milliseconds."""
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: the schema keys, then the message's fields."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        message = record.getMessage()
        entry: dict[str, Any] = {
            "time": rfc3339(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        for key, value in message_fields(message).items():
            entry.setdefault(key, value)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and not key.startswith("_") and key not in SCHEMA_KEYS:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of log format `fmt` ("text" or "json")."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {fmt!r} (choose from {', '.join(FORMATS)})")


def setup(level: str = DEFAULT_LEVEL, fmt: str = DEFAULT_FORMAT,
          stream: TextIO | None = None) -> None:
    """Send every log record (and Python warnings) to `stream` (stderr) in format `fmt`.

    It replaces the handler of an earlier call, and leaves other handlers (a test's) alone.
    """
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(fmt))
    setattr(handler, _MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
