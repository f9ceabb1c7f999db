"""The algorithm as a method dimension: labels 'algorithm + critic', published rows matched by
algorithm name, and the algorithm x critic table (synthetic run folders, in-process)."""

import pandas as pd
import pytest

from analysis import load, published, report, stats, tables
from analysis_fixtures import make_run, ramp

FINALS = {  # (algorithm, critic) -> final success on each task
    ("fql", "monolithic"): 0.30, ("fql", "floq"): 0.45,
    ("rebrac", "monolithic"): 0.50, ("rebrac", "floq"): 0.60,
    ("iql", "monolithic"): 0.10,  # no iql + floq runs: an empty cell
}
PUB_ROWS = pd.DataFrame([
    dict(source="FQL paper (arXiv 2502.02538)",
         table="FQL Table 2 (offline, 5-task avg, 8 seeds, 1M steps, avg of evals at "
               "800K/900K/1M)",
         env="cube-double-play", method=m, metric="success_rate_pct_5task_avg", value=v,
         plusminus="2.0", notes="std over seeds")
    for m, v in (("FQL", "29"), ("ReBRAC", "12"), ("IQL", "6"), ("IFQL", "14"))])


def _results(root, finals=FINALS):
    for (algo, critic), final in finals.items():
        for task in ("task1", "task2"):
            make_run(root, f"{algo}-{critic}-{task}", env="cube-double-play", task=task,
                     critic=critic, algorithm=algo, success=ramp(final))
    return root


@pytest.fixture
def final(tmp_path):
    return stats.final_scores(load.load_results(_results(tmp_path)))


def test_methods_are_algorithm_plus_critic_when_several_algorithms_ran(final):
    assert set(final["method"]) == {f"{a} + {c}" for a, c in FINALS}


def test_one_algorithm_keeps_the_critic_labels(tmp_path):
    df = load.load_results(_results(tmp_path, {("fql", "monolithic"): 0.3, ("fql", "floq"): 0.4}))
    assert set(df["method"]) == {"monolithic", "floq"}


def test_leaderboard_shows_the_published_rows_of_our_algorithms(final):
    pub = published.convert_frame(PUB_ROWS)
    assert tables.published_methods_for(final)[-3:] == ("floq-best", "IQL", "ReBRAC")
    lb = tables.leaderboard(final, published=pub, reps=100, seed=0)
    shown = [r for r in lb.rows if "published" in r]
    assert shown == ["FQL (published, FQL Tab. 2)", "IQL (published, FQL Tab. 2)",
                     "ReBRAC (published, FQL Tab. 2)"]  # no IFQL: no ifql runs
    cell = lb.cells[(lb.cells["row"] == "ReBRAC (published, FQL Tab. 2)")].iloc[0]
    assert cell["point"] == pytest.approx(0.12) and cell["kind"] == "published"
    # an explicit list still wins
    lb = tables.leaderboard(final, published=pub, published_methods=("FQL",), reps=100, seed=0)
    assert [r for r in lb.rows if "published" in r] == ["FQL (published, FQL Tab. 2)"]


def test_published_file_holds_the_fql_papers_baselines():
    pub = published.load_published()
    offline = pub[(pub["setting"] == "offline") & (pub["task"] == "5-task avg")
                  & (pub["ref"] == "FQL Tab. 2")]
    for method in ("IQL", "ReBRAC", "IFQL"):
        assert len(offline[offline["method"] == method]) == 10, method  # 10 environments
    o2o = pub[pub["setting"].str.startswith("o2o")]
    assert {"IQL", "ReBRAC", "IFQL", "RLPD"} <= set(o2o["method"])


def test_algorithm_critic_table(final):
    t = tables.algorithm_critic_table(final, reps=100, seed=0)
    assert t.rows == ["fql", "iql", "rebrac"] and t.columns == ["floq", "monolithic"]
    cells = t.cells.set_index(["row", "column"])
    assert ("iql", "floq") not in cells.index
    assert cells.loc[("rebrac", "floq"), "point"] > cells.loc[("fql", "floq"), "point"]
    # one environment: a cell is that pair's leaderboard cell
    lb = tables.leaderboard(final, reps=100, seed=0).cells.set_index(["row", "column"])
    assert lb.loc[("rebrac + monolithic", "cube-double-play"), "point"] == pytest.approx(
        cells.loc[("rebrac", "monolithic"), "point"])
    md = t.to_markdown()
    assert "| Algorithm | floq | monolithic |" in md and "| iql | — |" in md
    assert "\\begin{tabular}{lrr}" in t.to_latex()


def test_no_algorithm_critic_table_unless_both_vary(tmp_path):
    one_algo = stats.final_scores(load.load_results(
        _results(tmp_path / "a", {("fql", "monolithic"): 0.3, ("fql", "floq"): 0.4})))
    one_critic = stats.final_scores(load.load_results(
        _results(tmp_path / "b", {("fql", "floq"): 0.3, ("rebrac", "floq"): 0.4})))
    assert tables.algorithm_critic_table(one_algo) is None
    assert tables.algorithm_critic_table(one_critic) is None


def test_a_pair_with_several_configurations_has_no_single_number(tmp_path):
    make_run(tmp_path, "fql-floq-k4", env="scene-play", task="task1", critic="floq",
             success=ramp(0.4), tags={"critic_flow_steps": 4})
    make_run(tmp_path, "fql-floq-k8", env="scene-play", task="task1", critic="floq",
             success=ramp(0.5), tags={"critic_flow_steps": 8})
    make_run(tmp_path, "rebrac-mono", env="scene-play", task="task1", critic="monolithic",
             algorithm="rebrac", success=ramp(0.3))
    make_run(tmp_path, "fql-mono", env="scene-play", task="task1", critic="monolithic",
             success=ramp(0.2))
    final = stats.final_scores(load.load_results(tmp_path))
    t = tables.algorithm_critic_table(final, reps=100, seed=0)
    cells = t.cells.set_index(["row", "column"])
    assert cells.loc[("fql", "floq"), "display"] == "2 configurations"
    assert any("configurations" in n for n in t.notes)


def test_report_has_the_algorithm_critic_table(tmp_path):
    out = tmp_path / "report"
    report.build_report(_results(tmp_path / "runs"), out, reps=50, formats=("png",),
                        published=published.convert_frame(PUB_ROWS))
    text = (out / "index.md").read_text()
    assert "Algorithm × critic" in text and (out / "algorithm_critic.md").exists()
    assert "rebrac + floq" in text and "ReBRAC (published, FQL Tab. 2)" in text
    # the first screen: the answer, then the algorithm x critic table, before cost and leaderboards
    assert (text.index("**Answer.**") < text.index("## Algorithm × critic")
            < text.index("Cost") < text.index("Leaderboard per environment"))
    assert text.count("## Algorithm × critic") == 1


def test_a_one_algorithm_axis_does_not_displace_the_algorithm_critic_table(tmp_path):
    """A sensitivity check of one algorithm (a numeric tag varying for rebrac + monolithic only)
    keeps its figure, but among the other scaling figures, not on the first screen."""
    root = _results(tmp_path / "runs", {("iql", "monolithic"): 0.2, ("iql", "floq"): 0.4})
    for alpha, final in ((1.0, 0.1), (0.1, 0.3)):
        make_run(root, f"rebrac-mono-{alpha}", env="cube-double-play", task="task1",
                 critic="monolithic", algorithm="rebrac", success=ramp(final),
                 tags={"rebrac_alpha_actor": alpha})
        make_run(root, f"rebrac-mono-{alpha}-t2", env="cube-double-play", task="task2",
                 critic="monolithic", algorithm="rebrac", success=ramp(final),
                 tags={"rebrac_alpha_actor": alpha})
    out = tmp_path / "report"
    report.build_report(root, out, reps=50, formats=("png",), published=None)
    text = (out / "index.md").read_text()
    assert (out / "scaling_rebrac_alpha_actor.png").exists()
    assert (text.index("## Algorithm × critic") < text.index("Leaderboard per environment")
            < text.index("Scaling: other axes") < text.index("scaling_rebrac_alpha_actor.png"))
    # the aggregates' subsections sit one level below their section's heading
    assert "\n### Probability of improvement" in text and "\n## Probability" not in text
