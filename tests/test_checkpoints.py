"""floq.checkpoints: checksummed sidecars, fallback to the previous checkpoint on every kind
of corruption, a full disk that leaves the previous checkpoint loadable, temp-file cleanup."""

import errno
import json
import os

import numpy as np
import pytest

from floq import checkpoints as ck
from floq import results


def state_at(step: int) -> dict:
    rng = np.random.default_rng(step)
    return {
        "params": {"w": rng.normal(size=(8, 4)).astype(np.float32), "b": rng.normal(size=(4,)).astype(np.float32)},
        "rng": np.array([step, step + 1], np.uint32),
        "step": np.array(step, np.int32),
    }


def like() -> dict:
    return state_at(0)


def assert_same(a, b):
    assert set(a) == set(b)
    np.testing.assert_array_equal(np.asarray(a["params"]["w"]), b["params"]["w"])
    np.testing.assert_array_equal(np.asarray(a["params"]["b"]), b["params"]["b"])
    np.testing.assert_array_equal(np.asarray(a["rng"]), b["rng"])
    assert int(a["step"]) == int(b["step"])


@pytest.fixture
def two(tmp_path):
    """A run dir with checkpoints at steps 10 and 20."""
    c = ck.Checkpoints(str(tmp_path))
    c.save(10, state_at(10), {"step": 10, "eval_rows": 1})
    c.save(20, state_at(20), {"step": 20, "eval_rows": 2})
    return c


def data_files(c, step):
    root = c.path(step)
    out = [os.path.join(d, n) for d, _, names in os.walk(root) if os.path.basename(d) == "d" for n in names]
    assert out, "orbax wrote no data files"
    return sorted(out, key=os.path.getsize)


def test_save_restore_and_sidecar_checksums(two):
    assert two.steps() == [10, 20]
    side = json.load(open(two.sidecar_path(20)))
    assert side["step"] == 20 and side["eval_rows"] == 2
    files = side[ck.FILES_KEY]
    assert "_METADATA" in files and any(k.split("/")[-2] == "d" for k in files if "/" in k)
    for rel, (size, digest) in files.items():
        assert os.path.getsize(os.path.join(two.path(20), rel)) == size
        assert ck.file_sha256(os.path.join(two.path(20), rel)) == digest
    state, meta = two.restore_latest(like())
    assert_same(state, state_at(20))
    assert meta == {"step": 20, "eval_rows": 2}


def test_keeps_two_and_prunes(tmp_path):
    c = ck.Checkpoints(str(tmp_path), keep=2)
    for s in (1, 2, 3):
        c.save(s, state_at(s), {"step": s})
    assert c.steps() == [2, 3]
    assert sorted(os.listdir(c.dir)) == ["step_2", "step_2.json", "step_3", "step_3.json"]
    with pytest.raises(ValueError, match="at least 2"):
        ck.Checkpoints(str(tmp_path), keep=1)


def _truncate(c):
    path = data_files(c, 20)[-1]
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def _overwrite_same_size(c):
    path = data_files(c, 20)[-1]
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0xFF]))
    assert os.path.getsize(path) == size


def _delete_metadata(c):
    os.unlink(os.path.join(c.path(20), "_METADATA"))


def _garble_metadata(c):
    path = os.path.join(c.path(20), "_METADATA")
    size = os.path.getsize(path)
    with open(path, "wb") as f:
        f.write(b"#" * size)


def _garble_sidecar(c):
    with open(c.sidecar_path(20), "w") as f:
        f.write('{"step": 20, "eval_')


def _sidecar_same_size_valid_json(c):
    text = open(c.sidecar_path(20)).read()
    assert '"eval_rows": 2' in text
    with open(c.sidecar_path(20), "w") as f:
        f.write(text.replace('"eval_rows": 2', '"eval_rows": 7'))


def _killed_before_sidecar(c):
    os.unlink(c.sidecar_path(20))


@pytest.mark.parametrize("corrupt", [_truncate, _overwrite_same_size, _delete_metadata, _garble_metadata,
                                     _garble_sidecar, _sidecar_same_size_valid_json, _killed_before_sidecar])
def test_corrupt_latest_falls_back_to_previous(two, corrupt, capsys):
    corrupt(two)
    state, meta = two.restore_latest(like())
    assert_same(state, state_at(10))
    assert meta["step"] == 10
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "step_20" in err[0] and "falling back to step_10" in err[0]


def test_none_usable_warns_and_returns_none(two, capsys):
    _truncate(two)
    os.unlink(os.path.join(two.path(10), "_METADATA"))
    assert two.restore_latest(like()) is None
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and "step_10" in err and "step_20" in err


def test_no_checkpoints_is_silent(tmp_path, capsys):
    assert ck.Checkpoints(str(tmp_path)).restore_latest(like()) is None
    assert capsys.readouterr().err == ""


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_in_orbax_save_keeps_previous(two, monkeypatch):
    real_save = two._ckptr.save

    def partial_save(path, state):  # orbax wrote part of its temp dir, then the disk filled
        os.makedirs(path + ".orbax-checkpoint-tmp-123/d", exist_ok=True)
        open(path + ".orbax-checkpoint-tmp-123/d/x", "wb").write(b"0" * 100)
        raise ValueError("tensorstore write failed") from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(two._ckptr, "save", partial_save)
    with pytest.raises(results.RunError, match=r"^disk full while writing .*step_30"):
        two.save(30, state_at(30), {"step": 30})
    monkeypatch.setattr(two._ckptr, "save", real_save)
    assert two.steps() == [10, 20]
    assert sorted(os.listdir(two.dir)) == ["step_10", "step_10.json", "step_20", "step_20.json"]
    state, meta = two.restore_latest(like())
    assert_same(state, state_at(20))


def test_disk_full_in_sidecar_keeps_previous(two, monkeypatch):
    monkeypatch.setattr(results.os, "fsync", _enospc)  # the sidecar's atomic write fails
    with pytest.raises(results.RunError, match="disk full while writing"):
        two.save(30, state_at(30), {"step": 30})
    monkeypatch.undo()
    assert sorted(os.listdir(two.dir)) == ["step_10", "step_10.json", "step_20", "step_20.json"]
    state, _ = two.restore_latest(like())
    assert_same(state, state_at(20))


def test_resave_same_step_replaces_it(two):
    two.save(20, state_at(21), {"step": 20, "again": True})
    state, meta = two.restore_latest(like())
    assert_same(state, state_at(21))
    assert meta["again"] is True and two.verify(20) is None


def test_clean_temp_removes_leftovers_only(two, tmp_path):
    run = str(tmp_path)
    leftovers = [
        os.path.join(run, results.TEMP_PREFIX + "eval.csvab12"),
        os.path.join(two.dir, results.TEMP_PREFIX + "step_20.jsonzz"),
    ]
    for p in leftovers:
        open(p, "w").write("half")
    os.makedirs(os.path.join(two.dir, "step_30.orbax-checkpoint-tmp-99", "d"))
    os.makedirs(os.path.join(two.dir, "step_40" + ck.NEW_SUFFIX))
    os.makedirs(os.path.join(two.dir, "step_50"))  # committed by orbax, sidecar never written
    open(os.path.join(run, "eval.csv"), "w").write("a\n1\n")
    removed = ck.clean_temp(run)
    assert len(removed) == 5
    assert sorted(os.listdir(two.dir)) == ["step_10", "step_10.json", "step_20", "step_20.json"]
    assert sorted(os.listdir(run)) == ["checkpoints", "eval.csv"]
    assert two.verify(10) is None and two.verify(20) is None


def test_legacy_sidecar_without_checksums_restores(tmp_path):
    c = ck.Checkpoints(str(tmp_path))
    c.save(5, state_at(5), {"step": 5})
    body = json.load(open(c.sidecar_path(5)))
    legacy = {k: v for k, v in body.items() if k not in (ck.FILES_KEY, ck.SELF_KEY)}
    json.dump(legacy, open(c.sidecar_path(5), "w"))
    state, meta = c.restore_latest(like())
    assert_same(state, state_at(5))
    assert meta == {"step": 5}
