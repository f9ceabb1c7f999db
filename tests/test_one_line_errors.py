"""The audit's six commands that printed a traceback: each is now one line on stderr with an
exit code (2 bad input, 1 a failure), and leaves nothing behind."""

from __future__ import annotations

import errno
import json
import os

import pytest

from floq import results
from floq.cli import main


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _one_line(capsys):
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and not ln.startswith("WARNING")]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture
def a_file(tmp_path):
    f = tmp_path / "good.npz"
    f.write_bytes(b"PK\x03\x04\xbb\xff\x00 not a directory, nor text")
    return f


def test_data_generate_out_a_file(a_file, capsys):
    assert main(["data", "generate", "cube-single-play-v0", "--episodes", "1", "--out", str(a_file)]) == 2
    assert "is a file, not a directory" in _one_line(capsys)


def test_data_generate_disk_full(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(results.os, "fsync", _enospc)
    code = main(["data", "generate", "antmaze-large-navigate-v0", "--standin", "--episodes", "1",
                 "--val-episodes", "1", "--episode-length", "10", "--no-progress", "--out", str(tmp_path / "d")])
    assert code == 1
    assert "disk full while writing" in _one_line(capsys)
    assert os.listdir(tmp_path / "d") == []


def test_sweep_out_a_file(a_file, capsys):
    assert main(["sweep", "gin/experiments/sweep_smoke.gin", "--bind", "Sweep.seeds=[0]", "--out", str(a_file)]) == 2
    assert "is a file, not a directory" in _one_line(capsys)


def test_sweep_disk_full(tmp_path, monkeypatch, capsys):
    from floq.launch import sweep

    def full(self):
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(str(tmp_path), ".sweep.lock"))

    monkeypatch.setattr(sweep._SweepLock, "__enter__", full)
    assert main(["sweep", "gin/experiments/sweep_smoke.gin", "--bind", "Sweep.seeds=[0]",
                 "--out", str(tmp_path)]) == 1
    assert "No space left on device" in _one_line(capsys)


@pytest.mark.parametrize("doc", [{"runs": 5, "counts": []}, [1, 2], {"runs": [3, {"name": "x"}], "counts": {}}])
def test_status_of_a_malformed_sweep_json(tmp_path, doc, capsys):
    (tmp_path / "sw").mkdir()
    (tmp_path / "sw" / "sweep.json").write_text(json.dumps(doc))
    assert main(["status", str(tmp_path)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_analyze_published_not_a_csv(tmp_path, a_file, capsys):
    code = main(["analyze", "results/cpu_scale", "--out", str(tmp_path / "rep"), "--published", str(a_file)])
    assert code == 2
    assert "are not a readable CSV" in _one_line(capsys)
    assert not (tmp_path / "rep").exists()
