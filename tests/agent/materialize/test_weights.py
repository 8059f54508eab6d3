"""Weights files: written and read back, refused in one sentence when they do not fit, and carried by
`fleetbench make-model --weights` into ONNX and TFLite."""

from __future__ import annotations

import json

import numpy as np
import pytest
from daemon_proc import fleetbench as cli
from runtimes import run_onnx, run_tflite

from agent.materialize import families as fam
from agent.materialize import model_bytes
from agent.materialize.weights import WeightsError, load, matching, save, seeded, to_network

SPEC = "4,5,6,7,8,9,10,11,12"


def test_a_weights_file_round_trips(tmp_path):
    plan = fam.plan("resnet20", SPEC, classes=10, resolution=16)
    params = seeded(plan, 4)
    save(str(tmp_path / "w.npz"), plan, params, {"test_accuracy": 0.5})
    again, loaded, info = load(str(tmp_path / "w.npz"))
    assert again == plan and info == {"test_accuracy": 0.5}
    assert loaded.keys() == params.keys() and all(np.array_equal(loaded[k], params[k]) for k in params)


def _rewrite(path, **changes):
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    for key, value in changes.items():
        if key == "drop":
            arrays.pop(value)
        elif key == "no_meta":
            meta = None
        else:
            meta[key] = value
    if meta is not None:
        arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"drop": "s1b0c1:w"}, "has no 's1b0c1:w': it is not a resnet20 at these widths"),
        ({"widths": [16] * 9}, "'s0b0c1:w' is (4, 16, 3, 3), the resnet20 at widths 16,16,16"),
        ({"family": "resnet56"}, "resnet56 has 27 prunable layers; the spec gives 9 widths"),
        ({"family": "vgg"}, "is for 'vgg', not a family this fleetbench knows"),
        ({"format": "keras"}, "is a 'keras' file, not fleetbench-weights"),
        ({"version": 9}, "is version 9; this fleetbench reads version 1"),
        ({"no_meta": True}, "has no fleetbench header (__meta__)"),
    ],
)
def test_a_weights_file_that_does_not_fit_is_refused_in_one_sentence(tmp_path, change, error):
    path = str(tmp_path / "w.npz")
    plan = fam.plan("resnet20", SPEC)
    save(path, plan, seeded(plan))
    _rewrite(path, **change)
    with pytest.raises(WeightsError) as err:
        load(path)
    assert error in str(err.value) and "\n" not in str(err.value)


def test_weights_of_another_family_or_width_are_refused(tmp_path):
    path = str(tmp_path / "w.npz")
    plan = fam.plan("resnet20", SPEC)
    save(path, plan, seeded(plan))
    with pytest.raises(WeightsError, match="holds a resnet20, not a resnet56"):
        matching(path, "resnet56", None, None, None)
    with pytest.raises(WeightsError, match="is a resnet20 at widths 4,5,6,7,8,9,10,11,12, not 16,16"):
        matching(path, "resnet20", "full", None, None)
    with pytest.raises(WeightsError, match="has 10 classes, not 100"):
        matching(path, "resnet20", SPEC, 100, None)
    assert matching(path, "resnet20", SPEC, 10, 16)[0].resolution == 16  # the input size may change
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match=r"junk.npz is not an .npz of arrays \(fleetbench train and prune"):
        load(str(tmp_path / "junk.npz"))
    with pytest.raises(WeightsError, match=r"gone\.npz does not exist"):
        load(str(tmp_path / "gone.npz"))


def test_make_model_carries_trained_weights_into_both_formats(tmp_path):
    plan = fam.plan("mobilenetv1", ",".join(str(4 + i) for i in range(14)), classes=3, resolution=64)
    params = seeded(plan, 11)
    save(str(tmp_path / "w.npz"), plan, params)
    for ext in ("onnx", "tflite"):
        out = cli("make-model", "--space", "mobilenetv1", "--weights", str(tmp_path / "w.npz"),
                  "-o", str(tmp_path / f"m.{ext}"))  # fmt: skip
        assert out.returncode == 0, out.stderr
    x = np.random.default_rng(2).standard_normal((1, 3, 64, 64)).astype(np.float32)
    expected = run_onnx(model_bytes(to_network(plan, params), "onnx"), x)
    assert np.allclose(run_onnx((tmp_path / "m.onnx").read_bytes(), x), expected, rtol=1e-5, atol=1e-6)
    assert np.allclose(run_tflite((tmp_path / "m.tflite").read_bytes(), x), expected, rtol=1e-4, atol=1e-5)
    # full widths and seeded weights when nothing is said
    out = cli("make-model", "--space", "resnet56", "-o", str(tmp_path / "r56.onnx"))
    assert out.returncode == 0 and "resnet56" in (tmp_path / "r56.onnx").read_bytes().decode("latin1")


@pytest.mark.parametrize(
    "args, error",
    [
        (
            ("--space", "resnet20", "--widths", "1,2"),
            "resnet20 has 9 prunable layers; the spec gives 2 widths",
        ),
        (("--space", "resnet20", "x0.5"), "resnet20 takes --widths SPEC, not an arch ('x0.5')"),
        (
            ("--space", "nas-bench-201", "--widths", "x0.5"),
            "--widths and --weights are for the prunable families",
        ),
        (
            (
                "--space",
                "mobilenetv2",
            ),
            "mobilenetv2 needs an ARCH",
        ),
        (("--space", "resnet56", "--weights", "W"), "holds a resnet20, not a resnet56"),
        (("--space", "resnet20", "--weights", "W", "--widths", "full"), "is a resnet20 at widths 4,5,6"),
        (("--space", "resnet20", "--weights", "MISSING"), "missing.npz does not exist"),
    ],
)
def test_make_model_refuses_what_does_not_fit_in_one_sentence(tmp_path, args, error):
    path = str(tmp_path / "w.npz")
    plan = fam.plan("resnet20", SPEC)
    save(path, plan, seeded(plan))
    names = {"W": path, "MISSING": str(tmp_path / "missing.npz")}
    out = cli("make-model", *(names.get(a, a) for a in args), "-o", str(tmp_path / "m.onnx"))
    assert out.returncode == 2 and error in out.stderr, out.stderr
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1
    assert not (tmp_path / "m.onnx").exists()
