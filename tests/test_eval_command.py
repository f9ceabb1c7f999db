"""`floq eval RUN_DIR` evaluates a checkpoint again (the same episodes as training's evaluation
at that step, so the same numbers), and `floq.policy.load_policy` gives the trained policy as a
function of observations."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from floq.cli import main


def _eval_row(run_dir, step):
    with open(os.path.join(run_dir, "eval.csv"), newline="") as f:
        return next(r for r in csv.DictReader(f) if int(r["step"]) == step)


def test_eval_repeats_the_runs_evaluation_and_the_policy_is_a_function(smoke_run, capsys):
    run_dir, _ = smoke_run
    assert main(["eval", str(run_dir)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    row = _eval_row(run_dir, 100)  # the last checkpoint is at step 100, evaluated there in training
    assert out == [f"seed 0 cube-single-play-singletask-task1-v0 step 100: success {float(row['success']):.1%} over "
                   f"{row['eval_episodes']} episodes, return {float(row['return']):.2f}, "
                   f"length {float(row['episode_length']):.0f}"]

    from floq.policy import evaluate, load, load_policy

    loaded = load(str(run_dir))
    (res,) = evaluate(loaded, episodes=int(row["eval_episodes"]))
    assert (res["success"], res["return"], res["episode_length"]) == pytest.approx(
        (float(row["success"]), float(row["return"]), float(row["episode_length"])))

    policy = load_policy(str(run_dir), noise="zero")
    assert (policy.step, policy.seed) == (100, 0)
    obs = np.random.default_rng(0).standard_normal((3, policy.obs_dim)).astype(np.float32)
    a = policy(obs)
    assert a.shape == (3, policy.act_dim) and np.all(np.abs(a) <= 1.0)
    np.testing.assert_allclose(policy(obs[0]), a[0], atol=1e-5)  # one observation; no noise: deterministic
    np.testing.assert_array_equal(policy(obs), a)
    sampled = load_policy(str(run_dir), rng=1)
    assert sampled(obs).shape == (3, policy.act_dim)
    with pytest.raises(ValueError, match=r"observations must be \(28,\)"):
        policy(np.zeros(3))


def test_eval_refuses_a_step_without_a_checkpoint_and_says_why_there_is_no_video(smoke_run, capsys, tmp_path):
    run_dir, _ = smoke_run
    assert main(["eval", str(run_dir), "--step", "50"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("has no checkpoint at step 50; its checkpoints: 100") and len(err.splitlines()) == 1
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a run directory" in capsys.readouterr().err

    from floq.policy import load_policy, record_video

    policy = load_policy(str(run_dir))
    assert record_video(policy, str(tmp_path / "v.avi")) == f"--video {tmp_path / 'v.avi'}: give a .mp4 or .gif file"
    try:
        import imageio_ffmpeg  # noqa: F401
    except ImportError:
        why = record_video(policy, str(tmp_path / "v.mp4"))
        assert why.startswith(f"cannot write {tmp_path / 'v.mp4'}: .mp4 needs the imageio and imageio-ffmpeg")
    assert not any(tmp_path.iterdir())
