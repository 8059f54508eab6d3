"""``fleetbench bench`` as people and scripts use it."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from agent.bench.results import BenchResult
from agent.cli import main

pytest.importorskip("onnxruntime")
pytest.importorskip("ai_edge_litert")

QUICK = ["--runs", "5", "--warmup", "1", "--warmup-time", "0", "--min-time", "0", "--threads", "1"]


def test_table_for_both_backends(capsys, onnx_model, tflite_model):
    assert main(["bench", onnx_model, tflite_model, *QUICK]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:5] == ["model", "backend", "thr", "n", "p50"]
    assert any(line.startswith("conv.onnx") and "onnxruntime" in line for line in lines)
    assert any(line.startswith("conv.tflite") and "litert" in line for line in lines)
    assert "timer: " in out
    assert "XNNPACK" not in out


def test_json_is_a_list_of_records(capsys, tflite_model):
    assert main(["bench", tflite_model, *QUICK, "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 1
    r = BenchResult.from_dict(data[0])
    assert r.backend.name == "litert" and r.stats.n == len(r.samples_ns)


def test_csv_columns(capsys, onnx_model):
    assert main(["bench", onnx_model, *QUICK, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    assert rows[0]["backend"] == "onnxruntime" and float(rows[0]["p50_ms"]) > 0
    assert rows[0]["timer"] in ("native", "python")


def test_output_file_format_from_extension(tmp_path, capsys, onnx_model):
    out = tmp_path / "res.json"
    assert main(["bench", onnx_model, *QUICK, "-o", str(out)]) == 0
    assert capsys.readouterr().out == ""
    assert json.loads(out.read_text())[0]["model"]["name"] == "conv.onnx"
    assert [p.name for p in tmp_path.iterdir()] == ["res.json"]  # no temp files left


def test_profile_in_table(capsys, onnx_model):
    assert main(["bench", onnx_model, *QUICK, "--profile", "--profile-top", "2"]) == 0
    out = capsys.readouterr().out
    assert "slowest operators of conv.onnx" in out


def test_example_models(capsys):
    assert main(["bench", "--list-examples"]) == 0
    assert "example:squeezenet" in capsys.readouterr().out
    assert main(["bench", "example:squeezenet", *QUICK]) == 0
    assert "light_squeezenet.onnx" in capsys.readouterr().out
    assert main(["bench", "example:nonesuch"]) == 1
    assert "not an example model" in capsys.readouterr().err


def test_one_failure_does_not_lose_the_rest(capsys, tmp_path, onnx_model):
    code = main(["bench", str(tmp_path / "missing.onnx"), onnx_model, *QUICK])
    captured = capsys.readouterr()
    assert code == 1
    assert "conv.onnx" in captured.out
    assert captured.err.count("error:") == 1 and "does not exist" in captured.err


def test_isolated_run(capsys, tflite_model):
    assert main(["bench", tflite_model, *QUICK, "--isolate", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["protocol"]["isolated"] is True


@pytest.mark.parametrize("args,code,message", [
    (["bench"], 2, "needs at least one MODEL"),
    (["bench", "m.onnx", "--backend", "tensorflow"], 2, "invalid choice: 'tensorflow'"),
    (["bench", "m.onnx", "--shape", "x=1xQ"], 2, "dimension 'Q' is not a positive integer"),
    (["bench", "m.onnx", "--runs", "-3"], 2, "'-3' is negative"),
    (["bench", "m.onnx", "--min-time", "9", "--max-time", "1"], 2, "shorter than --min-time"),
    (["bench", "m.onnx", "--max-time", "inf"], 2, "'inf' is not a finite, non-negative number"),
    (["bench", "m.onnx", "--seed", "-1"], 2, "argument --seed: '-1' is negative"),
    (["bench", "m.onnx", "--profile-top", "0"], 2, "'0' is less than 1"),
    (["bnech", "m.onnx"], 2, "invalid choice: 'bnech' (choose from 'bench', "),
    (["bnech", "m.onnx"], 2, "; did you mean 'bench'?"),
    (["bench", "m.onnx", "--backend", "onnxrt"], 2, "; did you mean 'onnxruntime'?"),
])  # fmt: skip
def test_usage_errors(capsys, args, code, message):
    try:
        got = main(args)
    except SystemExit as stop:  # argparse's own checks exit from inside parse_args
        got = stop.code
    assert got == code, args
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def _run(args, env=None, cwd=None):
    beside = os.path.join(os.path.dirname(sys.executable), "fleetbench")
    exe = beside if os.path.exists(beside) else shutil.which("fleetbench")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "agent", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd, timeout=300)


def test_console_script_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not protobuf at all \xff\xfe")
    proc = _run(["bench", str(bad)])
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "is not a valid ONNX model" in proc.stderr


def test_missing_runtime_names_the_extra(onnx_model):
    # A real failed import: the interpreter is told onnxruntime cannot be imported.
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from agent.cli import main\n"
        f"sys.exit(main(['bench', {onnx_model!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "pip install 'fleetbench[onnx]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_explains_the_protocol():
    proc = _run(["bench", "--help"])
    assert proc.returncode == 0
    assert "--min-time" in proc.stdout and "example:NAME" in proc.stdout


def test_no_command_prints_help():
    proc = _run([])
    assert proc.returncode == 2 and "bench" in proc.stderr


def test_runs_from_any_directory(tmp_path, onnx_model):
    proc = _run(["bench", onnx_model, *QUICK, "-q", "--format", "csv"], cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("model,path,format")
    assert os.listdir(tmp_path) == []
