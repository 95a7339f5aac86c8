"""structlog, set up once: JSON lines on stderr for machines, a coloured console for people.

Containers and journald read stderr line by line, so anything that is not a TTY gets one JSON
object per event. NO_COLOR (https://no-color.org) turns colours off on a TTY.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from jailshim.logs import Logger

__all__ = ["LOG_FORMATS", "LOG_LEVELS", "bind_context", "get_logger", "setup"]

LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _wants_console(log_format: str, stream: Any) -> bool:
    if log_format == "auto":
        isatty = getattr(stream, "isatty", None)
        return bool(isatty and isatty())
    return log_format == "console"


def _event_first(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """Put event, level and timestamp first in each JSON line, so people can scan them."""
    head: dict[str, Any] = {k: event.pop(k) for k in ("timestamp", "level", "event") if k in event}
    return {**head, **event}


def setup(log_format: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog for this process. Safe to call again (the last call wins)."""
    stream = stream if stream is not None else sys.stderr
    renderer: Any
    tail: list[Any] = []
    if _wants_console(log_format, stream):
        colors = "NO_COLOR" not in os.environ and bool(getattr(stream, "isatty", bool)())
        renderer = structlog.dev.ConsoleRenderer(colors=colors, sort_keys=False)
    else:
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        tail = [_event_first, structlog.processors.format_exc_info]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *tail,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            getattr(logging, level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Logger:
    """The package's logger; events carry whatever was bound with ``bind_context``."""
    logger: Logger = structlog.get_logger("jailshim")
    return logger


def bind_context(**facts: object) -> None:
    """Facts every following event carries (the jail, the command)."""
    structlog.contextvars.bind_contextvars(**facts)
