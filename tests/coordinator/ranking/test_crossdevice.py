"""The cross-device predictor and the optimizer network, as library code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from coordinator.errors import ModelFileError, NotEnoughDataError
from coordinator.ranking import NB201_LATENCY, SHIPPED_OPTIMIZERS, SHIPPED_PREDICTORS, crossdevice, optimizer
from coordinator.ranking.spaces import get_space
from coordinator.ranking.tables import read_table

scipy_stats = pytest.importorskip("scipy.stats")
SPACE = get_space("nas-bench-201")


@pytest.fixture(scope="module")
def public():
    table = read_table(NB201_LATENCY)
    enc = SPACE.encode_all(table.archs)
    return table, enc, np.log(table.ms)


def _srcc(a, b):
    return scipy_stats.spearmanr(a, b).correlation


def test_a_held_out_device_is_predicted_from_its_probes_alone(public):
    table, enc, logs = public
    target = table.devices.index("raspberry_pi4")
    refs = [j for j in range(len(table.devices)) if j != target]
    model = crossdevice.CrossDevicePredictor(rank=8, n_probes=12).fit(
        enc["onehot"], enc["alive"], logs[:, refs]
    )
    assert model.rank_ == 4  # no more factors than the references can show
    basis = model.basis(enc["onehot"], enc["alive"])
    rows = model.probe_rows_
    assert len(set(rows.tolist())) == 12 and not np.isnan(logs[rows][:, refs]).any()
    fit = model.adapt(basis[rows], logs[rows, target])
    held = np.setdiff1d(np.arange(len(table.archs)), rows)
    # its offset is learned (the Pi is slower than the references' mean): not just a ranking
    assert np.median(np.abs(fit.predict(basis[held]) - logs[held, target])) < np.log(1.5)
    assert _srcc(fit.predict(basis[held]), logs[held, target]) > 0.8
    # the posterior says how sure it is: more measurements, narrower error bars
    more = np.r_[rows, held[::20]]
    sure = model.adapt(basis[more], logs[more, target])
    assert sure.log_std(basis).mean() < fit.log_std(basis).mean()


def test_more_samples_do_not_hurt(public):
    table, enc, logs = public
    target = table.devices.index("pixel3")
    refs = [j for j in range(len(table.devices)) if j != target]
    model = crossdevice.CrossDevicePredictor(rank=8, n_probes=10).fit(
        enc["onehot"], enc["alive"], logs[:, refs]
    )
    basis = model.basis(enc["onehot"], enc["alive"])
    rng = np.random.default_rng(0)
    extra = rng.choice(np.setdiff1d(np.arange(len(table.archs)), model.probe_rows_), 200, replace=False)
    held = np.setdiff1d(np.arange(len(table.archs)), np.r_[model.probe_rows_, extra])
    few = model.adapt(basis[model.probe_rows_], logs[model.probe_rows_, target]).predict(basis[held])
    rows = np.r_[model.probe_rows_, extra]
    many = model.adapt(basis[rows], logs[rows, target]).predict(basis[held])
    assert _srcc(many, logs[held, target]) >= _srcc(few, logs[held, target])


def test_training_needs_devices_and_common_architectures(public):
    _, enc, logs = public
    with pytest.raises(NotEnoughDataError, match="2 or more devices"):
        crossdevice.CrossDevicePredictor().fit(enc["onehot"], enc["alive"], logs[:, :1])
    sparse = logs[:, [0, 2, 3]].copy()  # not the Coral: it has gaps of its own
    sparse[10:, 0] = np.nan
    with pytest.raises(NotEnoughDataError, match="only 10 architectures are measured on every device"):
        crossdevice.CrossDevicePredictor(n_probes=20).fit(enc["onehot"], enc["alive"], sparse)


def test_save_load_round_trip_and_refusals(public, tmp_path):
    table, enc, logs = public
    model = crossdevice.CrossDevicePredictor(rank=4, n_probes=8).fit(enc["onehot"], enc["alive"], logs)
    path = str(tmp_path / "m.npz")
    probes = [table.archs[i] for i in model.probe_rows_]
    model.save(path, SPACE.name, probes, table.devices)
    back = crossdevice.load(path, SPACE.name)
    assert back.probes == tuple(probes) and back.devices == table.devices and back.space == SPACE.name
    np.testing.assert_array_equal(back.model.feature_weights_, model.feature_weights_)
    basis = back.model.basis(enc["onehot"], enc["alive"])
    np.testing.assert_allclose(basis, model.basis(enc["onehot"], enc["alive"]))

    with pytest.raises(ModelFileError, match="for the nas-bench-201 space, not mobilenetv2"):
        crossdevice.load(path, "mobilenetv2")
    with pytest.raises(ModelFileError, match="does not exist"):
        crossdevice.load(str(tmp_path / "nope.npz"))
    text = tmp_path / "t.npz"
    text.write_text("arch,a\n")
    with pytest.raises(ModelFileError, match="is not a fleetbench model file"):
        crossdevice.load(str(text))
    # another version, another format: the header says so and the loader refuses
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    header = json.loads(bytes(arrays["header"]).decode())
    changes = (
        ({"version": 99}, "version 99 of fleetbench.crossdevice"),
        ({"format": "fleetbench.optimizer"}, "is a fleetbench.optimizer file"),
    )
    for change, message in changes:
        arrays["header"] = np.frombuffer(json.dumps({**header, **change}).encode(), np.uint8)
        other = tmp_path / "other.npz"
        np.savez(other, **arrays)
        with pytest.raises(ModelFileError, match=message):
            crossdevice.load(str(other))


def test_the_shipped_models_load_and_agree():
    trained = crossdevice.load(SHIPPED_PREDICTORS["nas-bench-201"], "nas-bench-201")
    assert len(trained.probes) == 20 and len(trained.devices) == 29
    public = set(read_table(NB201_LATENCY).archs)
    assert set(trained.probes) <= public  # every reference device has them measured
    for path in SHIPPED_OPTIMIZERS.values():
        net = optimizer.load(path, "nas-bench-201")
        assert tuple(net.header["probes"]) == trained.probes


def test_pick_under_budget_is_the_most_accurate_that_fits():
    mean = np.log([1.0, 2.0, 3.0, 4.0])
    acc = np.array([60.0, 80.0, 70.0, 90.0])
    assert optimizer.pick_under_budget(mean, np.zeros(4), acc, np.log(3.5)) == 1
    # the margin: 2 ms with a 0.5 log-std margin is 2 * e^0.25 = 2.57 ms
    assert optimizer.pick_under_budget(mean, np.full(4, 0.5), acc, np.log(2.5)) == 0
    assert optimizer.pick_under_budget(mean, np.zeros(4), acc, np.log(0.5)) is None


def test_the_network_decides_from_probes_and_budget():
    trained = crossdevice.shipped("nas-bench-201")
    net = optimizer.load(SHIPPED_OPTIMIZERS[("nas-bench-201", "cifar10_top1")])
    table = read_table(NB201_LATENCY)
    from coordinator.ranking import NB201_ACCURACY
    from coordinator.ranking.tables import read_accuracy

    acc_map, _ = read_accuracy(NB201_ACCURACY, "cifar10_top1")
    enc = SPACE.encode_all(table.archs)
    basis = trained.model.basis(enc["onehot"], enc["alive"])
    accuracy = np.array([acc_map[a] for a in table.archs])
    rows = crossdevice.probe_rows(trained, table.archs)
    y = np.log(table.column("raspberry_pi4"))
    fit = trained.model.adapt(basis[rows], y[rows])
    picks = []
    for budget_ms in (30.0, 45.0, 90.0):  # the Pi 4 spans 19-99 ms
        d = optimizer.decide(net, trained, fit, y[rows], np.log(budget_ms), basis, enc["onehot"], accuracy)
        assert d is not None and np.exp(d.predicted_log) <= budget_ms
        picks.append(accuracy[d.row])
    assert picks == sorted(picks)  # a looser budget never buys a worse network
    assert optimizer.decide(net, trained, fit, y[rows], np.log(0.01), basis, enc["onehot"], accuracy) is None


def test_the_fast_evidence_matches_the_direct_one(public):
    """adapt evaluates the marginal likelihood through the Woodbury identity; the direct p x p form
    (slow for a fully measured column) must choose the same noise and the same posterior."""
    table, enc, logs = public
    model = crossdevice.CrossDevicePredictor(rank=4, n_probes=8).fit(
        enc["onehot"], enc["alive"], logs[:, [0, 2, 3]]
    )
    basis = model.basis(enc["onehot"], enc["alive"])
    rows = np.arange(0, len(table.archs), 7)
    y = logs[rows, table.devices.index("pixel3")]
    b = basis[rows]
    k = model.rank_
    cov = np.zeros((k + 1, k + 1))
    cov[0, 0] = crossdevice.OFFSET_VARIANCE
    cov[1:, 1:] = model.prior_cov_
    mean = np.r_[0.0, model.prior_mean_]

    def direct(noise):
        s = noise * np.eye(len(rows)) + b @ cov @ b.T
        r = y - b @ mean
        return -0.5 * r @ np.linalg.solve(s, r) - 0.5 * np.linalg.slogdet(s)[1]

    best = max(crossdevice.NOISES, key=direct)
    fit = model.adapt(b, y)
    assert fit.noise == best
    precision = np.linalg.inv(cov) + b.T @ b / best
    np.testing.assert_allclose(
        fit.weights, np.linalg.solve(precision, b.T @ y / best + np.linalg.solve(cov, mean))
    )


def test_a_network_that_does_not_fit_its_probes_is_refused_when_loaded(tmp_path):
    path = SHIPPED_OPTIMIZERS[("nas-bench-201", "cifar10_top1")]
    net = optimizer.load(path)
    cut = optimizer.OptimizerNet(net.weights, net.biases, net.in_mean[:-1], net.in_scale[:-1],
                                 {**net.header, "probes": net.header["probes"][:-1]})  # fmt: skip
    cut.save(str(tmp_path / "cut.npz"))
    with pytest.raises(ModelFileError, match="is damaged: its first layer does not take 20 inputs"):
        optimizer.load(str(tmp_path / "cut.npz"))
    trained = crossdevice.shipped("nas-bench-201")
    with pytest.raises(ModelFileError, match="was trained for cifar10_top1, not cifar100_top1"):
        optimizer.load_for(path, trained, "cifar100_top1")
