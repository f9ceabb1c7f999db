"""run.json provenance: which bytes of data a run trained on, and gin files named relative to
the repository (not by the folder of the clone that ran them)."""

from __future__ import annotations

import hashlib
import os

import gin

from floq import results
from floq.data.sources import Task, val_path_of


def test_gin_files_are_repository_relative(tmp_path):
    inside = os.path.join(results.REPO_ROOT, "gin", "experiments", "smoke.gin")
    assert results.repo_relative(inside) == os.path.join("gin", "experiments", "smoke.gin")
    outside = tmp_path / "mine.gin"
    assert results.repo_relative(str(outside)) == str(outside)  # absolute only outside


def test_file_fingerprint_is_size_and_sha256(tmp_path):
    f = tmp_path / "d.npz"
    f.write_bytes(b"floq" * 1000)
    fp = results.file_fingerprint(str(f))
    assert fp == {"path": str(f), "bytes": 4000,
                  "sha256": hashlib.sha256(b"floq" * 1000).hexdigest()}
    f.write_bytes(b"other")  # a changed file is hashed again, not served from the cache
    assert results.file_fingerprint(str(f))["sha256"] == hashlib.sha256(b"other").hexdigest()


def test_task_names_the_files_it_reads(tmp_path):
    gin.clear_config()  # Task is gin-configurable: no bindings left by an earlier test
    train = tmp_path / "data.npz"
    train.write_bytes(b"x")
    assert Task(dataset_path=str(train)).data_files() == [str(train)]  # no -val twin yet
    open(val_path_of(str(train)), "wb").close()
    assert Task(dataset_path=str(train)).data_files() == [str(train), val_path_of(str(train))]
    cache = tmp_path / "ogbench"
    cache.mkdir()
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        (cache / name).write_bytes(b"y")
    files = Task(env="cube-single-play", task_id=3, dataset_dir=str(cache)).data_files()
    assert files == [str(cache / "cube-single-play-v0.npz"),
                     str(cache / "cube-single-play-v0-val.npz")]


def test_run_json_records_the_machine_load_sampled_at_log_points(tmp_path):
    """run.json `load`: mean and max of the 1-minute load average over the log points, on how
    many CPUs; a resume continues the record (wall-clock figures say when runs shared a loaded
    machine)."""
    import json

    from floq import loop

    samples = iter([(1.0, 0, 0), (3.0, 0, 0), (5.0, 0, 0)])
    run = loop.Run.__new__(loop.Run)  # the hooks alone: log() and _write_manifest(), no training
    run.load = results.MachineLoad(loadavg=lambda: next(samples))
    run.window = []
    run.log()
    run.log()
    run.manifest, run.run_dir, run.step = {"status": "running"}, str(tmp_path), 0
    run.times, run.updates = {"train_s": 0.0}, lambda step: 0
    run._write_manifest()
    rec = json.loads((tmp_path / "run.json").read_text())["load"]
    assert rec == {"cpus": os.cpu_count(), "loadavg_mean": 2.0, "loadavg_max": 3.0, "samples": 2}
    resumed = results.MachineLoad(rec, loadavg=lambda: next(samples))
    resumed.sample()
    assert resumed.record() == {"cpus": os.cpu_count(), "loadavg_mean": 3.0, "loadavg_max": 5.0, "samples": 3}
    assert results.MachineLoad({"samples": "x"}).record() is None  # an odd old record: start over
