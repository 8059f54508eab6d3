"""The dashboard with the demo's fleet, photographed for docs/ (and timed).

Runs `fleetbench demo` (its defaults: a real agent and four simulated devices) into a
temporary directory, serves the dashboard on the demo's database on 127.0.0.1, and has
Chromium (DevTools, as the browser tests drive it) load each page at 1,400 px and save a
full-page PNG.  Prints each page's load time, its width against the window's and any
console errors (there should be none).

    python benchmarks/screenshots.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from _helpers import load_test_helper

#: page -> file under --out
PAGES = {"": "dashboard-fleet.png", "decisions": "dashboard-decisions.png",
         "devices/sim-jetson-tx2": "dashboard-device.png"}  # fmt: skip


def photograph(db: str, out: str) -> int:
    """Each page of the dashboard on ``db``, photographed into ``out``: how many had a problem."""
    browser_module = load_test_helper("browser")
    browser_module.need_chromium()
    bad = 0
    with browser_module.dashboard(db) as url, browser_module.Browser(1400, 900) as browser:
        for page, name in PAGES.items():
            t0 = time.perf_counter()
            browser.open(url + page)
            took = (time.perf_counter() - t0) * 1000
            width = browser.eval("document.documentElement.scrollWidth")
            path = browser.screenshot(os.path.join(out, name), full_page=True)
            print(f"/{page:<24} {took:6.0f} ms  width {width} px of 1400  errors {browser.errors}  {path}")
            bad += width > 1400 or bool(browser.errors)
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        demo = os.path.join(tmp, "demo")
        run = subprocess.run(
            [sys.executable, "-m", "agent", "demo", "--out", demo], capture_output=True, text=True
        )
        print(
            run.stdout[run.stdout.index("\ndevice ") :].strip() if "\ndevice " in run.stdout else run.stdout
        )
        if run.returncode != 0:
            print(run.stderr, file=sys.stderr)
            return 1
        return 1 if photograph(os.path.join(demo, "coordinator", "fleet.sqlite"), args.out) else 0


if __name__ == "__main__":
    sys.exit(main())
