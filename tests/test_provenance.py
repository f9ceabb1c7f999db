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
