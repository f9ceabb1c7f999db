"""Runs of different configurations are never pooled as seeds of one method: a value set in
a gin file, or bound beside runs that kept the default, splits the label (named by the
differing setting); `--method-by` labels that would pool are refused in one line; a missing
`--method-by` value (a baseline without K) is no crash; a diverged run that shares a seed
with a finished one is listed as diverged, not dropped."""

from __future__ import annotations

import json
import warnings

import pytest

from analysis import load, report, stats
from analysis_fixtures import build_fixture, make_run, ramp


def _manifest(run_dir, **update):
    path = run_dir / "run.json"
    doc = json.loads(path.read_text())
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            doc[k].update(v)
        else:
            doc[k] = v
    path.write_text(json.dumps(doc))


def _fields(lr=3e-4, batch=32, width=32):
    return {"algorithm": "FQL", "algorithm.lr": lr, "algorithm.actor_net.width": width,
            "critic": "MonolithicCritic", "critic.net.width": 32, "trainer.batch_size": batch}


def _methods(root, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load.load_results(root, **kw)
    return dict(df.drop_duplicates("run_id")[["run_id", "method"]].to_numpy())


def test_a_binding_beside_a_default_run_is_another_method(tmp_path):
    """The audit's `floq run smoke.gin` + `--bind BATCH_SIZE=64 --bind SEED=1`: the bound run
    has the tag, the default one not; run.json's protocol says the default was 32."""
    a = make_run(tmp_path, "a", env="e", task="task1", critic="monolithic", seeds=(0,), success=ramp(0.2))
    b = make_run(tmp_path, "b", env="e", task="task1", critic="monolithic", seeds=(1,), success=ramp(0.6),
                 tags={"batch_size": 64})
    _manifest(a, protocol={"batch_size": 32})
    _manifest(b, protocol={"batch_size": 64})
    assert _methods(tmp_path) == {"exp/a": "monolithic (batch_size=32)", "exp/b": "monolithic (batch_size=64)"}


def test_a_value_set_in_a_gin_file_is_another_method(tmp_path):
    """No tag at all: only run.json's config_fields (and its seedless hash) tell them apart."""
    for name, seed, lr in (("a", 0, 3e-4), ("b", 1, 3e-4), ("v", 2, 1e-3)):
        d = make_run(tmp_path, name, env="e", task="task1", critic="monolithic", seeds=(seed,),
                     success=ramp(0.3))
        _manifest(d, config_fields=_fields(lr=lr), seedless_config_hash=f"h{lr}")
    m = _methods(tmp_path)
    assert m == {"exp/a": "monolithic (lr=0.0003)", "exp/b": "monolithic (lr=0.0003)", "exp/v": "monolithic (lr=0.001)"}
    # Seeds of one configuration stay one method with two seeds.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        final = stats.final_scores(load.load_results(tmp_path))
    assert final.groupby("method")["seed"].nunique().to_dict() == {"monolithic (lr=0.0003)": 2,
                                                                   "monolithic (lr=0.001)": 1}


def test_one_configuration_over_seeds_and_tasks_is_one_method(tmp_path):
    for name, task, seed in (("a", "task1", 0), ("b", "task1", 1), ("c", "task2", 0)):
        d = make_run(tmp_path, name, env="e", task=task, critic="monolithic", seeds=(seed,), success=ramp(0.3))
        _manifest(d, config_fields=_fields(), seedless_config_hash="same")
    assert set(_methods(tmp_path).values()) == {"monolithic"}


def test_method_by_with_a_missing_value_is_no_crash(tmp_path):
    """Issue 24: `--method-by critic,critic_flow_steps` on a K sweep with a monolithic
    baseline (no K: NaN)."""
    build_fixture(tmp_path / "r")
    m = _methods(tmp_path / "r", method_by=["critic", "critic_flow_steps"])
    assert set(m.values()) == {"monolithic", "floq/4", "floq/8"}
    out = tmp_path / "rep"
    assert report.main([str(tmp_path / "r"), "--out", str(out), "--reps", "20", "--formats", "png",
                        "--method-by", "critic,critic_flow_steps"]) == 0
    assert "| floq/8 |" in (out / "leaderboard_env.md").read_text()


def test_method_by_that_would_pool_configurations_is_refused(tmp_path, capsys):
    """Issue 24: `--method-by critic` kept one of K=4 and K=8 per seed, with a warning."""
    build_fixture(tmp_path / "r")
    out = tmp_path / "rep"
    code = report.main([str(tmp_path / "r"), "--out", str(out), "--reps", "20", "--formats", "png",
                        "--method-by", "critic"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    lines = [ln for ln in err.splitlines() if ln.startswith("floq analyze: error")]
    assert len(lines) == 1 and "critic_flow_steps" in lines[0] and "'floq'" in lines[0], err
    assert "add critic_flow_steps to --method-by" in lines[0]


def test_a_diverged_run_sharing_a_seed_with_a_finished_one_is_listed(tmp_path):
    """The audit's `--bind FQL.lr=1e6` seed-0 run beside the default seed-0 run: another
    configuration, so another method, listed as diverged and never scored."""
    good = make_run(tmp_path, "good", env="e", task="task1", critic="monolithic", seeds=(0,), success=ramp(0.5))
    bad = make_run(tmp_path, "lr", env="e", task="task1", critic="monolithic", seeds=(0,),
                   success=lambda s, t: 0.0, status="diverged", steps=(0,), tags={"lr": 1e6})
    _manifest(good, config_fields=_fields(), seedless_config_hash="good")
    _manifest(bad, config_fields=_fields(lr=1e6), seedless_config_hash="bad", reason="critic/loss is nan at step 2")
    out = tmp_path / "rep"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report.build_report(tmp_path, out, reps=20, formats=("png",))
    index = (out / "index.md").read_text()
    excluded = index[index.index("## Excluded run seeds"):]
    assert "exp/lr" in excluded and "diverged" in excluded
    runs = (out / "runs.csv").read_text()
    assert "exp/lr" in runs and "exp/good" in runs


def _data(sha: str) -> list:
    return [{"path": "/cache/cube-single-play-v0-e100-s0.npz", "bytes": 1, "sha256": sha},
            {"path": "/cache/cube-single-play-v0-e100-s0-val.npz", "bytes": 1, "sha256": "v" + sha}]


def test_one_configuration_on_different_data_bytes_is_two_methods(tmp_path):
    """results/cpu_algorithms and results/cpu_critics: equal seedless config hashes, but the
    generated dataset's bytes differ (another CPU). Seeds on equal bytes pool; the others are
    another method, named by the data digest; an unhashed dataset (a download) adds nothing."""
    for name, seed, sha in (("a", 0, "aa"), ("b", 1, "aa"), ("c", 2, "bb")):
        d = make_run(tmp_path, name, env="e", task="task1", critic="monolithic", seeds=(seed,), success=ramp(0.3))
        _manifest(d, config_fields=_fields(), seedless_config_hash="same", data_files=_data(sha))
    m = _methods(tmp_path)
    assert m["exp/a"] == m["exp/b"] != m["exp/c"]
    assert m["exp/a"].startswith("monolithic (data_sha256=") and m["exp/a"] != "monolithic"
    assert load.data_digest({"data_files": _data("aa")}) == m["exp/a"].split("=")[1].rstrip(")")
    assert load.data_digest({"data_files": [{"path": "x.npz", "bytes": 1}]}) is None
    for name, seed in (("d", 0), ("e", 1)):  # downloads: no sha256 recorded
        d = make_run(tmp_path / "dl", name, env="e", task="task1", critic="monolithic", seeds=(seed,),
                     success=ramp(0.3))
        _manifest(d, config_fields=_fields(), seedless_config_hash="same",
                  data_files=[{"path": "/ogbench/x.npz", "bytes": 1}])
    assert set(_methods(tmp_path / "dl").values()) == {"monolithic"}
