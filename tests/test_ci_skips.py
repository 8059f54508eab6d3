"""A test that skips for a missing tool or extra fails under CI=true, and only then."""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def run_pytest(tmp_path, ci: bool) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(
        "from ci_skips import pytest_make_collect_report, pytest_runtest_makereport\n"
    )
    (tmp_path / "test_tool.py").write_text(
        "import pytest\n\ndef test_a():\n    pytest.skip('mosquitto is not installed')\n"
    )
    (tmp_path / "test_extra.py").write_text(
        "import pytest\n\npytest.importorskip('no_such_extra_for_fleetbench')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["PYTHONPATH"] = HERE
    if ci:
        env["CI"] = "true"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(tmp_path)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)


def test_skips_pass_on_a_developers_machine(tmp_path):
    out = run_pytest(tmp_path, ci=False)
    assert out.returncode == 0 and "2 skipped" in out.stdout, out.stdout


def test_skips_fail_under_ci(tmp_path):
    out = run_pytest(tmp_path, ci=True)
    assert out.returncode != 0, out.stdout
    assert "skipped under CI=true" in out.stdout and "no_such_extra_for_fleetbench" in out.stdout
