"""Golden digests: the exact numbers of short smoke runs, recorded before the plug-in redesign
(critic interface split, the Algorithm interface, recipes) and required bitwise afterwards.

Each case trains a 100-step smoke run in this process and hashes (a) every row of train.csv
and eval.csv except the wall-clock columns and (b) every array of the final checkpoint. A
digest changes only when a number does: an intended change of numbers re-records the digest
here and says why in the commit.
"""

from __future__ import annotations

import csv
import hashlib
import os

import numpy as np
import pytest

from floq_test_utils import floq_main

CLOCK = {"wall_time", "updates_per_s", "eval_seconds"}

BASE = ["gin/experiments/smoke.gin", "--bind", "TRAIN_STEPS=100", "--bind", "EVAL_INTERVAL=50",
        "--bind", "LOG_INTERVAL=50", "--bind", "CHECKPOINT_INTERVAL=100"]

CASES = {
    "monolithic": [],
    "floq": ["gin/critics/floq.gin"],
    "iqn": ["gin/critics/iqn.gin"],
    "online": ["--bind", "ONLINE_STEPS=40", "--bind", "BALANCED_SAMPLING=True"],
    "multitask": ["--bind", "PROGRAM_TASK_IDS=[1, 2]"],
}


def _csv_digest(path, h):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for k in sorted(row):
            if k not in CLOCK:
                h.update(f"{k}={row[k]};".encode())
        h.update(b"\n")


def _ckpt_digest(run_dir, h):
    import orbax.checkpoint as ocp

    ck = os.path.join(run_dir, "checkpoints")
    steps = sorted(int(d.split("_")[1]) for d in os.listdir(ck) if d.startswith("step_") and "." not in d)
    tree = ocp.PyTreeCheckpointer().restore(os.path.join(ck, f"step_{steps[-1]}"))
    import jax

    leaves = jax.tree_util.tree_leaves_with_path(tree)
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.asarray(leaf)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(arr.dtype).encode() + str(arr.shape).encode())
        h.update(np.ascontiguousarray(arr).tobytes())


def run_digest(run_dir) -> str:
    h = hashlib.sha256()
    for name in ("train.csv", "eval.csv"):
        _csv_digest(os.path.join(run_dir, name), h)
    _ckpt_digest(run_dir, h)
    return h.hexdigest()[:24]


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_golden_digest(case, tmp_path, smoke_dataset):
    extra = CASES[case]
    files = [a for a in extra if a.endswith(".gin")]
    binds = [a for a in extra if not a.endswith(".gin")]
    args = [BASE[0], *files, *BASE[1:], *binds]
    res = floq_main("run", *args, "--run-dir", str(tmp_path / case))
    assert res.returncode == 0, res.stderr[-2000:]
    digest = run_digest(str(tmp_path / case))
    if os.environ.get("FLOQ_RECORD_GOLDEN"):
        print(f"GOLDEN {case} {digest}")
        return
    assert digest == GOLDEN[case], f"{case}: the numbers of this run changed ({digest} != {GOLDEN[case]})"


# Recorded on main f60f5e1 (before the redesign), CPU, jax 0.10.2.
GOLDEN = {
    "floq": "b4c18982118534f599e00587",
    "iqn": "101e9df5b982be1a8abf3292",
    "monolithic": "9d5d36c986f25974ea77f258",
    "multitask": "acd0fcfe3502e110df37bae0",
    "online": "d738075a449b151854255c9e",
}


@pytest.mark.slow
def test_a_second_run_in_one_process_reuses_its_programs_with_the_same_bits(tmp_path, smoke_dataset):
    """Two runs of one configuration in one process: the second takes the first's compiled
    programs (floq.memo: no compilation, compile_s 0) and environments (floq.envs), and both
    give the golden numbers."""
    import json

    for name in ("first", "second"):  # the run directory's name is in the rows: 'monolithic' for both
        res = floq_main("run", *BASE, "--run-dir", str(tmp_path / name / "monolithic"))
        assert res.returncode == 0, res.stderr[-2000:]
        assert run_digest(str(tmp_path / name / "monolithic")) == GOLDEN["monolithic"], name
    assert json.loads((tmp_path / "second" / "monolithic" / "run.json").read_text())["compile_s"] == 0.0
