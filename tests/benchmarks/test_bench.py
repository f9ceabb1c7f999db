"""`floq bench` works end to end at tiny sizes (rows, columns, positive numbers), and the
per-step baseline computes the same update as the trainer's scanned path. Not timed."""

from __future__ import annotations

import csv
import math
import os

import jax
import numpy as np
import pytest

from benchmarks import bench, per_step_baseline
from floq.train import init_states, make_chunk, sample_batch


def _num(v):
    return float(v) if v not in ("", None) else None


@pytest.mark.slow  # runs benchmark groups end to end
def test_tiny_bench_writes_rows_with_expected_columns(tmp_path):
    rc = bench.main(["--tiny", "--only", "throughput,per_step,flow_steps", "--critics", "floq", "--out",
                     str(tmp_path), "--name", "bench.csv"])
    assert rc == 0
    # the persistent cache's threshold is the environment's (tests/conftest.py: every program is
    # cached), not bench's own default, which would hold for the rest of this process
    assert jax.config.jax_persistent_cache_min_compile_time_secs == float(
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"])
    with open(tmp_path / "bench.csv") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == bench.COLUMNS
        rows = list(reader)
    assert (tmp_path / "bench.md").exists()
    kinds = {r["benchmark"] for r in rows}
    assert {"matmul_peak", "throughput", "per_step", "flow_steps", "flow_steps_fit"} <= kinds
    for r in rows:
        assert r["device"] and r["jax_version"] == jax.__version__
    for r in rows:
        if r["benchmark"] in ("throughput", "per_step", "flow_steps"):
            for col in ("updates_per_s", "gflop_per_update", "gflop_per_s", "peak_ratio", "ms_per_update"):
                v = _num(r[col])
                assert v is not None and math.isfinite(v) and v > 0, (r["benchmark"], col, r[col])
    thr = [r for r in rows if r["benchmark"] == "throughput"][0]
    assert _num(thr["speedup_vs_per_step"]) > 0
    assert _num(thr["peak_mem_mb"]) > 0
    assert thr["critic"] == "floq" and thr["config"] == "tiny" and thr["precision"] == "float32"
    ks = sorted(int(r["K"]) for r in rows if r["benchmark"] == "flow_steps")
    assert ks == list(bench.MODES["tiny"].k_values)
    # GFLOP per update grows with K (the integrations are counted K times).
    by_k = {int(r["K"]): _num(r["gflop_per_update"]) for r in rows if r["benchmark"] == "flow_steps"}
    assert by_k[2] > by_k[1]
    fit = [r for r in rows if r["benchmark"] == "flow_steps_fit"][0]
    assert _num(fit["r2"]) is not None
    assert _num([r for r in rows if r["benchmark"] == "matmul_peak"][0]["gflop_per_s"]) > 0


def test_bench_rejects_unknown_benchmark():
    assert bench.main(["--tiny", "--only", "nope", "--no-write"]) == 2


@pytest.mark.parametrize("critic_name", ["monolithic", "floq"])
def test_per_step_update_equals_scanned_step(critic_name):
    size = bench.SIZES["tiny"]
    algo, critic = bench.build(critic_name, size)
    data = bench.to_device(bench.synthetic_data(300, seed=1))
    states = init_states(algo, critic, [7], data["observations"][:2], data["actions"][:2])
    state1 = jax.tree_util.tree_map(lambda x: np.array(x[0]), states)  # host copy: states get donated

    scanned, _ = make_chunk(algo, critic, size.batch, 1)(states, data)
    scanned = jax.tree_util.tree_map(lambda x: np.asarray(x[0]), scanned)

    # The batch make_step samples, handed to the per-step update as host NumPy arrays.
    _, k_data = jax.random.split(state1["rng"])
    batch = {k: np.asarray(v) for k, v in sample_batch(data, k_data, size.batch).items()}
    stepped, info = per_step_baseline.make_update(algo, critic)(jax.tree_util.tree_map(np.array, state1), batch)
    stepped = jax.tree_util.tree_map(np.asarray, stepped)

    assert np.isfinite(float(info["critic/loss"]))
    np.testing.assert_array_equal(stepped["rng"], scanned["rng"])
    assert int(stepped["step"]) == int(scanned["step"]) == 1
    flat_s, tree_s = jax.tree_util.tree_flatten_with_path(stepped)
    flat_c, tree_c = jax.tree_util.tree_flatten(scanned)
    assert tree_s == tree_c
    changed = False
    for (path, a), b, before in zip(flat_s, flat_c, jax.tree_util.tree_leaves(state1)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-5, atol=1e-6,
                                   err_msg=jax.tree_util.keystr(path))
        changed |= not np.array_equal(np.asarray(a), np.asarray(before))
    assert changed, "one update left every parameter unchanged"


def test_host_sampler_and_loop_run():
    size = bench.SIZES["tiny"]
    algo, critic = bench.build("floq", size)
    host = bench.synthetic_data(100)
    states = init_states(algo, critic, [0], host["observations"][:2], host["actions"][:2])
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    r = per_step_baseline.measure(algo, critic, state, host, size.batch, steps=3, repeats=1, warmup_steps=1)
    assert r["updates_per_s"] > 0
    assert int(r["state"]["step"]) == 4
    b = per_step_baseline.HostSampler(host, seed=0).sample(5)
    assert set(b) == set(host) and all(v.shape[0] == 5 for v in b.values())


def test_squeezed_chunk_matches_trainer_chunk():
    size = bench.SIZES["tiny"]
    algo, critic = bench.build("floq", size)
    data = bench.to_device(bench.synthetic_data(300, seed=2))
    a = init_states(algo, critic, [3], data["observations"][:2], data["actions"][:2])
    b = jax.tree_util.tree_map(lambda x: x.copy(), a)
    a, ma = make_chunk(algo, critic, size.batch, 3)(a, data)
    b, mb = bench.make_chunk_squeezed(algo, critic, size.batch, 3)(b, data)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves((a, ma)), jax.tree_util.tree_leaves((b, mb))):
        assert x.shape == y.shape
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # runs benchmark groups end to end
def test_tasks_group_and_fill_flops(tmp_path):
    """The multi-task program group writes one row per member count (members in `seeds`), and
    --fill-flops restores the FLOPs columns a device left empty to the values computed in the run."""
    path = tmp_path / "tasks.csv"
    rc = bench.main(["--tiny", "--only", "tasks", "--task-counts", "1,2", "--critics", "floq", "--out",
                     str(tmp_path), "--name", "tasks.csv"])
    assert rc == 0
    rows = list(csv.DictReader(open(path)))
    tasks = [r for r in rows if r["benchmark"] == "tasks"]
    assert [int(r["seeds"]) for r in tasks] == [1, 2]
    assert _num(tasks[0]["ratio"]) == 1.0 and _num(tasks[1]["ratio"]) > 0
    before = {r["seeds"]: (_num(r["gflop_per_update"]), _num(r["gflop_per_s"])) for r in tasks}
    for r in rows:  # what a device without cost analysis writes
        if r["benchmark"] == "tasks":
            r["gflop_per_update"] = r["gflop_per_s"] = r["peak_ratio"] = ""
    bench.write_csv(rows, str(path))
    assert bench.main(["--fill-flops", str(path)]) == 0
    after = {r["seeds"]: r for r in csv.DictReader(open(path)) if r["benchmark"] == "tasks"}
    for seeds, (gflop, gflop_s) in before.items():
        assert _num(after[seeds]["gflop_per_update"]) == pytest.approx(gflop, rel=1e-6)
        assert _num(after[seeds]["gflop_per_s"]) == pytest.approx(gflop_s, rel=1e-6)
        assert _num(after[seeds]["peak_ratio"]) > 0 and "--fill-flops" in after[seeds]["notes"]
    assert bench.main(["--fill-flops", str(tmp_path / "missing.csv")]) == 2
