"""One format for everything the server writes on stderr (setting ``log_format``).

- ``json``: one JSON object per line, ``{"time", "level", "logger", "message"}`` plus
  ``"exception"`` (the traceback) when there is one. An access line (``customerkey.access``,
  see ``api.middleware.AccessLogMiddleware``) carries its fields (``method``, ``path``,
  ``status``, ``duration_ms``, ...) at the top level instead of a message.
- ``text``: ``<time> <LEVEL> <logger>: <message>`` lines; an access line as ``key=value`` pairs.
- ``auto`` (the default): text when stderr is a terminal, JSON otherwise (a service manager, a
  container runtime, a file).

It covers customerkey's loggers, uvicorn's own (``uvicorn.error``), Python warnings and what
the server tells the operator (the banner, the next steps on first start, certificate
warnings), which go through the ``customerkey.serve`` logger.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

ACCESS_FIELDS = "access"


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
        }
        fields = getattr(record, ACCESS_FIELDS, None)
        if isinstance(fields, dict):
            line.update(fields)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, ACCESS_FIELDS, None)
        if isinstance(fields, dict):
            message = " ".join(f"{k}={v}" for k, v in fields.items() if k != "time")
        else:
            message = record.getMessage()
        line = f"{_time(record)} {record.levelname} {record.name}: {message}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def resolve_format(setting: str, stream: TextIO) -> str:
    if setting != "auto":
        return setting
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def configure_logging(setting: str, stream: TextIO | None = None) -> str:
    """Send every log record (and Python warnings) to ``stream`` (stderr) in one format;
    returns the format chosen."""
    stream = stream or sys.stderr
    chosen = resolve_format(setting, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if chosen == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn's own handlers, when a config gave it some, would write a second format.
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.captureWarnings(True)
    return chosen
