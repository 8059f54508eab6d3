"""One self-rewriting progress line on stderr, shown only on a terminal (never in logs or pipes)."""

from __future__ import annotations

import sys


class ProgressLine:
    def __init__(self, quiet: bool = False) -> None:
        self.enabled = sys.stderr.isatty() and not quiet

    def __call__(self, text: str) -> None:
        if self.enabled:
            sys.stderr.write(f"\r\x1b[K{text}")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
