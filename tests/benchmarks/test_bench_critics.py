"""`floq bench` prices the literature's comparison critics (HL-Gauss, C51, BRO): throughput rows
at tiny size with positive updates/s and GFLOP per update. Not timed."""

from __future__ import annotations

import csv
import math

import pytest

from benchmarks import bench
from floq_test_utils import FULL

# make test prices one categorical and one residual critic beside the monolithic one (the other
# two share their code paths: hlgauss c51's head and loss, simbav2 bro's network);
# make test-full (FLOQ_FULL_TESTS=1) all five.
BENCH_CRITICS = ("monolithic", "hlgauss", "c51", "bro", "simbav2") if FULL else ("monolithic", "c51", "bro")


@pytest.mark.slow  # runs a benchmark group end to end
def test_tiny_throughput_rows_for_the_new_critics(tmp_path):
    rc = bench.main(["--tiny", "--only", "throughput", "--critics", ",".join(BENCH_CRITICS), "--out",
                     str(tmp_path), "--name", "bench.csv"])
    assert rc == 0
    with open(tmp_path / "bench.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["benchmark"] == "throughput"]
    by = {r["critic"]: r for r in rows}
    assert set(by) == set(BENCH_CRITICS)
    for r in rows:
        for col in ("updates_per_s", "gflop_per_update", "gflop_per_s"):
            assert math.isfinite(float(r[col])) and float(r[col]) > 0, (r["critic"], col)
    # The categorical heads (51 logits per member) cost more than the scalar head.
    gf = {c: float(r["gflop_per_update"]) for c, r in by.items()}
    assert all(gf[c] > gf["monolithic"] for c in ("hlgauss", "c51") if c in gf)


def test_unknown_critic_is_one_line():
    assert bench.main(["--tiny", "--only", "throughput", "--critics", "nope", "--no-write"]) == 2


def test_build_gives_each_critic_its_gin_shape():
    size = bench.SIZES["paper"]
    for name in ("hlgauss", "c51", "bro", "simbav2"):
        _, c = bench.build(name, size)
        assert c.name == name and c.num_ensembles == 2
        assert (c.net.width, c.net.depth) == (512, 4)
    assert bench.build("simbav2", size)[1].net.hyperspherical
    assert bench.build("hlgauss", size)[1].num_bins == 51 and bench.build("c51", size)[1].v_range[1] > 0
