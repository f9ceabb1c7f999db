"""Golden runs: the numbers of short smoke runs, recorded before the plug-in redesign (critic
interface split, the Algorithm interface, recipes) and required afterwards on any x86-64 CPU.

Each case trains a 100-step smoke run in this process and compares (a) every row of train.csv
and eval.csv except the wall-clock columns and (b) every array of the final checkpoint with the
record in tests/golden/<case>.json. XLA compiles for the CPU it runs on, and float results
differ in the last bits between instruction sets (AVX vs AVX2 vs AVX-512: other vector widths,
other FMA contractions), so the record cannot be bitwise. What it holds:

- CSV cells: strings and integers exactly; floats within `CSV_RTOL` of the cell (of 0.01 for
  a smaller cell);
- float arrays: per leaf the mean, standard deviation, minimum, maximum and two fixed random
  projections (a permutation or a sign flip moves those), each within `PARAM_RTOL` of the
  leaf's largest magnitude;
- integer arrays (PRNG keys, step, data-sampling state): exactly (small ones element by
  element, larger ones by their SHA-256).

The tolerances come from the spread measured across instruction sets (tests/golden/README.md:
the same cases under `XLA_FLAGS=--xla_cpu_max_isa=SSE4_2`, `AVX`, `AVX2` and the machine's
AVX-512: at most 8.7e-7 of a CSV cell and 1.6e-6 of a leaf's scale, ~100x below them), and a
change of numbers by more than rounding still fails: the test below checks that the
comparison rejects a 1e-3 change of one parameter statistic, a 1% change of one cell, a
one-step change of one row and a changed PRNG key. An intended change of numbers re-records with
`FLOQ_RECORD_GOLDEN=tests/golden` and says why in the commit. Bitwise equality stays where it
is a property of the code on one machine, against a run made in the same test: a second run in
one process (below), resume (test_seeds_and_resume.py), a vmapped seed = that seed alone.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os

import numpy as np
import pytest

from floq_test_utils import REPO, floq_main

CLOCK = {"wall_time", "updates_per_s", "eval_seconds"}
GOLDEN_DIR = os.path.join(REPO, "tests", "golden")

# Relative tolerances (see tests/golden/README.md for the measured spread across instruction sets).
CSV_RTOL = 1e-4
PARAM_RTOL = 1e-4

BASE = ["gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS=100", "--bind", "EVAL_INTERVAL=50",
        "--bind", "LOG_INTERVAL=50", "--bind", "CHECKPOINT_INTERVAL=100"]

CASES = {
    "monolithic": [],
    "floq": ["gin/critics/floq.gin"],
    "iqn": ["gin/critics/iqn.gin"],
    "online": ["--bind", "ONLINE_STEPS=40", "--bind", "BALANCED_SAMPLING=True"],
    "multitask": ["--bind", "PROGRAM_TASK_IDS=[1, 2]"],
}


def _cell(value: str):
    """A CSV cell as the record keeps it: an int, a float, or the string itself."""
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _csv_rows(path):
    with open(path, newline="") as f:
        return [{k: _cell(v) for k, v in sorted(row.items()) if k not in CLOCK} for row in csv.DictReader(f)]


def _leaf_record(arr: np.ndarray) -> dict:
    rec = {"dtype": str(arr.dtype), "shape": list(arr.shape)}
    if np.issubdtype(arr.dtype, np.floating):
        x = arr.astype(np.float64).ravel()
        rng = np.random.default_rng(x.size)  # fixed per size: the same directions on every machine
        u = rng.standard_normal((2, x.size)) / math.sqrt(max(x.size, 1))
        rec["stats"] = [float(x.mean()), float(x.std()), float(x.min()), float(x.max()),
                        float(u[0] @ x), float(u[1] @ x)] if x.size else []
        rec["scale"] = float(np.abs(x).max()) if x.size else 0.0
    elif arr.size <= 64:
        rec["values"] = np.asarray(arr).ravel().tolist()
    else:
        rec["sha256"] = hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()
    return rec


def _ckpt_leaves(run_dir) -> dict:
    import jax
    import orbax.checkpoint as ocp

    ck = os.path.join(run_dir, "checkpoints")
    steps = sorted(int(d.split("_")[1]) for d in os.listdir(ck) if d.startswith("step_") and "." not in d)
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(ck, f"step_{steps[-1]}"))
    return {jax.tree_util.keystr(p): np.asarray(leaf) for p, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def run_record(run_dir) -> dict:
    """What a golden run is compared by (module docstring)."""
    return {"train": _csv_rows(os.path.join(run_dir, "train.csv")),
            "eval": _csv_rows(os.path.join(run_dir, "eval.csv")),
            "params": {k: _leaf_record(v) for k, v in sorted(_ckpt_leaves(run_dir).items())}}


def _close(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return abs(a - b) <= tol


def compare_records(got: dict, want: dict, csv_rtol: float = CSV_RTOL, param_rtol: float = PARAM_RTOL) -> list[str]:
    """Every difference beyond rounding between two run records, one line each (empty: the same)."""
    out = []
    for name in ("train", "eval"):
        g, w = got[name], want[name]
        if len(g) != len(w):
            out.append(f"{name}.csv: {len(g)} rows, recorded {len(w)}")
            continue
        for i, (rg, rw) in enumerate(zip(g, w)):
            if set(rg) != set(rw):
                out.append(f"{name}.csv row {i}: columns {sorted(set(rg) ^ set(rw))} differ")
                continue
            for k in rw:
                a, b = rg[k], rw[k]
                if isinstance(a, float) or isinstance(b, float):
                    if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or not _close(
                            float(a), float(b), csv_rtol * max(abs(float(b)), 1e-2)):
                        out.append(f"{name}.csv row {i} {k}: {a!r}, recorded {b!r}")
                elif a != b:
                    out.append(f"{name}.csv row {i} {k}: {a!r}, recorded {b!r}")
    g, w = got["params"], want["params"]
    if set(g) != set(w):
        out.append(f"checkpoint leaves differ: {sorted(set(g) ^ set(w))[:6]}")
    for k in sorted(set(g) & set(w)):
        lg, lw = g[k], w[k]
        if (lg["dtype"], lg["shape"]) != (lw["dtype"], lw["shape"]):
            out.append(f"{k}: {lg['dtype']}{lg['shape']}, recorded {lw['dtype']}{lw['shape']}")
        elif "stats" in lw:
            tol = param_rtol * max(lw["scale"], 1e-6)
            bad = [(n, a, b) for n, a, b in zip(("mean", "std", "min", "max", "proj0", "proj1"), lg["stats"], lw["stats"])
                   if not _close(a, b, tol)]
            if bad:
                out.append(f"{k}: " + ", ".join(f"{n} {a:.9g} (recorded {b:.9g})" for n, a, b in bad))
        elif lg != lw:
            out.append(f"{k}: integer values differ")
    return out


def load_golden(case: str) -> dict:
    with open(os.path.join(GOLDEN_DIR, f"{case}.json")) as f:
        return json.load(f)


def _write_record(record: dict, case: str, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{case}.json.tmp")
    with open(tmp, "w") as f:
        json.dump(record, f, indent=0, sort_keys=True)
        f.write("\n")
    os.replace(tmp, os.path.join(folder, f"{case}.json"))


def _golden_run(case: str, run_dir) -> dict:
    extra = CASES[case]
    files = [a for a in extra if a.endswith(".gin")]
    binds = [a for a in extra if not a.endswith(".gin")]
    res = floq_main("run", BASE[0], *files, *BASE[1:], *binds, "--run-dir", str(run_dir))
    assert res.returncode == 0, res.stderr[-2000:]
    return run_record(str(run_dir))


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_run(case, tmp_path, smoke_dataset):
    record = _golden_run(case, tmp_path / case)
    if os.environ.get("FLOQ_RECORD_GOLDEN"):
        _write_record(record, case, os.environ["FLOQ_RECORD_GOLDEN"])
        return
    diffs = compare_records(record, load_golden(case))
    assert not diffs, f"{case}: the numbers of this run changed beyond rounding:\n" + "\n".join(diffs[:20])


def test_the_comparison_rejects_changes_beyond_rounding():
    """The guard keeps its power: one parameter moved by 1e-3 of its leaf's scale, one float cell
    moved by 1%, one integer cell by one, or a PRNG key changed is a failure; the record itself
    passes."""
    want = load_golden("floq")
    assert compare_records(want, want) == []
    got = json.loads(json.dumps(want))
    leaf = next(k for k, v in got["params"].items() if "stats" in v and v["scale"] > 0)
    got["params"][leaf]["stats"][4] += 1e-3 * got["params"][leaf]["scale"]
    assert any(leaf in d for d in compare_records(got, want))

    got = json.loads(json.dumps(want))
    row = got["train"][-1]
    col = next(k for k, v in row.items() if isinstance(v, float) and v != 0.0)
    row[col] *= 1.01
    assert any(col in d for d in compare_records(got, want))

    got = json.loads(json.dumps(want))
    got["eval"][-1]["step"] += 1
    assert any("step" in d for d in compare_records(got, want))

    got = json.loads(json.dumps(want))
    key = next(k for k, v in got["params"].items() if "values" in v and v["values"])
    got["params"][key]["values"][0] += 1
    assert any("integer" in d for d in compare_records(got, want))


@pytest.mark.slow
def test_a_second_run_in_one_process_reuses_its_programs_with_the_same_bits(tmp_path, smoke_dataset):
    """Two runs of one configuration in one process: the second takes the first's compiled
    programs (floq.memo: no compilation, compile_s 0) and environments (floq.envs), and gives
    the first's numbers bit for bit (both made here, on this machine); the first matches the
    golden record."""
    runs = {}
    for name in ("first", "second"):  # the run directory's name is in the rows: 'monolithic' for both
        res = floq_main("run", *BASE, "--run-dir", str(tmp_path / name / "monolithic"))
        assert res.returncode == 0, res.stderr[-2000:]
        runs[name] = tmp_path / name / "monolithic"
    a, b = (_ckpt_leaves(str(runs[n])) for n in ("first", "second"))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    for name in ("train.csv", "eval.csv"):
        assert _csv_rows(runs["first"] / name) == _csv_rows(runs["second"] / name), name
    assert compare_records(run_record(str(runs["first"])), load_golden("monolithic")) == []
    assert json.loads((runs["second"] / "run.json").read_text())["compile_s"] == 0.0
