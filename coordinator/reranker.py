"""The re-ranking loop: new (or degraded) device -> sample job -> decision -> push.

For every online device with a latency budget (per device, per SKU or the default):

    no round yet, or its degradation index moved past the threshold since the last one
        -> plan k sample architectures (the same plan for every device: it depends only
           on the reference table) and send them as an ``architectures`` job
    the job is done
        -> its results become the device's column; ``decide`` predicts the rest of it
           and picks the most accurate architecture that fits the budget with margin
        -> the decision and its inputs go into ``decisions`` (``fleetbench explain``)
        -> the chosen architecture is materialized and pushed to the device

The state of each device's round lives in ``rerank_state``, so a restarted coordinator
carries on where it was.  Decisions use the reference table (bundled or configured)
as the devices they are predicted from.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import uuid
from typing import Any, Optional

import numpy as np
import sqlalchemy as sa

from agent.transport import messages
from agent.transport.topics import DeviceTopics
from coordinator.config import CoordinatorConfig
from coordinator.deploy import create_rollout
from coordinator.errors import CoordinatorError
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import LatencyTable, read_accuracy, read_table
from coordinator.rerank import Decision, decide, plan_samples
from coordinator.store import Store, acks, decisions, rerank_state, results

logger = logging.getLogger(__name__)


def reference_table(config: CoordinatorConfig) -> LatencyTable:
    """The reference latency table without the excluded devices."""
    from coordinator.ranking import NB201_LATENCY

    table = read_table(config.rerank.reference or NB201_LATENCY)
    unknown = [d for d in config.rerank.exclude if d not in table.devices]
    if unknown:
        raise CoordinatorError(
            f"rerank.exclude names {', '.join(unknown)}, not devices of the reference table "
            f"({', '.join(table.devices)})"
        )
    keep = [j for j, d in enumerate(table.devices) if d not in config.rerank.exclude]
    if len(keep) < 1:
        raise CoordinatorError("rerank.exclude leaves no reference device")
    return LatencyTable(table.archs, tuple(table.devices[j] for j in keep), table.ms[:, keep])


def accuracy_table(config: CoordinatorConfig) -> dict[str, float]:
    from coordinator.ranking import DATA_DIR

    path = config.rerank.accuracy or os.path.join(DATA_DIR, "nb201_accuracy.csv")
    return read_accuracy(path, config.rerank.metric)[0]


class Reranker:
    """Call ``tick()`` every second or so, in an executor (it blocks on the database)."""

    def __init__(self, store: Store, config: CoordinatorConfig, client: Any) -> None:
        self.store, self.config, self.client = store, config, client
        self.space = get_space(config.rerank.space)
        self.reference = reference_table(config)
        self.accuracy = accuracy_table(config)
        self._plan: Optional[list[str]] = None

    @property
    def plan(self) -> list[str]:
        if self._plan is None:
            r = self.config.rerank
            self._plan = plan_samples(self.reference, self.space, r.samples, r.seed)
        return self._plan

    def tick(self, now: Optional[float] = None) -> None:
        now = time.time() if now is None else now
        with self.store.engine.connect() as conn:
            states = {r["device_id"]: dict(r) for r in conn.execute(sa.select(rerank_state)).mappings()}
        for device in self.store.online():
            try:
                self._step(device, states.get(device["device_id"]), now)
            except CoordinatorError as err:
                self._set(device["device_id"], now, state="failed", detail=str(err))
                logger.warning("re-ranking %s failed: %s", device["device_id"], err)

    def _step(self, device: dict[str, Any], state: Optional[dict[str, Any]], now: float) -> None:
        device_id = device["device_id"]
        budget = self.config.budget_ms(device_id, device.get("sku"))
        if budget is None:
            if state is None:
                self._set(device_id, now, state="no_budget", detail="no latency budget for it or its SKU")
                logger.info("%s has no latency budget (rerank.budgets); not re-ranking it", device_id)
            return
        if state is None or state["state"] == "no_budget":
            self._start(device, state, now, "new device")
        elif state["state"] == "sampling":
            self._check_job(device, state, budget, now)
        elif state["state"] == "failed" and now - state["updated_at"] > self.config.rerank.job_timeout_s:
            self._start(device, state, now, "retrying after a failed round")
        elif state["state"] == "decided":
            then, current = state["degradation_index"], device.get("degradation_index")
            if then is None and current is not None:  # its first health came after the decision
                self._set(device_id, now, degradation_index=current)
                return
            moved = then is not None and current is not None and abs(current - then)
            if moved and moved >= self.config.rerank.degradation_threshold:
                self._start(device, state, now, f"degradation index moved {then:.3f} -> {current:.3f}")

    def _start(self, device: dict[str, Any], state: Optional[dict[str, Any]], now: float, why: str) -> None:
        device_id = device["device_id"]
        rounds = (state["rounds"] if state else 0) + 1
        job_id = f"rerank-{rounds}-{uuid.uuid4().hex[:8]}"
        r = self.config.rerank
        job = {
            "job_id": job_id,
            "architectures": [{"space": r.space, "arch": a, "format": r.format} for a in self.plan],
            "settings": {"runs": r.runs, "warmup_runs": 3, "min_time_s": 0.0, "threads": 1},
        }
        env = messages.make("jobs", device_id, job, msg_id=job_id)
        self.client.publish(DeviceTopics(device_id).jobs, env.encode(), qos=1)
        self._set(device_id, now, state="sampling", job_id=job_id, space=r.space, rounds=rounds,
                  started_at=now, degradation_index=device.get("degradation_index"), detail=why)  # fmt: skip
        logger.info("re-ranking %s (%s): %d sample architectures sent as job %s", device_id, why,
                    len(self.plan), job_id)  # fmt: skip

    def _check_job(self, device: dict[str, Any], state: dict[str, Any], budget: float, now: float) -> None:
        device_id, job_id = device["device_id"], state["job_id"]
        with self.store.engine.connect() as conn:
            ended = conn.execute(
                sa.select(acks.c.state, acks.c.data).where(
                    acks.c.device_id == device_id,
                    acks.c.job_id == job_id,
                    acks.c.state.in_(("done", "failed", "rejected")),
                )
            ).first()
        if ended is None:
            if now - (state["started_at"] or now) > self.config.rerank.job_timeout_s:
                self._set(device_id, now, state="failed", detail=f"job {job_id} did not finish in time")
            return
        if ended.state == "rejected":
            error = (json.loads(ended.data).get("data") or {}).get("error")
            self._set(device_id, now, state="failed", detail=f"job {job_id} was rejected: {error}")
            return
        measured = self._measured(device_id, job_id)
        decision = decide(self.reference, self.space, device_id, measured, self.accuracy, budget)
        rollout_id = self._push(device_id, decision) if decision.arch and self.config.rerank.push else None
        self._record(decision, state, job_id, rollout_id, now)
        # The baseline for "degraded since": the index the decision was made at.
        self._set(device_id, now, state="decided", detail=decision.arch or "nothing fits the budget",
                  degradation_index=device.get("degradation_index"))  # fmt: skip
        if decision.arch:
            logger.info("%s gets %s: predicted %.2f ms (%.2f with margin) under %.2f ms, accuracy %.2f",
                        device_id, decision.arch, decision.predicted_ms, decision.with_margin_ms, budget,
                        decision.accuracy)  # fmt: skip
        else:
            logger.warning("%s: no architecture fits %.2f ms with margin", device_id, budget)

    def _measured(self, device_id: str, job_id: str) -> dict[str, float]:
        with self.store.engine.connect() as conn:
            rows = conn.execute(
                sa.select(results.c.arch, results.c.p50_ms).where(
                    results.c.device_id == device_id,
                    results.c.job_id == job_id,
                    results.c.space == self.config.rerank.space,
                )
            ).all()
        return {
            arch: float(ms) for arch, ms in rows if arch and ms is not None and np.isfinite(ms) and ms > 0
        }

    def _push(self, device_id: str, decision: Decision) -> str:
        """Materialize the chosen architecture and register a rollout to the device."""
        import hashlib

        from agent.materialize import materialize, write_model

        r = self.config.rerank
        version = hashlib.sha256(f"{r.space}|{decision.arch}".encode()).hexdigest()[:12]
        directory = os.path.join(self.config.state_dir, "chosen")
        os.makedirs(directory, exist_ok=True)
        path = os.path.join(directory, f"{version}.{r.format}")
        if not os.path.exists(path):
            write_model(materialize(r.space, decision.arch or ""), path)
        rollout = create_rollout(self.store, self.config, path, device=device_id, name=r.model_name,
                                 version=version)  # fmt: skip
        return str(rollout["rollout_id"])

    def _record(
        self, decision: Decision, state: dict[str, Any], job_id: str, rollout_id: Optional[str], now: float
    ) -> None:
        inputs = {**dataclasses.asdict(decision), "job_id": job_id, "round": state["rounds"],
                  "reason": state["detail"], "degradation_index": state["degradation_index"],
                  "reference_devices": list(self.reference.devices), "space": self.config.rerank.space,
                  "metric": self.config.rerank.metric}  # fmt: skip
        with self.store.engine.begin() as conn:
            conn.execute(decisions.insert().values(
                device_id=decision.device, at=now, space=self.config.rerank.space, arch=decision.arch,
                budget_ms=decision.budget_ms, predicted_ms=decision.predicted_ms, accuracy=decision.accuracy,
                rollout_id=rollout_id, inputs=json.dumps(inputs, default=float)))  # fmt: skip

    def _set(self, device_id: str, now: float, **values: Any) -> None:
        with self.store.engine.begin() as conn:
            updated = conn.execute(rerank_state.update().where(rerank_state.c.device_id == device_id)
                                   .values(updated_at=now, **values)).rowcount  # fmt: skip
            if not updated:
                conn.execute(rerank_state.insert().values(device_id=device_id, updated_at=now, **values))


def explain(store: Store, device_id: str) -> list[dict[str, Any]]:
    """Every decision for ``device_id`` (newest first), with its inputs and what became of it."""
    from coordinator.store import deployments

    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(decisions).where(decisions.c.device_id == device_id).order_by(decisions.c.at.desc())
        ).mappings()
        out = []
        for row in rows:
            item = dict(row)
            item["inputs"] = json.loads(item["inputs"])
            if item["rollout_id"]:
                dep = conn.execute(sa.select(deployments).where(
                    deployments.c.rollout_id == item["rollout_id"])).mappings().first()  # fmt: skip
                item["deployment"] = dict(dep) if dep else None
            out.append(item)
    return out
