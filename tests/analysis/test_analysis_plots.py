"""analysis.plots: figures render to files of the expected size with the expected series."""

import colorsys
import struct

import matplotlib
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from analysis import colors, load, plots, stats
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


@pytest.mark.parametrize("color, ratio", [("#ffffff", 1.0), ("#000000", 21.0), ("#777777", 4.48),
                                          ("#ece133", 1.37)])
def test_contrast_ratio_is_wcag_2s(color, ratio):
    assert colors.contrast_on_white(color) == pytest.approx(ratio, abs=0.01)


def test_every_colour_that_draws_a_method_is_visible_on_white():
    """WCAG 2.1 non-text contrast, 3:1 against the white page. seaborn's colorblind palette
    had five colours below it (orange 2.6, tan 2.7, pink 1.7, yellow 1.4, sky blue 2.3) and
    the K ramps went up to HLS lightness 0.8 (about 1.4:1)."""
    drawn = []
    for n in range(1, 15):
        drawn += plots.method_colors([f"m{i}" for i in range(n)]).values()
    for families in (1, 3, 10, 12):
        for per_family in (1, 2, 5, 8):
            configs = [(f"c{f}", f"fql:c{f}") for f in range(families)]
            configs += [(f"c{f} (K={k})", f"fql:c{f}") for f in range(families)
                        for k in range(per_family)]
            drawn += plots.config_colors(configs).values()
    low = sorted({round(colors.contrast_on_white(c), 2) for c in drawn
                  if colors.contrast_on_white(c) < colors.MIN_CONTRAST})
    assert low == [] and len(drawn) > 500
    # a failing colour keeps its hue: yellow becomes olive, not another colour
    hue = lambda c: colorsys.rgb_to_hls(*colors._rgb(c))[0]  # noqa: E731
    yellow = plots.method_colors([str(i) for i in range(10)])["8"]
    assert hue(yellow) == pytest.approx(hue("#ece133"), abs=1e-6)
    assert colors.contrast_on_white(yellow) == pytest.approx(3.0, abs=0.01)
    assert plots.method_colors(["a"])["a"] == colors._rgb("#0173b2")  # visible already: as it was


def test_method_colors_are_stable():
    a = plots.method_colors(["x", "y", "z"])
    assert a == plots.method_colors(["x", "y", "z"]) and len(set(a.values())) == 3
    assert len(set(plots.method_colors([str(i) for i in range(14)]).values())) == 14


def test_point_labels_stay_inside_the_axes_clear_of_tick_labels():
    """A label below a point at 0% fell under the x axis, over its tick labels; a label
    above a point at 100% (k/n of a partial point) ran into the title; labels centred on
    the first and last x stuck out of the panel."""
    from matplotlib.text import Annotation

    ks = (1, 2, 4, 8)
    rows = [dict(env="e", hue="floq", x=k * 1e9, label=f"floq (K={k}, width=512)", reference=False,
                 point=p, lo=p, hi=p, partial_tasks=k == 8, tasks="1/2" if k == 8 else "")
            for k, p in zip(ks, (0.0, 0.0, 0.5, 1.0))]
    fig = plots.plot_scaling(pd.DataFrame(rows), "FLOPs per update")
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if isinstance(t, Annotation)]
    assert sorted(t.get_text() for t in labels) == ["1/2", "K=1, width=512", "K=2, width=512",
                                                    "K=4, width=512", "K=8, width=512"]
    box = ax.get_window_extent(r)
    ticks = [t.get_window_extent(r) for t in ax.get_xticklabels() + ax.get_yticklabels()
             if t.get_text()]
    for t in labels:
        bb = t.get_window_extent(r)
        assert (bb.x0 >= box.x0 - 0.5 and bb.x1 <= box.x1 + 0.5 and bb.y0 >= box.y0 - 0.5
                and bb.y1 <= box.y1 + 0.5), (t.get_text(), bb, box)
        assert not any(bb.overlaps(tick) for tick in ticks), t.get_text()
        point = ax.transData.transform(t.xy)  # still next to its own point
        assert abs((bb.y0 + bb.y1) / 2 - point[1]) < 30 and bb.x0 - 30 < point[0] < bb.x1 + 30
