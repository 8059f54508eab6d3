"""`fleetbench train` trains a small network for real (seconds); `fleetbench prune` prunes it by each
method and says what it got as JSON; every bad input is one sentence and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from daemon_proc import fleetbench
from pruning import flops_table

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from runtimes import run_onnx

from agent.materialize import families as fam
from agent.materialize.lut import to_rows, write_csv
from agent.materialize.weights import load

KEYS = {
    "flops_ratio",
    "params_ratio",
    "accuracy_before",
    "accuracy_pruned",
    "accuracy_finetuned",
    "predicted_ms",
    "method",
    "widths",
}


def prune(weights: str, *args: str):
    """`fleetbench prune` of the trained resnet20."""
    return fleetbench("prune", "--space", "resnet20", "--weights", weights, *args)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("train") / "w.npz")
    out = fleetbench(
        "train",
        "--space",
        "resnet20",
        "--widths",
        "x0.5",
        "--resolution",
        "16",
        "--data",
        "digits",
        "--epochs",
        "3",
        "-o",
        path,
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["train"] == 1437 and summary["test"] == 360  # the 80/20 split of 1,797 digits
    assert summary["test_accuracy"] > 0.8, summary  # well above chance (0.1) after three epochs
    plan, _, info = load(path)
    assert plan.widths == fam.parse_widths("resnet20", "x0.5") and plan.resolution == 16
    assert info["test_accuracy"] == pytest.approx(summary["test_accuracy"], abs=1e-6)
    return path


def test_prune_by_each_method_prints_its_figures_and_writes_a_model(weights, tmp_path):
    plan, _, _ = load(weights)
    write_csv(str(tmp_path / "lut.csv"), to_rows(flops_table(plan), {}))
    for method in ("uniform", "l1", "netadapt"):
        out = prune(
            weights,
            "--method",
            method,
            "--flops",
            "0.5",
            "--lut",
            str(tmp_path / "lut.csv"),
            "--data",
            "digits",
            "--finetune-epochs",
            "2",
            "--step",
            "0.1",
            "--short-batches",
            "2",
            "-o",
            str(tmp_path / f"{method}.npz"),
            "--onnx",
            str(tmp_path / f"{method}.onnx"),
            "--format",
            "json",
        )
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        assert set(report) == KEYS and report["method"] == method
        assert report["flops_ratio"] <= 0.5 and report["predicted_ms"] > 0
        # two epochs: after one, a method's accuracy ranged 0.48-0.89 over seeds and machines
        assert report["accuracy_before"] > 0.8 and report["accuracy_finetuned"] > 0.5
        small, params, info = load(str(tmp_path / f"{method}.npz"))
        assert small.spec == report["widths"] and info["method"] == method
        # the ONNX model is the pruned, fine-tuned network: PyTorch says the same
        import torch

        from coordinator.prune.torchnet import PlanNet

        x = np.random.default_rng(0).standard_normal((1, 3, 16, 16)).astype(np.float32)
        with torch.no_grad():
            expected = PlanNet(small).load_params(params).eval()(torch.from_numpy(x)).numpy()
        got = run_onnx((tmp_path / f"{method}.onnx").read_bytes(), x)
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def test_prune_without_data_or_table_says_null(weights, tmp_path):
    out = prune(
        weights,
        "--method",
        "uniform",
        "--flops",
        "0.7",
        "-o",
        str(tmp_path / "p.npz"),
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert [report[k] for k in KEYS if k.startswith("accuracy") or k == "predicted_ms"] == [None] * 4
    text = prune(
        weights,
        "--method",
        "l1",
        "--flops",
        "0.7",
        "-o",
        str(tmp_path / "p.npz"),
    )
    assert text.returncode == 0 and "l1: widths " in text.stdout and "accuracy before -" in text.stdout


@pytest.mark.parametrize(
    "args, error",
    [
        (("--flops", "0"), "argument --flops: 0 must be a share of the network's FLOPs: above 0, at most 1"),
        (("--flops", "1.5"), "argument --flops: 1.5 must be a share"),
        (("--flops", "half"), "argument --flops: 'half' is not a number"),
        (("--flops", "0.5", "--space", "resnet56"), "holds a resnet20, not a resnet56"),
        (
            ("--flops", "0.5", "--method", "netadapt"),
            "--method netadapt needs --lut (the device's width table)",
        ),
        (("--flops", "0.5", "--finetune-epochs", "2"), "--finetune-epochs needs --data"),
        (
            ("--flops", "0.5", "--data", "NOARRAY"),
            "has no 'y_test' array (it needs x_train, y_train, x_test, y_test)",
        ),
        (("--flops", "0.5", "--data", "images.csv"), "must be 'digits' or a .npz file"),
        (("--flops", "0.5", "--lut", "BADLUT"), "is not a lookup table written by fleetbench lut"),
        (
            (
                "--flops",
                "0.01",
            ),
            "resnet20 cannot get to 0.01 of its FLOPs",
        ),
    ],
)
def test_prune_refuses_bad_input_in_one_sentence(weights, tmp_path, args, error):
    np.savez(
        tmp_path / "noarray.npz",
        x_train=np.zeros((4, 8, 8)),
        y_train=np.zeros(4, int),
        x_test=np.zeros((2, 8, 8)),
    )
    (tmp_path / "bad.csv").write_text("arch,ms\nx,1\n")
    names = {"NOARRAY": str(tmp_path / "noarray.npz"), "BADLUT": str(tmp_path / "bad.csv")}
    base = {"--space": "resnet20", "--method": "l1"}
    given = dict(zip(args[::2], args[1::2]))
    argv = [a for k, v in {**base, **given}.items() for a in (k, names.get(v, v))]
    out = fleetbench("prune", "--weights", weights, *argv, "-o", str(tmp_path / "p.npz"))
    assert out.returncode == 2 and error in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.strip().count("\n") <= 1
    assert not (tmp_path / "p.npz").exists()


def test_train_reads_a_users_npz_and_refuses_a_broken_one(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 1, 12, 12)).astype(np.uint8)
    y = np.arange(40) % 2
    np.savez(tmp_path / "mine.npz", x_train=x[:30], y_train=y[:30], x_test=x[30:], y_test=y[30:])
    out = fleetbench(
        "train",
        "--space",
        "resnet20",
        "--widths",
        "x0.25",
        "--resolution",
        "8",
        "--data",
        str(tmp_path / "mine.npz"),
        "--epochs",
        "1",
        "-o",
        str(tmp_path / "w.npz"),
        "--format",
        "json",
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["test"] == 10 and load(str(tmp_path / "w.npz"))[0].classes == 2
    np.savez(
        tmp_path / "flat.npz",
        x_train=np.zeros((3, 5)),
        y_train=np.zeros(3, int),
        x_test=np.zeros((1, 5)),
        y_test=np.zeros(1, int),
    )
    for data, error in (
        ("flat.npz", "x_train is (3, 5); it must be (N, H, W) or (N, C, H, W)"),
        ("gone.npz", "gone.npz does not exist"),
    ):
        out = fleetbench(
            "train", "--space", "resnet20", "--data", str(tmp_path / data), "-o", str(tmp_path / "x.npz")
        )
        assert out.returncode == 2 and error in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_without_the_prune_extra_train_names_it():
    code = (
        "import sys; sys.modules['torch'] = None\nfrom agent.cli import main\n"
        "sys.exit(main(['train', '--space', 'resnet20', '--data', 'digits', '-o', '/tmp/never.npz']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (
        proc.returncode != 0
        and "training and fine-tuning needs torch: pip install 'fleetbench[prune]'" in proc.stderr
    )
    assert "Traceback" not in proc.stderr
