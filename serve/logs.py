"""Structured logs: JSON lines on stderr from the ``rnnstream.serve`` logger only.

:func:`json_lines` attaches one handler to that logger (and stops it propagating), so an
application embedding the server keeps its root logger as it was. Fields passed with
``extra={...}`` become keys of the line.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import TextIO

__all__ = ["JsonFormatter", "json_lines"]

# attributes every LogRecord has; anything else came from extra={...}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 6), "level": record.levelname.lower(),
                "logger": record.name, "msg": record.getMessage()}
        line.update((k, v) for k, v in vars(record).items() if k not in _STANDARD)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def json_lines(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send the rnnstream.serve logger's records to ``stream`` (stderr) as JSON lines."""
    logger = logging.getLogger("rnnstream.serve")
    for old in [h for h in logger.handlers if getattr(h, "_rnnstream_json", False)]:
        logger.removeHandler(old)  # called again (a second server in one process): one copy
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._rnnstream_json = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return handler
