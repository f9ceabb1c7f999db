"""Seeded evaluation repeats exactly, whatever the number of worker processes."""

from __future__ import annotations

import numpy as np

from floq.evaluate import Evaluator


def _policy(obs, ep_ids, ts):
    # Deterministic in (episode, t, observation): a different open-loop wiggle per episode.
    base = np.sin(0.3 * ts[:, None] + ep_ids[:, None] + np.arange(5)[None])
    return np.clip(base + 0.01 * obs[:, :5], -1, 1).astype(np.float32)


def test_in_process_and_two_workers_give_identical_episodes():
    name, kwargs = "cube-single-play-singletask-task1-v0", {"success_timing": "post"}
    with Evaluator(name, kwargs, num_workers=0) as ev0:
        a = ev0.run(_policy, num_episodes=3, seed=7, obs_dim=28)
    with Evaluator(name, kwargs, num_workers=2) as ev2:
        b = ev2.run(_policy, num_episodes=3, seed=7, obs_dim=28)
        c = ev2.run(_policy, num_episodes=3, seed=8, obs_dim=28)
    np.testing.assert_array_equal(a["episode_return"], b["episode_return"])
    np.testing.assert_array_equal(a["episode_success"], b["episode_success"])
    assert a["episode_length"] == b["episode_length"] == 200.0  # cube-single's time limit; no success
    assert 0.0 <= a["success"] <= 1.0
    # A different evaluation seed gives different start states, hence different returns.
    assert set(c) == set(a)
