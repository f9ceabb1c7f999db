"""Helpers for the analysis tests: fixture run directories written as docs/CONTRACTS.md
says, and a lazy import of rliable (a test-only dependency).

A uniquely named module (not ``conftest``) so that test modules can import it without
clashing with other test directories' conftest files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

EVAL_HEADER = ["experiment", "run", "env", "task", "dataset", "algorithm", "critic", "seed",
               "step", "success", "return", "episode_length", "wall_time", "eval_episodes",
               "train_steps", "ogbench_version", "success_timing"]


def make_run(root: Path, name: str, *, env: str, task: str, critic: str, success,
             seeds=(0, 1, 2), steps=(0, 100, 200, 300, 400), algorithm: str = "fql",
             tags: dict | None = None, experiment: str = "exp", train_steps: int = 400,
             eval_interval: int = 100, status: str = "done", ogbench_version: str = "1.2.2",
             success_timing: str = "post", params_critic: int = 1000,
             flops: float = 1e6, manifest: bool = True, load: dict | None = None) -> Path:
    """One run dir. ``success(seed, step) -> float`` gives each evaluation's success;
    ``load``: run.json's machine-load record (``{"cpus", "loadavg_mean", ...}``), if any."""
    tags = dict(tags or {})
    run_dir = Path(root) / experiment / name
    run_dir.mkdir(parents=True, exist_ok=True)
    dataset = f"{env}-singletask-{task}-v0"
    with open(run_dir / "eval.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(EVAL_HEADER + list(tags))
        for seed in seeds:
            for step in steps:
                s = success(seed, step)
                w.writerow([experiment, name, env, task, dataset, algorithm, critic, seed,
                            step, s, -100 * (1 - s), 500, step / 10, 50, train_steps,
                            ogbench_version, success_timing] + list(tags.values()))
    if manifest:
        doc = {
            "experiment": experiment, "run": name, "status": status, "seeds": list(seeds),
            "git_commit": "abc123", "packages": {"jax": "0.0"}, "device": "cpu: 2 cores",
            "env": env, "task": task, "dataset": dataset, "algorithm": algorithm,
            "critic": critic,
            "params": {"critic_total": params_critic, "total": params_critic + 500},
            "flops_per_update": flops,
            "protocol": {"ogbench_version": ogbench_version, "success_timing": success_timing,
                         "r_min": -1.0, "r_max": 0.0, "time_embedding": "cos",
                         "train_steps": train_steps, "eval_interval": eval_interval,
                         "eval_episodes": 50, "discount": 0.99, "budget_note": "test"},
            "tags": tags, "step": steps[-1], "wall_time_s": 12.5, "updates_per_s": 100.0,
        }
        if load is not None:
            doc["load"] = load
        (run_dir / "run.json").write_text(json.dumps(doc, indent=1))
    return run_dir


def ramp(final: float, seed_step: float = 0.02):
    """Success rising linearly to ``final`` at step 400, plus ``seed_step`` per seed."""
    return lambda seed, step: round(min(1.0, final * step / 400 + seed_step * seed), 4)


def build_fixture(root: Path) -> Path:
    """Two critics (monolithic, floq with K in {4, 8}) on two envs x two tasks, 3 seeds.

    floq K=8 only on cube-double-play/task2, so it covers 1 of 2 tasks there.
    """
    root = Path(root)
    finals = {
        ("cube-double-play", "task1"): {"monolithic": 0.30, "floq4": 0.42, "floq8": None},
        ("cube-double-play", "task2"): {"monolithic": 0.20, "floq4": 0.36, "floq8": 0.40},
        ("scene-play", "task1"): {"monolithic": 0.60, "floq4": 0.66, "floq8": None},
        ("scene-play", "task2"): {"monolithic": 0.50, "floq4": 0.48, "floq8": None},
    }
    for (env, task), per in finals.items():
        for key, final in per.items():
            if final is None:
                continue
            critic = "monolithic" if key == "monolithic" else "floq"
            tags = {} if critic == "monolithic" else {"critic_flow_steps": int(key[4:])}
            make_run(root, f"{key}_{env}_{task}", env=env, task=task, critic=critic,
                     success=ramp(final), tags=tags,
                     params_critic=1000 if critic == "monolithic" else 800 * int(key[4:]))
    return root


def import_rliable():
    """rliable's library module, imported lazily (a test-only dependency).

    arch 7.x (rliable's bootstrap backend) calls pandas' private ``deprecate_kwarg`` with
    its pre-pandas-3 signature; when that import fails, retry once with an adapter that is
    removed again right after the import.
    """
    pytest.importorskip("rliable")
    try:
        from rliable import library, metrics
        return library, metrics
    except TypeError:
        import pandas.util._decorators as dec
        orig = dec.deprecate_kwarg

        def adapter(*args, **kwargs):
            if args and isinstance(args[0], str):  # old signature: (old_name, new_name)
                return orig(FutureWarning, *args, **kwargs)
            return orig(*args, **kwargs)

        dec.deprecate_kwarg = adapter
        try:
            import sys
            for name in [m for m in sys.modules if m == "arch" or m.startswith("arch.")]:
                del sys.modules[name]
            sys.modules.pop("rliable.library", None)
            from rliable import library, metrics
            return library, metrics
        except Exception as e:  # pragma: no cover - depends on the environment
            pytest.skip(f"rliable's bootstrap backend (arch) cannot be imported: {e}")
        finally:
            dec.deprecate_kwarg = orig


def eval_row(*, env="e", task="task1", critic="c", seed=0, step=0, success=0.5,
             experiment="exp", run="r", algorithm="fql", train_steps=400, **extra) -> dict:
    """One eval.csv row as a dict (the contract's columns + ``extra``)."""
    row = dict(experiment=experiment, run=run, env=env, task=task,
               dataset=f"{env}-singletask-{task}-v0", algorithm=algorithm, critic=critic,
               seed=seed, step=step, success=success, **{"return": -100 * (1 - success)},
               episode_length=500, wall_time=step / 10, eval_episodes=50,
               train_steps=train_steps, ogbench_version="1.2.2", success_timing="post")
    row.update(extra)
    return row


def write_eval(run_dir: Path, rows) -> Path:
    """Write ``rows`` (dicts) as run_dir/eval.csv, columns in first-seen order."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    header = list(dict.fromkeys(k for r in rows for k in r))
    with open(run_dir / "eval.csv", "w", newline="") as f:
        w = csv.DictWriter(f, header)
        w.writeheader()
        w.writerows(rows)
    return run_dir


def write_manifest(run_dir: Path, **fields) -> Path:
    """A run.json like make_run's, with ``fields`` overriding top-level keys."""
    doc = {"experiment": "exp", "run": Path(run_dir).name, "status": "done", "seeds": [0],
           "git_commit": "abc123", "device": "cpu", "env": "e", "task": "task1",
           "algorithm": "fql", "critic": "c", "params": {"critic_total": 1000, "total": 1500},
           "flops_per_update": 1e6,
           "protocol": {"ogbench_version": "1.2.2", "success_timing": "post",
                        "train_steps": 400, "eval_interval": 100, "eval_episodes": 50},
           "tags": {}, "step": 400}
    doc.update(fields)
    path = Path(run_dir) / "run.json"
    path.write_text(json.dumps(doc, indent=1))
    return path
