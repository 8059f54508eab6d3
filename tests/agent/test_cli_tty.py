"""Progress and Ctrl-C as a person at a terminal sees them, through a real pseudo-terminal."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _interruptible() -> None:
    # A suite started in the background by a shell without job control (`.ci/run &`, nohup)
    # runs with SIGINT ignored, and a child inherits that: Ctrl-C would never reach fleetbench.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_on_pty(args):
    """fleetbench with stderr on a pty (a terminal), stdout on a pipe; returns (proc, master fd)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
        cwd=ROOT,
        text=True,
        preexec_fn=_interruptible,
    )
    os.close(slave)
    return proc, master


def _read_until(master, needle, timeout_s=120.0):
    """Read the terminal until ``needle`` appears (or EOF / timeout); returns all text read."""
    seen = b""
    deadline = time.monotonic() + timeout_s
    while needle.encode() not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    return seen.decode("utf-8", "replace")


def test_progress_on_a_terminal_and_clean_stdout(onnx_model):
    proc, master = _start_on_pty(["bench", onnx_model, "--runs", "50", "--min-time", "0.5",
                                  "--threads", "1", "--format", "csv"])  # fmt: skip
    try:
        text = _read_until(master, "measuring:")
        out, _ = proc.communicate(timeout=120)
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert "measuring:" in text and "\r" in text
    assert out.startswith("model,path,format")  # progress never leaks into stdout
    assert "measuring" not in out


def test_no_progress_when_stderr_is_not_a_terminal(onnx_model):
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "bench", onnx_model, "--runs", "5", "--min-time", "0"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0
    assert proc.stderr == ""


def test_ctrl_c_reports_finished_models_and_exits_130(tflite_model):
    # 20,000 runs take the tiny TFLite net well under a second and SqueezeNet minutes:
    # SqueezeNet is interrupted as soon as its progress shows on the terminal.
    proc, master = _start_on_pty([
        "bench", tflite_model, "example:squeezenet", "--runs", "20000", "--min-time", "0",
        "--max-time", "600", "--threads", "1", "--format", "csv",
    ])  # fmt: skip
    try:
        _read_until(master, "example:squeezenet: measuring:")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        text = _read_until(master, "interrupted", timeout_s=10)
    finally:
        os.close(master)
    assert proc.returncode == 130
    assert "interrupted" in text
    rows = out.strip().splitlines()
    assert len(rows) == 2 and rows[1].startswith("conv.tflite,")
