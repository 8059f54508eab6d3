"""HDAP's planning: clusters found from profiles, the surrogate against a fleet's truth, the search on a
fleet with a known answer, and `fleetbench hdap --simulate` end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from daemon_proc import fleetbench
from pruning import flops_table

from agent.materialize import families as fam
from agent.materialize.lut import KINDS, to_rows, write_csv
from agent.materialize.weights import save, seeded
from coordinator.hdap import simulate as sim
from coordinator.hdap.cluster import cluster, slowdowns, surrogate_ratios
from coordinator.hdap.fleetmodel import FleetModel
from coordinator.hdap.planning import simulate
from coordinator.hdap.search import JUDGED, MARGINS, search
from coordinator.prune.methods import l1_widths, uniform_widths
from coordinator.prune.widthlut import WidthLut


def _profiles(conditions, per, noise, seed=0):
    rng = np.random.default_rng(seed)
    base = np.array([1.0, 0.5, 2.0, 0.2, 0.1])
    rows, truth = [], []
    for c, slow in enumerate(conditions):
        for _ in range(per):
            rows.append(base * np.array(slow) * np.exp(rng.normal(0, noise, len(base))))
            truth.append(c)
    return np.array(rows), np.array(truth)


def test_drifted_boards_fall_into_their_conditions_and_an_undrifted_fleet_into_one():
    conditions = [(1, 1, 1, 1, 1), (1.6, 1.5, 1.0, 1.1, 1.0), (1.0, 1.3, 1.0, 2.0, 1.2)]
    profiles, truth = _profiles(conditions, 12, 0.005)
    found = cluster(slowdowns(profiles))
    assert found.k == 3 and found.error.max() <= found.tol
    # the same partition, whatever the numbering, and each representative is a member of its own
    assert len({(a, b) for a, b in zip(found.labels, truth)}) == 3
    assert all(found.labels[r] == c for c, r in enumerate(found.representatives))
    flat, _ = _profiles([(1, 1, 1, 1, 1)], 20, 0.005)
    assert cluster(slowdowns(flat)).k == 1
    # at most 30 % of the devices are asked for a full table, whatever the tolerance
    assert cluster(slowdowns(profiles), tol=1e-6).k <= 0.3 * len(profiles)


def test_the_surrogate_recovers_each_boards_own_slowdown_by_kind():
    profiles, _ = _profiles([(1, 1, 1, 1, 1), (2, 2, 1, 1, 1)], 10, 0.0)
    profiles[3] *= np.array([1.1, 1.1, 1.0, 1.0, 1.0])  # one board 10 % slower at its convolutions
    found = cluster(slowdowns(profiles), tol=0.2)
    kinds = ["conv", "conv", "memory", "memory", "head"]
    ratios = surrogate_ratios(profiles, found, kinds, KINDS)
    rep = found.representatives[found.labels[3]]
    expect = profiles[3] / profiles[rep]
    assert ratios[3, KINDS.index("conv")] == pytest.approx(np.exp(np.log(expect[:2]).mean()))
    assert ratios[3, KINDS.index("pointwise")] == pytest.approx(np.exp(np.log(expect).mean()))  # no probe
    assert np.allclose(ratios[found.representatives[0]], 1.0)


def _fleet_model(plan, stage0_factor):
    """Two groups of boards: one where stage 0's convolutions cost ``stage0_factor`` times more."""
    base = flops_table(plan)
    slow = {
        k: v * (stage0_factor if k.size == plan.resolution and k.op == "conv" else 1) for k, v in base.items()
    }
    groups = np.array([0] * 5 + [1] * 15)
    return FleetModel([WidthLut(base), WidthLut(slow)], groups, np.ones((20, len(KINDS))))


def test_the_search_moves_pruning_to_where_the_fleet_pays_and_keeps_the_constraints():
    plan = fam.plan("resnet20")
    params = seeded(plan, 2)
    model = _fleet_model(plan, 8.0)
    result = search(plan, params, 0.5, model, generations=15, population=16)
    l1, uniform = l1_widths(plan, params, 0.5), uniform_widths(plan, 0.5)
    at = lambda w: fam.plan("resnet20", w)  # noqa: E731
    assert 0.97 * 0.5 <= result.flops_ratio <= 0.5 and result.importance_lost <= result.importance_bound
    assert result.mean_ms < min(model.mean_ms(at(l1)), model.mean_ms(at(uniform)))
    assert sum(result.widths[:3]) < sum(l1[:3])  # stage 0 is what the fleet pays for
    # on a fleet where latency is FLOPs, there is nothing to move: the search does no better than l1
    flat = FleetModel(
        [WidthLut(flops_table(plan, overhead_ms=0.0))], np.zeros(4, int), np.ones((4, len(KINDS)))
    )
    same = search(plan, params, 0.5, flat, generations=10, population=12)
    assert same.mean_ms >= 0.95 * flat.mean_ms(at(l1))


def test_a_judge_keeps_the_accuracy_the_importance_bound_lets_slip():
    # the fleet pays most for stage 0, so the unjudged search cuts it hardest; a judge that calls
    # any stage-0 layer under 6 of its 16 filters (l1 keeps 6-8) inaccurate makes the search pay
    # elsewhere instead
    plan = fam.plan("resnet20")
    params = seeded(plan, 2)
    model = _fleet_model(plan, 8.0)
    free = search(plan, params, 0.5, model, generations=15, population=16)
    assert min(free.widths[:3]) < 6 and free.judged is None

    asked = []

    def judge(widths):
        asked.append(widths)
        return 0.9 if min(widths[:3]) >= 6 else 0.5

    kept = search(plan, params, 0.5, model, generations=15, population=16, judge=judge)
    assert min(kept.widths[:3]) >= 6 and (kept.judged, kept.judged_l1) == (0.9, 0.9)
    assert 0.97 * 0.5 <= kept.flops_ratio <= 0.5 and kept.importance_lost <= kept.importance_bound
    assert free.mean_ms <= kept.mean_ms < model.mean_ms(fam.plan("resnet20", l1_widths(plan, params, 0.5)))
    assert len(asked) <= 2 + JUDGED * len(MARGINS)  # l1, a few per round and the result: no more

    # nothing passes but l1 itself: l1's widths
    only_l1 = search(plan, params, 0.5, model, generations=5, population=8,
                     judge=lambda w: 1.0 if tuple(w) == l1_widths(plan, params, 0.5) else 0.0)  # fmt: skip
    assert only_l1.widths == l1_widths(plan, params, 0.5)


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet")
    plan = fam.plan("resnet20")
    write_csv(str(root / "lut.csv"), to_rows(flops_table(plan), {}))
    save(str(root / "w.npz"), plan, seeded(plan, 1))
    spec = {
        "space": "resnet20",
        "base_lut": "lut.csv",
        "conditions": {
            "healthy": {},
            "slow-conv": {"conv": 3.0},
            "slow-memory": {"memory": 4.0, "head": 2.0},
        },
        "generate": {"devices": 300, "mix": {"healthy": 0.5, "slow-conv": 0.3, "slow-memory": 0.2}},
        "jitter": 0.01,
        "shape_noise": 0.05,
        "profile_noise": 0.005,
        "seed": 3,
    }
    (root / "fleet.json").write_text(json.dumps(spec))
    return root


def test_a_simulated_fleet_is_planned_from_a_few_tables_and_hdap_is_judged_by_its_truth(described):
    fleet = sim.load(str(described / "fleet.json"))
    plan = fam.plan("resnet20")
    report = simulate(fleet, plan, seeded(plan, 1), 0.5, generations=15, population=16)
    assert report["devices"] == 300 and report["conditions"] == 3
    assert 3 <= report["clusters"] <= 0.3 * 300 and report["measured_share"] == report["clusters"] / 300
    assert report["surrogate_srcc"] > 0.9 and report["surrogate_error"] < 0.05
    for method in ("uniform", "l1", "netadapt", "oracle"):
        assert report["hdap_ms"] <= report[f"{method}_ms"] * 1.03, method
        assert report[f"{method}_flops"] <= 0.5
    assert report["hdap_ms"] < min(report[f"{m}_ms"] for m in ("uniform", "l1", "netadapt"))


def test_fleetbench_hdap_simulate_prints_the_comparison_and_writes_the_model(described, tmp_path):
    out = fleetbench(
        "hdap",
        "--space",
        "resnet20",
        "--weights",
        str(described / "w.npz"),
        "--flops",
        "0.5",
        "--simulate",
        str(described / "fleet.json"),
        "--no-oracle",
        "--per-cluster",
        "-o",
        str(tmp_path / "p.npz"),
        "--onnx",
        str(tmp_path / "p.onnx"),
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert "oracle_ms" not in report and report["hdap_widths"] and (tmp_path / "p.onnx").stat().st_size > 0
    from agent.materialize.weights import load

    small, _, info = load(str(tmp_path / "p.npz"))
    assert small.spec == report["hdap_widths"] and info["method"] == "hdap"
    # a model per cluster, each for its own boards: no slower on the fleet than the one model
    assert len(report["per_cluster_widths"]) == report["clusters"] >= 2
    assert report["per_cluster_ms"] <= report["hdap_ms"] * 1.01 and report["per_cluster_flops"] <= 0.5
    for k, spec in enumerate(report["per_cluster_widths"], start=1):
        own, _, _ = load(str(tmp_path / f"p.cluster{k}.npz"))
        assert own.spec == spec and (tmp_path / f"p.cluster{k}.onnx").stat().st_size > 0


@pytest.mark.parametrize(
    "change, error",
    [
        ({"space": "vgg"}, "space must be one of resnet20"),
        ({"base_lut": None}, "base_lut must name a width table"),
        ({"conditions": {"x": {"gpu": 2}}}, "condition 'x' must map layer kinds (conv, pointwise"),
        ({"conditions": {"x": {"conv": 0}}}, "a slowdown must be a number from 0.1 to 100"),
        ({"generate": {"devices": 0}}, "generate.devices must be a count from 1 to 1000000"),
        ({"generate": {"devices": 5, "mix": {"hot": 1}}}, "generate.mix names a condition not in conditions"),
        ({"generate": None, "devices": [{"condition": "hot"}]}, "devices[0].condition 'hot' is not one of"),
        ({"generate": None}, "give devices (a list) or generate"),
    ],
)
def test_a_fleet_file_that_does_not_describe_a_fleet_is_refused_in_one_sentence(
    described, tmp_path, change, error
):
    spec = json.loads((described / "fleet.json").read_text())
    spec.update(change)
    spec = {k: v for k, v in spec.items() if v is not None}
    spec["base_lut"] = str(described / "lut.csv") if "base_lut" in spec else None
    (tmp_path / "f.json").write_text(json.dumps({k: v for k, v in spec.items() if v is not None}))
    out = fleetbench(
        "hdap",
        "--space",
        "resnet20",
        "--weights",
        str(described / "w.npz"),
        "--flops",
        "0.5",
        "--simulate",
        str(tmp_path / "f.json"),
    )
    assert out.returncode == 2 and error in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0


@pytest.mark.parametrize(
    "args, error",
    [
        (["--explain", "{tmp}/missing.plan.json"], "missing.plan.json: cannot be read"),
        (["--explain", "{tmp}/fleet.json"], "is not a plan that fleetbench hdap --sku wrote"),
        (["--explain", "{tmp}/other.plan.json", "--db", "{tmp}/none.sqlite"], "none.sqlite' does not exist"),
        (["--simulate", "{tmp}/fleet.json", "--space", "resnet20"], "--weights is needed to plan"),
    ],
    ids=["missing", "not-a-plan", "no-database", "no-weights"],
)
def test_a_plan_to_explain_or_a_plan_without_weights_is_refused_in_one_sentence(
    described, tmp_path, args, error
):
    (tmp_path / "fleet.json").write_text((described / "fleet.json").read_text())
    plan = {"network": "resnet20", "sku": "Pi 4", "clusters": [], "predicted_ms": {}, "rollout": "r1"}
    (tmp_path / "other.plan.json").write_text(json.dumps(plan))
    out = fleetbench("hdap", *(a.format(tmp=tmp_path) for a in args))
    assert out.returncode == 2 and error in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") == 0


def test_a_plan_not_rolled_out_is_explained_without_a_database(tmp_path):
    clusters = [{"representative": d, "devices": [d]} for d in ("a", "b")]
    plan = {"network": "resnet20", "sku": "Pi 4", "widths": "x0.5", "predicted_ms": {"a": 2.0, "b": 3.0},
            "clusters": clusters}  # fmt: skip
    (tmp_path / "p.plan.json").write_text(json.dumps(plan))
    out = fleetbench(
        "hdap", "--explain", str(tmp_path / "p.plan.json"), "--db", str(tmp_path / "none.sqlite")
    )
    assert out.returncode == 0, out.stderr
    assert "cluster 2: 1 device(s), representative b" in out.stdout
    assert "the model was not rolled out" in out.stdout and "fleet average" not in out.stdout


def test_a_recheck_says_which_boards_drifted_joined_or_left():
    from coordinator.hdap.live import compare

    clusters = [
        {"representative": "a", "devices": ["a", "b"]},
        {"representative": "c", "devices": ["c", "d"]},
    ]
    saved = {
        "clusters": clusters,
        "profiles": {"a": [1.0, 2.0], "b": [1.02, 2.0], "c": [2.0, 4.0], "d": [2.0, 4.1]},
    }
    same = compare(saved, {"a": [1.01, 2.0], "b": [1.0, 2.02], "c": [2.0, 4.0], "d": [2.04, 4.0]}, 0.05)
    assert same.holds and {r["status"] for r in same.rows.values()} == {"ok"}
    now = {"a": [1.0, 2.0], "b": [2.0, 4.0], "c": [2.0, 4.0], "e": [1.0, 2.0]}  # b slowed, e joined, d left
    found = compare(saved, now, 0.05)
    assert not found.holds and found.gone == ("d",)
    assert found.rows["b"]["status"] == "drifted" and found.rows["b"]["nearest"] == "c"
    assert found.rows["e"] == {
        "cluster": None,
        "nearest": "a",
        "distance": None,
        "change": None,
        "status": "new",
    }
    # a representative that drifted: its members' distances look fine, its own change does not
    moved = compare(saved, {"a": [2.0, 4.0], "b": [2.0, 4.0], "c": [2.0, 4.0], "d": [2.0, 4.0]}, 0.05)
    assert moved.rows["a"]["status"] == "drifted" and moved.rows["a"]["change"] > 0.6
    assert moved.rows["b"]["distance"] == 0.0 and moved.rows["b"]["status"] == "drifted"  # b changed too
