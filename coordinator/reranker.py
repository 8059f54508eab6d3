"""The re-ranking loop: new (or degraded) device -> sample job -> decision -> push.

For every online device with a latency budget (per device, per SKU or the default),
a state machine whose state the store keeps (``RerankState``), so a restarted
coordinator carries on where it was:

    none, no_budget  -> send the probe job (the cross-device predictor's probes; with
                        rerank.probes and a predictor and network for the space): probing;
                        without: as below, sampling
    probing          -> the job ended: the optimizer network picks from the probes alone
                        (``instant_decide``): building, deploying as below; then sampling to
                        refine it.  Refused (a device older than probe jobs), or a probe
                        failed: sampling
    (after probing)  -> plan k sample architectures (the same plan for every device: it
                        depends only on the reference table), send them as a job: sampling
    sampling         -> that device's own acks say the job ended: its results become the
                        device's column; ``decide`` (``coordinator.ranking.decision``)
                        predicts the rest and picks the most accurate architecture that
                        fits the budget with margin; with nothing to push: decided
                     -> the chosen architecture is built into a model file in a worker
                        thread, off the loop's tick: building
                     -> no end within rerank.job_timeout_s, or the job was refused: failed
    building         -> the model is built: a rollout to the device whose smoke run must
                        meet the budget (``max_latency_ms``), the decision and its inputs
                        kept (``fleetbench explain``): deploying
    deploying        -> installed, or the push ended otherwise: decided
                     -> the device rolled it back because its smoke run was over the budget
                        beyond the run's noise: that latency joins the device's measurements
                        and it decides again (building), at most rerank.retries times a
                        round; then failed, and the device keeps the model it had
    decided          -> its degradation index moved past the threshold: probing again (its
                        features have changed), then sampling
    failed           -> after rerank.job_timeout_s: sampling again

Decisions use the reference table (bundled or configured) as the devices they are
predicted from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

from agent.common.errors import FleetbenchError
from agent.protocol.jobs import ArchItem, JobSettings, JobSpec, ProbeItem
from agent.protocol.messages import JobMessage, encode, make
from agent.protocol.topics import DeviceTopics
from coordinator.cli.format import noise
from coordinator.config import CoordinatorConfig
from coordinator.deploy import create_rollout
from coordinator.errors import CoordinatorError
from coordinator.keys import Signer
from coordinator.ranking import crossdevice, optimizer
from coordinator.ranking.decision import Decision, decide, instant_decide, plan_samples
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import LatencyTable, read_accuracy, read_table
from coordinator.store import Store
from coordinator.store.records import ACTIVE_ROLLOUT, TERMINAL, DecisionRecord, OnlineDevice, RerankState

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


def instant_models(
    config: CoordinatorConfig,
) -> Optional[tuple[crossdevice.TrainedPredictor, optimizer.OptimizerNet]]:
    """The cross-device predictor and optimizer network for the instant pick, or None (off, or
    none for this space and metric).  A configured file that is wrong is a configuration error."""
    from coordinator.errors import ModelFileError

    r = config.rerank
    if not r.probes:
        return None
    shipped_net = optimizer.shipped_path(r.space, r.metric)
    if r.optimizer is None and shipped_net is None:
        if r.predictor:
            raise CoordinatorError(
                f"rerank.predictor needs rerank.optimizer: no network is shipped for {r.metric} in "
                f"{r.space} (make one with `fleetbench train-optimizer`)"
            )
        return None  # nothing shipped for this space and metric: sampling only
    try:
        trained = crossdevice.load(r.predictor, r.space) if r.predictor else crossdevice.shipped(r.space)
        if trained is None:
            raise CoordinatorError(f"rerank.optimizer needs rerank.predictor: none is shipped for {r.space}")
        path = r.optimizer or shipped_net
        assert path is not None
        return trained, optimizer.load_for(path, trained, r.metric)
    except ModelFileError as err:
        raise CoordinatorError(f"rerank: {err}") from None


def build_model(space: str, arch: str, path: str) -> str:
    """Materialize ``arch`` into the model file ``path`` (the worker thread's job)."""
    from agent.materialize import materialize, write_model

    if not os.path.exists(path):
        write_model(materialize(space, arch), path)
    return path


class Reranker:
    """Call ``tick()`` every second or so, in an executor (it blocks on the database).

    ``client`` publishes jobs (a paho client), ``clock`` tells the time and ``build``
    makes a model file from an architecture (all injectable, for tests)."""

    def __init__(
        self,
        store: Store,
        config: CoordinatorConfig,
        client: Any,
        clock: Callable[[], float] = time.time,
        build: Callable[[str, str, str], str] = build_model,
        signer: Optional[Signer] = None,
    ) -> None:
        self.store, self.config, self.client, self.clock, self.build = store, config, client, clock, build
        self.signer = signer or Signer.of(config, clock)
        self.space = get_space(config.rerank.space)
        self.reference = reference_table(config)
        self.accuracy = accuracy_table(config)
        self.instant = instant_models(config)
        self._plan: Optional[list[str]] = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleetbench-build")
        #: models being built: device -> (the file's future, the decision, the round's state, retry)
        self._building: dict[str, tuple[Future, Decision, RerankState, int]] = {}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    @property
    def plan(self) -> list[str]:
        if self._plan is None:
            r = self.config.rerank
            self._plan = plan_samples(self.reference, self.space, r.samples, r.seed)
        return self._plan

    def tick(self, now: Optional[float] = None, online: Optional[list[OnlineDevice]] = None) -> None:
        """``online``: the online devices, if the caller has read them already this pass."""
        now = self.clock() if now is None else now
        states = self.store.rerank_states()
        for device in self.store.online() if online is None else online:
            try:
                self._step(device, states.get(device.device_id), now)
            except FleetbenchError as err:  # this device's round fails; the others go on
                self.store.set_rerank(device.device_id, now, state="failed", detail=str(err))
                self._building.pop(device.device_id, None)
                logger.warning("re-ranking %s failed: %s", device.device_id, err)

    def _step(self, device: OnlineDevice, state: Optional[RerankState], now: float) -> None:
        device_id = device.device_id
        budget = self.config.budget_ms(device_id, device.sku)
        if budget is None:
            if state is None:
                self.store.set_rerank(
                    device_id, now, state="no_budget", detail="no latency budget for it or its SKU"
                )
                logger.info("%s has no latency budget (rerank.budgets); not re-ranking it", device_id)
            return
        if state is None or state.state == "no_budget":
            self._start(device, state, now, "new device")
        elif state.state == "probing":
            self._check_probes(device, state, budget, now)
        elif state.state in ("sampling", "building"):
            self._check_job(device, state, budget, now)
        elif state.state == "deploying":
            self._check_deployment(device, state, budget, now)
        elif state.state == "failed" and now - state.updated_at > self.config.rerank.job_timeout_s:
            self._start(device, state, now, "retrying after a failed round")
        elif state.state == "decided":
            then, current = state.degradation_index, device.degradation_index
            if then is None and current is not None:  # its first health came after the decision
                self.store.set_rerank(device_id, now, degradation_index=current)
                return
            moved = abs(current - then) if then is not None and current is not None else 0.0
            if moved >= self.config.rerank.degradation_threshold:
                self._start(device, state, now, f"degradation index moved {then:.3f} -> {current:.3f}")

    def _start(self, device: OnlineDevice, state: Optional[RerankState], now: float, why: str) -> None:
        """A new round: the probe job first if there is an instant pick to make, else sampling."""
        rounds = (state.rounds if state else 0) + 1
        if self.instant is not None:
            self._send_job(device, now, why, rounds, "probing")
        else:
            self._send_job(device, now, why, rounds, "sampling")

    def _send_job(self, device: OnlineDevice, now: float, why: str, rounds: int, stage: str) -> None:
        device_id = device.device_id
        job_id = f"{'probe' if stage == 'probing' else 'rerank'}-{rounds}-{uuid.uuid4().hex[:8]}"
        r = self.config.rerank
        settings = JobSettings(runs=r.runs, warmup_runs=3, min_time_s=0.0, threads=1)
        if stage == "probing":
            assert self.instant is not None
            probe = ProbeItem(space=r.space, archs=self.instant[0].probes, format=r.format)  # type: ignore[arg-type]
            spec = JobSpec(job_id=job_id, probe=probe, settings=settings)
        else:
            archs = tuple(ArchItem(space=r.space, arch=a, format=r.format) for a in self.plan)  # type: ignore[arg-type]
            spec = JobSpec(job_id=job_id, architectures=archs, settings=settings)
        try:
            spec = self.signer.job(spec, device)
        except CoordinatorError as err:  # no signing key yet: try again after job_timeout_s
            self.store.set_rerank(device_id, now, state="failed", rounds=rounds, detail=str(err))
            logger.error("cannot re-rank %s: %s", device_id, err)
            return
        msg = make(JobMessage, device_id, spec, msg_id=job_id)
        self.client.publish(DeviceTopics(device_id).jobs, encode(msg, device.protocol), qos=1)
        self.store.set_rerank(
            device_id,
            now,
            state=stage,
            job_id=job_id,
            space=r.space,
            rounds=rounds,
            started_at=now,
            degradation_index=device.degradation_index,
            detail=why,
        )
        what = f"{len(spec.all_architectures)} {'probe' if stage == 'probing' else 'sample'} architectures"
        logger.info("re-ranking %s (%s): %s sent as job %s", device_id, why, what, job_id)

    def _check_probes(self, device: OnlineDevice, state: RerankState, budget: float, now: float) -> None:
        """The probe job ended: the instant pick (then sampling refines it)."""
        device_id, job_id = device.device_id, state.job_id or ""
        ended = self._job_end(device, state, now)
        if ended is None:
            return
        assert self.instant is not None
        trained, net = self.instant
        measured = self.store.measured(device_id, job_id, self.config.rerank.space)
        if ended.state == "rejected" or any(p not in measured for p in trained.probes):
            got = sum(p in measured for p in trained.probes)
            why = (f"probe job {job_id} was refused ({ended.error})" if ended.state == "rejected"
                   else f"{got} of {len(trained.probes)} probes measured")  # fmt: skip
            logger.info("%s: %s; sampling without an instant pick", device_id, why)
            self._send_job(device, now, f"{state.detail}; {why}", state.rounds, "sampling")
            return
        decision = instant_decide(trained, net, self.space, self.reference.archs, device_id, measured,
                                  self.accuracy, budget)  # fmt: skip
        self._choose(device, decision, state, now, retry=0)

    def _job_end(self, device: OnlineDevice, state: RerankState, now: float) -> Optional[Any]:
        """How the round's job ended, or None: a chosen model is being built (finished here when
        it is), or the job runs on (the round fails past rerank.job_timeout_s)."""
        device_id, job_id = device.device_id, state.job_id or ""
        building = self._building.get(device_id)
        if building is not None:
            self._finish_build(device, building, now)
            return None
        ended = self.store.job_ending(device_id, job_id)
        if ended is None and now - (state.started_at or now) > self.config.rerank.job_timeout_s:
            self.store.set_rerank(
                device_id, now, state="failed", detail=f"job {job_id} did not finish in time"
            )
        return ended

    def _check_job(self, device: OnlineDevice, state: RerankState, budget: float, now: float) -> None:
        device_id, job_id = device.device_id, state.job_id or ""
        ended = self._job_end(device, state, now)
        if ended is None:
            return
        if ended.state == "rejected":
            self.store.set_rerank(
                device_id, now, state="failed", detail=f"job {job_id} was rejected: {ended.error}"
            )
            return
        instant = self._instant_pick(device_id, state)
        measured = {
            **_measured_by(instant),
            **self.store.measured(device_id, job_id, self.config.rerank.space),
        }
        decision = decide(self.reference, self.space, device_id, measured, self.accuracy, budget)
        dep = instant.deployment if instant else None
        if instant and dep and dep.state == "installed" and decision.arch and decision.arch == instant.arch:
            installed = instant.rollout_id  # the refinement agrees with the instant pick: no second push
            note = f"the same as the instant pick, installed by rollout {installed}: not pushed again"
            self._decided(
                device, dataclasses.replace(decision, notes=(*decision.notes, note)), state, installed, now
            )
            return
        self._choose(device, decision, state, now, retry=0)

    def _instant_pick(self, device_id: str, state: RerankState) -> Optional[DecisionRecord]:
        """This round's instant pick (the device's newest decision, if it is one)."""
        found = self.store.latest_decisions(device_id)
        last = found[0] if found else None
        if last is None or last.inputs.get("stage") != "instant" or last.inputs.get("round") != state.rounds:
            return None
        return last

    def _choose(
        self, device: OnlineDevice, decision: Decision, state: RerankState, now: float, retry: int
    ) -> None:
        """Build the chosen model off the tick (then push it), or keep a decision with nothing to push."""
        if decision.arch and self.config.rerank.push:
            r = self.config.rerank
            version = hashlib.sha256(f"{r.space}|{decision.arch}".encode()).hexdigest()[:12]
            directory = os.path.join(self.config.state_dir, "chosen")
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, f"{version}.{r.format}")
            future = self._pool.submit(self.build, r.space, decision.arch, path)
            self._building[device.device_id] = (future, decision, state, retry)
            self.store.set_rerank(device.device_id, now, state="building", detail=f"building {decision.arch}")
            return
        self._decided(device, decision, state, None, now, retry)

    def _finish_build(
        self, device: OnlineDevice, building: tuple[Future, Decision, RerankState, int], now: float
    ) -> None:
        future, decision, state, retry = building
        if not future.done():
            return
        del self._building[device.device_id]
        path = future.result()  # a build that failed raises here: the round fails (see tick)
        r = self.config.rerank
        version = os.path.splitext(os.path.basename(path))[0]
        rollout = create_rollout(self.store, self.config, path, device=device.device_id, name=r.model_name,
                                 version=version, max_latency_ms=decision.budget_ms, now=now)  # fmt: skip
        self._decided(device, decision, state, rollout.rollout_id, now, retry)

    def _check_deployment(self, device: OnlineDevice, state: RerankState, budget: float, now: float) -> None:
        """The push of the decision has ended: installed (decided), or over the budget on the
        device (decide again with that measurement, within rerank.retries)."""
        device_id = device.device_id
        found = self.store.latest_decisions(device_id)
        last = found[0] if found else None
        dep = last.deployment if last else None
        if last is None or (dep is None and not self._rollout_active(last.rollout_id)):
            # the decision or its rollout is gone (cancelled by `fleetbench revoke`): nothing to wait for
            self.store.set_rerank(device_id, now, state="decided")
            return
        if dep is None or dep.state not in TERMINAL:  # (the deployer makes the push on its next pass)
            return
        if last.inputs.get("stage") == "instant":  # the instant pick is out: now refine it
            self._send_job(device, now, f"refining the instant pick ({dep.state})", state.rounds, "sampling")
            return
        arch = last.arch or ""
        over = over_budget(last)
        if over is None:
            ended = (
                "" if dep.state == "installed" else f" (push {dep.state}: {dep.detail or 'no reason given'})"
            )
            self.store.set_rerank(device_id, now, state="decided", detail=arch + ended)
            return
        retry = int(last.inputs.get("retry") or 0) + 1
        if retry > self.config.rerank.retries:
            why = (f"{retry} chosen models in a row ran over the budget of {last.budget_ms:g} ms on the "
                   f"device (the last: {over}); it keeps the model it had")  # fmt: skip
            self.store.set_rerank(device_id, now, state="failed", detail=why)
            logger.warning("%s: %s", device_id, why)
            return
        measured = {**last.inputs["measured"], arch: dep.p50_ms}
        why = f"retry {retry}: {over}"
        logger.info("%s: %s; deciding again with that measurement", device_id, why)
        decision = decide(self.reference, self.space, device_id, measured, self.accuracy, budget)
        self._choose(device, decision, dataclasses.replace(state, detail=why), now, retry)

    def _rollout_active(self, rollout_id: Optional[str]) -> bool:
        found = self.store.rollouts(rollout_id) if rollout_id else []
        return bool(found) and found[0].state in ACTIVE_ROLLOUT

    def _decided(
        self,
        device: OnlineDevice,
        decision: Decision,
        state: RerankState,
        rollout_id: Optional[str],
        now: float,
        retry: int = 0,
    ) -> None:
        inputs = {**dataclasses.asdict(decision), "job_id": state.job_id, "round": state.rounds,
                  "reason": state.detail, "retry": retry, "degradation_index": state.degradation_index,
                  "reference_devices": list(self.reference.devices), "space": self.config.rerank.space,
                  "metric": self.config.rerank.metric}  # fmt: skip
        self.store.add_decision(
            decision.device,
            now,
            self.config.rerank.space,
            decision.arch,
            decision.budget_ms,
            decision.predicted_ms,
            decision.accuracy,
            rollout_id,
            inputs,
        )
        if decision.stage == "instant" and rollout_id is None:  # nothing to push: refine at once
            self._send_job(device, now, "refining the instant pick", state.rounds, "sampling")
        else:
            # The baseline for "degraded since": the index the decision was made at.
            self.store.set_rerank(
                device.device_id,
                now,
                state="deploying" if rollout_id else "decided",
                detail=decision.arch or "nothing fits the budget",
                degradation_index=device.degradation_index,
            )
        if decision.arch:
            logger.info("%s gets %s (%s): predicted %.2f ms (%.2f with margin) under %.2f ms, accuracy %.2f",
                        device.device_id, decision.arch, decision.stage, decision.predicted_ms,
                        decision.with_margin_ms, decision.budget_ms, decision.accuracy)  # fmt: skip
        else:
            logger.warning(
                "%s: no architecture fits %.2f ms with margin", device.device_id, decision.budget_ms
            )


def _measured_by(instant: Optional[DecisionRecord]) -> dict[str, float]:
    """What a round measured before its samples: the probes, and the smoke run of the instant
    pick's model (a measurement of that architecture on the device too)."""
    if instant is None:
        return {}
    out = dict(instant.inputs["measured"])
    dep = instant.deployment
    if instant.arch and dep is not None and dep.p50_ms is not None and dep.p50_ms > 0:
        out[instant.arch] = dep.p50_ms
    return out


def over_budget(decision: DecisionRecord) -> Optional[str]:
    """Why the model of ``decision`` missed its budget on the device, or None: the device rolled
    it back after a smoke run over the budget beyond the run's noise (which its ack carries)."""
    dep = decision.deployment
    if dep is None or dep.state != "rolled_back" or dep.p50_ms is None or dep.p50_ms <= decision.budget_ms:
        return None
    ran = f"{dep.p50_ms:.3f} ms{noise(dep)}"
    return f"the chosen model ran {ran} on the device, over the budget of {decision.budget_ms:g} ms"


def explain(store: Store, device_id: str) -> list[DecisionRecord]:
    """Every decision for ``device_id`` (newest first), with its inputs and what became of it."""
    return store.decisions(device_id)
