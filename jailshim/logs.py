"""What `log` means in a signature: a :class:`Logger` (structlog's bound logger, from
log.get_logger()) takes an event and its facts; a :class:`LogModule` (jailshim.log itself,
passed down by cli.main) sets up logging and binds facts to every later event.

Types only: importing this costs nothing but typing, which every command imports anyway.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["LogModule", "Logger"]


class Logger(Protocol):
    """An event logger: ``log.info("event", fact=value)``; ``log.log(logging.INFO, ...)``."""

    def debug(self, event: str, *args: Any, **facts: Any) -> Any: ...

    def info(self, event: str, *args: Any, **facts: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **facts: Any) -> Any: ...

    def error(self, event: str, *args: Any, **facts: Any) -> Any: ...

    def log(self, level: int, event: str, *args: Any, **facts: Any) -> Any: ...


class LogModule(Protocol):
    """jailshim.log: the events' set-up, their logger, and the facts bound to all of them."""

    def setup(self, log_format: str = ..., level: str = ..., stream: Any = ...) -> None: ...

    def get_logger(self) -> Logger: ...

    def bind_context(self, **facts: object) -> None: ...
