"""OGBench simulators, built once per process and handed from one user to the next.

Building an OGBench manipulation environment (assembling the MJCF model, compiling it in
MuJoCo, gymnasium's wrapper checks, which reset it) takes ~0.8 s on a 2-core CPU: more than
a short run's whole training, and a run builds several (one to check the dataset's widths
and relabel its rewards, one per episode an evaluation unit steps, one per seed of an online
phase).

A reset with a seed determines everything an episode does afterwards: gymnasium reseeds the
environment's generator, and OGBench's reset clears the simulation (``mujoco.mj_resetData``)
before it places the task's objects. So an environment that has run other episodes runs a
seeded episode exactly as a new one does (tests/test_envs.py checks it bitwise, observation by
observation), and floq keeps every environment a user hands back (``release``) for the next
user in the same process (``acquire``), keyed by dataset name and keyword arguments. A second
run in one process (the demo's two runs, a test session, one evaluation after another)
builds none. Nothing here is shared across processes: evaluation workers and trainers in
other processes build their own.
"""

from __future__ import annotations

import threading

# Idle environments kept per (dataset, kwargs): enough for an evaluation unit and an online
# phase of several seeds at once; any beyond are closed.
MAX_IDLE = 32

_idle: dict[tuple, list] = {}
_lock = threading.Lock()


def pool_key(dataset_name: str, env_kwargs: dict) -> tuple:
    """What environments are kept and handed out by: the dataset and the keyword arguments."""
    return dataset_name, tuple(sorted((k, repr(v)) for k, v in env_kwargs.items()))


def make(dataset_name: str, env_kwargs: dict):
    """A new OGBench environment of `dataset_name` (ogbench's env_only path)."""
    import ogbench

    return ogbench.make_env_and_datasets(dataset_name, env_only=True, **env_kwargs)


def acquire(dataset_name: str, env_kwargs: dict):
    """An environment of `dataset_name` with `env_kwargs`: an idle one if this process has one,
    else a new one. Reset it with a seed before use; give it back with `release`."""
    with _lock:
        idle = _idle.get(pool_key(dataset_name, env_kwargs))
        if idle:
            return idle.pop()
    return make(dataset_name, env_kwargs)


def release(dataset_name: str, env_kwargs: dict, env) -> None:
    """Hands `env` (acquired with these arguments) back for the next user in this process."""
    with _lock:
        idle = _idle.setdefault(pool_key(dataset_name, env_kwargs), [])
        if any(e is env for e in idle):  # handed back twice
            return
        if len(idle) < MAX_IDLE:
            idle.append(env)
            return
    env.close()


def idle_count(dataset_name: str, env_kwargs: dict) -> int:
    with _lock:
        return len(_idle.get(pool_key(dataset_name, env_kwargs), ()))


def close_all() -> None:
    """Closes every idle environment (nothing needs to call it: they die with the process)."""
    with _lock:
        envs = [e for idle in _idle.values() for e in idle]
        _idle.clear()
    for e in envs:
        e.close()
