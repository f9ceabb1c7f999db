"""Sharded datasets (floq/data/shards.py): discovery, validation, the rotation schedule, and
shards loaded and relabelled exactly as Task.load loads a single file."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from floq.data import shards as sh
from floq.data.sources import DataError, Task, default_data_dir

ENV = "cube-single-play"
DATASET = f"{ENV}-singletask-task2-v0"
EPISODES = (3, 4, 3)  # shard 1 is longer: every shard is cut to the smallest one's transitions
LENGTH = 40


def _source_files():
    """Three tiny generated datasets (different seeds), cached across sessions."""
    from floq.data import generate as gen

    out = []
    for seed, episodes in enumerate(EPISODES):
        d = os.path.join(default_data_dir(), "shard-test-src", f"e{episodes}-s{seed}-l{LENGTH}")
        train, val = os.path.join(d, f"{ENV}-v0.npz"), os.path.join(d, f"{ENV}-v0-val.npz")
        if not (os.path.isfile(train) and os.path.isfile(val)):
            train, val = gen.generate(f"{ENV}-v0", episodes, d, seed=seed, workers=1, val_episodes=1,
                                      progress=False, episode_length=LENGTH)
        out.append((train, val))
    return out


def _make_folder(root, files, name=f"{ENV}-100m-v0"):
    folder = os.path.join(root, name)
    os.makedirs(folder)
    for i, (train, val) in enumerate(files):
        shutil.copy(train, os.path.join(folder, f"{ENV}-v0-{i:03d}.npz"))
        shutil.copy(val, os.path.join(folder, f"{ENV}-v0-{i:03d}-val.npz"))
    return folder


@pytest.fixture(scope="module")
def sources():
    return _source_files()


@pytest.fixture(scope="module")
def folder(sources, tmp_path_factory):
    return _make_folder(str(tmp_path_factory.mktemp("shards")), sources)


@pytest.fixture(scope="module")
def data(folder):
    d = sh.ShardedData(folder, DATASET, interval=1000)
    yield d
    d.close()


def test_discovery(folder, tmp_path):
    paths = sh.discover(folder)
    assert [os.path.basename(p) for p in paths] == [f"{ENV}-v0-{i:03d}.npz" for i in range(3)]
    assert sh.is_shard_dir(folder)
    task = Task(env=ENV, task_id=2, dataset_dir=folder)
    assert task.sharded and task.shards(validate=False).n_shards == 3
    assert not Task(env=ENV).sharded  # '' = the OGBench download dir
    assert not Task(env=ENV, dataset_dir=folder, dataset_path="x.npz").sharded  # dataset_path wins
    cache = tmp_path / "ogbench-cache"  # a download dir: <name>-v0.npz files, no numbers
    cache.mkdir()
    (cache / f"{ENV}-v0.npz").write_bytes(b"")
    (cache / f"{ENV}-v0-val.npz").write_bytes(b"")
    assert not sh.is_shard_dir(str(cache)) and not Task(env=ENV, dataset_dir=str(cache)).sharded
    # numeric order (padding does not matter), one-based numbering accepted
    one = tmp_path / "one"
    one.mkdir()
    for i in (1, 2, 10, 3, 4, 5, 6, 7, 8, 9):
        (one / f"x-v0-{i}.npz").write_bytes(b"")
        (one / f"x-v0-{i}-val.npz").write_bytes(b"")
    assert [os.path.basename(p) for p in sh.discover(str(one))] == [f"x-v0-{i}.npz" for i in range(1, 11)]


def test_rotation_schedule(data):
    assert data.n_shards == 3 and data.interval == 1000 and data.change_interval == 1000
    assert [data.index_at(s) for s in (0, 999, 1000, 1999, 2000, 2999, 3000, 7250)] == [0, 0, 1, 1, 2, 2, 0, 1]
    assert data.next_change(0) == 1000 and data.next_change(999) == 1000 and data.next_change(1000) == 2000
    assert data.boundary(500, 800) == 800 and data.boundary(500, 5000) == 1000
    assert data.schedule(2500) == [(0, 1000, 0), (1000, 2000, 1), (2000, 2500, 2)]
    assert sh.shard_index(12345, 0, 3) == 0 and sh.shard_index(12345, 7, 1) == 0
    # horizon-reduction's loop: update i = 1..N samples from datasets[idx]; after update i with
    # i % interval == 0 it moves to the next file. Update i follows i - 1 completed steps.
    for interval, n in ((7, 3), (1, 4), (5, 2)):
        idx, used = 0, []
        for i in range(1, 60):
            used.append(idx)
            if i % interval == 0:
                idx = (idx + 1) % n
        assert used == [sh.shard_index(i - 1, interval, n) for i in range(1, 60)]


def test_shards_relabelled_like_task_load(data, folder):
    rows = data.rows
    assert data.transitions == [e * (LENGTH - 1) for e in EPISODES]
    assert rows == min(data.transitions)
    lo, hi = [], []
    for i, path in enumerate(data.paths):
        got = data.load(i)
        want, _ = Task(env=ENV, task_id=2, source="path", dataset_path=path).load(progress=False)
        assert set(got) == set(want) == {"observations", "actions", "rewards", "masks", "next_observations"}
        for k in want:
            assert got[k].dtype == np.float32
            np.testing.assert_array_equal(got[k], want[k][:rows], err_msg=f"shard {i} {k}")
        assert np.abs(got["actions"]).max() <= 1 - 1e-5
        lo.append(want["rewards"][:rows].min())
        hi.append(want["rewards"][:rows].max())
    assert data.data_range() == (float(min(lo)), float(max(hi)))
    # another task of the same shards: its own relabelling and its own cached range
    other = sh.ShardedData(folder, f"{ENV}-singletask-task1-v0")
    want, _ = Task(env=ENV, task_id=1, source="path", dataset_path=data.paths[0]).load(progress=False)
    np.testing.assert_array_equal(other.load(0)["rewards"], want["rewards"][:rows])
    assert (data.load(0)["rewards"] == 0).any() and not (want["rewards"][:rows] == 0).any()  # task 2 != task 1
    other.close()


def test_stats_cached_beside_shards(data, folder, monkeypatch):
    data.stats()
    path = os.path.join(folder, f"floq-shard-stats-{DATASET}.json")
    assert os.path.isfile(path)
    again = sh.ShardedData(folder, DATASET, validate=False)
    monkeypatch.setattr(sh.ShardedData, "_compute_stats", lambda self: pytest.fail("recomputed"))
    assert again.stats() == data.stats()
    again.close()


def test_at_prefetches_and_keeps_two(folder):
    d = sh.ShardedData(folder, DATASET, interval=5)
    try:
        i, train = d.at(0)
        assert i == 0 and sorted(d._cache) == [0, 1]
        i, train1 = d.at(5)
        assert i == 1 and sorted(d._cache) == [1, 2]
        np.testing.assert_array_equal(train1["observations"], d.load(1)["observations"])
        i, _ = d.at(14)  # a resume lands on its step's shard directly
        assert i == 2 and sorted(d._cache) == [0, 2]
    finally:
        d.close()
    limited = Task(env=ENV, task_id=2, dataset_dir=folder, num_shards=2, shard_interval=3).shards(validate=False)
    assert limited.n_shards == 2 and limited.interval == 3 and limited.index_at(6) == 0
    limited.close()


def _message(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg
    return msg


def test_errors(sources, tmp_path):
    empty = tmp_path / f"{ENV}-100m-v0"
    empty.mkdir()
    assert Task(env=ENV, dataset_dir=str(empty)).sharded
    with pytest.raises(DataError) as e:
        sh.ShardedData(str(empty), DATASET)
    assert "holds no shards" in _message(e)

    gap = _make_folder(str(tmp_path / "gap"), sources)
    os.remove(os.path.join(gap, f"{ENV}-v0-001.npz"))
    os.remove(os.path.join(gap, f"{ENV}-v0-001-val.npz"))
    with pytest.raises(DataError) as e:
        sh.ShardedData(gap, DATASET)
    assert "shard 1 is missing" in _message(e)

    noval = _make_folder(str(tmp_path / "noval"), sources)
    os.remove(os.path.join(noval, f"{ENV}-v0-002-val.npz"))
    with pytest.raises(DataError) as e:
        sh.discover(noval)
    assert "no val twin" in _message(e)

    late = _make_folder(str(tmp_path / "late"), sources)
    for i in (0, 1):  # numbering may start at 0 or 1, not later
        os.remove(os.path.join(late, f"{ENV}-v0-{i:03d}.npz"))
    with pytest.raises(DataError) as e:
        sh.discover(late)
    assert "start at" in _message(e)

    mixed = _make_folder(str(tmp_path / "mixed"), sources)
    shutil.copy(sources[0][0], os.path.join(mixed, f"{ENV}-other-v0-003.npz"))
    with pytest.raises(DataError) as e:
        sh.discover(mixed)
    assert "mixes shard series" in _message(e)

    wide = _make_folder(str(tmp_path / "wide"), sources)
    bad = os.path.join(wide, f"{ENV}-v0-001.npz")
    with np.load(bad) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["observations"] = arrays["observations"][:, :-1]
    np.savez_compressed(bad, **arrays)
    with pytest.raises(DataError) as e:
        sh.ShardedData(wide, DATASET)
    msg = _message(e)
    assert bad in msg and "'observations'" in msg and "wide" in msg

    with pytest.raises(DataError) as e:
        sh.ShardedData(_make_folder(str(tmp_path / "few"), sources), DATASET, num_shards=4)
    assert "holds 3 shards" in _message(e)


def test_nan_in_a_later_shard_is_found_at_start(sources, tmp_path):
    """Shard 1 holds a NaN: the first pass (the reward range's, before training) refuses it,
    naming the file and the array, not the rotation's load of shard 1 mid-run."""
    folder = _make_folder(str(tmp_path), sources[:2])
    bad = os.path.join(folder, f"{ENV}-v0-001.npz")
    with np.load(bad) as f:
        arrays = {k: np.array(f[k]) for k in f.files}
    arrays["observations"][3, 2] = np.nan
    np.savez(bad, **arrays)
    d = sh.ShardedData(folder, DATASET, interval=1000)
    try:
        with pytest.raises(DataError, match=r"-001\.npz: array 'observations' holds 1 non-finite value"):
            d.data_range()
    finally:
        d.close()
