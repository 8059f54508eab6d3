"""A daemon's logging: the configured level, journald priorities under systemd, warn once."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable
from typing import Any, ClassVar


class WarnOnce:
    """The house rule for a sensor, a link or a sender that keeps failing: a warning the first
    time for each key, then debug, so the log says it once and does not fill up.

    >>> warn = WarnOnce(logging.getLogger("doctest"))
    >>> warn.seen("board")
    False
    >>> warn("board", "no health from the board: %s", "timeout"); warn.seen("board")
    True
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[Hashable] = set()

    def __call__(self, key: Hashable, message: str, *args: Any) -> None:
        log = self.logger.debug if key in self._seen else self.logger.warning
        self._seen.add(key)
        log(message, *args)

    def seen(self, key: Hashable) -> bool:
        return key in self._seen

    def forget(self, key: Hashable) -> None:
        """It works again: the next failure is worth a warning."""
        self._seen.discard(key)


class JournalFormatter(logging.Formatter):
    """sd-daemon(3) priority prefixes, so journald files each line at its level."""

    _PRIORITY: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRIORITY.get(record.levelno, 6)}>{super().format(record)}"


def daemon_logging(log_level: str, verbose: int) -> None:
    """A daemon's logging: the configured level unless -v was given; journald priorities
    instead of timestamps when stderr goes to the journal."""
    root = logging.getLogger()
    if verbose == 0:
        root.setLevel(log_level.upper())
    if os.environ.get("JOURNAL_STREAM"):
        for handler in root.handlers:
            handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
