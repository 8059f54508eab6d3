"""Build the NAS-Bench-201 tables fleetbench ships in coordinator/data/ from the shared public data.

Run once, by a maintainer, when the source data changes (the package never reads the source):

    python benchmarks/build_nb201_data.py /path/to/shared/data

Writes ``coordinator/data/nb201_devices_ms.csv`` (all 15,625 architectures x 29 distinct devices:
HELP's 27 columns, then the Jetson TX2 and Coral columns of ``nb201_latency_ms.csv``, measured on
1,999 architectures only; HELP's raspi4, pixel3, eyeriss and fpga are the same measurements as
that table's raspberry_pi4, pixel3, eyeriss_asic and zc706_fpga, so those are not repeated) and
``coordinator/data/nb201_full_accuracy.csv`` (the accuracies of all 15,625, in the benchmark's
index order, without the index column).
"""

from __future__ import annotations

import csv
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, os.pardir, "coordinator", "data")
ONLY_PUBLIC = ("jetson_tx2_edgegpu", "coral_edgetpu")


def _rows(path: str) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        return next(reader), list(reader)


def main(src: str) -> int:
    head, rows = _rows(os.path.join(src, "nb201_help_latency_ms.csv"))
    phead, prows = _rows(os.path.join(src, "nb201_latency_ms.csv"))
    cols = [phead.index(d) for d in ONLY_PUBLIC]
    public = {r[0]: [r[c] for c in cols] for r in prows}
    with open(os.path.join(OUT, "nb201_devices_ms.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow([*head, *ONLY_PUBLIC])
        for r in rows:
            extra = [c if c and float(c) > 0 else "" for c in public.get(r[0], ["", ""])]
            w.writerow([*r, *extra])
    ahead, arows = _rows(os.path.join(src, "nb201_full_accuracy.csv"))
    assert ahead[:2] == ["index", "arch"] and [r[1] for r in arows] == [r[0] for r in rows]
    with open(os.path.join(OUT, "nb201_full_accuracy.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(ahead[1:])
        w.writerows(r[1:] for r in arows)
    print(f"wrote {len(rows)} architectures x {len(head) - 1 + len(ONLY_PUBLIC)} devices", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(
        main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, os.pardir, os.pardir, "shared", "data"))
    )
