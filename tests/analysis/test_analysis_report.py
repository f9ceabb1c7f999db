"""analysis.report: build_report on fake run dirs, the CLI, bad input, atomic output."""

import re
import shutil

import pytest

from analysis import report
from analysis.load import AnalysisError
from analysis_fixtures import make_run, ramp

PNG = ("png",)  # most tests skip PDFs: Type 42 font embedding costs ~1 s per figure


FIXTURE_FILES = {
    "index.md", "index.html", "runs.csv",
    "leaderboard_env.md", "leaderboard_env.tex", "leaderboard_env.csv",
    *{f"leaderboard_tasks_{e}.{x}" for e in ("cube-double-play", "scene-play")
      for x in ("md", "tex", "csv")},
    *{f"{s}.{x}" for s in ("aggregates", "performance_profile", "learning_curves",
                           "learning_curves_wallclock",
                           "scaling_critic_flow_steps", "scaling_params_critic",
                           "probability_of_improvement")
      for x in ("csv", "png", "pdf")},
}


def _files(d):
    return {p.name for p in d.iterdir() if not p.name.startswith(".")}


def test_build_report_on_fixture(fixture_results, tmp_path):
    out = tmp_path / "report"
    index = report.build_report(fixture_results, out, reps=100)
    assert index == str(out / "index.md")
    assert _files(out) == FIXTURE_FILES
    text = (out / "index.md").read_text()
    for link in re.findall(r"\]\(([^)#][^)]*)\)", text):  # files; #anchors are headings
        assert (out / link).exists(), link
    assert "9 run directories" in text and "27 scored" in text
    assert "| floq (K=4) | **31.2 ± " in text
    assert "K = critic_flow_steps" in text
    # aggregates use the 4 tasks shared by K=4 and monolithic; K=8 (1 task) is left out
    assert "Over 4 task(s)" in text and "left out because they miss" in text
    assert not list(tmp_path.glob(".report.staging-*"))


def test_no_scaling_axis_is_said(tmp_path):
    for critic in ("monolithic", "floq"):
        make_run(tmp_path / "res", critic, env="e", task="task1", critic=critic,
                 success=ramp(0.5))
    index = report.build_report(tmp_path / "res", tmp_path / "out", reps=50, formats=PNG)
    text = open(index).read()
    assert "no scaling plot was made" in text
    assert not list((tmp_path / "out").glob("scaling_*"))


def test_mixed_protocols_get_separate_sections(tmp_path):
    res = tmp_path / "res"
    make_run(res, "a", env="e", task="task1", critic="c", success=ramp(0.5))
    make_run(res, "b", env="e", task="task1", critic="d", success=ramp(0.5),
             success_timing="pre")
    index = report.build_report(res, tmp_path / "out", reps=50, formats=PNG)
    text = open(index).read()
    assert "2 different protocols" in text
    assert "## Protocol group 1" in text and "## Protocol group 2" in text
    assert {"p1_leaderboard_env.md", "p2_leaderboard_env.md"} <= _files(tmp_path / "out")


def test_max_protocol_is_labelled_optimistic(fixture_results, tmp_path):
    index = report.build_report(fixture_results, tmp_path / "out", protocol="max", reps=50,
                                formats=PNG)
    text = open(index).read()
    assert "Optimistic protocol" in text and "biased upward" in text


def test_stale_files_of_an_earlier_report_are_removed(fixture_results, tmp_path):
    out = tmp_path / "out"
    report.build_report(fixture_results, out, reps=50, formats=PNG)
    (out / "mine.txt").write_text("not written by the report")
    shutil.rmtree(fixture_results / "exp" / "floq8_cube-double-play_task2")
    for d in list((fixture_results / "exp").iterdir()):
        if d.name.startswith("floq4"):
            shutil.rmtree(d)
    report.build_report(fixture_results, out, reps=50, formats=PNG)
    assert not list(out.glob("scaling_*"))
    assert (out / "mine.txt").exists()


def test_partial_runs(tmp_path):
    res = tmp_path / "res"
    make_run(res, "a", env="e", task="task1", critic="c", success=ramp(0.5),
             train_steps=1000, status="running")
    with pytest.raises(AnalysisError, match="reached train_steps.*--include-partial"):
        report.build_report(res, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    index = report.build_report(res, tmp_path / "out", include_partial=True, reps=20,
                                formats=PNG)
    assert "3 run seeds with evaluations, 3 scored." in open(index).read()


# ------------------------------------------------------------------ CLI and bad input
def test_cli_writes_report(fixture_results, tmp_path, capsys):
    code = report.main([str(fixture_results), "--out", str(tmp_path / "r"),
                        "--protocol", "last_k:2", "--seed", "3", "--reps", "50",
                        "--formats", "png"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "r" / "index.md")
    text = (tmp_path / "r" / "index.md").read_text()
    assert "last_k:2" in text and "seed 3" in text
    assert not list((tmp_path / "r").glob("*.pdf"))


def _bad_inputs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    no_evals = tmp_path / "no_evals"
    run = make_run(no_evals, "r", env="e", task="task1", critic="c", success=ramp(0.5))
    text = (run / "eval.csv").read_text()
    (run / "eval.csv").write_text(text.splitlines()[0] + "\n")
    non_numeric = tmp_path / "non_numeric"
    run = make_run(non_numeric, "r", env="e", task="task1", critic="c", success=ramp(0.5))
    lines = (run / "eval.csv").read_text().splitlines()
    lines[2] = lines[2].replace(",0.", ",oops", 1)
    (run / "eval.csv").write_text("\n".join(lines) + "\n")
    return {
        "missing": ([str(tmp_path / "nope")], "does not exist"),
        "empty": ([str(empty)], "no run directories"),
        "no_evals": ([str(no_evals)], "no usable evaluations.*no evaluations yet"),
        "non_numeric": ([str(non_numeric)], "no usable evaluations.*non-numeric 'success'"),
        "protocol": ([str(non_numeric), "--protocol", "best"], "unknown protocol"),
        "seed": ([str(non_numeric), "--seed", "x"], "invalid int value"),
    }


@pytest.mark.parametrize("case", ["missing", "empty", "no_evals", "non_numeric", "protocol",
                                  "seed"])
def test_cli_bad_input(tmp_path, capsys, case):
    args, match = _bad_inputs(tmp_path)[case]
    out = tmp_path / "report"
    code = report.main([*args, "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.startswith("floq analyze: error:")]
    assert len(lines) == 1 and re.search(match, lines[0]), err
    assert not out.exists()
    assert not list(tmp_path.glob(".report.staging-*"))


def test_failed_rebuild_leaves_old_report_intact(fixture_results, tmp_path, monkeypatch):
    out = tmp_path / "out"
    report.build_report(fixture_results, out, reps=50, formats=PNG)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report.plots, "plot_learning_curves", boom)
    with pytest.raises(RuntimeError):
        report.build_report(fixture_results, out, reps=50, seed=1, formats=PNG)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not list(tmp_path.glob(".out.staging-*"))


def test_analyze_says_which_figure_it_draws(tmp_path, capsys):
    """`floq analyze` was silent while it drew its figures (minutes for a large study): now
    one line on stderr per figure, numbered against the total, after one for the estimates;
    stdout still opens with the index's path, then the headline and the leaderboard."""
    from floq.cli import main

    for critic in ("monolithic", "floq"):
        make_run(tmp_path / "res", critic, env="e", task="task1", critic=critic, success=ramp(0.5))
    out = tmp_path / "rep"
    assert main(["analyze", str(tmp_path / "res"), "--out", str(out), "--reps", "20",
                 "--formats", "png"]) == 0
    captured = capsys.readouterr()
    progress = [ln for ln in captured.err.splitlines() if ln.startswith("analysing")]
    assert progress == [
        "analysing 2 methods: estimates and tables",
        "analysing 2 methods: figure 1/5 (aggregates)",
        "analysing 2 methods: figure 2/5 (probability of improvement)",
        "analysing 2 methods: figure 3/5 (performance profile)",
        "analysing 2 methods: figure 4/5 (learning curves)",
        "analysing 2 methods: figure 5/5 (learning curves vs wall-clock)",
    ]
    assert len(list(out.glob("*.png"))) == 5
    lines = captured.out.splitlines()
    assert lines[0] == str(out / "index.md") and lines[1].startswith("Answer.")
    assert "leaderboard (leaderboard_env.md):" in lines


def test_figure_phases_name_the_axis_and_the_protocol_group():
    assert (report._figure_phase("p2_scaling_critic_width")
            == "scaling vs critic width (units), protocol group 2")
    assert report._figure_phase("scaling_flops_per_update") == "scaling vs flops per update"
    assert report._figure_phase("critic_diagnostics") == "critic diagnostics"
