"""The ``fleetbench`` command line: the only place that prints for people or exits.

Exit codes: 0 everything ran; 1 a model or runtime failed (other models still
ran and are reported); 2 a usage error; 3 (``status``) the agent is not running;
130 interrupted.  One module per group of commands: bench, daemon (agent, status,
discover), models (make-model, lut); the coordinator's commands come in through the
``fleetbench.commands`` entry point.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Optional

from agent import __version__
from agent.cli import bench, daemon, models
from agent.common.args import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, Parser
from agent.common.errors import FleetbenchError

logger = logging.getLogger("fleetbench")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="fleetbench",
        description="Fit neural networks to fleets of edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"fleetbench {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    bench.register(sub)
    daemon.register(sub)
    models.register(sub)
    _add_plugin_commands(sub)
    return parser


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Commands of other fleetbench packages (the coordinator's ranking tools), found through
    the ``fleetbench.commands`` entry point so the agent never imports them itself."""
    from importlib.metadata import entry_points

    eps: Any = entry_points()
    if hasattr(eps, "select"):
        group = eps.select(group="fleetbench.commands")
    else:  # Python 3.9 returns a dict of lists
        group = eps.get("fleetbench.commands", [])
    for ep in sorted(group, key=lambda e: e.name):
        try:
            ep.load()(sub)
        except Exception as err:  # a broken plugin must not take `fleetbench bench` down
            logger.warning("fleetbench commands from %s are unavailable: %s", ep.value, err)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except FleetbenchError as err:
        print(f"fleetbench: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("fleetbench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `fleetbench ... | head`: the reader left; that is not an error.  Point stdout at
        # /dev/null so the interpreter's final flush does not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _entry() -> None:  # pragma: no cover
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__: list[str] = ["build_parser", "main"]
