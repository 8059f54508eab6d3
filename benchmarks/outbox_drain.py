"""Outbox drain rate: 10,000 results queued while the broker is down, all delivered after.

A real mosquitto on a free loopback port; the agent's MqttLink publishes from its
durable outbox (SQLite, WAL, synchronous=FULL) with QoS 1; a subscriber counts
distinct message ids.  Prints queueing rate, drain rate (msg/s from the broker's
return to the last id received) and whether anything was lost.

    python benchmarks/outbox_drain.py [--messages 10000] [--inflight 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

from _helpers import load_test_helper

from agent.device.publisher import Publisher
from agent.protocol.messages import ResultMessage
from agent.protocol.topics import DeviceTopics
from agent.transport.mqtt import BrokerSettings, MqttLink
from agent.transport.outbox import Outbox


def _load_broker_helpers():
    module = load_test_helper("broker")
    return module.Mosquitto, module.Receiver


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=10_000)
    ap.add_argument("--inflight", type=int, default=100)
    args = ap.parse_args()
    Mosquitto, Receiver = _load_broker_helpers()
    with tempfile.TemporaryDirectory() as tmp:
        broker = Mosquitto(tmp)
        broker.start()
        rx = Receiver(broker, "fleetbench/v1/devices/bench/results", client_id="drain-receiver")
        rx.wait_subscribed()
        broker.stop()
        box = Outbox(os.path.join(tmp, "outbox.sqlite"), max_messages=10 * args.messages)
        link = MqttLink(BrokerSettings.from_url(broker.url, max_backoff_s=1), DeviceTopics("bench"), box,
                        max_inflight=args.inflight)  # fmt: skip
        link.start()
        publisher = Publisher(box, DeviceTopics("bench"))
        publisher.wake = link.wake
        data = load_test_helper("wire").result_data("drain", "m.onnx")  # a result summary, about 2 KB
        t0 = time.perf_counter()
        queued = [publisher.send(ResultMessage, data, f"r{i}") for i in range(args.messages)]
        sent = [future.result() for future in queued if future is not None]
        queued_s = time.perf_counter() - t0
        assert len(box) == args.messages
        t0 = time.perf_counter()
        broker.start()
        got = rx.wait_ids("results", set(sent), timeout_s=600)
        drain_s = time.perf_counter() - t0
        ids = set(got)
        link.stop()
        rx.close()
        broker.stop()
        print(f"queued {args.messages} messages in {queued_s:.2f} s ({args.messages / queued_s:.0f} msg/s, "
              "each committed to disk)")  # fmt: skip
        dups, lost = len(got) - len(ids), args.messages - len(ids)
        rate = args.messages / drain_s
        print(f"drained after the broker returned in {drain_s:.2f} s: {rate:.0f} msg/s (in flight "
              f"{args.inflight}); {len(ids)} distinct ids, {dups} duplicates, {lost} lost")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
