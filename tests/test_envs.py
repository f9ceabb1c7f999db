"""floq.envs: environments handed from one user to the next in a process run a seeded episode
exactly as a new environment does, and the pool hands back what it was given."""

from __future__ import annotations

import numpy as np

from floq import envs

DATASET = "cube-single-play-singletask-task1-v0"
KWARGS = {"success_timing": "post"}


def _episode(env, seed, actions):
    ob, _ = env.reset(seed=seed)
    obs, rewards, successes = [np.asarray(ob)], [], []
    for a in actions:
        ob, r, term, trunc, info = env.step(a)
        obs.append(np.asarray(ob))
        rewards.append(float(r))
        successes.append(float(info.get("success", 0.0)))
    return np.stack(obs), np.asarray(rewards), np.asarray(successes)


def test_a_used_environment_runs_a_seeded_episode_like_a_new_one():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (60, 5)).astype(np.float32)
    other = rng.uniform(-1, 1, (45, 5)).astype(np.float32)
    fresh, used = envs.make(DATASET, KWARGS), envs.make(DATASET, KWARGS)
    _episode(used, 123, other)  # other episodes first: the cube moved, the arm moved,
    _episode(used, 7, other[:10])  # the generator drew
    a = _episode(fresh, 2024, actions)
    b = _episode(used, 2024, actions)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.abs(a[0][-1] - a[0][0]).max() > 1e-3  # the episode moved something
    fresh.close()
    used.close()


def test_pool_hands_back_what_it_was_given_by_dataset_and_kwargs():
    envs.close_all()
    assert envs.idle_count(DATASET, KWARGS) == 0
    env = envs.acquire(DATASET, KWARGS)
    envs.release(DATASET, KWARGS, env)
    envs.release(DATASET, KWARGS, env)  # handed back twice: kept once
    assert envs.idle_count(DATASET, KWARGS) == 1
    assert envs.idle_count(DATASET, {"success_timing": "pre"}) == 0  # other kwargs: another key
    assert envs.acquire(DATASET, KWARGS) is env
    assert envs.idle_count(DATASET, KWARGS) == 0
    envs.release(DATASET, KWARGS, env)


def test_pool_closes_what_it_cannot_keep(monkeypatch):
    closed = []

    class Fake:
        def close(self):
            closed.append(self)

    monkeypatch.setattr(envs, "MAX_IDLE", 2)
    fakes = [Fake() for _ in range(3)]
    for f in fakes:
        envs.release("fake-dataset", {}, f)
    assert envs.idle_count("fake-dataset", {}) == 2 and closed == [fakes[2]]
    envs.close_all()
    assert envs.idle_count("fake-dataset", {}) == 0 and len(closed) == 3


def test_a_run_builds_one_environment_to_validate_and_relabel(monkeypatch, smoke_dataset):
    """Checking the dataset's widths against the environment and relabelling its rewards take
    one environment between them (the one that evaluation takes next): both ask with the
    task's keyword arguments."""
    from floq.data import files
    from floq.train import build

    monkeypatch.setattr(envs, "_idle", {})
    monkeypatch.setattr(files, "_SPACE_DIMS", {})
    built = []
    make = envs.make
    monkeypatch.setattr(envs, "make", lambda name, kwargs: built.append((name, dict(kwargs))) or make(name, kwargs))
    task = build(["gin/experiments/smoke.gin"]).task
    train, _ = task.load(progress=False)
    assert built == [(task.dataset_name, task.env_kwargs())]
    assert envs.idle_count(task.dataset_name, task.env_kwargs()) == 1
    assert files.env_space_dims(task.dataset_name, task.env_kwargs()) == (train["observations"].shape[1],
                                                                           train["actions"].shape[1])
    assert len(built) == 1  # remembered per process
