"""ReBRAC's logged actor metrics are means over actor (full) updates only: train.csv's
actor/* are not diluted by the zeros of critic-only updates (floq.agents.base.window_means,
used by floq.loop's log())."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from floq.agents.base import partial_metrics, window_means


def test_window_means_average_partial_metrics_over_the_steps_that_computed_them():
    values = {"actor/full_update": np.array([[0, 1, 0, 1], [0, 0, 0, 0]], np.float32),
              "actor/q": np.array([[0, 2.0, 0, 4.0], [0, 0, 0, 0]], np.float32),
              "critic/loss": np.array([[1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 1.0, 1.0]], np.float32)}
    m = window_means(values)
    np.testing.assert_array_equal(m["actor/q"][:1], [3.0])  # (2 + 4) / 2, not (2 + 4) / 4
    assert np.isnan(m["actor/q"][1])  # no actor update in the window: no value, not 0
    np.testing.assert_array_equal(m["actor/full_update"], [0.5, 0.0])  # the fraction of full updates
    np.testing.assert_array_equal(m["critic/loss"], [2.5, 1.0])
    for v in m.values():
        assert v.dtype == np.float64
    assert partial_metrics(values) == {"actor/q"}
    assert partial_metrics(["actor/q", "critic/loss"]) == set()
    # without the indicator (every other algorithm) every metric is a plain mean
    plain = window_means({"actor/q": values["actor/q"]})
    np.testing.assert_array_equal(plain["actor/q"], [1.5, 0.0])


def _train_csv(tmp_path, smoke_dataset, log_interval):
    from floq_test_utils import floq_main

    out = tmp_path / f"log{log_interval}"
    res = floq_main("run", "gin/experiments/smoke.gin", "gin/algorithms/rebrac.gin", "--bind", "TRAIN_STEPS=6",
                    "--bind", "EVAL_INTERVAL=6", "--bind", f"LOG_INTERVAL={log_interval}", "--bind", "CHUNK_SIZE=2",
                    "--bind", "EVAL_EPISODES=1", "--bind", "REBRAC_ALPHA_ACTOR=1.0", "--bind", "REBRAC_ALPHA_CRITIC=0.0",
                    "--out", out)
    assert res.returncode == 0, res.stderr[-3000:]
    (run_dir,) = [p for p in (out / "smoke").iterdir() if p.is_dir()]
    return run_dir, pd.read_csv(run_dir / "train.csv").set_index("step")


@pytest.mark.slow
def test_train_csv_actor_metrics_are_means_over_full_updates(tmp_path, smoke_dataset):
    """The same run logged every update and every second update (actor_freq 2: each window of
    two holds one full update): the second's actor/* at step 2k are the full update's own
    values (today's plain mean would halve them), its critic/* the mean of the two steps."""
    import csv

    from analysis.load import load_train_health

    every_dir, every = _train_csv(tmp_path, smoke_dataset, 1)
    _, pairs = _train_csv(tmp_path, smoke_dataset, 2)
    assert list(every.index) == [1, 2, 3, 4, 5, 6] and list(pairs.index) == [2, 4, 6]
    full = every["actor/full_update"] == 1
    assert list(every.index[full]) == [2, 4, 6]
    actor_cols = [c for c in every.columns if c.startswith("actor/") and c != "actor/full_update"]
    assert {"actor/q", "actor/loss", "actor/bc_loss"} <= set(actor_cols)
    assert every.loc[~full, actor_cols].isna().all().all()  # no actor update in those one-step windows
    with open(every_dir / "train.csv", newline="") as f:  # ... written as empty cells, not 'nan' or 0
        raw = {int(r["step"]): r for r in csv.DictReader(f)}
    assert all(raw[s][c] == "" for s in (1, 3, 5) for c in actor_cols)
    assert load_train_health(every_dir) == {}  # which the analysis does not take for a diverged loss
    np.testing.assert_array_equal(pairs["actor/full_update"], 0.5)
    for c in actor_cols:
        np.testing.assert_allclose(pairs[c].to_numpy(), every.loc[[2, 4, 6], c].to_numpy(), rtol=1e-6, err_msg=c)
    assert (pairs["actor/q"].abs() > 0).all()
    for c in ("critic/loss", "critic/q_mean"):
        pair_means = (every.loc[[1, 3, 5], c].to_numpy() + every.loc[[2, 4, 6], c].to_numpy()) / 2
        np.testing.assert_allclose(pairs[c].to_numpy(), pair_means, rtol=1e-6, err_msg=c)
