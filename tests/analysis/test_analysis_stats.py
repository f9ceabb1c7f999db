"""analysis.stats: hand-checkable aggregates, protocols, CI coverage, agreement with rliable."""

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats

from analysis import stats
from analysis.load import AnalysisError

# 4 runs x 3 tasks. Task means 0.2, 0.6, 0.8. Sorted values:
# 0 .1 .2 .2 | .4 .4 .6 .6 .9 1 | 1 1  -> IQM drops int(0.25*12)=3 from each end.
S = np.array([[0.0, 0.1, 1.0],
              [0.2, 0.9, 1.0],
              [0.4, 1.0, 0.6],
              [0.2, 0.4, 0.6]])


def test_aggregates_by_hand():
    assert stats.aggregate_mean(S) == pytest.approx((0.2 + 0.6 + 0.8) / 3)
    assert stats.aggregate_median(S) == pytest.approx(0.6)
    assert stats.aggregate_iqm(S) == pytest.approx((0.2 + 0.4 + 0.4 + 0.6 + 0.6 + 0.9) / 6)
    assert stats.aggregate_optimality_gap(S) == pytest.approx(1 - 6.4 / 12)
    assert stats.aggregate_optimality_gap(S, 0.5) == pytest.approx(0.5 - 4.3 / 12)


def test_rliable_readme_iqm():
    # rliable's own example: IQM of a 4x2 matrix of 1..8 is the mean of 3,4,5,6.
    x = np.arange(1, 9, dtype=float).reshape(4, 2)
    assert stats.aggregate_iqm(x) == 4.5
    assert stats.aggregate_iqm(np.array([[1.0, 1.0], [2.0, 2.0]])) == 1.5


def test_aggregates_vectorise_over_leading_axes():
    stack = np.stack([S, S[::-1], 1 - S])
    for name, f in stats.AGGREGATES.items():
        got = f(stack)
        assert got.shape == (3,), name
        assert got[0] == pytest.approx(f(S))
        assert got[2] == pytest.approx(f(1 - S))


def test_probability_of_improvement_by_hand():
    x = np.array([[1.0, 5.0], [2.0, 5.0]])
    y = np.array([[1.0, 4.0], [3.0, 4.0]])
    # task 1: (1,1) tie .5, (1,3) 0, (2,1) 1, (2,3) 0 -> 1.5/4 ; task 2: 1
    assert stats.probability_of_improvement(x, y) == pytest.approx((0.375 + 1.0) / 2)
    assert stats.probability_of_improvement(x, x) == pytest.approx(0.5)
    assert stats.probability_of_improvement(y, x) == pytest.approx(1 - (0.375 + 1.0) / 2)


def test_performance_profile_by_hand():
    s = {"a": np.array([[0.1, 0.5], [0.3, 0.9]])}
    prof = stats.performance_profile(s, taus=[0.0, 0.3, 0.5], reps=50, seed=0)
    assert prof["point"].tolist() == [1.0, 0.5, 0.25]
    avg = stats.performance_profile(s, taus=[0.0, 0.3, 0.5], reps=50, seed=0,
                                    use_score_distribution=False)
    assert avg["point"].tolist() == [1.0, 0.5, 0.5]
    assert (prof["lo"] <= prof["point"]).all() and (prof["point"] <= prof["hi"]).all()


# ------------------------------------------------------------------ protocols
def _evals(series, seeds=(0,)):
    rows = []
    for seed in seeds:
        for i, s in enumerate(series):
            rows.append(dict(run_dir="r", seed=seed, step=100 * i, success=s, env="e",
                             task="t1", task_key="e/t1", algorithm="fql", critic="c",
                             method="c", train_steps=100 * (len(series) - 1)))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("protocol,expected", [
    ("fql", (0.5 + 0.3 + 0.2) / 3), ("last", 0.2), ("max", 0.5), ("last_k:2", 0.25),
    ("last_k:5", (0.0 + 0.1 + 0.5 + 0.3 + 0.2) / 5),
])
def test_final_score_protocols(protocol, expected):
    final = stats.final_scores(_evals([0.0, 0.1, 0.5, 0.3, 0.2]), protocol)
    assert len(final) == 1
    assert final["score"].iloc[0] == pytest.approx(expected)
    assert bool(final["complete"].iloc[0])


def test_protocol_parsing():
    assert stats.parse_protocol("fql").k == 3
    assert stats.parse_protocol("max").optimistic
    assert "OPTIMISTIC" in stats.parse_protocol("max").description
    assert stats.parse_protocol("last_k:7").k == 7
    for bad in ("best", "last_k:0", "last_k:x", ""):
        with pytest.raises(AnalysisError, match="unknown protocol"):
            stats.parse_protocol(bad)


def test_short_runs_and_incomplete_runs_warn():
    df = _evals([0.2, 0.4])
    with pytest.warns(UserWarning, match="fewer than 3 evaluations"):
        final = stats.final_scores(df, "fql")
    assert final["score"].iloc[0] == pytest.approx(0.3)
    df = _evals([0.2, 0.4, 0.6, 0.8]).assign(train_steps=1000)
    with pytest.warns(UserWarning, match="incomplete"):
        assert stats.final_scores(df, "last", require_complete=True).empty
    assert not stats.final_scores(df, "last")["complete"].iloc[0]


def test_duplicate_run_dirs_are_counted_once():
    a = _evals([0.1, 0.2, 0.3])
    b = _evals([0.5, 0.6, 0.7, 0.8]).assign(run_dir="r_rerun")
    with pytest.warns(UserWarning, match="several run dirs"):
        final = stats.final_scores(pd.concat([a, b]), "last")
    assert final["run_dir"].tolist() == ["r_rerun"]


def test_task_and_env_means():
    final = pd.DataFrame(dict(method="m", env="e", task=["t1", "t1", "t2", "t2"],
                              task_key=["e/t1", "e/t1", "e/t2", "e/t2"], seed=[0, 1, 0, 1],
                              score=[0.1, 0.3, 0.5, 0.9]))
    tm = stats.task_means(final)
    assert tm["score"].tolist() == pytest.approx([0.2, 0.7])
    em = stats.env_means(final)
    assert em["score"].iloc[0] == pytest.approx(0.45)
    assert em["n_tasks"].iloc[0] == 2 and em["n_seeds"].iloc[0] == 2


# ------------------------------------------------------------------ bootstrap
def test_bootstrap_is_seeded_and_per_method():
    rng = np.random.default_rng(0)
    d = {"a": rng.uniform(size=(5, 3)), "b": rng.uniform(size=(5, 3))}
    e1 = stats.aggregate_estimates(d, reps=300, seed=1)
    e2 = stats.aggregate_estimates(d, reps=300, seed=1)
    pd.testing.assert_frame_equal(e1, e2)
    alone = stats.aggregate_estimates({"a": d["a"]}, reps=300, seed=1)
    pd.testing.assert_frame_equal(alone, e1[e1["method"] == "a"].reset_index(drop=True))
    e3 = stats.aggregate_estimates(d, reps=300, seed=2)
    assert not np.allclose(e1["lo"], e3["lo"])


def test_single_seed_has_no_interval():
    est = stats.aggregate_estimates({"a": np.array([[0.2, 0.4]])}, reps=50)
    assert est["lo"].isna().all() and est["hi"].isna().all()
    assert est.loc[est["metric"] == "mean", "point"].iloc[0] == pytest.approx(0.3)


def test_stratified_resampling_keeps_tasks_apart():
    s = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    for r in stats.bootstrap_resamples(s, 200, np.random.default_rng(0)):
        assert r.shape[1:] == (3, 2)
        assert np.isin(r[:, :, 0], s[:, 0]).all() and np.isin(r[:, :, 1], s[:, 1]).all()


def test_ci_coverage_of_true_iqm():
    """95% intervals cover the population IQM in about 95% of 200 simulated studies."""
    rng = np.random.default_rng(123)
    mus, sd, n_runs = np.linspace(0.2, 0.7, 5), 0.15, 16
    pooled = rng.normal(mus, sd, size=(200_000, 5))
    true = scipy.stats.trim_mean(pooled, 0.25, axis=None)  # IQM of the task mixture
    covered = 0
    for e in range(200):
        s = rng.normal(mus, sd, size=(n_runs, 5))
        _, ci = stats.interval_estimates({"x": s}, stats.aggregate_iqm, reps=400, seed=e)
        covered += ci["x"][0] <= true <= ci["x"][1]
    assert 0.88 <= covered / 200 <= 0.99, covered / 200


# ------------------------------------------------------------------ rliable agreement
def test_point_estimates_match_rliable(rliable):
    library, metrics = rliable
    rng = np.random.default_rng(7)
    for shape in [(3, 5), (5, 7), (8, 10), (10, 1), (1, 4)]:
        for s in (rng.uniform(size=shape), rng.integers(0, 3, size=shape) / 2.0):
            assert stats.aggregate_mean(s) == metrics.aggregate_mean(s)
            assert stats.aggregate_median(s) == metrics.aggregate_median(s)
            assert stats.aggregate_iqm(s) == metrics.aggregate_iqm(s)
            assert stats.aggregate_optimality_gap(s) == metrics.aggregate_optimality_gap(s)
            assert stats.aggregate_optimality_gap(s, 0.5) == \
                metrics.aggregate_optimality_gap(s, 0.5)
            y = rng.uniform(size=(shape[0] + 1, shape[1]))
            assert stats.probability_of_improvement(s, y) == pytest.approx(
                metrics.probability_of_improvement(s, y), abs=1e-15)
            taus = np.linspace(0, 1, 11)
            assert np.array_equal(
                stats.performance_profile({"a": s}, taus, reps=10)["point"].to_numpy(),
                library.score_distributions(s, taus))


def test_intervals_close_to_rliable(rliable):
    library, metrics = rliable
    rng = np.random.default_rng(11)
    d = {"a": rng.uniform(size=(6, 5)), "b": rng.beta(2, 5, size=(6, 5))}

    def rl_func(x):
        return np.array([metrics.aggregate_median(x), metrics.aggregate_iqm(x),
                         metrics.aggregate_mean(x), metrics.aggregate_optimality_gap(x)])

    np.random.seed(0)  # rliable's StratifiedBootstrap draws from the global generator
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rl_points, rl_ci = library.get_interval_estimates(d, rl_func, reps=4000)
    ours = stats.aggregate_estimates(d, reps=4000, seed=0)
    for m in d:
        sub = ours[ours["method"] == m].set_index("metric").loc[
            ["median", "iqm", "mean", "optimality_gap"]]
        np.testing.assert_array_equal(sub["point"].to_numpy(), rl_points[m])
        np.testing.assert_allclose(sub["lo"].to_numpy(), rl_ci[m][0], atol=0.02)
        np.testing.assert_allclose(sub["hi"].to_numpy(), rl_ci[m][1], atol=0.02)


def test_poi_interval_close_to_rliable(rliable):
    library, metrics = rliable
    rng = np.random.default_rng(5)
    x, y = rng.uniform(0.2, 1, size=(5, 4)), rng.uniform(0, 0.8, size=(6, 4))
    np.random.seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p, ci = library.get_interval_estimates(
            {"xy": [x, y]}, lambda a, b: np.array([metrics.probability_of_improvement(a, b)]),
            reps=600)  # rliable's PoI bootstrap is a Python loop: keep it short
    ours = stats.poi_estimates({"x": x, "y": y}, reps=4000, seed=0).iloc[0]
    assert ours["point"] == pytest.approx(p["xy"][0], abs=1e-15)
    assert ours["lo"] == pytest.approx(ci["xy"][0][0], abs=0.04)
    assert ours["hi"] == pytest.approx(ci["xy"][1][0], abs=0.04)


def test_scaling_line_ignores_tags_that_restate_the_axis():
    """A sweep over scoped critics (cpu_scale.gin: experiment.critic = [@floq_k4/FloqCritic(),
    ...]) records experiment_critic beside critic_flow_steps; the K line must still be one
    line, with the monolithic critic as its reference, and a tag that varies independently of
    K (critic_width) must still split lines."""
    from analysis.stats import axis_aliases, line_families

    final = pd.DataFrame({
        "algorithm": ["fql"] * 6, "critic": ["floq"] * 4 + ["monolithic"] * 2,
        "env": ["cube"] * 6, "task": ["task1"] * 6, "seed": [0, 1, 0, 1, 0, 1],
        "success": [0.1, 0.2, 0.3, 0.4, 0.2, 0.2],
        "critic_flow_steps": [4, 4, 8, 8, np.nan, np.nan],
        "experiment_critic": ["floq_k4"] * 2 + ["floq_k8"] * 2 + ["mono"] * 2,
        "critic_width": [128, 256, 128, 256, 128, 256],
    })
    assert axis_aliases(final, "critic_flow_steps") == ["experiment_critic"]
    hue = line_families(final, "critic_flow_steps")
    assert hue.iloc[0] == hue.iloc[2] and hue.iloc[1] == hue.iloc[3]  # one line per width, across K
    assert hue.iloc[0] != hue.iloc[1]
    assert "experiment_critic" not in " ".join(hue)
    # on a FLOPs axis the line runs along K: the tag restating K must not split it either
    final["flops_per_update"] = [4e9, 8e9, 6e9, 12e9, 1e9, 2e9]
    hue = line_families(final, "flops_per_update")
    assert hue.iloc[0] == hue.iloc[2] and hue.iloc[1] == hue.iloc[3]
    assert hue.iloc[0] != hue.iloc[1]
    assert "experiment_critic" not in " ".join(hue)
