"""run.json records what a run is apart from its seeds and task (config_fields and their
seedless_config_hash), so that the analysis never pools two configurations as seeds of one
method, however the difference was set (a binding, or a value inside a gin file)."""

from __future__ import annotations

import json
import warnings

from floq_test_utils import copy_run

from floq.cli import main
from floq.loop import config_fields, seedless_hash
from floq.train import build

SMOKE = "gin/experiments/smoke.gin"


def _hash(*binds):
    return seedless_hash(config_fields(build([SMOKE], list(binds))))


def test_seedless_hash_ignores_seeds_task_and_plumbing():
    base = _hash()
    assert _hash("SEED=3", "NUM_SEEDS=2", "TASK_ID=2", "Trainer.eval_workers=2", "CHUNK_SIZE=7",
                 "Trainer.progress=False", "EXPERIMENT='other'", "CHECKPOINT_INTERVAL=7") == base
    for b in ("BATCH_SIZE=64", "FQL.lr=0.001", "ACTOR_WIDTH=64", "TRAIN_STEPS=300", "ALPHA=10.0"):
        assert _hash(b) != base, b


def test_a_gin_file_variant_is_another_method(tmp_path, smoke_run, capsys):
    """`floq run smoke.gin` (seed 0) and a user's file that includes it and sets FQL.lr
    (seed 1, nothing bound but the seed): the report holds two methods, named by lr."""
    variant = tmp_path / "variant.gin"
    variant.write_text(f"include '{SMOKE}'\nFQL.lr = 0.001\n")
    common = ["--bind", "TRAIN_STEPS=100", "--bind", "EVAL_INTERVAL=50", "--bind", "Trainer.progress=False"]
    # run a: the session's smoke run (`floq run smoke.gin` with the same TRAIN_STEPS and EVAL_INTERVAL)
    assert json.loads((smoke_run[0] / "run.json").read_text())["config_fields"]["trainer.train_steps"] == 100
    copy_run(smoke_run[0], tmp_path / "runs" / "a")
    assert main(["run", str(variant), *common, "--bind", "SEED=1", "--run-dir", str(tmp_path / "runs" / "b")]) == 0
    a, b = (json.loads((tmp_path / "runs" / n / "run.json").read_text()) for n in "ab")
    assert a["config_fields"]["algorithm.lr"] == 3e-4 and b["config_fields"]["algorithm.lr"] == 1e-3
    assert a["seedless_config_hash"] != b["seedless_config_hash"]
    out = tmp_path / "rep"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["analyze", str(tmp_path / "runs"), "--out", str(out), "--reps", "20", "--formats", "png"]) == 0
    board = (out / "leaderboard_env.md").read_text()
    assert "monolithic (lr=0.0003)" in board and "monolithic (lr=0.001)" in board, board
