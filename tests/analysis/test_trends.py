"""analysis.trends: fitted scaling trends with bootstrap CIs, the held-out check, the
compute-optimal frontier and the tuning budget (expected max over N configurations)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis import report, stats, trends
from analysis.load import load_results
from analysis_fixtures import make_run, ramp

PNG = ("png",)


def _binomial_bounds(n: int, p: float, z: float = 3.3) -> tuple[float, float]:
    """Normal-approximation bounds on a binomial count (z = 3.3: ~1 in 1000 two-sided)."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - z * sd, n * p + z * sd


# --------------------------------------------------------------------------- the fit
def _synthetic(rng, xs, slope_pts, seeds, tasks, noise=0.08, base=0.30):
    """Per-x (seeds, tasks) score matrices from score = base + slope*log2 x + task offset +
    N(0, noise) (fractions; slope in points per doubling)."""
    offsets = np.linspace(-0.05, 0.05, tasks)
    return [base + slope_pts / 100 * np.log2(x) + offsets[None, :]
            + rng.normal(0, noise, size=(seeds, tasks)) for x in xs]


def test_fit_point_estimate_is_least_squares_on_the_figure_points():
    rng = np.random.default_rng(0)
    xs = [1, 2, 4, 8]
    mats = _synthetic(rng, xs, 3.0, seeds=4, tasks=2)
    fit = trends.fit_matrices(mats, xs, reps=50, seed=0, key="k")
    y = [100 * stats.aggregate_mean(m) for m in mats]
    slope, intercept = np.polyfit(np.log2(xs), y, 1)
    assert fit.slope == pytest.approx(slope, abs=1e-9)
    assert fit.intercept == pytest.approx(intercept, abs=1e-9)
    assert fit.slope_lo < fit.slope < fit.slope_hi
    # the band is the fit on a grid from the smallest to the largest x
    assert fit.band["x"].iloc[0] == pytest.approx(1) and fit.band["x"].iloc[-1] == pytest.approx(8)
    assert np.all(fit.band["lo"] <= fit.band["fit"] + 1e-9)
    assert np.all(fit.band["fit"] <= fit.band["hi"] + 1e-9)
    # held-out: the fit on x <= 4 predicts x = 8
    a, b = np.polyfit(np.log2(xs[:-1]), y[:-1], 1)[::-1]
    h = fit.heldout
    assert h["x"] == 8 and h["x_train_max"] == 4
    assert h["predicted"] == pytest.approx(a + b * 3)
    assert h["error"] == pytest.approx(y[-1] - (a + b * 3))
    assert h["lo"] < h["hi"]
    # x order does not matter; the same seed and key give the same interval
    again = trends.fit_matrices(mats[::-1], xs[::-1], reps=50, seed=0, key="k")
    assert again.slope == pytest.approx(fit.slope)
    assert (again.slope_lo, again.slope_hi) == (fit.slope_lo, fit.slope_hi)


def test_fit_ci_covers_the_true_slope_at_about_the_stated_rate():
    """200 synthetic studies with a known slope (+4 points per doubling): the 95% interval
    of the slope, and that of the held-out error (true value 0: the model is exact), cover
    the truth at a rate within binomial tolerance (3.3 sd) of 93%: the percentile
    bootstrap with 10 seeds per cell runs under its nominal 95% (it sees (n-1)/n of the
    variance, and 200 reps make the percentiles noisy); measured here 181/200 (slope) and
    189/200 (held-out error)."""
    rng = np.random.default_rng(1234)
    xs = [1, 2, 4, 8, 16]
    draws, covered, covered_ho, lengths = 200, 0, 0, []
    for i in range(draws):
        mats = _synthetic(rng, xs, 4.0, seeds=10, tasks=2)
        fit = trends.fit_matrices(mats, xs, reps=200, seed=i, key="coverage")
        covered += fit.slope_lo <= 4.0 <= fit.slope_hi
        covered_ho += fit.heldout["lo"] <= 0.0 <= fit.heldout["hi"]
        lengths.append(fit.slope_hi - fit.slope_lo)
    lo, hi = _binomial_bounds(draws, 0.93)
    assert lo <= covered <= hi, covered
    assert lo <= covered_ho <= hi, covered_ho
    # and the interval is informative: the true slope's standard error is about
    # 100 * 0.08 / sqrt(20) / sqrt(sum (log2 x - 2)^2) = 0.57 points -> 95% width ~2.2
    assert 1.5 < np.median(lengths) < 3.0


def test_single_seed_has_no_interval():
    mats = [np.array([[0.1, 0.2]]), np.array([[0.3, 0.2]]), np.array([[0.4, 0.5]])]
    fit = trends.fit_matrices(mats, [1, 2, 4], reps=20)
    assert np.isfinite(fit.slope) and np.isnan(fit.slope_lo) and np.isnan(fit.slope_hi)
    assert fit.heldout is None  # three x's: a fit, but no held-out check


# --------------------------------------------------------------------------- lines of a study
def _k_sweep(root, finals: dict, mono: float | None = 0.2, seeds=(0, 1, 2)):
    """floq at each K (final success ``finals[K]``) and a monolithic critic, one task."""
    for k, final in finals.items():
        make_run(root, f"floq_k{k}", env="cube-single-play", task="task1", critic="floq",
                 success=ramp(final, 0.02 if final else 0.0),
                 tags={"critic_flow_steps": k}, seeds=seeds,
                 flops=1e9 * (1 + k))
    if mono is not None:
        make_run(root, "mono", env="cube-single-play", task="task1", critic="monolithic",
                 success=ramp(mono, 0.02 if mono else 0.0), seeds=seeds, flops=5e8)
    return root


def _final(root):
    return stats.final_scores(load_results(root))


def test_fit_lines_on_a_k_sweep_and_refusals(tmp_path):
    root = _k_sweep(tmp_path / "res", {1: 0.2, 2: 0.3, 4: 0.4, 8: 0.5})
    final = _final(root)
    lines = trends.fit_lines(final, "critic_flow_steps", reps=100)
    assert [ln.hue for ln in lines] == ["floq"]  # the monolithic reference is not fitted
    fit = lines[0].fit
    # ramp(f): seed s scores f + 0.02 s at the last step; fql averages steps 200, 300, 400
    means = [100 * np.mean([f * st / 400 + 0.02 * s for st in (200, 300, 400)
                            for s in (0, 1, 2)]) for f in (0.2, 0.3, 0.4, 0.5)]
    assert fit.slope == pytest.approx(np.polyfit(np.log2([1, 2, 4, 8]), means, 1)[0], abs=1e-6)
    # seeds are redrawn independently at each K: the seed offsets (0, 2, 4 points) move
    # the refitted slope by a few points at most
    assert fit.slope_lo < fit.slope < fit.slope_hi
    assert fit.slope_hi - fit.slope_lo < 4
    flops = trends.fit_lines(final, "flops_per_update", reps=50)
    by_hue = {ln.hue: ln for ln in flops}
    assert by_hue["monolithic"].fit is None
    assert "1 distinct value of FLOPs per update" in by_hue["monolithic"].reason
    assert "a fit needs 3" in by_hue["monolithic"].reason
    text = trends.verdict_lines(flops)
    assert any(t.startswith("- No trend fitted: monolithic has 1 distinct value") for t in text)


def test_nothing_learned_refuses_with_one_line(tmp_path):
    root = _k_sweep(tmp_path / "zero", {1: 0.0, 2: 0.0, 4: 0.0}, mono=0.0)
    final = _final(root)
    (line,) = trends.fit_lines(final, "critic_flow_steps", reps=20)
    assert line.fit is None and "nothing learned" in line.reason
    (verdict,) = trends.verdict_lines([line])
    assert verdict == "- No trend fitted: every score of floq is 0 (nothing learned)."
    index = report.build_report(root, tmp_path / "out", reps=20, formats=PNG)
    text = open(index).read()
    assert "No trend fitted: every score is 0 (nothing learned)." in text
    assert "The slope of" not in text


def test_two_fitted_lines_get_a_difference_of_slopes(tmp_path):
    root = tmp_path / "res"
    for critic, finals in (("floq", (0.2, 0.3, 0.4)), ("monolithic", (0.3, 0.3, 0.3))):
        for w, f in zip((64, 128, 256), finals):
            make_run(root, f"{critic}_w{w}", env="e", task="task1", critic=critic,
                     success=ramp(f), tags={"critic_width": w})
    final = _final(root)
    lines = trends.fit_lines(final, "critic_width", reps=100)
    diffs = trends.slope_differences(lines)
    assert len(diffs) == 1
    r = diffs.iloc[0]
    slopes = {ln.hue: ln.fit.slope for ln in lines}
    assert r["point"] == pytest.approx(slopes[r["a"]] - slopes[r["b"]])
    assert slopes["monolithic"] == pytest.approx(0, abs=1e-9)
    text = trends.verdict_lines(lines, diffs)
    assert any("The difference of slopes in width, floq − monolithic, is +" in t for t in text)


def test_report_states_the_slope_of_a_k_sweep(tmp_path):
    root = _k_sweep(tmp_path / "res", {1: 0.2, 2: 0.3, 4: 0.35, 8: 0.5})
    final = _final(root)
    index = report.build_report(root, tmp_path / "out", reps=100, formats=PNG)
    text = open(index).read()
    (line,) = trends.fit_lines(final, "critic_flow_steps", reps=100)
    f = line.fit
    expected = (f"The slope of floq in K is {f.slope:+.1f} [{f.slope_lo:+.1f}, "
                f"{f.slope_hi:+.1f}] points per doubling")
    head = text.split("## Leaderboard per environment")[0]
    assert expected in head  # in the answer, under the K figure
    assert f"Held out: the fit on K ≤ 4 predicts {f.heldout['predicted']:.1f}% at K = 8" in head
    assert "**Compute-optimal.**" in head  # compute varies: the frontier is in the answer
    for name in ("slopes.md", "slopes.tex", "slopes.csv", "compute_frontier.csv",
                 "compute_frontier.png"):
        assert (tmp_path / "out" / name).is_file(), name
    csv = pd.read_csv(tmp_path / "out" / "slopes.csv")
    row = csv[(csv["axis"] == "critic_flow_steps")
              & (csv["column"] == "Slope (points / doubling)")].iloc[0]
    assert row["point"] == pytest.approx(f.slope, rel=1e-5)
    assert "\\begin{tabular}" in (tmp_path / "out" / "slopes.tex").read_text()
    # the slopes table sits after the leaderboards, before the aggregates
    lb, slopes, agg = (text.index(s) for s in ("## Leaderboard per environment",
                                               "## Scaling slopes", "## Aggregate metrics"))
    assert lb < slopes < agg


# --------------------------------------------------------------------------- frontier
def test_frontier_on_a_hand_made_case():
    rows = []
    # configuration -> (compute, scores of 3 seeds)
    made = {"A": (1e12, [0.2, 0.2, 0.2]), "B": (2e12, [0.5, 0.4, 0.6]),
            "C": (3e12, [0.4, 0.4, 0.4]), "D": (4e12, [0.45, 0.5, 0.4]),
            "E": (5e12, [0.7, 0.6, 0.8])}
    for m, (c, scores) in made.items():
        for s, v in enumerate(scores):
            rows.append(dict(env="e", method=m, compute_total=c, task_key="e/t1", seed=s,
                             score=v))
    # a configuration that misses the environment's second task is left out
    rows.append(dict(env="e", method="F", compute_total=0.5e12, task_key="e/t2", seed=0,
                     score=1.0))
    for m, (c, scores) in made.items():
        rows.append(dict(env="e", method=m, compute_total=c, task_key="e/t2", seed=0,
                         score=float(np.mean(scores))))
    final = pd.DataFrame(rows)
    configs, frontier = trends.compute_frontier(final, reps=200, seed=0)
    assert sorted(configs["method"]) == ["A", "B", "C", "D", "E"]
    assert list(frontier["budget"]) == [1e12, 2e12, 3e12, 4e12, 5e12]
    assert list(frontier["method"]) == ["A", "B", "B", "B", "E"]
    assert list(frontier["n_within"]) == [1, 2, 3, 4, 5]
    b = frontier.iloc[2]
    assert b["compute"] == 2e12 and b["lo"] <= b["point"] <= b["hi"]
    # the interval is the configuration's leaderboard-style estimate (same stream)
    sub = final[final["method"] == "B"]
    assert (b["point"], b["lo"], b["hi"]) == stats.bootstrap_estimate(
        stats.score_matrix(sub), "mean", 200, 0.95, 0, "B\x00e")
    (sentence, _) = trends.frontier_lines(frontier)
    assert "1 TFLOP up to (not incl.) 2 TFLOP: A" in sentence
    assert "2 TFLOP up to (not incl.) 5 TFLOP: B" in sentence
    assert "5 TFLOP or more: E" in sentence


# --------------------------------------------------------------------------- expected max
@pytest.mark.parametrize("values", [[0.3], [0.1, 0.5], [0.2, 0.2, 0.7], [0.9, 0.1, 0.4, 0.4]])
def test_expected_max_equals_enumeration(values):
    n = len(values)
    for big_n in (1, 2, 3, 4):
        brute = np.mean([max(t) for t in itertools.product(values, repeat=big_n)])
        assert trends.expected_max(values, big_n) == pytest.approx(brute, abs=1e-12)
    curve = trends.expected_max(np.array(values), [1, 2, 4, 64])
    assert curve[0] == pytest.approx(np.mean(values))  # N = 1: the mean configuration
    assert np.all(np.diff(curve) >= -1e-12)  # never decreases in N
    assert curve[-1] == pytest.approx(max(values), abs=1e-3)  # many draws: the best


def test_expected_max_closed_form_vectorised():
    v = np.array([[0.1, 0.5, 0.3], [0.6, 0.2, 0.2]])
    out = trends.expected_max(v, [1, 2])
    assert out.shape == (2, 2)
    # closed form by hand for N = 2 on [0.1, 0.3, 0.5]: sum v_i ((i/3)^2 - ((i-1)/3)^2)
    assert out[0, 1] == pytest.approx(0.1 * 1 / 9 + 0.3 * 3 / 9 + 0.5 * 5 / 9)
    with pytest.raises(Exception):
        trends.expected_max([], 1)


def test_expected_max_curve_interval():
    rng = np.random.default_rng(0)
    mats = [rng.uniform(0.1, 0.3, size=(5, 2)) + d for d in (0.0, 0.2, 0.4)]
    curve = trends.expected_max_curve(mats, reps=300, seed=0, key="m")
    assert list(curve["N"]) == [1, 2, 4]
    means = [stats.aggregate_mean(m) for m in mats]
    assert curve["point"].iloc[0] == pytest.approx(np.mean(means))
    assert np.all(curve["lo"] <= curve["point"]) and np.all(curve["point"] <= curve["hi"])
    one = trends.expected_max_curve([m[:1] for m in mats], reps=50)
    assert one["lo"].isna().all()


def _tuned_study(root):
    for a in (1, 3, 10, 30):
        make_run(root, f"rebrac_a{a}", env="e", task="task1", critic="mlp",
                 algorithm="rebrac", success=ramp(0.1 + 0.01 * a),
                 tags={"alpha": a, "grid": f"rebrac-alpha-{a}"})  # a tag restating alpha
    make_run(root, "fql", env="e", task="task1", critic="mlp", algorithm="fql",
             success=ramp(0.3), tags={"alpha": 10, "grid": "fql"})
    return root


def test_tuning_budget_and_leaderboard_footnote(tmp_path):
    root = _tuned_study(tmp_path / "res")
    final = _final(root)
    counts = trends.budget_counts(final, ["alpha"]).set_index("group")
    assert counts.loc["rebrac + mlp", "n_configs"] == 4
    assert counts.loc["fql + mlp", "n_configs"] == 1
    curves = trends.tuning_budget(final, ["alpha"], reps=100)
    reb = curves[curves["group"] == "rebrac + mlp"]
    assert list(reb["N"]) == [1, 2, 4]
    v = [stats.aggregate_mean(stats.score_matrix(g))
         for _, g in final[final["algorithm"] == "rebrac"].groupby("method")]
    assert list(reb["point"]) == pytest.approx(list(trends.expected_max(v, [1, 2, 4])))
    index = report.build_report(root, tmp_path / "out", reps=50, formats=PNG,
                                tuned=["alpha"])
    text = open(index).read()
    board = (tmp_path / "out" / "leaderboard_env.md").read_text()
    assert "| Method | e | Configs tried |" in board
    rows = {line.split(" | ")[0].lstrip("| "): line for line in board.splitlines()
            if line.startswith("| ")}
    assert rows["rebrac + mlp (alpha=1, grid=rebrac-alpha-1)"].endswith("| 4 |")
    assert rows["fql + mlp"].endswith("| 1 |")
    assert "Unequal tuning budgets: rebrac + mlp tried 4 configurations, fql + mlp 1" in text
    assert "## Tuning budget" in text
    # the expected-max table compares every method at equal N (fql + mlp: flat at its score)
    tuning = text[text.index("## Tuning budget"):]
    assert f"| rebrac + mlp | 4 | {100 * np.mean(v):.1f} [" in tuning
    assert "| fql + mlp | 1 |" in tuning
    assert (tmp_path / "out" / "expected_max.png").is_file()


def test_cli_tuned_option(tmp_path, capsys):
    root = _tuned_study(tmp_path / "res")
    code = report.main([str(root), "--out", str(tmp_path / "bad"), "--tuned", "nosuch",
                        "--reps", "20", "--formats", "png"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("floq analyze: error: --tuned nosuch: no such field")
    assert not (tmp_path / "bad").exists()
    code = report.main([str(root), "--out", str(tmp_path / "ok"), "--tuned", "alpha",
                        "--reps", "20", "--formats", "png"])
    assert code == 0
    assert "Configs tried" in (tmp_path / "ok" / "leaderboard_env.md").read_text()
