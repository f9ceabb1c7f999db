"""No silent phase: a sweep says it builds its configurations, `floq analyze` ends with the
report's headline and leaderboard (not only the file's path)."""

from __future__ import annotations

import pytest

from floq.cli import main, report_summary

SWEEP = "gin/experiments/sweep_smoke.gin"


def test_a_sweep_says_it_builds_its_configurations(tmp_path, capsys):
    assert main(["sweep", SWEEP, "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    # 2 x 2 grid points, 2 seeds each: 4 configurations (seeds share one), said before the listing
    assert out[0] == ("sweep sweep_smoke: building 4 configurations (checking every value before anything "
                      "is launched)...")
    assert any(ln.startswith("pricing the runs to do") for ln in out)


@pytest.mark.slow  # the real analysis of a committed study (about 10 s)
def test_analyze_ends_with_headline_and_leaderboard(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["analyze", "results/cpu_scale", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(out / "index.md")
    assert lines[1].startswith("Answer. Best configuration: floq (K=4), mean final success 28.4%")
    assert "leaderboard (leaderboard_env.md):" in lines
    table = lines[lines.index("leaderboard (leaderboard_env.md):") + 1:]
    assert table[0].split() == ["Method", "cube-single-play"]
    assert table[1].split()[:3] == ["floq", "(K=1)", "21.3"] and "**" not in "\n".join(lines)


def test_report_summary_of_a_folder_without_a_report_is_empty(tmp_path):
    assert report_summary(str(tmp_path)) == []
