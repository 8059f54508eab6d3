"""A daemon's logging: the configured level, and journald priorities under systemd."""

from __future__ import annotations

import logging
import os
from typing import ClassVar


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
