"""``/metrics``: the coordinator's state in Prometheus' text format, read at scrape time.

    fleetbench_devices{state, sku}                  devices online and offline, per SKU
    fleetbench_messages_stored_total{kind}          reports stored since the coordinator started
    fleetbench_messages_dead_lettered_total         messages refused since it started
    fleetbench_dead_letters{kind}                   dead letters kept in the store
    fleetbench_ingest_queue                         messages received and not yet committed (lag)
    fleetbench_decisions                            re-ranking decisions made
    fleetbench_rollouts{state}                      rollouts by state
    fleetbench_push_bytes_total                     push messages handed to the broker since start
    fleetbench_up                                   1 while the ingest and push threads run

A custom collector (``prometheus_client``'s documented way to export state that lives
elsewhere): each scrape asks the store a few grouped counts, never every device's health.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


class FleetCollector(Collector):
    def __init__(self, store: Any, coordinator: Optional[Any] = None) -> None:
        self.store, self.coordinator = store, coordinator

    def collect(self) -> Iterator[Metric]:
        devices = GaugeMetricFamily("fleetbench_devices", "Devices by state and SKU", labels=["state", "sku"])
        for state, sku, n in self.store.device_counts():
            devices.add_metric([state, sku or ""], n)
        yield devices
        dead = GaugeMetricFamily(
            "fleetbench_dead_letters", "Dead letters kept, by topic kind", labels=["kind"]
        )
        for kind, n in sorted(self.store.dead_letter_counts().items()):
            dead.add_metric([kind], n)
        yield dead
        rollouts = GaugeMetricFamily("fleetbench_rollouts", "Rollouts by state", labels=["state"])
        for state, n in sorted(self.store.rollout_counts().items()):
            rollouts.add_metric([state], n)
        yield rollouts
        yield GaugeMetricFamily(
            "fleetbench_decisions", "Re-ranking decisions made", value=self.store.count("decisions")
        )
        c = self.coordinator
        if c is None:
            return
        stored = CounterMetricFamily(
            "fleetbench_messages_stored", "Reports stored since the coordinator started", labels=["kind"]
        )
        for kind, n in sorted(c.ingestor.stored.items()):
            stored.add_metric([kind], n)
        yield stored
        refused = c.ingestor.dead_lettered
        yield CounterMetricFamily(
            "fleetbench_messages_dead_lettered", "Messages refused since start", value=refused
        )
        yield GaugeMetricFamily("fleetbench_ingest_queue", "Messages received, not yet committed",
                                value=c.ingestor.backlog())  # fmt: skip
        yield CounterMetricFamily("fleetbench_push_bytes", "Push messages handed to the broker since start",
                                  value=c.deployer.bytes_sent)  # fmt: skip
        up = c.ingestor.healthy() and c.deployer.healthy()
        yield GaugeMetricFamily("fleetbench_up", "1 while the ingest and push threads run", value=int(up))


def registry(store: Any, coordinator: Optional[Any] = None) -> CollectorRegistry:
    """A registry holding only the fleet's metrics (not the process defaults of the global one)."""
    reg = CollectorRegistry(auto_describe=True)
    reg.register(FleetCollector(store, coordinator))
    return reg
