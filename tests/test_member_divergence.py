"""Divergence is per member (issue 25 item 2): in a vmapped program of seeds, a member that
diverges is frozen at its last finite state while the others train on exactly as they would
have; run.json lists it in `diverged_members`, the run ends `done`, a resume is exact, and
the analysis excludes that member only, saying why."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # every test trains the two-seed program (module fixture)

import floq.loop
from floq.loop import Preempted, Run

ARGS = ["gin/experiments/smoke.gin"]
BIND = ["NUM_SEEDS=2", "TRAIN_STEPS=150", "EVAL_INTERVAL=100", "LOG_INTERVAL=50", "CHECKPOINT_INTERVAL=50",
        "Trainer.progress=False"]
CLOCK = ["wall_time", "updates_per_s"]
POISON = 1e30  # member 1's critic weights: its first loss overflows, so it diverges at step 1


def _poisoned_init(monkeypatch):
    real = floq.loop.init_states

    def init_states(algorithm, critic, seeds, ex_obs, ex_act):
        states = real(algorithm, critic, seeds, ex_obs, ex_act)
        crit = jax.tree_util.tree_map(lambda x: x.at[1].multiply(POISON) if jnp.issubdtype(x.dtype, jnp.floating)
                                      else x, states["params"]["critic"])
        return {**states, "params": {**states["params"], "critic": crit}}

    monkeypatch.setattr(floq.loop, "init_states", init_states)


def _run(run_dir, extra=()):
    return Run(ARGS, BIND + list(extra), run_dir=str(run_dir)).execute()


def _csvs(run_dir):
    ev = pd.read_csv(os.path.join(run_dir, "eval.csv")).drop(columns=CLOCK + ["run"], errors="ignore")
    tr = pd.read_csv(os.path.join(run_dir, "train.csv")).drop(columns=CLOCK + ["run"], errors="ignore")
    return ev, tr


def _last_state(run_dir):
    import orbax.checkpoint as ocp

    ck = os.path.join(run_dir, "checkpoints")
    last = max(int(d.split("_")[1]) for d in os.listdir(ck) if d.startswith("step_") and not d.endswith(".json"))
    return ocp.PyTreeCheckpointer().restore(os.path.join(ck, f"step_{last}"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, smoke_dataset):
    root = tmp_path_factory.mktemp("members")
    mp = pytest.MonkeyPatch()
    try:
        _run(root / "clean")
        _poisoned_init(mp)
        _run(root / "poisoned")
    finally:
        mp.undo()
    return root


def test_one_diverging_member_does_not_discard_the_program(runs):
    man = json.loads((runs / "poisoned" / "run.json").read_text())
    assert man["status"] == "done" and man["step"] == 150
    [d] = man["diverged_members"]
    assert (d["member"], d["seed"], d["step"], d["task"]) == (1, 1, 1, "task1")
    assert "/" in d["quantity"] and "seed 1" in d["reason"] and "at step 1" in d["reason"]
    ev, tr = _csvs(runs / "poisoned")
    cev, ctr = _csvs(runs / "clean")
    # Seed 0 trained on exactly as in the program where nothing diverged.
    pd.testing.assert_frame_equal(ev[ev.seed == 0].reset_index(drop=True), cev[cev.seed == 0].reset_index(drop=True))
    pd.testing.assert_frame_equal(tr[tr.seed == 0].reset_index(drop=True), ctr[ctr.seed == 0].reset_index(drop=True))
    # Seed 1: evaluated before it diverged (step 0), no rows after; no non-finite row anywhere.
    assert list(ev[ev.seed == 1]["step"]) == [0] and tr[tr.seed == 1].empty
    assert np.isfinite(tr[[c for c in tr.columns if "/" in c]].to_numpy(np.float64)).all()
    # Its checkpointed state is its last finite one (frozen at the initial, poisoned weights).
    state = _last_state(runs / "poisoned")
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state["params"])]
    assert all(np.isfinite(x).all() for x in leaves if x.dtype.kind == "f")
    assert int(np.asarray(state["step"])[1]) == 0 and int(np.asarray(state["step"])[0]) == 150


def test_member_divergence_resumes_exactly(runs, tmp_path, monkeypatch):
    _poisoned_init(monkeypatch)
    run_dir = tmp_path / "killed"
    real_log = Run.log

    def log_then_stop(self):
        real_log(self)
        if self.step == 100:
            self.preempt_signal = 15  # as SIGTERM: checkpoint at step 100 and stop

    monkeypatch.setattr(Run, "log", log_then_stop)
    with pytest.raises(SystemExit) as e:
        _run(run_dir)
    assert e.value.code == 143
    assert json.loads((run_dir / "run.json").read_text())["diverged_members"][0]["seed"] == 1
    monkeypatch.setattr(Run, "log", real_log)
    _run(run_dir)
    ev, tr = _csvs(run_dir)
    rev, rtr = _csvs(runs / "poisoned")
    pd.testing.assert_frame_equal(ev, rev)
    pd.testing.assert_frame_equal(tr, rtr)
    man = json.loads((run_dir / "run.json").read_text())
    ref = json.loads((runs / "poisoned" / "run.json").read_text())
    assert man["status"] == "done" and man["diverged_members"] == ref["diverged_members"]


def test_analysis_excludes_only_the_diverged_member(runs):
    from analysis.load import load_results
    from analysis.stats import final_scores

    fs = final_scores(load_results(runs / "poisoned"), "last")
    by_seed = fs.set_index("seed")
    assert by_seed.loc[0, "exclude_kind"] == "" and by_seed.loc[1, "exclude_kind"] == "diverged"
    assert "diverged_members" in by_seed.loc[1, "exclude_reason"] and "step 1" in by_seed.loc[1, "exclude_reason"]
