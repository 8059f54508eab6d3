"""The coordinator's commands, found by the ``fleetbench`` command line through the
``fleetbench.commands`` entry point (the agent's CLI never imports the coordinator).

    ranking  monotonicity, plan-samples, predict, rank
    crossdevice  probes, train-predictor, train-optimizer, optimize
    prune    train, prune (the prunable families; PyTorch in the prune extra)
    hdap     hdap (one pruned model for a drifted SKU)
    service  coordinator, fleet, push, rollouts, explain
    trust    keygen, job, revoke, broker-config, enroll
    demo     demo
    format   tables and decisions in words (the demo's report uses it too)

The command modules are imported when the commands are registered, not with this
package, so ``coordinator.cli.format`` imports nothing of theirs.
"""

from __future__ import annotations

from typing import Any


def register(sub: Any) -> None:
    """Add the coordinator's commands to the ``fleetbench`` subparsers."""
    from coordinator.cli import crossdevice, demo, hdap, prune, ranking, service, trust

    service.register(sub)
    trust.register(sub)
    demo.register(sub)
    ranking.register(sub)
    crossdevice.register(sub)
    prune.register(sub)
    hdap.register(sub)
