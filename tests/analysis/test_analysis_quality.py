"""Report quality: shared colours, readable figures, published overlays, tables a reviewer
accepts, a self-contained HTML page."""

import base64
import colorsys
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import load, plots, published, report, stats, tables
from analysis_fixtures import make_run, ramp

PNG = ("png",)


def _final(root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stats.final_scores(stats.dedupe_runs(load.load_results(root)))


def _lightness(rgb) -> float:
    return colorsys.rgb_to_hls(*rgb[:3])[1]


def _width_sweep(root):
    """floq at widths 256 and 512 over K in {2, 4, 8}; monolithic at widths 256 and 512."""
    for width in (256, 512):
        for k in (2, 4, 8):
            make_run(root, f"floq_w{width}_k{k}", env="e", task="task1", critic="floq",
                     success=ramp(0.2 + 0.02 * k + width / 5000),
                     tags={"critic_flow_steps": k, "critic_width": width},
                     params_critic=width * 10, flops=width * 1e6 * k)
        make_run(root, f"mono_w{width}", env="e", task="task1", critic="monolithic",
                 success=ramp(0.3 + width / 5000), tags={"critic_width": width},
                 params_critic=width * 8, flops=width * 1e6)
    return root


# ------------------------------------------------------------------ A1 colours
def test_one_colour_per_configuration_across_every_figure(fixture_results, tmp_path,
                                                          monkeypatch):
    seen = []
    for name in ("plot_learning_curves", "plot_scaling", "plot_performance_profile",
                 "plot_aggregates", "plot_probability_of_improvement"):
        orig = getattr(report.plots, name)

        def spy(est, *a, _orig=orig, _name=name, **k):
            seen.append((_name, k.get("colors")))
            return _orig(est, *a, **k)

        monkeypatch.setattr(report.plots, name, spy)
    report.build_report(fixture_results, tmp_path / "out", reps=30, formats=PNG)
    names = {n for n, _ in seen}
    assert names == {"plot_learning_curves", "plot_scaling", "plot_performance_profile",
                     "plot_aggregates", "plot_probability_of_improvement"}
    first = seen[0][1]
    assert all(c is first for _, c in seen)  # one mapping for the whole report
    assert {"floq (K=4)", "floq (K=8)", "monolithic", "floq"} <= set(first)
    assert len({first[k] for k in ("floq (K=4)", "floq (K=8)", "monolithic")}) == 3


def test_sequential_palette_for_an_ordered_axis():
    configs = [(f"floq (K={k})", "fql:floq") for k in (16, 1, 4, 2, 8)]
    configs += [("monolithic", "fql:monolithic"), ("floq", "fql:floq")]
    colors = plots.config_colors(configs)
    light = [_lightness(colors[f"floq (K={k})"]) for k in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(light, light[1:]))  # K=1 lightest, K=16 darkest
    assert colors == plots.config_colors(configs[::-1])  # order-independent
    assert len(set(colors.values())) == len(colors)
    # the family keeps its hue: every floq shade is nearer floq's base than monolithic's
    hue = lambda c: colorsys.rgb_to_hls(*c)[0]  # noqa: E731
    for k in (2, 4, 8):
        assert abs(hue(colors[f"floq (K={k})"]) - hue(colors["floq"])) < 0.05


def test_figure_uses_the_given_mapping(fixture_results):
    final = _final(fixture_results)
    df = stats.dedupe_runs(load.load_results(fixture_results))
    colors = report._report_colors(final)
    fig = plots.plot_learning_curves(stats.curve_estimates(df, reps=20), colors=colors)
    for line in fig.axes[0].get_lines():
        assert tuple(line.get_color()) == colors[line.get_label()]


# ------------------------------------------------------------------ A2 aggregate axes
def test_aggregate_axes_contain_every_interval():
    agg = pd.DataFrame(dict(
        method=["a", "b", "c"] * 2, metric=["mean"] * 3 + ["optimality_gap"] * 3,
        point=[0.05, 0.5, 0.9, 0.95, 0.5, 0.1], lo=[0.0, 0.1, 0.85, 0.9, 0.1, 0.02],
        hi=[0.1, 0.9, 0.97, 1.0, 0.9, 0.15]))
    fig = plots.plot_aggregates(agg)
    for ax, metric in zip(fig.axes, ["mean", "optimality_gap"]):
        sub = agg[agg["metric"] == metric]
        lo, hi = ax.get_xlim()
        assert lo < 100 * sub["lo"].min() and hi > 100 * sub["hi"].max()
        for patch in ax.patches:  # no bar is cut by the axes
            assert patch.get_x() >= lo and patch.get_x() + patch.get_width() <= hi


# ------------------------------------------------------------------ A3 published overlay
def test_published_k_ablation_is_overlaid_where_the_env_matches(tmp_path):
    for k in (4, 8, 16):
        make_run(tmp_path / "res", f"k{k}", env="antmaze-giant-navigate", task="task1",
                 critic="floq", success=ramp(0.5), tags={"critic_flow_steps": k})
    make_run(tmp_path / "res", "other", env="scene-play", task="task1", critic="floq",
             success=ramp(0.5), tags={"critic_flow_steps": 4})
    make_run(tmp_path / "res", "other8", env="scene-play", task="task1", critic="floq",
             success=ramp(0.5), tags={"critic_flow_steps": 8})
    final = _final(tmp_path / "res")
    pub = published.scaling_rows(published.load_published(), "critic_flow_steps",
                                 sorted(final["env"].unique()))
    assert set(pub["env"]) == {"antmaze-giant-navigate"}
    assert set(pub["ref"]) == {"floq K ablation", "floq Fig. 4 (review quote)"}
    est = stats.scaling_estimates(final, "critic_flow_steps", reps=20)
    fig = plots.plot_scaling(est, "K", published=pub)
    ant, scene = fig.axes
    pub_lines = [ln for ln in ant.get_lines() if "published" in ln.get_label()]
    assert len(pub_lines) == 2
    quote = next(ln for ln in pub_lines if "review quote" in ln.get_label())
    assert list(quote.get_xdata()) == [4, 8, 16]
    assert list(quote.get_ydata()) == pytest.approx([86, 70, 55])
    assert not [ln for ln in scene.get_lines() if "published" in ln.get_label()]
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert sum("published" in t for t in legend) == 2
    index = report.build_report(tmp_path / "res", tmp_path / "out", reps=20, formats=PNG)
    assert "black dotted: published numbers (published: floq" in open(index).read()


# ------------------------------------------------------------------ A4 PoI figure
def test_probability_of_improvement_figure():
    poi = pd.DataFrame(dict(x=["a", "a", "b"], y=["b", "c", "c"], point=[0.7, 0.9, 0.4],
                            lo=[0.6, 0.8, np.nan], hi=[0.8, 1.0, np.nan]))
    fig = plots.plot_probability_of_improvement(poi, colors={"a": (1, 0, 0), "b": (0, 1, 0),
                                                             "c": (0, 0, 1)})
    ax = fig.axes[0]
    assert ax.get_xlim() == (0, 1)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["b  >  c", "a  >  c", "a  >  b"]
    assert len(ax.patches) == 2  # the pair without a CI has only its point tick
    assert ax.patches[0].get_facecolor()[:3] == (1, 0, 0)
    assert any(ln.get_xdata()[0] == 0.5 for ln in ax.get_lines())  # 0.5 marked


# ------------------------------------------------------------------ A5 CIs in index
def test_index_aggregate_table_has_intervals(fixture_results, tmp_path):
    index = report.build_report(fixture_results, tmp_path / "out", reps=50, formats=PNG)
    text = open(index).read()
    assert "| method | n (seeds per task) | Median | IQM | Mean | Optimality gap ↓ |" in text
    assert re.search(r"\| floq \(K=4\) \| 3 \| [\d.]+ \[[\d.]+, [\d.]+\] \| [\d.]+ \[[\d.]+, "
                     r"[\d.]+\] \| 38\.0 \[[\d.]+, [\d.]+\] \|", text)


# ------------------------------------------------------------------ A6 bolding
def test_significance_aware_bolding_on_a_hand_made_table():
    cells = pd.DataFrame(dict(
        row=["best", "overlaps", "apart", "one_seed_in", "one_seed_out", "other_col",
             "partial"],
        column=["c1"] * 5 + ["c2", "c1"],
        point=[0.50, 0.48, 0.30, 0.46, 0.44, 0.10, 0.90],
        lo=[0.45, 0.40, 0.25, np.nan, np.nan, 0.05, 0.85],
        hi=[0.55, 0.50, 0.35, np.nan, np.nan, 0.15, 0.95]))
    eligible = cells["row"] != "partial"  # e.g. covers fewer tasks: never competes
    bold = tables.significance_bold(cells, eligible)
    assert dict(zip(cells["row"], bold)) == {
        "best": True, "overlaps": True, "apart": False, "one_seed_in": True,
        "one_seed_out": False, "other_col": False, "partial": False}


def test_leaderboard_bolds_overlapping_entries(tmp_path):
    make_run(tmp_path, "a", env="e", task="task1", critic="a", success=ramp(0.50))
    make_run(tmp_path, "b", env="e", task="task1", critic="b", success=ramp(0.50, 0.021))
    make_run(tmp_path, "c", env="e", task="task1", critic="c", success=ramp(0.10))
    lb = tables.leaderboard(_final(tmp_path), reps=200)
    bold = lb.cells[lb.cells["column"] == "e"].set_index("row")["bold"]
    assert bold.to_dict() == {"a": True, "b": True, "c": False}


# ------------------------------------------------------------------ A7 rank and mean
def test_average_rank_and_cross_environment_mean(fixture_results):
    final = _final(fixture_results)
    lb = tables.leaderboard(final, reps=100)
    assert lb.columns == ["cube-double-play", "scene-play", "Mean", "Avg. rank"]
    cells = lb.cells.set_index(["row", "column"])
    k4 = [cells.loc[("floq (K=4)", e), "point"] for e in ("cube-double-play", "scene-play")]
    assert cells.loc[("floq (K=4)", "Mean"), "point"] == pytest.approx(np.mean(k4))
    mean = cells.loc[("floq (K=4)", "Mean")]
    assert mean["lo"] < mean["point"] < mean["hi"]
    # floq K=4 beats monolithic on both environments; K=8 misses a column: not ranked
    assert cells.loc[("floq (K=4)", "Avg. rank"), "display"] == "1.0"
    assert cells.loc[("monolithic", "Avg. rank"), "display"] == "2.0"
    assert ("floq (K=8)", "Avg. rank") not in cells.index
    assert ("floq (K=8)", "Mean") not in cells.index
    md = lb.to_markdown()
    assert "| Method | cube-double-play | scene-play | Mean | Avg. rank |" in md
    ranks = tables.average_ranks(pd.DataFrame(dict(
        row=["x", "y", "z", "x", "y", "z"], column=["a"] * 3 + ["b"] * 3,
        point=[0.9, 0.5, 0.5, 0.1, 0.6, 0.3])), ["a", "b"])
    assert ranks.to_dict() == {"x": 2.0, "y": 1.75, "z": 2.25}


# ------------------------------------------------------------------ A8 LaTeX width
def _balanced(tex: str) -> bool:
    depth = 0
    for i, ch in enumerate(tex):
        if ch in "{}" and (i == 0 or tex[i - 1] != "\\"):
            depth += 1 if ch == "{" else -1
            if depth < 0:
                return False
    return depth == 0


def test_latex_tables_fit_a_column(fixture_results, tmp_path):
    final = _final(fixture_results)
    tex = tables.leaderboard(final, by="task", env="cube-double-play", reps=20).to_latex()
    assert r"\begin{table}[t]" in tex and r"\end{table}" in tex
    assert r"\resizebox{\ifdim\width>\columnwidth\columnwidth\else\width\fi}{!}{%" in tex
    assert r"\end{tabular}}" in tex and _balanced(tex)
    # a leaderboard with more environments than fit a column goes across the page
    for i in range(7):
        make_run(tmp_path / "wide", f"r{i}", env=f"env{i}", task="task1", critic="c",
                 success=ramp(0.5))
    wide = tables.leaderboard(_final(tmp_path / "wide"), reps=20).to_latex()
    assert r"\begin{table*}[t]" in wide and r"\end{table*}" in wide
    assert r"\resizebox{\ifdim\width>\textwidth\textwidth\else\width\fi}{!}" in wide
    assert _balanced(wide)


# ------------------------------------------------------------------ A9, A11 families, compute
def test_scaling_lines_join_only_one_family(tmp_path):
    final = _final(_width_sweep(tmp_path))
    est = stats.scaling_estimates(final, "flops_per_update", reps=20)
    lines = est.groupby("hue")["x"].apply(list).to_dict()
    assert lines == {"floq (width=256)": [256e6 * k for k in (2, 4, 8)],
                     "floq (width=512)": [512e6 * k for k in (2, 4, 8)],
                     "monolithic": [256e6, 512e6]}
    fig = plots.plot_scaling(est, "FLOPs per update",
                             colors=report._report_colors(final))
    drawn = {ln.get_label(): list(ln.get_xdata()) for ln in fig.axes[0].get_lines()}
    assert drawn == lines
    assert "compute_total" in stats.scaling_axes(final)
    comp = stats.scaling_estimates(final, "compute_total", reps=20)
    assert comp.groupby("hue")["x"].apply(list).to_dict()["monolithic"] == [400 * 256e6,
                                                                            400 * 512e6]


def test_a_one_point_scaling_line_still_shows_its_interval():
    """cpu_scale's monolithic critic is one point on the FLOPs axis: a band of zero width
    would draw nothing, so its CI must appear as a vertical bar from lo to hi."""
    from matplotlib.collections import LineCollection
    est = pd.DataFrame({"env": ["cube"] * 3, "hue": ["floq", "floq", "monolithic"],
                        "x": [2e9, 4e9, 1e9], "point": [0.3, 0.35, 0.2],
                        "lo": [0.2, 0.25, 0.1], "hi": [0.4, 0.45, 0.3],
                        "reference": [False] * 3})
    fig = plots.plot_scaling(est, "FLOPs per update")
    bars = [c for c in fig.axes[0].collections if isinstance(c, LineCollection)]
    segs = [np.asarray(seg) for c in bars for seg in c.get_segments()]
    assert len(segs) == 1
    np.testing.assert_allclose(segs[0], [[1e9, 10.0], [1e9, 30.0]])


def test_report_has_a_compute_axis(tmp_path):
    index = report.build_report(_width_sweep(tmp_path / "res"), tmp_path / "out", reps=20,
                                formats=PNG)
    out = tmp_path / "out"
    assert (out / "scaling_compute_total.png").exists()
    text = open(index).read()
    assert "Training compute (train steps × FLOPs per update)" in text
    est = pd.read_csv(out / "scaling_compute_total.csv")
    assert set(est["hue"]) == {"floq (width=256)", "floq (width=512)", "monolithic"}


def test_a_k_sweep_report_says_why_there_is_no_parameters_figure(tmp_path):
    """floq's K changes FLOPs, not parameters (cpu_scale): the report must say so and give the
    counts rather than silently leave out the success-vs-parameters figure; a width sweep,
    whose parameter counts vary, gets the figure and no such sentence."""
    root = tmp_path / "k"
    for k in (1, 2, 4):
        make_run(root, f"floq_k{k}", env="e", task="task1", critic="floq",
                 success=ramp(0.2 + 0.02 * k), tags={"critic_flow_steps": k},
                 params_critic=166148, flops=1e9 * k)
    make_run(root, "mono", env="e", task="task1", critic="monolithic", success=ramp(0.2),
             params_critic=120000, flops=8e8)
    text = open(report.build_report(root, tmp_path / "out_k", reps=20, formats=PNG)).read()
    assert "No success-vs-parameters figure" in text
    assert "floq (K=1): 166,148" in text and "monolithic: 120,000" in text
    assert not list((tmp_path / "out_k").glob("scaling_params_*"))
    wide = open(report.build_report(_width_sweep(tmp_path / "w"), tmp_path / "out_w", reps=20,
                                    formats=PNG)).read()
    assert "No success-vs-parameters figure" not in wide
    assert list((tmp_path / "out_w").glob("scaling_params_critic.png"))


# ------------------------------------------------------------------ A10 readability
def _overlaps(fig) -> list:
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    bad = []
    for ax in fig.axes:
        lo, hi = sorted(ax.get_xlim())
        boxes = sorted((lab.get_window_extent(r) for t, lab in
                        zip(ax.get_xticks(), ax.get_xticklabels())
                        if lo <= t <= hi and lab.get_visible() and lab.get_text()),
                       key=lambda b: b.x0)
        bad += [(a, b) for a, b in zip(boxes, boxes[1:]) if b.x0 < a.x1]
    return bad


def test_tick_labels_do_not_overlap():
    xs = [1.0e9, 1.1e9, 1.25e9, 1.4e9, 2.0e9, 2.2e9, 4.1e9, 8.3e9]
    est = pd.DataFrame(dict(env=["e"] * 8, hue="floq", x=xs, point=0.5, lo=0.4, hi=0.6,
                            reference=False))
    fig = plots.plot_scaling(est, "FLOPs per update")
    assert not _overlaps(fig)
    ticks = fig.axes[0].get_xticks()
    assert 1.0e9 in ticks and len(ticks) < len(xs)  # thinned, not all dropped
    assert not len(fig.axes[0].xaxis.get_minorticklocs())  # a dropped label takes its tick


def test_a_dozen_configurations_stay_readable(tmp_path):
    rows = []
    methods = [f"floq (K={k}, width={w})" for k in (1, 2, 4, 8, 16, 32) for w in (256, 512)]
    for env in ("cube-double-play", "scene-play", "puzzle-3x3-play"):
        for i, m in enumerate(methods):
            for step in range(0, 1_000_001, 100_000):
                rows.append(dict(env=env, method=m, step=step, point=i / 12 * step / 1e6,
                                 lo=0, hi=1, n_runs=3, n_tasks=1))
    curves = pd.DataFrame(rows)
    colors = plots.config_colors([(m, "fql:floq") for m in methods])
    fig = plots.plot_learning_curves(curves, colors=colors, out=tmp_path / "lc")
    assert len(fig.legends[0].get_texts()) == 12
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    legend_box = fig.legends[0].get_window_extent(r)
    for ax in fig.axes:  # the legend sits outside every panel
        assert not legend_box.overlaps(ax.get_window_extent(r))
    assert not _overlaps(fig)
    assert len(set(colors.values())) == 12


# ------------------------------------------------------------------ A12 index.html
def test_index_html_is_self_contained(fixture_results, tmp_path):
    out = tmp_path / "out"
    report.build_report(fixture_results, out, reps=30, formats=PNG)
    page = (out / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>")
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing external
    assert "<link" not in page and "<script" not in page
    figures = sorted(p.name for p in out.glob("*.png"))
    embedded = sorted(re.findall(r'data-file="([^"]+)"', page))
    assert embedded == figures
    for name in figures:  # the bytes of every figure are in the page
        data = base64.b64encode((out / name).read_bytes()).decode()
        assert data in page
    assert "<table>" in page and "<strong>" in page
    assert '<h2 id="leaderboard-per-environment">Leaderboard per environment</h2>' in page


def test_curve_steps_on_fewer_tasks_are_marked(tmp_path):
    make_run(tmp_path, "a", env="e", task="task1", critic="c", success=ramp(0.5))
    make_run(tmp_path, "b", env="e", task="task2", critic="c", success=ramp(0.5),
             steps=(0, 100, 200))
    df = stats.dedupe_runs(load.load_results(tmp_path))
    curves = stats.curve_estimates(df, reps=20)
    assert curves.set_index("step")["partial_tasks"].to_dict() == {
        0: False, 100: False, 200: False, 300: True, 400: True}
    fig = plots.plot_learning_curves(curves)
    solid, dotted = fig.axes[0].get_lines()
    assert np.isnan(solid.get_ydata()[3:]).all() and dotted.get_linestyle() == ":"
    assert list(np.isfinite(dotted.get_ydata())) == [False, False, True, True, True]
    assert "dotted: fewer of the method's tasks" in fig.legends[0].get_texts()[-1].get_text()
