"""The spread of the golden runs' numbers across instruction sets (tests/golden/README.md).

Record the cases once per target, each in its own process (XLA reads XLA_FLAGS at start):

    for isa in SSE4_2 AVX AVX2; do
      XLA_FLAGS=--xla_cpu_max_isa=$isa FLOQ_RECORD_GOLDEN=/tmp/golden/$isa \
        .venv/bin/python -m pytest -n 0 -q tests/test_golden.py -k test_golden_run
    done
    FLOQ_RECORD_GOLDEN=/tmp/golden/native .venv/bin/python -m pytest -n 0 -q tests/test_golden.py -k test_golden_run
    .venv/bin/python tests/probes/golden_spread.py /tmp/golden/native /tmp/golden/AVX2 /tmp/golden/AVX /tmp/golden/SSE4_2

prints, per case and target, the largest deviation from the first folder's record: of a float
CSV cell (relative to the cell, floor 0.01) and of a parameter statistic (relative to its leaf's
largest magnitude), and any string, integer or integer-array difference (there should be none).
"""

from __future__ import annotations

import json
import math
import os
import sys


def spread(got: dict, want: dict) -> tuple[float, float, list]:
    csv_max, param_max, exact = 0.0, 0.0, []
    for name in ("train", "eval"):
        for i, (rg, rw) in enumerate(zip(got[name], want[name])):
            for k, b in rw.items():
                a = rg.get(k)
                if isinstance(a, float) or isinstance(b, float):
                    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
                        if not (math.isnan(a) and math.isnan(b)):
                            csv_max = max(csv_max, abs(a - b) / max(abs(b), 1e-2))
                        continue
                if a != b:
                    exact.append(f"{name}.csv row {i} {k}")
    for k, lw in want["params"].items():
        lg = got["params"].get(k, {})
        if "stats" in lw:
            for a, b in zip(lg.get("stats", []), lw["stats"]):
                param_max = max(param_max, abs(a - b) / max(lw["scale"], 1e-6))
        elif lg != lw:
            exact.append(k)
    return csv_max, param_max, exact


def main(folders: list[str]) -> int:
    base, others = folders[0], folders[1:]
    worst = [0.0, 0.0]
    for case in sorted(f[:-5] for f in os.listdir(base) if f.endswith(".json")):
        want = json.load(open(os.path.join(base, f"{case}.json")))
        for other in others:
            got = json.load(open(os.path.join(other, f"{case}.json")))
            c, p, exact = spread(got, want)
            worst = [max(worst[0], c), max(worst[1], p)]
            print(f"{case:12s} {os.path.basename(other):8s} csv {c:.2e}  params {p:.2e}  exact differences: {len(exact)}"
                  + (f" ({', '.join(exact[:3])})" if exact else ""))
    print(f"largest: csv {worst[0]:.2e}, params {worst[1]:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
