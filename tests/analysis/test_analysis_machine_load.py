"""Wall-clock numbers say when runs shared a loaded machine (run.json ``load``: mean 1-minute
load average over the log points vs the CPU count), or that the load was not recorded."""

import pandas as pd
import pytest

from analysis import load, plots, report
from analysis_fixtures import make_run, ramp

LOADED = {"cpus": 2, "loadavg_mean": 3.14, "loadavg_max": 4.0, "samples": 9}
QUIET = {"cpus": 2, "loadavg_mean": 1.2, "loadavg_max": 1.9, "samples": 9}
NOTE = "runs shared a loaded machine (load 3.1 on 2 CPUs): wall-clock times are not comparable"


def _final(*loads):
    rows = [dict(run_dir=f"r{i}", load_cpus=(ld or {}).get("cpus"),
                 loadavg_mean=(ld or {}).get("loadavg_mean")) for i, ld in enumerate(loads)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("loads, note", [
    ((QUIET, LOADED), NOTE),
    ((QUIET, QUIET), None),
    ((None, None), "machine load not recorded"),
    ((QUIET, None), "machine load not recorded for 1 of 2 runs"),
    ((LOADED, None), NOTE),
    # the worst run is named: load per CPU, not the largest load
    (({"cpus": 16, "loadavg_mean": 20.0}, {"cpus": 2, "loadavg_mean": 6.0}),
     "runs shared a loaded machine (load 6.0 on 2 CPUs): wall-clock times are not comparable"),
])
def test_machine_load_note(loads, note):
    assert report.machine_load_note(_final(*loads)) == note


def test_run_json_load_becomes_columns_and_old_run_json_still_loads(tmp_path):
    make_run(tmp_path / "res", "new", env="e", task="task1", critic="c", success=ramp(0.5), load=LOADED)
    make_run(tmp_path / "res", "old", env="e", task="task2", critic="c", success=ramp(0.5))
    df = load.load_results(tmp_path / "res")
    per_run = df.drop_duplicates("run_dir").set_index("task")
    assert per_run.loc["task1", ["load_cpus", "loadavg_mean", "loadavg_max"]].tolist() == [2, 3.14, 4.0]
    assert per_run.loc["task2", ["load_cpus", "loadavg_mean"]].isna().all()
    assert "load_cpus" not in load.tag_columns(df)  # a machine fact, never a method's label


def test_the_report_says_so_beside_wall_clock_numbers(tmp_path, monkeypatch):
    for critic, ld in (("monolithic", QUIET), ("floq", LOADED)):
        make_run(tmp_path / "res", critic, env="e", task="task1", critic=critic,
                 success=ramp(0.5), load=ld)
    notes = []
    draw = plots.plot_learning_curves
    monkeypatch.setattr(report.plots, "plot_learning_curves",
                        lambda *a, **k: notes.append(k.get("note")) or draw(*a, **k))
    text = open(report.build_report(tmp_path / "res", tmp_path / "out", reps=20,
                                    formats=("png",))).read()
    assert f"> **Wall-clock caveat:** {NOTE}." in text.split("### Cost")[1]  # under the cost table
    image = next(ln for ln in text.splitlines() if ln.startswith("![The same success curves"))
    caption = next(ln for ln in text.splitlines() if ln.startswith("The same success curves"))
    assert NOTE in image and f"shared it; {NOTE} — [CSV]" in caption
    assert notes == [None, NOTE]  # the step curves carry none; the wall-clock figure its subtitle
    fig = draw(pd.read_csv(tmp_path / "out" / "learning_curves_wallclock.csv"), x="wall_time", note=NOTE)
    assert fig.get_suptitle().replace("\n", " ") == NOTE


def test_runs_without_a_load_record_say_it_was_not_recorded(tmp_path):
    for critic in ("monolithic", "floq"):
        make_run(tmp_path / "res", critic, env="e", task="task1", critic=critic, success=ramp(0.5))
    text = open(report.build_report(tmp_path / "res", tmp_path / "out", reps=20,
                                    formats=("png",))).read()
    assert "> **Wall-clock caveat:** machine load not recorded." in text
    assert "shared it; machine load not recorded — [CSV]" in text
