"""Never a wrong number silently: seeds, duplicates, manifests, status, phases, multi-task
run directories."""

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from analysis import load, report, stats, tables
from analysis_fixtures import eval_row, make_run, ramp, write_eval, write_manifest

PNG = ("png",)


def _messages(rec) -> str:
    return "\n".join(str(w.message) for w in rec)


def _final(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return stats.final_scores(load.load_results(root), **kw)


# ------------------------------------------------------------------ B1 every seed is used
def test_missing_seed_is_named_and_other_tasks_keep_all_seeds(tmp_path):
    make_run(tmp_path, "a", env="e", task="task1", critic="c", success=ramp(0.5),
             seeds=(0, 1, 2))
    make_run(tmp_path, "b", env="e", task="task2", critic="c", success=ramp(0.8),
             seeds=(0, 1))
    final = _final(tmp_path)
    lb = tables.leaderboard(final, by="task", env="e", reps=50)
    cells = lb.cells.set_index(["row", "column"])
    # task1 mean over its three seeds: 0.375 + 0.02 * mean(0, 1, 2)
    assert cells.loc[("c", "task1"), "point"] == pytest.approx(0.395)
    assert cells.loc[("c", "task1"), "display"].endswith("(n=3)")
    assert cells.loc[("c", "task2"), "point"] == pytest.approx(0.6 + 0.01)
    assert cells.loc[("c", "task2"), "display"].endswith("(n=2)")
    env = tables.leaderboard(final, reps=50).cells.set_index(["row", "column"])
    assert env.loc[("c", "e"), "point"] == pytest.approx((0.395 + 0.61) / 2)
    assert "(n=2–3)" in env.loc[("c", "e"), "display"]
    with pytest.warns(UserWarning, match=r"'c' on e/task2 lacks seed\(s\) 2"):
        report.build_report(tmp_path, tmp_path / "out", reps=20, formats=PNG)


def test_manifest_seed_without_rows_is_named(tmp_path):
    run = make_run(tmp_path, "r", env="e", task="task1", critic="c", success=ramp(0.5),
                   seeds=(0, 1))
    doc = json.loads((run / "run.json").read_text())
    doc["seeds"] = [0, 1, 2]
    (run / "run.json").write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match=r"lists seed\(s\) 0, 1, 2 but eval.csv has no "
                                         r"rows for seed\(s\) 2"):
        load.load_results(tmp_path)


def test_ragged_bootstrap_uses_each_tasks_own_seeds():
    mat = np.array([[0.1, 0.5], [0.3, np.nan], [0.5, np.nan]])
    assert stats.aggregate_mean(mat) == pytest.approx((0.3 + 0.5) / 2)
    assert stats.aggregate_iqm(mat) == pytest.approx(np.mean([0.3, 0.5]))  # 4 values, cut 1
    rng = np.random.default_rng(0)
    for r in stats.bootstrap_resamples(mat, 50, rng):
        assert np.isnan(r[:, 1:, 1]).all() and (r[:, 0, 1] == 0.5).all()
        assert np.isin(r[:, :, 0], [0.1, 0.3, 0.5]).all()
    point, lo, hi = stats.bootstrap_estimate(mat, "mean", 200, 0.95, 0, "k")
    assert lo <= point <= hi and np.isfinite([lo, hi]).all()


# ------------------------------------------------------------------ B3 duplicate rows
def test_duplicate_rows_resolve_to_the_last_written(tmp_path):
    rows = [eval_row(seed=0, step=s, success=v) for s, v in
            ((0, 0.0), (100, 0.1), (200, 0.2), (300, 0.3), (400, 0.9))]
    # a resumed run re-evaluated steps 300 and 400 and appended its rows
    rows += [eval_row(seed=0, step=300, success=0.3), eval_row(seed=0, step=400, success=0.4)]
    run = write_eval(tmp_path / "exp" / "r", rows)
    write_manifest(run)
    with pytest.warns(UserWarning, match=r"2 \(task, seed, step\) evaluation\(s\) appear more "
                                         r"than once .*1 disagree.*step 400: success 0.9 "
                                         r"then 0.4; keeping the last-written"):
        df = load.load_results(tmp_path)
    assert len(df) == 5
    final = stats.final_scores(df, "fql")
    assert final["score"].iloc[0] == pytest.approx((0.2 + 0.3 + 0.4) / 3)


def test_identical_duplicates_are_silent(tmp_path):
    rows = [eval_row(step=s, success=0.1 * i) for i, s in enumerate((0, 100, 200, 300, 400))]
    run = write_eval(tmp_path / "exp" / "r", rows + rows[-2:])
    write_manifest(run)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load.load_results(tmp_path)) == 5


# ------------------------------------------------------------------ B4, B6 manifests
def test_missing_run_json_is_named_and_completeness_read_from_steps(tmp_path):
    make_run(tmp_path, "short", env="e", task="task1", critic="c", success=ramp(0.5),
             manifest=False, train_steps=1000)
    make_run(tmp_path, "full", env="e", task="task1", critic="d", success=ramp(0.5),
             manifest=False, train_steps=400)
    with pytest.warns(UserWarning, match=r"exp/short: no run.json; .*completeness is judged "
                                         r"from eval.csv's last step vs train_steps"):
        df = load.load_results(tmp_path)
    final = stats.final_scores(df).set_index("run_id")
    assert final.loc["exp/short", "exclude_kind"].unique().tolist() == ["partial"]
    assert "step 400 of 1000" in final.loc["exp/short", "exclude_reason"].iloc[0]
    assert final.loc["exp/full", "complete"].all()


def test_unreadable_run_json_does_not_relabel_healthy_runs(tmp_path):
    for name in ("a", "b", "broken"):
        run = make_run(tmp_path, name, env="e", task="task1", critic="floq",
                       success=ramp(0.5), tags={"critic_width": 256})
        lines = (run / "eval.csv").read_text().splitlines()  # tag only in run.json
        (run / "eval.csv").write_text("\n".join(ln.rsplit(",", 1)[0] for ln in lines) + "\n")
        doc = json.loads((run / "run.json").read_text())
        doc["protocol"]["actor_lr"] = 3e-4  # a manifest-only field
        (run / "run.json").write_text(json.dumps(doc))
    (tmp_path / "exp" / "broken" / "run.json").write_text("{oops")
    with pytest.warns(UserWarning, match="unreadable JSON"):
        df = load.load_results(tmp_path)
    assert "actor_lr" not in load.tag_columns(df) and "protocol_actor_lr" in df.columns
    assert df["method"].unique().tolist() == ["floq"]


# ------------------------------------------------------------------ B5 rule in steps
def test_rule_in_steps_and_spacing_flag(tmp_path):
    make_run(tmp_path, "ok", env="e", task="task1", critic="c", success=ramp(0.5))
    make_run(tmp_path, "odd", env="e", task="task1", critic="d", success=ramp(0.5),
             eval_interval=50)
    with pytest.warns(UserWarning, match=r"exp/odd: evaluations are 100 \(run.json "
                                         r"eval_interval 50\) apart") as rec:
        final = stats.final_scores(load.load_results(tmp_path))
    assert "exp/ok" not in _messages(rec)
    assert final.set_index("run_id")["spacing_ok"].to_dict() == {"exp/odd": False,
                                                                 "exp/ok": True}
    assert stats.scored_steps_rule(final) == ("mean of the evaluations at steps 200, 300, "
                                              "400 of the offline phase (all 6 run seeds)")
    big = final.assign(scored_steps="800000,900000,1000000")
    assert "at steps 800k, 900k, 1M" in stats.scored_steps_rule(big)
    mixed = pd.concat([final.iloc[:3], big.iloc[3:]])
    assert "(3 run seeds); at" in stats.scored_steps_rule(mixed)
    lb = tables.leaderboard(final[final["run_id"] == "exp/ok"], reps=20)
    assert "here mean of the evaluations at steps 200, 300, 400" in lb.caption
    # Issue 25 item 9: the budget and rule lead the caption, beside the reference budgets.
    assert lb.caption.startswith("Budget: 400 gradient steps per run, evaluation every 100 steps over "
                                 "50 episodes; score: mean of the evaluations at steps 200, 300, 400")
    assert "released floq code's default budget is 2M gradient steps with evaluation every 20k" in lb.caption


# ------------------------------------------------------------------ B7 NaN success
def test_nan_success_drops_that_row_only(tmp_path):
    run = make_run(tmp_path, "r", env="e", task="task1", critic="c", success=ramp(0.5))
    lines = (run / "eval.csv").read_text().splitlines()
    parts = lines[3].split(",")
    parts[9] = ""  # success of seed 0, step 200
    lines[3] = ",".join(parts)
    parts = lines[8].split(",")
    parts[9] = "nan"  # seed 1, step 200
    lines[8] = ",".join(parts)
    (run / "eval.csv").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"dropping 2 row\(s\) with an empty or NaN "
                                         r"'success' \(data row\(s\) 3, 8\)"):
        df = load.load_results(tmp_path)
    assert len(df) == 13 and set(df["seed"]) == {0, 1, 2}
    assert 200 not in set(df.loc[df["seed"] == 0, "step"])


# ------------------------------------------------------------------ B9 status, divergence
def test_diverged_and_partial_runs_are_excluded_and_listed(tmp_path):
    res = tmp_path / "res"
    make_run(res, "good", env="e", task="task1", critic="c", success=ramp(0.5))
    make_run(res, "div", env="e", task="task1", critic="d", success=lambda s, t: 0.0,
             status="diverged")
    make_run(res, "pre", env="e", task="task1", critic="p", success=ramp(0.5),
             status="preempted")
    nan_run = make_run(res, "nanloss", env="e", task="task1", critic="n", success=ramp(0.5))
    (nan_run / "train.csv").write_text(
        "experiment,run,seed,step,critic/loss,actor/q_loss,grad/norm\n"
        "exp,nanloss,0,100,0.5,,1.0\n"       # empty cell: not logged yet, not a failure
        "exp,nanloss,1,100,nan,0.1,1.0\n"    # seed 1 diverged
        "exp,nanloss,2,100,0.4,0.1,inf\n")   # grad/norm is not a loss
    final = _final(res)
    by = final.set_index(["run_id", "seed"])
    assert (by.loc["exp/div", "exclude_kind"] == "diverged").all()
    assert by.loc[("exp/nanloss", 1), "exclude_kind"] == "diverged"
    assert "non-finite critic/loss (nan) at step 100" in by.loc[("exp/nanloss", 1),
                                                                "exclude_reason"]
    assert by.loc[("exp/nanloss", 0), "complete"] and by.loc[("exp/nanloss", 2), "complete"]
    assert (by.loc["exp/pre", "exclude_kind"] == "partial").all()
    with pytest.warns(UserWarning, match="diverged"):
        index = report.build_report(res, tmp_path / "out", reps=20, formats=PNG)
    text = open(index).read()
    section = text.split("## Excluded run seeds")[1].split("\n## ")[0]
    assert "| exp/div | 0, 1, 2 | diverged |" in section
    assert "| exp/nanloss | 1 | diverged | diverged: non-finite critic/loss" in section
    assert "| exp/pre | 0, 1, 2 | partial | preempted" in section
    lb = (tmp_path / "out" / "leaderboard_env.md").read_text()
    assert "| d |" not in lb and "| p |" not in lb  # diverged never scored as 0%
    assert re.search(r"\| n \| (\*\*)?[\d.]+ ± [\d.]+ \(n=2\)", lb)
    excluded = pd.read_csv(tmp_path / "out" / "excluded_runs.csv")
    assert set(excluded["run"]) == {"exp/div", "exp/nanloss", "exp/pre"}
    # partial runs are scored when asked for; diverged ones never
    report.build_report(res, tmp_path / "out2", reps=20, formats=PNG, include_partial=True)
    lb = (tmp_path / "out2" / "leaderboard_env.md").read_text()
    assert "| p |" in lb and "| d |" not in lb


@pytest.mark.parametrize("status,kind", [("done", ""), ("running", "partial"),
                                         ("failed", "partial"), ("diverged", "diverged"),
                                         ("preempted", "partial")])
def test_status_decides(tmp_path, status, kind):
    make_run(tmp_path, "r", env="e", task="task1", critic="c", success=ramp(0.5),
             status=status)
    final = _final(tmp_path)
    assert set(final["exclude_kind"]) == {kind}
    assert set(final["complete"]) == {kind == ""}


def test_status_object_with_step_and_reason(tmp_path):
    run = make_run(tmp_path, "r", env="e", task="task1", critic="c", success=ramp(0.5))
    doc = json.loads((run / "run.json").read_text())
    doc["status"] = {"state": "diverged", "step": 300, "reason": "non-finite critic/loss"}
    (run / "run.json").write_text(json.dumps(doc))
    final = _final(tmp_path)
    assert final["exclude_reason"].iloc[0] == ("diverged at step 300 (run.json status: "
                                               "non-finite critic/loss)")


# ------------------------------------------------------------------ C phases
def _o2o_run(root, name="o2o", critic="c", offline=0.3, online=0.7):
    rows = []
    for seed in (0, 1, 2):
        for step in (0, 100, 200, 300, 400):
            rows.append(eval_row(critic=critic, run=name, seed=seed, step=step,
                                 success=round(offline * step / 400 + 0.01 * seed, 4),
                                 phase="offline", env_steps=0, task_id=1))
        for step in (500, 600, 700, 800):
            rows.append(eval_row(critic=critic, run=name, seed=seed, step=step,
                                 success=round(online * step / 800 + 0.01 * seed, 4),
                                 phase="online", env_steps=step - 400, task_id=1))
    run = write_eval(root / "exp" / name, rows)
    write_manifest(run, critic=critic, seeds=[0, 1, 2],
                   protocol={"ogbench_version": "1.2.2", "success_timing": "post",
                             "train_steps": 400, "eval_interval": 100, "eval_episodes": 50})
    return run


def test_phase_scoring(tmp_path):
    _o2o_run(tmp_path)
    df = load.load_results(tmp_path)
    last = stats.final_scores(df)
    assert set(last["phase"]) == {"online"}
    assert set(last["scored_steps"]) == {"600,700,800"}
    assert set(last["scored_env_steps"]) == {"200,300,400"}
    assert last["score"].iloc[0] == pytest.approx(0.7 * (6 + 7 + 8) / 24)
    off = stats.final_scores(df, phase="offline")
    assert set(off["scored_steps"]) == {"200,300,400"}
    assert off["score"].iloc[0] == pytest.approx(0.3 * 9 / 12)
    bounds = stats.phase_boundaries(df)
    assert bounds.to_dict("records") == [{"env": "e", "step": 400}]


def test_old_csvs_without_phase_work_beside_new_ones(tmp_path):
    make_run(tmp_path, "old", env="e", task="task1", critic="m", success=ramp(0.5))
    _o2o_run(tmp_path)
    df = load.load_results(tmp_path)
    assert set(df.loc[df["run_dir"] == "exp/old", "phase"]) == {"offline"}
    assert (df.loc[df["run_dir"] == "exp/old", "env_steps"] == 0).all()
    final = stats.final_scores(df, phase="online")
    assert set(final.loc[final["run_id"] == "exp/old", "exclude_kind"]) == {"no_phase"}
    # by default each run is scored at its last phase; the two phases never share a table
    groups = tables.split_by_protocol(stats.final_scores(df))
    assert sorted(g[0]["phase"] for g in groups) == ["offline", "online"]


def test_cli_phase_and_learning_curve_boundary(tmp_path, monkeypatch):
    _o2o_run(tmp_path / "res")
    seen = {}
    orig = report.plots.plot_learning_curves

    def spy(curves, *a, **k):
        fig = orig(curves, *a, **k)
        if k.get("x", "step") == "step":  # not the wall-clock variant (no phase line)
            seen["lines"] = [ln for ax in fig.axes for ln in ax.get_lines()
                             if ln.get_label() == "offline → online"]
        return fig

    monkeypatch.setattr(report.plots, "plot_learning_curves", spy)
    code = report.main([str(tmp_path / "res"), "--out", str(tmp_path / "out"), "--phase",
                        "offline", "--reps", "20", "--formats", "png"])
    assert code == 0
    assert [ln.get_xdata()[0] for ln in seen["lines"]] == [400]
    text = (tmp_path / "out" / "index.md").read_text()
    assert "Phase scored: offline (--phase offline)" in text
    assert "at steps 200, 300, 400 of the offline phase" in text
    assert report.main([str(tmp_path / "res"), "--out", str(tmp_path / "o2"), "--phase",
                        "both"]) == 2


# ------------------------------------------------------------------ C multi-task run dirs
def test_multi_task_run_dir_equals_one_dir_per_task(tmp_path):
    def rows(task, seed_offset):
        return [eval_row(task=task, run="multi", seed=s, step=t, task_id=int(task[-1]),
                         success=round(min(1, (0.3 + 0.2 * seed_offset) * t / 400 + 0.02 * s),
                                       4))
                for s in (0, 1, 2) for t in (0, 100, 200, 300, 400)]

    together = tmp_path / "together"
    run = write_eval(together / "exp" / "multi", rows("task1", 0) + rows("task2", 1))
    write_manifest(run, seeds=[0, 1, 2], task="task1")
    apart = tmp_path / "apart"
    for i, task in enumerate(("task1", "task2")):
        run = write_eval(apart / "exp" / f"multi_{task}", rows(task, i))
        write_manifest(run, seeds=[0, 1, 2], task=task)
    f_together = _final(together)
    f_apart = _final(apart)
    assert sorted(f_together["run_id"].unique()) == ["exp/multi#task1", "exp/multi#task2"]
    assert len(f_together) == len(f_apart) == 6
    for by in ("task", "env"):
        a = tables.leaderboard(f_together, by=by, env="e", reps=100)
        b = tables.leaderboard(f_apart, by=by, env="e", reps=100)
        assert a.to_markdown() == b.to_markdown()
    cells = tables.leaderboard(f_together, by="task", env="e", reps=50).cells
    pts = cells.set_index("column")["point"]
    assert pts["task1"] == pytest.approx(0.225 + 0.02) and pts["task2"] == pytest.approx(
        0.375 + 0.02)


def test_a_diverged_copy_never_shadows_a_finished_run(tmp_path):
    """...and is not dropped as a duplicate either: it is never scored, and it is listed."""
    make_run(tmp_path, "good", env="e", task="task1", critic="c", success=ramp(0.5))
    make_run(tmp_path, "zz_diverged_copy", env="e", task="task1", critic="c",
             success=lambda s, t: 0.0, status="diverged")  # sorts last, same last step
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "several run dirs" warning: nothing is dropped
        df = stats.dedupe_runs(load.load_results(tmp_path))
    assert set(df["run_dir"]) == {"exp/good", "exp/zz_diverged_copy"}
    final = stats.final_scores(df)
    scored = final[final["complete"]]
    assert set(scored["run_dir"]) == {"exp/good"} and scored["score"].mean() == pytest.approx(0.395)
    div = final[final["run_dir"] == "exp/zz_diverged_copy"]
    assert len(div) == 3 and (div["exclude_kind"] == "diverged").all()


# ------------------------------------------------------------------ issue 25 item 8
def test_tables_never_mix_evaluation_start_rules(tmp_path):
    """Runs from before fresh evaluation starts (no run.json eval_starts: episode e of seed s
    reset from the same state at every evaluation) and runs after are two protocols."""
    import json

    make_run(tmp_path, "old", env="e", task="task1", critic="c", success=ramp(0.5))
    new = make_run(tmp_path, "new", env="e", task="task1", critic="d", success=ramp(0.5))
    doc = json.loads((new / "run.json").read_text())
    doc["protocol"]["eval_starts"] = "fresh per (seed, step, episode)"
    (new / "run.json").write_text(json.dumps(doc))
    final = stats.final_scores(load.load_results(tmp_path))
    assert "eval_starts" in final.columns
    with pytest.raises(ValueError, match="eval_starts"):
        tables.protocol_of(final)
    assert len(tables.split_by_protocol(final)) == 2
