"""The re-ranking loop as a state machine over the store's records: SQLite, a fake publisher, the
clock given to ``tick``, and a model builder the test controls (the build runs off the tick)."""

from __future__ import annotations

import threading

import pytest
from wire import job_ack, result

from agent.collectors.degradation import DegradationState
from agent.protocol import messages as m
from agent.protocol.jobs import ArchItem
from agent.protocol.reports import HealthData, StatusData
from agent.protocol.topics import parse_topic
from coordinator.config import CoordinatorConfig, RerankConfig
from coordinator.ranking import NB201_LATENCY
from coordinator.ranking.tables import read_table
from coordinator.reranker import Reranker
from coordinator.store import Message, open_store
from coordinator.store.records import Deployment

PI4 = {
    a: float(ms)
    for a, ms in zip(read_table(NB201_LATENCY).archs, read_table(NB201_LATENCY).column("raspberry_pi4"))
}


class Jobs:
    """The fake publisher: keeps the jobs the loop sends, decoded."""

    def __init__(self) -> None:
        self.sent: list = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append(m.decode(payload, parse_topic(topic)))


class Builder:
    """Builds a model file only when told to, so the test sees the tick not wait for it."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.built: list[str] = []

    def __call__(self, space: str, arch: str, path: str) -> str:
        assert self.go.wait(10)
        with open(path, "wb") as fh:
            fh.write(arch.encode())
        self.built.append(arch)
        return path


def send(store, msg) -> None:
    store.ingest([Message(f"fleetbench/v1/devices/{msg.device_id}/{msg.TOPIC}", m.encode(msg))])


def online(store, device: str, index=None) -> None:
    send(store, m.make(m.StatusMessage, device, StatusData(state="online", protocol=2, sku="Pi")))
    if index is not None:
        send(store, m.make(m.HealthMessage, device, HealthData(degradation=DegradationState(index=index))))


def answer(store, device: str, job, scale: float = 1.0, ts: float = 10.0) -> None:
    """What the device does with a sampling or probe job: a result per architecture, then "done"."""
    for item in job.data.all_architectures:
        arch = ArchItem(space=item.space, arch=item.arch, format=item.format)
        send(store, result(device, job.data.job_id, item.key, p50_ms=PI4[item.arch] * scale, arch=arch))
    send(store, job_ack(device, job.data.job_id, "done", msg_id=f"ack:{job.data.job_id}:done", measured=3))


@pytest.fixture(params=[False], ids=["sampling only"])
def loop(tmp_path, db_url, request):
    """The loop without the probe step (``rerank.probes = false``) unless parametrized so."""
    store = open_store(db_url)  # SQLite, then PostgreSQL (tests/conftest.py)
    rerank = RerankConfig(samples=3, exclude=("raspberry_pi4",), budgets={"Pi": 45.0}, job_timeout_s=100.0,
                          probes=request.param)  # fmt: skip
    config = CoordinatorConfig(state_dir=str(tmp_path / "coord"), rerank=rerank)
    jobs, builder = Jobs(), Builder()
    reranker = Reranker(store, config, jobs, build=builder)
    yield store, config, jobs, builder, reranker
    builder.go.set()
    reranker.close()


def test_a_new_device_is_sampled_decided_built_off_the_tick_and_pushed(loop):
    store, _config, jobs, builder, reranker = loop
    online(store, "pi-1", index=1.0)
    reranker.tick(now=1.0)
    (job,) = jobs.sent
    assert job.device_id == "pi-1" and len(job.data.architectures) == 3
    assert store.rerank_states()["pi-1"].state == "sampling"
    reranker.tick(now=2.0)  # nothing answered yet: nothing changes
    assert store.rerank_states()["pi-1"].state == "sampling"
    answer(store, "pi-1", job)
    reranker.tick(now=3.0)  # decided; the model is being built, and the tick did not wait for it
    state = store.rerank_states()["pi-1"]
    assert state.state == "building" and not builder.built
    reranker.tick(now=4.0)
    assert store.rerank_states()["pi-1"].state == "building"
    builder.go.set()
    reranker._building["pi-1"][0].result(10)  # (the build's future: finished now)
    reranker.tick(now=5.0)
    state = store.rerank_states()["pi-1"]
    assert state.state == "deploying" and state.degradation_index == 1.0
    (decision,) = store.decisions("pi-1")
    assert decision.arch == builder.built[0] and decision.rollout_id
    assert decision.predicted_ms * 1.0 <= 45.0 and decision.inputs["job_id"] == job.data.job_id
    assert len(decision.inputs["measured"]) == 3
    assert decision.inputs["basis"] == (
        "measured" if decision.arch in decision.inputs["measured"] else "predicted"
    )
    (rollout,) = store.rollouts()
    assert rollout.target == "pi-1" and rollout.max_latency_ms == 45.0, "the device checks the budget"
    reranker.tick(now=6.0)  # the deployer has not made the push yet: still deploying
    assert store.rerank_states()["pi-1"].state == "deploying"
    push_ends(store, decision, "installed", p50_ms=40.0)
    reranker.tick(now=7.0)
    assert store.rerank_states()["pi-1"].state == "decided"


@pytest.mark.parametrize("loop", [True], ids=["probes"], indirect=True)
@pytest.mark.parametrize(
    "pushed, smoke_ms", [("installed", 41.0), ("rolled_back", 60.0)], ids=["instant fits", "instant too slow"]
)
def test_a_new_device_is_probed_picked_at_once_then_refined(loop, pushed, smoke_ms):
    store, _config, jobs, builder, reranker = loop
    builder.go.set()
    online(store, "pi-1", index=1.0)
    reranker.tick(now=1.0)
    (probe,) = jobs.sent
    assert probe.data.probe is not None and not probe.data.architectures
    assert probe.data.probe.archs == reranker.instant[0].probes and len(probe.data.probe.archs) == 20
    assert store.rerank_states()["pi-1"].state == "probing"
    answer(store, "pi-1", probe)
    reranker.tick(now=2.0)  # the instant pick: built and pushed like any decision
    reranker._building["pi-1"][0].result(10)
    reranker.tick(now=3.0)
    assert store.rerank_states()["pi-1"].state == "deploying"
    (instant,) = store.decisions("pi-1")
    assert instant.inputs["stage"] == "instant" and instant.inputs["basis"] == "predicted"
    assert (
        instant.inputs["method"].startswith("the optimizer network")
        and "20 probes" in instant.inputs["method"]
    )
    assert len(instant.inputs["measured"]) == 20 and instant.predicted_ms <= 45.0
    push_ends(store, instant, pushed, p50_ms=smoke_ms)
    reranker.tick(now=4.0)  # installed (or rolled back by the device): now the samples refine it, same round
    state = store.rerank_states()["pi-1"]
    assert state.state == "sampling" and state.rounds == 1
    sample = jobs.sent[-1]
    assert len(sample.data.architectures) == 3 and sample.data.probe is None
    answer(store, "pi-1", sample)
    reranker.tick(now=5.0)
    if store.rerank_states()["pi-1"].state == "building":
        reranker._building["pi-1"][0].result(10)
        reranker.tick(now=6.0)
    refined = store.decisions("pi-1")[0]
    assert refined.inputs["stage"] == "refined"
    # built on everything the device measured: probes, samples, the instant pick's smoke run
    measured = refined.inputs["measured"]
    assert set(instant.inputs["measured"]) <= set(measured) and measured[instant.arch] == smoke_ms
    assert refined.inputs["method"].startswith("crossdevice from 20 probes + ")
    if pushed == "installed":  # the samples agree with the instant pick: it is not pushed again
        assert refined.arch == instant.arch
        assert refined.rollout_id == instant.rollout_id and len(store.rollouts()) == 1
        assert refined.inputs["notes"][-1].endswith(f"rollout {instant.rollout_id}: not pushed again")
    else:  # the instant pick ran over the budget on the device: another architecture, pushed
        assert refined.arch != instant.arch and refined.predicted_ms <= 45.0
        assert refined.rollout_id != instant.rollout_id and len(store.rollouts()) == 2
        push_ends(store, refined, "installed", p50_ms=40.0)
    reranker.tick(now=7.0)
    assert store.rerank_states()["pi-1"].state == "decided"
    # degraded: probed again, from fresh features
    online(store, "pi-1", index=1.5)
    reranker.tick(now=8.0)
    state = store.rerank_states()["pi-1"]
    assert state.state == "probing" and state.rounds == 2 and jobs.sent[-1].data.probe is not None


@pytest.mark.parametrize("loop", [True], ids=["probes"], indirect=True)
def test_a_device_that_refuses_the_probe_job_is_sampled(loop):
    store, _config, jobs, _builder, reranker = loop
    online(store, "old-pi")
    reranker.tick(now=1.0)
    (probe,) = jobs.sent
    send(store, job_ack("old-pi", probe.data.job_id, "rejected", error="unknown field probe"))
    reranker.tick(now=2.0)
    state = store.rerank_states()["old-pi"]
    assert state.state == "sampling" and "refused (unknown field probe)" in state.detail
    assert jobs.sent[-1].data.architectures and jobs.sent[-1].data.probe is None


def push_ends(store, decision, state: str, p50_ms=None, interval=(None, None), detail=None) -> None:
    """What the deployer records when the device answers the push of ``decision``."""
    push_id = f"{decision.rollout_id}:{decision.device_id}"
    if not store.deployments(decision.rollout_id):
        store.add_deployments([Deployment(push_id, decision.rollout_id, decision.device_id, "canary",
                                          "sending", 1, 0.0)])  # fmt: skip
    store.update_deployment(push_id, 1.0, state=state, p50_ms=p50_ms, p50_lo_ms=interval[0],
                            p50_hi_ms=interval[1], detail=detail)  # fmt: skip


def decided(store, builder, reranker, device: str, now: float) -> object:
    """Tick until ``device``'s next model is built and pushed; its decision."""
    reranker.tick(now=now)
    reranker._building[device][0].result(10)
    reranker.tick(now=now + 0.5)
    assert store.rerank_states()[device].state == "deploying"
    return store.decisions(device)[0]


def first_push(loop) -> object:
    """pi-1 comes online, measures its samples, and its first model is pushed: that decision."""
    store, _config, jobs, builder, reranker = loop
    builder.go.set()
    online(store, "pi-1", index=1.0)
    reranker.tick(now=1.0)
    answer(store, "pi-1", jobs.sent[0])
    return decided(store, builder, reranker, "pi-1", 2.0)


def test_a_model_over_its_budget_on_the_device_is_replaced_by_the_next_choice(loop):
    """The device rolled the model back: its smoke run was over the budget beyond the run's noise.
    That latency joins the device's measurements and the loop chooses again, at most
    rerank.retries (2) times; then it stops, and the device keeps what it had."""
    store, _config, jobs, builder, reranker = loop
    first = first_push(loop)
    over = "the smoke run's median 52.000 ms (95 % interval 51.000-53.500) is over the limit of 45 ms"
    push_ends(store, first, "rolled_back", p50_ms=52.0, interval=(51.0, 53.5), detail=over)
    second = decided(store, builder, reranker, "pi-1", 3.0)
    assert second.arch != first.arch and second.inputs["retry"] == 1
    assert second.inputs["measured"][first.arch] == 52.0, "what the device measured is kept"
    assert second.inputs["reason"] == ("retry 1: the chosen model ran 52.000 ms (95 % interval "
                                       "51.000-53.500) on the device, over the budget of 45 ms")  # fmt: skip
    assert second.inputs["job_id"] == first.inputs["job_id"] and len(jobs.sent) == 1, "no new sampling"
    push_ends(store, second, "rolled_back", p50_ms=50.0)
    third = decided(store, builder, reranker, "pi-1", 4.0)
    assert third.inputs["retry"] == 2 and third.arch not in (first.arch, second.arch)
    push_ends(store, third, "rolled_back", p50_ms=49.0)
    reranker.tick(now=5.0)
    state = store.rerank_states()["pi-1"]
    assert state.state == "failed" and state.detail.startswith(
        "3 chosen models in a row ran over the budget of 45 ms on the device (the last: the chosen model "
        "ran 49.000 ms on the device"
    ), state.detail
    assert len(store.decisions("pi-1")) == 3
    reranker.tick(now=106.0)  # after rerank.job_timeout_s a new round samples again
    assert len(jobs.sent) == 2 and store.rerank_states()["pi-1"].state == "sampling"


def test_a_push_that_ends_otherwise_is_decided_with_why(loop):
    """A model that would not load (rolled back with no latency) or a refused push is not a
    budget question: the decision stands, and the state says what became of the push."""
    store, _config, _jobs, _builder, reranker = loop
    first = first_push(loop)
    push_ends(store, first, "rolled_back", detail="smoke run failed: the model does not load")
    reranker.tick(now=3.0)
    state = store.rerank_states()["pi-1"]
    assert state.state == "decided" and state.detail == (
        f"{first.arch} (push rolled_back: smoke run failed: the model does not load)"
    )
    assert len(store.decisions("pi-1")) == 1


def test_a_degraded_device_is_ranked_again_and_a_refused_job_fails_then_retries(loop):
    store, _config, jobs, _builder, reranker = loop
    first = first_push(loop)
    push_ends(store, first, "installed", p50_ms=40.0)
    reranker.tick(now=3.0)
    assert store.rerank_states()["pi-1"].state == "decided"
    send(store, m.make(m.HealthMessage, "pi-1", HealthData(degradation=DegradationState(index=1.5))))
    reranker.tick(now=4.0)  # moved 0.5 > 0.15: a second round
    assert len(jobs.sent) == 2 and store.rerank_states()["pi-1"].rounds == 2
    refused = jobs.sent[1].data.job_id
    send(
        store,
        job_ack("pi-1", refused, "rejected", error="the device is busy", msg_id=f"ack:{refused}:rejected"),
    )
    reranker.tick(now=5.0)
    state = store.rerank_states()["pi-1"]
    assert state.state == "failed" and "was rejected: the device is busy" in state.detail
    reranker.tick(now=50.0)  # not before rerank.job_timeout_s (100 s)
    assert len(jobs.sent) == 2
    reranker.tick(now=106.0)
    assert len(jobs.sent) == 3 and store.rerank_states()["pi-1"].state == "sampling"


def test_a_job_ends_only_by_its_own_devices_word(loop):
    store, _config, jobs, _builder, reranker = loop
    online(store, "pi-1")
    reranker.tick(now=1.0)
    job_id = jobs.sent[0].data.job_id
    send(store, job_ack("pi-2", job_id, "done", msg_id=f"ack:{job_id}:done"))  # pi-2 speaking of pi-1's job
    reranker.tick(now=2.0)
    assert store.rerank_states()["pi-1"].state == "sampling"
    reranker.tick(now=102.0)  # and with no word from pi-1, the round times out
    assert store.rerank_states()["pi-1"].state == "failed"


def test_one_devices_bad_round_does_not_stop_the_others(loop):
    store, _config, jobs, builder, reranker = loop
    builder.go.set()
    online(store, "pi-1")
    online(store, "pi-2")
    reranker.tick(now=1.0)
    by_device = {j.device_id: j for j in jobs.sent}
    # pi-1 measured nothing usable (every item failed): no decision can rest on that
    send(store, job_ack("pi-1", by_device["pi-1"].data.job_id, "done", msg_id="a1", measured=0))
    answer(store, "pi-2", by_device["pi-2"], scale=0.8)
    reranker.tick(now=2.0)
    states = store.rerank_states()
    assert states["pi-1"].state == "failed" and "a decision needs at least 2" in states["pi-1"].detail
    assert states["pi-2"].state == "building"


def test_devices_without_a_budget_are_left_alone(loop):
    store, _config, jobs, _builder, reranker = loop
    send(store, m.make(m.StatusMessage, "other", StatusData(state="online", protocol=2, sku="Unbudgeted")))
    reranker.tick(now=1.0)
    assert jobs.sent == [] and store.rerank_states()["other"].state == "no_budget"


def test_the_instant_picks_models_are_checked_when_the_loop_starts(tmp_path):
    from coordinator.errors import CoordinatorError
    from coordinator.ranking import SHIPPED_PREDICTORS
    from coordinator.reranker import instant_models

    def models(**rerank):
        return instant_models(CoordinatorConfig(state_dir=str(tmp_path), rerank=RerankConfig(**rerank)))

    trained, net = models()
    assert net.metric == "cifar10_top1" and len(trained.probes) == 20
    assert models(probes=False) is None
    assert models(metric="cifar100_top1")[1].metric == "cifar100_top1"
    for rerank, message in (
        ({"predictor": str(tmp_path / "none.npz")}, "rerank: predictor model '"),
        ({"optimizer": SHIPPED_PREDICTORS["nas-bench-201"]}, "is a fleetbench.crossdevice file"),
        (
            {"metric": "nosuch", "predictor": SHIPPED_PREDICTORS["nas-bench-201"]},
            "no network is shipped for nosuch",
        ),
    ):
        with pytest.raises(CoordinatorError, match=message):
            models(**rerank)
    assert models(metric="nosuch") is None  # nothing shipped for it: sampling only
