"""Faults while writing: a full disk, an interrupt, a killed generator. Each leaves the
previous file as it was, no temp file behind, and (disk full) one RunError line.
Property-based: CsvLog's write/read round trip (hypothesis)."""

import errno
import math
import os

import numpy as np
import pytest

from floq import results
from floq.data import generate as gen


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def listing(d):
    return sorted(os.listdir(d))


def test_csv_disk_full_keeps_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "eval.csv")
    log = results.CsvLog(path, ("step",))
    log.append({"step": 1, "success": 0.5})
    log.flush()
    before = open(path).read()
    log.append({"step": 2, "success": 0.75, "new_column": "x"})
    monkeypatch.setattr(results.os, "fsync", _enospc)
    with pytest.raises(results.RunError) as e:
        log.flush()
    monkeypatch.undo()
    assert str(e.value) == f"disk full while writing {path}: No space left on device"
    assert open(path).read() == before
    assert listing(tmp_path) == ["eval.csv"]  # the temp file is gone
    log.flush()  # space again: the buffered rows are not lost
    assert [r["step"] for r in results.CsvLog(path).rows] == ["1", "2"]


def test_disk_full_while_writing_data_itself(tmp_path, monkeypatch):
    path = str(tmp_path / "run.json")
    results.write_json(path, {"status": "running"})

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, k):
            return getattr(self.f, k)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self.f.__exit__(*exc)

    real = os.fdopen
    monkeypatch.setattr(results.os, "fdopen", lambda fd, mode: Full(real(fd, mode)))
    with pytest.raises(results.RunError, match=r"^disk full while writing .*run\.json: No space left on device$"):
        results.write_json(path, {"status": "done"})
    monkeypatch.undo()
    assert results.read_json(path) == {"status": "running"}
    assert listing(tmp_path) == ["run.json"]


def test_interrupted_atomic_write_leaves_old_content(tmp_path):
    path = str(tmp_path / "train.csv")
    results.atomic_write(path, "a\n1\n")
    with pytest.raises(KeyboardInterrupt):
        with results.atomic_open(path) as f:
            f.write("a\n1\n2\n")
            raise KeyboardInterrupt
    assert open(path).read() == "a\n1\n"
    assert listing(tmp_path) == ["train.csv"]


def test_other_os_errors_are_not_disk_full(tmp_path, monkeypatch):
    monkeypatch.setattr(results.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")))
    with pytest.raises(OSError) as e:
        results.atomic_write(str(tmp_path / "x"), "y")
    assert not isinstance(e.value, results.RunError) and e.value.errno == errno.EIO
    assert listing(tmp_path) == []


@pytest.mark.parametrize("fail_on", [1, 2])
def test_interrupted_generation_leaves_no_half_file(tmp_path, monkeypatch, fail_on):
    """Killed while writing the val file (1st) or the train file (2nd): no file under its
    final name is ever partial; a val file present is complete; no temp file is left."""
    real = np.savez_compressed
    calls = []

    def savez(f, **arrays):
        calls.append(1)
        if len(calls) == fail_on:
            f.write(b"PK\x03\x04 partial")  # part of the archive reached the temp file
            raise KeyboardInterrupt
        return real(f, **arrays)

    monkeypatch.setattr(np, "savez_compressed", savez)
    with pytest.raises(KeyboardInterrupt):
        gen.generate("antmaze-large-navigate-v0", 2, str(tmp_path), val_episodes=1, progress=False,
                     standin=True, episode_length=10)
    names = listing(tmp_path)
    assert not [n for n in names if n.startswith(results.TEMP_PREFIX)]
    assert "antmaze-large-navigate-standin-v0.npz" not in names
    if fail_on == 1:
        assert names == []
    else:
        assert names == ["antmaze-large-navigate-standin-v0-val.npz"]
        with np.load(tmp_path / names[0]) as f:
            assert f["observations"].shape[0] == 10


def test_disk_full_while_generating(tmp_path, monkeypatch):
    monkeypatch.setattr(results.os, "fsync", _enospc)
    with pytest.raises(results.RunError, match="disk full while writing .*-val.npz"):
        gen.generate("antmaze-large-navigate-v0", 1, str(tmp_path), val_episodes=1, progress=False,
                     standin=True, episode_length=10)
    assert listing(tmp_path) == []


# --------------------------------------------------------------------------------------
# CsvLog round trip (hypothesis)

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st  # noqa: E402

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
KEYS = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               min_size=1, max_size=8)
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True), TEXT)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.dictionaries(KEYS, VALUES, max_size=5), max_size=6))
def test_csvlog_round_trip(tmp_path_factory, rows):
    path = str(tmp_path_factory.mktemp("csv") / "log.csv")
    log = results.CsvLog(path, ("step",))
    for r in rows:
        log.append(r)
    log.flush()
    back = results.CsvLog(path, ("step",))
    assert len(back) == len(rows)
    cols = log.columns()
    for k in {k for r in rows for k in r}:  # no column is ever dropped
        assert k in cols
    for written, read in zip(rows, back.rows):
        assert list(read) == cols
        for k in cols:
            v = written.get(k)
            assert read[k] == results._fmt(v)
            if isinstance(v, float) and not isinstance(v, bool):
                assert (math.isnan(float(read[k])) and math.isnan(v)) or float(read[k]) == v
            elif isinstance(v, int) and not isinstance(v, bool):
                assert int(read[k]) == v
    # and a re-flush of what was read changes nothing
    text = open(path).read()
    back.flush()
    assert open(path).read() == text


@settings(max_examples=30, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["step", "a", "b"]), st.integers(0, 9), min_size=1), min_size=1,
                max_size=8), st.integers(0, 8))
def test_csvlog_truncate_then_append(tmp_path_factory, rows, keep):
    """Resume: keep the first rows of a log, append new ones; what is read back is exactly that."""
    path = str(tmp_path_factory.mktemp("csv") / "log.csv")
    log = results.CsvLog(path, ("step",))
    for r in rows:
        log.append(r)
    log.flush()
    again = results.CsvLog(path, ("step",))
    again.truncate(keep)
    again.append({"step": 99})
    again.flush()
    read = results.CsvLog(path).rows
    assert len(read) == min(keep, len(rows)) + 1
    for w, r in zip(rows[:keep], read):
        assert {k: v for k, v in r.items() if v != ""} == {k: str(v) for k, v in w.items()}
    assert read[-1]["step"] == "99"
