"""`floq analyze --out` naming a file: one line and exit 2, the file untouched (audit 2026-12-07, 7)."""

from floq_test_utils import floq_main


def test_out_that_is_a_file_is_refused_in_one_line(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("keep me")
    res = floq_main("analyze", "results/cpu_scale", "--out", str(target))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "is a file, not a folder" in res.stderr
    assert "Errno" not in res.stderr
    assert target.read_text() == "keep me"
