"""What every ``fleetbench`` command shares: exit codes, the parser class, argument types.

The agent's, the bridge's and the coordinator's commands all use these, so one ``fleetbench``
command line answers every mistake the same way: one line, exit status 2.
"""

from __future__ import annotations

import argparse
import difflib
import math
import re
from typing import Callable, NoReturn

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_NOT_RUNNING = 3  # `fleetbench status`, as `systemctl status` says "inactive"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like our own usage errors
        self.exit(EXIT_USAGE, f"{self.prog}: error: {suggest(message)}\n")


def suggest(message: str) -> str:
    """argparse's "invalid choice" with the nearest choice offered.

    >>> suggest("argument command: invalid choice: 'bnech' (choose from 'bench', 'agent')")
    "argument command: invalid choice: 'bnech' (choose from 'bench', 'agent'); did you mean 'bench'?"
    """
    found = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
    if not found:
        return message
    choices = re.findall(r"'([^']*)'", found.group(2))
    close = difflib.get_close_matches(found.group(1), choices, n=1, cutoff=0.6)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def whole(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is negative" if minimum == 0 else f"{text!r} is less than {minimum}"
            )
        return value

    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite, non-negative number of seconds")
    return value


def ago(seconds: float) -> str:
    """A span of time for people: ``42 s``, ``17 min``, ``3 h 5 min``.

    >>> ago(42.4), ago(1030), ago(11100)
    ('42 s', '17 min', '3 h 5 min')
    """
    whole = max(0, int(seconds))
    if whole < 120:
        return f"{whole} s"
    if whole < 7200:
        return f"{whole // 60} min"
    return f"{whole // 3600} h {whole % 3600 // 60} min"


def add_config_args(p: argparse.ArgumentParser, default_path: str) -> None:
    """--config and --state-dir, as every daemon command and its helpers take them."""
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"configuration (TOML; default: $FLEETBENCH_CONFIG, else {default_path} if it exists)",
    )
    p.add_argument(
        "--state-dir",
        metavar="DIR",
        default=None,
        help="outbox, baseline, jobs and status live here (default: $STATE_DIRECTORY under systemd, "
        "/var/lib/fleetbench as root, ~/.local/state/fleetbench otherwise)",
    )


def percent_grid(text: str) -> tuple[int, ...]:
    """argparse type: '25,50,75,100' -> (25, 50, 75, 100), each a whole percent from 1 to 100."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() and 1 <= int(p) <= 100 for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} must be whole percents from 1 to 100, comma-separated")
    values = sorted({int(p) for p in parts})
    if len(values) > 16:
        raise argparse.ArgumentTypeError(f"{text!r} names more than 16 widths")
    return tuple(values)
