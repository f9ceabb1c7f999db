"""A run on a sharded (-100m style) dataset folder: shards rotate every SHARD_INTERVAL steps
(train.csv records the shard), run.json describes the shards, and a SIGKILL + re-run gives the
same CSVs and parameters as an uninterrupted run."""

from __future__ import annotations

import json

import pandas as pd

import pytest

from floq_test_utils import floq_main, kill_after_checkpoint
from test_online import _csvs, _final
from test_shards import _make_folder, _source_files


def _args(folder):
    return ["gin/experiments/smoke.gin", "--bind", f"DATASET_DIR='{folder}'", "--bind", "SHARD_INTERVAL=40",
            "--bind", "TRAIN_STEPS=200", "--bind", "LOG_INTERVAL=20", "--bind", "EVAL_INTERVAL=100",
            "--bind", "CHECKPOINT_INTERVAL=30", "--bind", "CHUNK_SIZE=50"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_sharded_run_rotates_and_resumes_exactly(tmp_path):
    folder = _make_folder(str(tmp_path), _source_files())
    args = _args(folder)
    ref_dir = tmp_path / "uninterrupted"
    res = floq_main("run", *args, "--run-dir", str(ref_dir))
    assert res.returncode == 0, res.stderr[-3000:]
    ref_ev, ref_tr = _csvs(ref_dir)
    # The window ending at step s was trained on shard ((s - 1) // 40) % 3.
    seed0 = ref_tr[ref_tr["seed"] == 0]
    assert list(seed0["shard"]) == [((s - 1) // 40) % 3 for s in seed0["step"]]
    assert set(seed0["shard"]) == {0, 1, 2}
    meta = json.load(open(ref_dir / "run.json"))
    assert meta["protocol"]["shards"] == 3 and meta["protocol"]["shard_interval"] == 40

    run_dir = tmp_path / "killed"
    interrupted = kill_after_checkpoint(args, run_dir, 90)  # mid-shard (shard 2 runs from 80 to 120)
    assert interrupted, "the run finished before it could be killed"
    res = floq_main("run", *args, "--run-dir", str(run_dir))  # the resume, in this process
    assert res.returncode == 0, res.stderr[-3000:]
    ev, tr = _csvs(run_dir)
    pd.testing.assert_frame_equal(ev, ref_ev)
    pd.testing.assert_frame_equal(tr, ref_tr)
    ref, got = _final(ref_dir), _final(run_dir)
    assert ref.keys() == got.keys()
    for k in ref:
        assert (ref[k] == got[k]).all(), k
