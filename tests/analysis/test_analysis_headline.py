"""The report answers first: headline (answer sentence, main scaling figure, cost table),
bold only where the stated rule separates entries, 'nothing learned' for an all-zero study,
probability of improvement against a baseline, and camera-ready figures (distinguishable K
colours and markers, labelled points, seeds shown, no unlabeled tick, mode 0644)."""

import colorsys
import re
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from analysis import load, plots, report, stats
from analysis_fixtures import make_run, ramp

PNG = ("png",)
CPU_SCALE = Path(__file__).resolve().parents[2] / "results" / "cpu_scale"


@pytest.fixture(scope="module")
def cpu_scale_report(tmp_path_factory):
    """The committed 5-configuration K study (1 task, 3 seeds), reported with few reps."""
    out = tmp_path_factory.mktemp("cpu_scale") / "report"
    index = report.build_report(CPU_SCALE, out, reps=60, formats=PNG)
    return out, Path(index).read_text()


def test_the_report_opens_with_the_answer(cpu_scale_report):
    out, text = cpu_scale_report
    first = text.index
    # answer sentence, then the main (K) scaling figure, then the cost table, then the rest
    assert first("**Answer.** Best configuration: **floq (K=4)**") < \
        first("![Final success vs Critic flow steps K") < first("### Cost") < \
        first("## Leaderboard per environment") < first("## Method and inputs") < \
        first("### Input notes")
    assert "for the baseline **monolithic**" in text and "P(floq (K=4) > monolithic) = " in text
    assert "The difference's 95% interval includes 0" in text
    # the methodology bullets come after every figure
    assert text.rindex("![") < first("## Method and inputs")
    # the cost table holds the manifest's numbers
    assert re.search(r"\| floq \(K=8\) \| 166,148 \| 3\.12 \| 3\.72 \| 2\.31 h \| 1 × 3 \| "
                     r"— \(no GPU\) \|", text)
    # the headline's sentence is generated from the leaderboard's own numbers
    assert "28.4% [" in text and "| floq (K=4) | 28.4 ± " in text


def test_bold_only_where_the_rule_separates(cpu_scale_report):
    out, text = cpu_scale_report
    board = text[text.index("| Method | cube-single-play |"):text.index("Files: [Markdown]")]
    assert "**" not in board.split("\n\n")[0]  # every CI overlaps the best one's: no bold
    assert "Nothing is bold" in board
    assert "Nothing is bold" in (out / "leaderboard_env.tex").read_text()


def test_captions_match_the_figures(cpu_scale_report):
    out, text = cpu_scale_report
    flops = next(ln for ln in text.splitlines() if ln.startswith("![Final success vs FLOPs"))
    assert "dashed" not in flops  # the FLOPs figure has no reference line
    assert "labelled with its configuration" in flops
    k = next(ln for ln in text.splitlines() if ln.startswith("![Final success vs Critic"))
    assert "dashed: runs without this axis (monolithic)" in k
    agg = next(ln for ln in text.splitlines() if ln.startswith("![Aggregate"))
    assert "only Mean drawn" in agg


def test_figures_are_world_readable(cpu_scale_report):
    out, _ = cpu_scale_report
    pngs = list(out.glob("*.png"))
    assert pngs
    for p in pngs:
        assert stat.S_IMODE(p.stat().st_mode) == 0o644, p.name


def test_nothing_learned_is_said_and_nothing_is_drawn(tmp_path):
    for name, critic, tags in (("mono", "monolithic", {}),
                               ("k4", "floq", {"critic_flow_steps": 4}),
                               ("k8", "floq", {"critic_flow_steps": 8})):
        make_run(tmp_path / "res", name, env="e", task="task1", critic=critic,
                 success=lambda seed, step: 0.0, tags=tags)
    out = tmp_path / "out"
    text = open(report.build_report(tmp_path / "res", out, reps=20, formats=PNG)).read()
    assert "**Nothing learned.** Every one of the 9 scored run seeds" in text
    assert text.index("Nothing learned") < text.index("## Leaderboard")
    assert not list(out.glob("*.png"))  # no axes of zeros, no -1% aggregate
    assert "**Answer.**" not in text and "Probability of improvement" not in text


def test_probability_of_improvement_against_the_baseline(fixture_results, tmp_path):
    out = tmp_path / "out"
    text = open(report.build_report(fixture_results, out, reps=30, formats=PNG)).read()
    poi = pd.read_csv(out / "probability_of_improvement.csv")
    assert set(poi["y"]) == {"monolithic"} and "monolithic" not in set(poi["x"])
    assert "against the baseline monolithic" in text
    out2 = tmp_path / "out2"
    report.build_report(fixture_results, out2, reps=30, formats=PNG, baseline="floq (K=4)")
    poi2 = pd.read_csv(out2 / "probability_of_improvement.csv")
    assert list(zip(poi2["x"], poi2["y"])) == [("monolithic", "floq (K=4)")]
    # same pair, same bootstrap stream: P(mono > K4) = 1 - P(K4 > mono)
    assert poi2["point"].iloc[0] == pytest.approx(1 - poi["point"].iloc[0])


def test_unknown_baseline_is_one_line_exit_2(fixture_results, tmp_path, capsys):
    code = report.main([str(fixture_results), "--out", str(tmp_path / "r"), "--reps", "10",
                        "--baseline", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "'nope' is not one of the scored methods" in err[0]
    assert not (tmp_path / "r").exists()


def test_difference_estimate_by_hand():
    x = np.array([[0.4, 0.6], [0.6, 0.8]])  # mean over tasks of task means: 0.6
    y = np.array([[0.2, 0.2], [0.4, 0.2]])  # 0.25
    point, lo, hi = stats.difference_estimate(x, y, reps=500, seed=0)
    assert point == pytest.approx(0.35)
    assert 0.1 <= lo <= point <= hi <= 0.6
    assert np.isnan(stats.difference_estimate(x[:1], y, reps=10)[1])


# ------------------------------------------------------------------ figures
def _lightness(rgb):
    return colorsys.rgb_to_hls(*rgb[:3])[1]


def _lstar(rgb):
    """CIE L* (perceived lightness, 0 black to 100 white) of an sRGB colour."""
    c = np.asarray(rgb[:3], float)
    y = float((np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4))
              @ [0.2126, 0.7152, 0.0722])
    return 116 * y ** (1 / 3) - 16


def test_k_values_are_distinguishable():
    labels = [f"floq (K={k})" for k in (1, 2, 4, 8)]
    colors = plots.config_colors([(lab, "fql:floq") for lab in labels]
                                 + [("monolithic", "fql:monolithic")])
    # evenly spaced in perceived lightness, between the lightest shade visible on white
    # (3:1, L* 61.7) and L* 25: 12 L* apart (a difference of ~2 is visible)
    light = [_lstar(colors[lab]) for lab in labels]
    assert all(a - b >= 12 for a, b in zip(light, light[1:]))  # K=4 vs K=8 too
    assert light[0] == pytest.approx(61.6, abs=0.3) and light[-1] == pytest.approx(25, abs=0.3)
    markers = plots.config_markers(labels + ["monolithic"])
    assert len({markers[lab] for lab in labels}) == 4


def test_flops_axis_labels_each_point_and_shows_seeds():
    rows = []
    for k, flops in ((1, 1.4e9), (2, 1.7e9), (4, 2.2e9)):
        make_rows = [dict(env="e", algorithm="fql", critic="floq", method=f"floq (K={k})",
                          critic_flow_steps=k, flops_per_update=flops, task_key="e/task1",
                          seed=s, score=0.2 + 0.05 * s) for s in range(3)]
        rows += make_rows
    rows += [dict(env="e", algorithm="fql", critic="monolithic", method="monolithic",
                  critic_flow_steps=np.nan, flops_per_update=8.4e8, task_key="e/task1",
                  seed=s, score=0.2) for s in range(3)]
    final = pd.DataFrame(rows)
    est = stats.scaling_estimates(final, "flops_per_update", reps=20)
    assert est.set_index("x")["label"].to_dict() == {
        8.4e8: "monolithic", 1.4e9: "floq (K=1)", 1.7e9: "floq (K=2)", 2.2e9: "floq (K=4)"}
    pts = stats.scaling_points(final, "flops_per_update")
    fig = plots.plot_scaling(est, "FLOPs per update", points=pts,
                             titles={"e": "e — 1 task, 30k steps, 3 seeds"})
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["K=1", "K=2", "K=4"]
    assert ax.get_title() == "e — 1 task, 30k steps, 3 seeds"
    seeds = [c for c in ax.collections if isinstance(c, PathCollection)
             and c.get_label() == "_seeds"]
    assert sum(len(c.get_offsets()) for c in seeds) == 12  # every run seed drawn
    fig.canvas.draw()
    assert not ax.xaxis.get_minorticklocs().size  # no tick without a label
    assert all(t.get_text() for t in ax.get_xticklabels()
               if ax.get_xlim()[0] <= t.get_position()[0] <= ax.get_xlim()[1])


def test_one_task_draws_one_aggregate_panel():
    scores = {"a": np.array([[0.2], [0.3], [0.25]]), "b": np.array([[0.4], [0.1], [0.3]])}
    agg = stats.aggregate_estimates(scores, reps=50)
    kept, dropped = plots.distinct_metrics(agg)
    assert kept == ["mean"] and set(dropped) == {"median", "iqm", "optimality_gap"}
    fig = plots.plot_aggregates(agg, metrics=kept)
    assert [ax.get_title() for ax in fig.axes] == ["Mean"]
    three = {"a": np.array([[0.2, 0.9, 0.0], [0.3, 0.1, 0.1], [0.25, 0.5, 0.05]]),
             "b": np.array([[0.4, 0.6, 0.9], [0.1, 0.7, 1.0], [0.3, 0.2, 0.8]])}
    # 3 tasks: median, IQM and mean differ; the optimality gap still mirrors the mean
    assert plots.distinct_metrics(stats.aggregate_estimates(three, reps=50)) == (
        ["median", "iqm", "mean"], {"optimality_gap": "mean"})


def test_saved_figures_are_mode_0644(tmp_path):
    fig = plots.plot_aggregates(pd.DataFrame(dict(method=["a"], metric=["mean"], point=[.5],
                                                  lo=[.4], hi=[.6])))
    for p in plots.save_figure(fig, tmp_path / "f", formats=("png",)):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_critic_diagnostics_and_wallclock_curves(cpu_scale_report):
    """Q scale, critic loss and gradient norm come from the scored runs' own train.csv, and the
    wall-clock curves put each evaluation at the runs' mean eval.csv wall_time."""
    out, text = cpu_scale_report
    run = CPU_SCALE / "experiment_critic=floq_k4_FloqCritic"
    train = pd.read_csv(run / "train.csv")
    diag = pd.read_csv(out / "critic_diagnostics.csv")
    # each critic's loss has its own metric (a TD loss and floq's flow-matching loss differ)
    assert set(diag["metric"]) == {
        "critic/q_mean", "critic/loss (floq)", "critic/loss (monolithic)", "grad/norm"}
    row = diag[(diag["method"] == "floq (K=4)") & (diag["metric"] == "critic/loss (floq)")
               & (diag["step"] == 30_000)].iloc[0]
    at = train[train["step"] == 30_000]["critic/loss"]
    close = lambda v: pytest.approx(v, rel=1e-5)  # noqa: E731  (CSVs hold 6 digits)
    assert row["point"] == close(at.mean()) and row["n"] == 3
    assert (row["lo"], row["hi"]) == (close(at.min()), close(at.max()))
    wall = pd.read_csv(out / "learning_curves_wallclock.csv")
    ev = pd.read_csv(CPU_SCALE / "experiment_critic=MonolithicCritic" / "eval.csv")
    got = wall[(wall["method"] == "monolithic") & (wall["step"] == 30_000)]["wall_time"]
    assert got.iloc[0] == close(ev[ev["step"] == 30_000]["wall_time"].mean())
    assert "## Critic diagnostics" in text and "learning_curves_wallclock.png" in text
