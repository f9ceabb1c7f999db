"""Paired comparisons (`--baseline FIELD=VALUE`, by default critic=monolithic for an algorithm
x critic layout), `--filter` sets and exclusions, the protocol-split message (issue 39), and
the reports that never mislead (issue 40 item 9)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import diagnostics, load, paired, plots, report, stats, tables
from analysis_fixtures import make_run

PNG = ("png",)
# Final scores per seed (the evaluations at steps 200, 300, 400 all equal them): the fql pair is
# separated (floq 70% vs monolithic 30%), the rebrac pair is not (50% vs 50%).
SCORES = {("fql", "floq"): (0.6, 0.7, 0.8), ("fql", "monolithic"): (0.2, 0.3, 0.4),
          ("rebrac", "floq"): (0.5, 0.5, 0.5), ("rebrac", "monolithic"): (0.4, 0.5, 0.6)}


def _constant(values):
    return lambda seed, step: 0.0 if step == 0 else values[seed]


def _with_config(run_dir: Path, fields: dict, protocol: dict | None = None) -> None:
    """Give a fixture run.json the recorded configuration modern runs carry."""
    path = run_dir / "run.json"
    doc = json.loads(path.read_text())
    doc["config_fields"] = fields
    doc["seedless_config_hash"] = str(abs(hash(json.dumps(fields, sort_keys=True))))
    doc["protocol"].update(protocol or {})
    path.write_text(json.dumps(doc))


def _layout(root: Path, scores=SCORES, decoy: bool = True, extra=()) -> Path:
    """2 algorithms x 2 critics, one task, 3 seeds, as a sweep of grids writes them; with
    ``decoy`` a second rebrac + monolithic grid that differs in the actor's alpha (not a
    baseline for rebrac + floq)."""
    runs = [(a, c, v, 1.0) for (a, c), v in scores.items()]
    if decoy:
        runs.append(("rebrac", "monolithic", (0.9, 0.9, 0.9), 0.1))
    for a, c, v, alpha in list(runs) + list(extra):
        grid = f"{a}-{c}" + ("" if alpha == 1.0 else f"-alpha-{alpha}")
        d = make_run(root, grid, env="cube-single-play", task="task1", critic=c, algorithm=a,
                     success=_constant(v), tags={"grid": grid})
        fields = {"algorithm": a, "algorithm.lr": 3e-4, "algorithm.alpha_actor": alpha,
                  "critic": c, "critic.net.width": 128,
                  "critic.net.depth": 2 if c == "floq" else 4, "trainer.batch_size": 256}
        if c == "floq":
            fields["critic.flow_steps"] = 4
        _with_config(d, fields)
    return root


def _final(root: Path) -> pd.DataFrame:
    return stats.final_scores(load.load_results(root))


# --------------------------------------------------------------------------- pairing
def test_each_floq_method_is_paired_with_its_own_algorithms_monolithic(tmp_path):
    final = _final(_layout(tmp_path / "r"))
    assert paired.default_spec(final) == ("critic", "monolithic")
    p = paired.pair_methods(final, "critic", "monolithic")
    assert p.pairs == {"fql + floq": "fql + monolithic",
                       "rebrac + floq": "rebrac + monolithic (grid=rebrac-monolithic)"}
    # the decoy differs in algorithm.alpha_actor: a baseline, but nobody's
    assert "rebrac + monolithic (grid=rebrac-monolithic-alpha-0.1)" in p.baselines
    assert not p.unpaired and not p.elsewhere


def test_a_method_without_a_baseline_is_listed_not_compared_across_algorithms(tmp_path):
    root = _layout(tmp_path / "r", extra=[("iql", "floq", (0.9, 0.9, 0.9), 1.0)])
    final = _final(root)
    p = paired.pair_methods(final, "critic", "monolithic")
    assert "iql + floq" not in p.pairs and "no critic=monolithic run" in p.unpaired["iql + floq"]
    out = tmp_path / "out"
    text = open(report.build_report(root, out, reps=50, formats=PNG, published=None)).read()
    lines = [ln for ln in text.splitlines() if "No paired baseline" in ln]
    assert len(lines) == 1 and "iql + floq" in lines[0]
    poi = pd.read_csv(out / "probability_of_improvement.csv")
    assert "iql + floq" not in set(poi["x"])


def test_baseline_field_value_errors_are_one_line(tmp_path, capsys):
    root = _layout(tmp_path / "r", decoy=False)
    for spec, match in (("nosuch=1", "no scored run has a field 'nosuch'"),
                        ("critic=iqn", "no scored run has critic=iqn"),
                        ("critic=", "FIELD=VALUE")):
        rc = report.main([str(root), "--out", str(tmp_path / "rep"), "--reps", "10",
                          "--baseline", spec])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and match in err[0], (spec, err)
        assert not (tmp_path / "rep").exists()


def test_baseline_on_another_field_pairs_within_each_critic(tmp_path):
    final = _final(_layout(tmp_path / "r", decoy=False))
    p = paired.pair_methods(final, "algorithm", "fql")
    assert p.pairs == {"rebrac + floq": "fql + floq", "rebrac + monolithic": "fql + monolithic"}
    est = paired.estimates(final, p, reps=200, seed=0)
    assert set(est["context"]) == {"with the floq critic", "with the monolithic critic"}


# --------------------------------------------------------------------------- numbers
def test_delta_column_and_answer_lines_match_a_hand_computation(tmp_path):
    final = _final(_layout(tmp_path / "r"))
    p = paired.pair_methods(final, "critic", "monolithic")
    est = paired.estimates(final, p, reps=500, seed=0).set_index("algorithm")
    assert est.loc["fql", "point"] == pytest.approx(0.7 - 0.3)
    assert est.loc["rebrac", "point"] == pytest.approx(0.0, abs=1e-12)
    # the same CI as stats.difference_estimate on the two score matrices
    x = np.array([[0.6], [0.7], [0.8]])
    y = np.array([[0.2], [0.3], [0.4]])
    d, lo, hi = stats.difference_estimate(x, y, reps=500, seed=0,
                                          key="fql + floq\x00fql + monolithic")
    assert (est.loc["fql", "lo"], est.loc["fql", "hi"]) == pytest.approx((lo, hi))
    assert lo > 0 and est.loc["rebrac", "lo"] < 0 < est.loc["rebrac", "hi"]
    assert est.loc["fql", "poi"] == pytest.approx(1.0)

    t = tables.algorithm_critic_table(final, reps=500, seed=0, deltas=est.reset_index(),
                                      baseline_critic="monolithic")
    assert t.columns == ["floq", "monolithic", "Δ floq − monolithic"]
    cells = t.cells.set_index(["row", "column"])
    assert cells.loc[("fql", "Δ floq − monolithic"), "display"] == \
        f"+40.0 [+{100 * lo:.1f}, +{100 * hi:.1f}]"
    # the paired rebrac configuration is shown (marked), not '2 configurations'
    assert cells.loc[("rebrac", "monolithic"), "display"].endswith("†")
    assert cells.loc[("rebrac", "monolithic"), "point"] == pytest.approx(0.5)

    lines = paired.answer_lines(est.reset_index(), p)
    fql = next(ln for ln in lines if "Inside **FQL**" in ln)
    assert "floq − monolithic = **+40.0" in fql and "P(floq > monolithic) = 1.00" in fql
    assert "lies above 0" in fql
    rebrac = next(ln for ln in lines if "Inside **ReBRAC**" in ln)
    assert "includes 0" in rebrac


def test_bold_is_within_each_row_and_the_rule_is_stated(tmp_path):
    final = _final(_layout(tmp_path / "r", decoy=False))
    t = tables.algorithm_critic_table(final, reps=500, seed=0)
    bold = t.cells.set_index(["row", "column"])["bold"]
    # fql: floq separated from monolithic -> floq bold alone; rebrac: CIs overlap -> nothing
    assert bold[("fql", "floq")] and not bold[("fql", "monolithic")]
    assert not bold[("rebrac", "floq")] and not bold[("rebrac", "monolithic")]
    # a per-column rule would bold fql + floq AND rebrac + floq's column-mate; not here
    assert any(n.startswith("Bold, within each row") for n in t.notes)
    assert "**70.0" in t.to_markdown() and "**30.0" not in t.to_markdown()


def test_report_first_screen_answers_per_algorithm(tmp_path):
    root = _layout(tmp_path / "r")
    out = tmp_path / "out"
    text = open(report.build_report(root, out, reps=200, formats=PNG, published=None)).read()
    first = text[:text.index("### Cost")]
    assert "Within each algorithm, each critic against the monolithic critic" in first
    assert "paired by critic=monolithic" in first and "the default" in first
    assert first.index("Inside **FQL**") < first.index("Inside **ReBRAC**") \
        < first.index("Algorithm × critic")
    assert "Δ floq − monolithic" in first and "Best configuration" not in text
    poi = pd.read_csv(out / "probability_of_improvement.csv")
    assert sorted(zip(poi["x"], poi["y"])) == [
        ("fql + floq", "fql + monolithic"),
        ("rebrac + floq", "rebrac + monolithic (grid=rebrac-monolithic)")]


def test_nothing_learned_pair_is_not_compared(tmp_path):
    scores = dict(SCORES)
    scores[("rebrac", "floq")] = scores[("rebrac", "monolithic")] = (0.0, 0.0, 0.0)
    final = _final(_layout(tmp_path / "r", scores=scores, decoy=False))
    p = paired.pair_methods(final, "critic", "monolithic")
    est = paired.estimates(final, p, reps=100, seed=0)
    rebrac = next(ln for ln in paired.answer_lines(est, p) if "ReBRAC" in ln)
    assert "nothing learned" in rebrac and "=" not in rebrac.split(":", 1)[1]
    t = tables.algorithm_critic_table(final, reps=100, seed=0, deltas=est,
                                      baseline_critic="monolithic")
    cell = t.cells.set_index(["row", "column"]).loc[("rebrac", "Δ floq − monolithic")]
    assert "nothing learned" in cell["display"]


def test_a_k_sweep_inside_several_algorithms_is_one_figure_with_a_family_per_algorithm(tmp_path):
    root = tmp_path / "r"
    for a in ("fql", "rebrac"):
        make_run(root, f"{a}-mono", env="e", task="task1", critic="monolithic", algorithm=a,
                 success=_constant((0.3, 0.3, 0.3)))
        for k in (2, 4):
            make_run(root, f"{a}-k{k}", env="e", task="task1", critic="floq", algorithm=a,
                     success=_constant((0.1 * k,) * 3), tags={"critic_flow_steps": k})
    final = _final(root)
    est = stats.scaling_estimates(final, "critic_flow_steps", reps=50)
    lines = est[~est["reference"].astype(bool)]
    assert set(lines["hue"]) == {"fql + floq", "rebrac + floq"}
    refs = est[est["reference"].astype(bool)]
    assert set(refs["hue"]) == {"fql + monolithic", "rebrac + monolithic"}
    p = paired.pair_methods(final, "critic", "monolithic")
    assert p.pairs["fql + floq (K=2)"] == p.pairs["fql + floq (K=4)"] == "fql + monolithic"
    assert p.pairs["rebrac + floq (K=4)"] == "rebrac + monolithic"


# --------------------------------------------------------------------------- protocol split
def test_protocol_split_names_the_field_and_what_to_do(tmp_path):
    root = tmp_path / "r"
    _layout(root, decoy=False)
    # the fql monolithic run predates fresh evaluation starts; the others record them
    for d in root.glob("exp/*"):
        if d.name != "fql-monolithic":
            doc = json.loads((d / "run.json").read_text())
            doc["protocol"]["eval_starts"] = "fresh per (seed, step, episode)"
            doc["gin_files"] = ["gin/experiments/x.gin"]
            (d / "run.json").write_text(json.dumps(doc))
    doc = json.loads((root / "exp/fql-monolithic/run.json").read_text())
    doc["gin_files"] = ["gin/experiments/x.gin", "gin/algorithms/fql.gin"]
    (root / "exp/fql-monolithic/run.json").write_text(json.dumps(doc))
    final = _final(root)
    p = paired.pair_methods(final, "critic", "monolithic")
    assert p.elsewhere["fql + floq"][0] == "fql + monolithic"
    assert set(p.elsewhere["fql + floq"][1]) == {"eval_starts"}
    text = open(report.build_report(root, tmp_path / "out", reps=50, formats=PNG,
                                    published=None, baseline="critic=monolithic")).read()
    line = next(ln for ln in text.splitlines() if "Not compared" in ln)
    assert "fql + floq" in line and "fql + monolithic" in line and "eval_starts" in line
    assert "re-run fql + monolithic" in line
    assert "`floq run gin/experiments/x.gin gin/algorithms/fql.gin`" in line


def test_filtered_runs_in_several_protocol_groups_are_said_to_be(tmp_path):
    root = tmp_path / "r"
    make_run(root, "a", env="e", task="task1", critic="floq", algorithm="fql",
             success=_constant((0.3, 0.3, 0.3)))
    make_run(root, "b", env="e", task="task1", critic="floq", algorithm="rebrac",
             success=_constant((0.3, 0.3, 0.3)), train_steps=400, eval_interval=200,
             steps=(0, 200, 400))
    text = open(report.build_report(root, tmp_path / "out", reps=20, formats=PNG,
                                    published=None, filters=["algorithm=fql,rebrac"])).read()
    line = next(ln for ln in text.splitlines() if "selected runs fall into 2 protocol" in ln)
    assert "differ in eval_interval (" in line and "re-run group" in line
    assert "fql + floq" in line and "rebrac + floq" in line


# --------------------------------------------------------------------------- filters
def test_filter_sets_and_exclusions(tmp_path):
    root = _layout(tmp_path / "r", decoy=False,
                   extra=[("iql", "floq", (0.9, 0.9, 0.9), 1.0)])
    algos = lambda items: set(load.load_results(  # noqa: E731
        root, filters=load.parse_filters(items))["algorithm"])
    assert algos(["algorithm=fql,rebrac"]) == {"fql", "rebrac"}
    assert algos(["algorithm!=fql"]) == {"rebrac", "iql"}
    assert algos(["algorithm!=fql,iql"]) == {"rebrac"}
    df = load.load_results(root, filters=load.parse_filters(["algorithm=fql,iql",
                                                             "critic!=monolithic"]))
    assert set(zip(df["algorithm"], df["critic"])) == {("fql", "floq"), ("iql", "floq")}
    assert load.parse_filters(["critic!=iqn"]) == [("critic", "!=", ("iqn",))]


@pytest.mark.parametrize("item, match", [
    ("algorithm=fql,", "--filter takes KEY=VALUE, KEY=V1,V2"),
    ("algorithm==fql", "--filter takes"), ("!=fql", "--filter takes"),
    ("critic", "--filter takes"),
    ("nosuch!=1", "--filter nosuch!=1: no run has a column 'nosuch'")])
def test_bad_filter_sets_are_one_line(tmp_path, capsys, item, match):
    root = _layout(tmp_path / "r", decoy=False)
    rc = report.main([str(root), "--out", str(tmp_path / "rep"), "--filter", item, "--reps", "10"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and match in err[0] and not (tmp_path / "rep").exists()


def test_help_documents_the_filter_and_baseline_syntax(capsys):
    assert report.main(["--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "KEY!=V1,V2" in out and "FIELD=VALUE" in out and "critic=monolithic" in out


# --------------------------------------------------------------------------- issue 40 item 9
def test_rlpd_runs_are_labelled_rlpd(tmp_path):
    d = make_run(tmp_path / "r", "rlpd", env="e", task="task1", critic="monolithic",
                 algorithm="sac", success=_constant((0.1, 0.1, 0.1)))
    doc = json.loads((d / "run.json").read_text())
    doc["gin_files"] = ["gin/experiments/x.gin", "gin/algorithms/rlpd.gin"]
    (d / "run.json").write_text(json.dumps(doc))
    make_run(tmp_path / "r", "sac", env="e", task="task1", critic="floq", algorithm="sac",
             success=_constant((0.1, 0.1, 0.1)))
    df = load.load_results(tmp_path / "r")
    assert dict(zip(df["run_dir"], df["algorithm"])) == {"exp/rlpd": "rlpd", "exp/sac": "sac"}
    assert "rlpd + monolithic" in set(df["method"])


def test_a_final_score_that_includes_step_0_says_so(tmp_path):
    make_run(tmp_path / "r", "short", env="e", task="task1", critic="monolithic",
             success=_constant((0.1, 0.1, 0.1)), steps=(0, 200, 400), eval_interval=200)
    final = _final(tmp_path / "r")
    assert "includes the evaluation at step 0, before any training" in \
        stats.scored_steps_rule(final)
    make_run(tmp_path / "s", "long", env="e", task="task1", critic="monolithic",
             success=_constant((0.1, 0.1, 0.1)))
    assert "step 0" not in stats.scored_steps_rule(_final(tmp_path / "s"))


def test_aggregate_axes_stay_within_0_and_100():
    agg = pd.DataFrame([dict(method=m, metric=k, point=p, lo=lo, hi=hi)
                        for m, p, lo, hi in (("a", 0.01, 0.0, 0.03), ("b", 0.99, 0.97, 1.0))
                        for k in ("mean", "iqm")])
    fig = plots.plot_aggregates(agg)
    for ax in fig.axes:
        lo, hi = ax.get_xlim()  # one point of margin, never a wide empty stretch
        assert -1 <= lo < 0 and 100 < hi <= 101


def test_diagnostics_split_losses_and_draw_only_methods_with_data():
    rows = []
    for method, critic, loss in (("a + floq", "floq", 30.0), ("a + monolithic", "monolithic", 0.5)):
        for step in (100, 200):
            for metric, v in (("critic/q_mean", -5.0), (f"critic/loss ({critic})", loss),
                              ("grad/norm", 10.0)):
                rows.append(dict(env="e", method=method, metric=metric, step=step, point=v,
                                 lo=v, hi=v, n=3))
    rows.append(dict(env="e", method="ghost", metric="grad/norm", step=100, point=np.nan,
                     lo=np.nan, hi=np.nan, n=0))
    curves = pd.DataFrame(rows)
    order = diagnostics.panel_order(curves)
    assert order == ["critic/q_mean", "critic/loss (floq)", "critic/loss (monolithic)",
                     "grad/norm"]
    fig = plots.plot_diagnostics(curves, labels={m: diagnostics.panel_label(m) for m in order},
                                 metrics=order)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    # no two losses share an axis; the ghost (no finite value) is neither drawn nor listed
    for ax in axes:
        labels = {ln.get_label() for ln in ax.get_lines()} - {""}
        labels = {x for x in labels if not x.startswith("_")}
        assert "ghost" not in labels
        if "loss" in ax.get_title():
            assert len(labels) == 1, labels
    legend = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "ghost" not in legend and set(legend) == {"a + floq", "a + monolithic"}
    # no label overprints another: titles, suptitle and tick labels' boxes do not intersect
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(r) for ax in axes] + \
        [fig._suptitle.get_window_extent(r)]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b)
    assert "flow-matching" in diagnostics.panel_label("critic/loss (floq)")
    assert "TD loss" in diagnostics.panel_label("critic/loss (monolithic)")


def test_an_all_zero_protocol_group_names_no_best_configuration(tmp_path):
    root = _layout(tmp_path / "r", decoy=False)
    for c in ("monolithic", "floq"):  # a longer budget where nothing learned
        make_run(root, f"long-{c}", env="cube-single-play", task="task1", critic=c,
                 algorithm="iql", success=lambda seed, step: 0.0, train_steps=800,
                 steps=(0, 200, 400, 600, 800), eval_interval=200)
    out = tmp_path / "out"
    text = open(report.build_report(root, out, reps=50, formats=PNG, published=None)).read()
    zero = text[text.index("## Protocol group 2"):text.index("## Method and inputs")]
    assert "**Nothing learned.**" in zero
    assert "**Answer.**" not in zero and "Best configuration" not in zero
    assert "![" not in zero and not list(out.glob("p2_*.png"))
    assert "Inside **FQL**" in text[:text.index("## Protocol group 2")]


def test_a_width_swept_over_both_critics_pairs_width_with_width(tmp_path):
    root = tmp_path / "r"
    for a in ("fql", "rebrac"):
        for c in ("monolithic", "floq"):
            for w in (128, 256):
                make_run(root, f"{a}-{c}-{w}", env="e", task="task1", critic=c, algorithm=a,
                         success=_constant((0.3, 0.3, 0.3)), tags={"critic_width": w})
    p = paired.pair_methods(_final(root), "critic", "monolithic")
    assert p.pairs == {f"{a} + floq (width={w})": f"{a} + monolithic (width={w})"
                       for a in ("fql", "rebrac") for w in (128, 256)}


def test_success_axes_span_exactly_0_to_100():
    curves = pd.DataFrame(dict(env="e", method="m", step=[0, 100], point=[0.0, 1.0],
                               lo=[0.0, 0.9], hi=[0.0, 1.0], partial_tasks=False))
    fig = plots.plot_learning_curves(curves)
    assert [ax.get_ylim() for ax in fig.axes] == [(0.0, 100.0)]
    est = pd.DataFrame(dict(env="e", hue="m", x=[1.0, 2.0], point=[0.0, 1.0], lo=[0.0, 0.9],
                            hi=[0.0, 1.0], reference=False))
    fig = plots.plot_scaling(est, "K")
    assert [ax.get_ylim() for ax in fig.axes] == [(0.0, 100.0)]


def test_delta_column_in_latex_uses_tex_symbols(tmp_path):
    final = _final(_layout(tmp_path / "r", decoy=False))
    p = paired.pair_methods(final, "critic", "monolithic")
    est = paired.estimates(final, p, reps=50, seed=0)
    tex = tables.algorithm_critic_table(final, reps=50, seed=0, deltas=est,
                                        baseline_critic="monolithic").to_latex()
    assert r"$\Delta$ floq $-$ monolithic" in tex and "−" not in tex and "Δ" not in tex


def test_scored_steps_that_round_alike_are_written_in_full():
    final = pd.DataFrame(dict(scored_steps=["15000,20000,20001"] * 2, phase="online"))
    assert "15,000, 20,000, 20,001" in stats.scored_steps_rule(final)
