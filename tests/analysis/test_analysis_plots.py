"""analysis.plots: figures render to files of the expected size with the expected series."""

import struct

import matplotlib
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from analysis import load, plots, stats
from analysis_fixtures import build_fixture


def _png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


@pytest.fixture(scope="module")
def estimates(tmp_path_factory):
    root = build_fixture(tmp_path_factory.mktemp("plots") / "results")
    df = stats.dedupe_runs(load.load_results(root))
    final = stats.final_scores(df)
    return df, final


def test_learning_curves(estimates, tmp_path):
    df, _ = estimates
    curves = stats.curve_estimates(df, reps=100, seed=0)
    rc_before = dict(matplotlib.rcParams)
    fig = plots.plot_learning_curves(curves, out=tmp_path / "lc")
    assert dict(matplotlib.rcParams) == rc_before  # style stays local
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["cube-double-play", "scene-play"]
    assert [len(ax.get_lines()) for ax in axes] == [3, 2]  # K=8 ran on cube-double only
    assert [len(_bands(ax)) for ax in axes] == [3, 2]
    line = axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [0, 100, 200, 300, 400]
    assert fig.legends and len(fig.legends[0].get_texts()) == 3
    w, h = _png_size(tmp_path / "lc.png")
    assert 800 <= w <= 1150 and 400 <= h <= 1000  # one column (3.3 in) at 300 dpi
    assert 20_000 < (tmp_path / "lc.png").stat().st_size < 2_000_000
    pdf = (tmp_path / "lc.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and 5_000 < len(pdf) < 1_000_000
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType fonts, no Type 3
    assert not list(tmp_path.glob(".*"))  # no temp files left behind


def test_scaling_with_reference_lines(estimates, tmp_path):
    _, final = estimates
    est = stats.scaling_estimates(final, "critic_flow_steps", reps=100)
    assert set(est.loc[est["reference"], "hue"]) == {"monolithic"}
    fig = plots.plot_scaling(est, "Critic flow steps K", out=tmp_path / "sc")
    cube, scene = fig.axes
    # cube-double: floq line through K=4, 8 + dashed monolithic reference
    lines = cube.get_lines()
    assert len(lines) == 2
    assert list(lines[0].get_xdata()) == [4.0, 8.0]
    assert lines[1].get_linestyle() == "--"
    assert len(scene.get_lines()) == 2 and list(scene.get_lines()[0].get_xdata()) == [4.0]
    # K=8 ran one of cube-double-play's two tasks: its point is hollow and keyed
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "floq", "monolithic (reference)", "hollow: fewer of the panel's tasks (k/n)"]
    assert any(t.get_text() == "1/2" for t in cube.texts)
    assert (tmp_path / "sc.png").stat().st_size > 20_000


def test_log_axis_for_powers_of_two(tmp_path):
    est = pd.DataFrame(dict(env="e", hue="floq", x=[1.0, 2.0, 4.0, 8.0, 16.0],
                            point=[.1, .2, .3, .4, .5], lo=[.05, .15, .25, .35, .45],
                            hi=[.15, .25, .35, .45, .55], n_runs=3, n_tasks=1,
                            reference=False))
    fig = plots.plot_scaling(est, "K")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert list(ax.get_xticks()) == [1, 2, 4, 8, 16]
    fig = plots.plot_scaling(est.assign(x=[1.0, 1.5, 2.0, 2.5, 3.0]), "width")
    assert fig.axes[0].get_xscale() == "linear"


def test_performance_profile_and_aggregates(estimates, tmp_path):
    _, final = estimates
    scores, _ = load.to_score_dict(final, methods=["floq (K=4)", "monolithic"])
    prof = stats.performance_profile(scores, reps=100)
    fig = plots.plot_performance_profile(prof, out=tmp_path / "pp")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2 and len(_bands(ax)) == 2
    assert len(ax.get_lines()[0].get_xdata()) == 101
    agg = stats.aggregate_estimates(scores, reps=100)
    fig = plots.plot_aggregates(agg, out=tmp_path / "agg")
    assert [ax.get_title() for ax in fig.axes] == ["Median", "IQM", "Mean", "Optimality gap"]
    for i, ax in enumerate(fig.axes):
        assert len(ax.patches) == 2  # one CI bar per method
        if i % 2 == 0:  # method names on the left column only
            assert [t.get_text() for t in ax.get_yticklabels()] == ["monolithic", "floq (K=4)"]
    w, _ = _png_size(tmp_path / "agg.png")
    assert 800 <= w <= 1150
    for name in ("pp.png", "pp.pdf", "agg.png", "agg.pdf"):
        assert (tmp_path / name).stat().st_size > 5_000


def test_method_colors_are_stable():
    a = plots.method_colors(["x", "y", "z"])
    assert a == plots.method_colors(["x", "y", "z"]) and len(set(a.values())) == 3
    assert len(set(plots.method_colors([str(i) for i in range(14)]).values())) == 14
