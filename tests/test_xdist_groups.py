"""`make test`'s module groups hold under the installed pytest and pytest-xdist: tests of one
xdist_group run on one worker (floq_test_utils.honour_xdist_groups, called by tests/conftest.py;
pytest-xdist 3.8.0 under pytest 9.2 lost the group without it). Runs a small suite in two
worker processes."""

from __future__ import annotations

import inspect
import textwrap

import pytest

from floq_test_utils import honour_xdist_groups

pytest_plugins = ["pytester"]


@pytest.mark.subprocess  # starts a two-worker pytest-xdist session
def test_a_group_runs_on_one_worker(pytester, monkeypatch):
    pytester.makeconftest(
        "import pytest\n\n"
        + textwrap.dedent(inspect.getsource(honour_xdist_groups))
        + textwrap.dedent("""

        @pytest.hookimpl(wrapper=True)
        def pytest_collection_modifyitems(config, items):
            yield
            honour_xdist_groups(items)
        """))
    tests = []
    for i in range(8):  # the grouped tests interleaved with free ones, so that 'load' would split them
        tests.append(f"""
@pytest.mark.xdist_group("g")
def test_grouped_{i}(worker_id):
    record("grouped", worker_id)

def test_free_{i}(worker_id):
    time.sleep(0.05)
    record("free", worker_id)
""")
    pytester.makepyfile(test_g="import os, time\nimport pytest\n\n"
                        "def record(kind, worker):\n"
                        "    with open(os.path.join(os.environ['GROUP_LOG'], kind + '-' + worker), 'a') as f:\n"
                        "        f.write('x')\n" + "".join(tests))
    log = pytester.mkdir("log")
    monkeypatch.setenv("GROUP_LOG", str(log))
    res = pytester.runpytest_subprocess("-p", "xdist", "-n", "2", "--dist", "loadgroup", "-rA", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=16)
    # the controller saw the group (pytest-xdist schedules by the '@g' suffix of the id)...
    passed = [line.split()[1] for line in res.outlines if line.startswith("PASSED ")]
    assert sorted(n for n in passed if n.endswith("@g")) == sorted(f"test_g.py::test_grouped_{i}@g" for i in range(8))
    grouped = sorted(p.name for p in log.iterdir() if p.name.startswith("grouped-"))
    assert len(grouped) == 1, grouped  # ...and ran every grouped test on one worker
    assert len((log / grouped[0]).read_text()) == 8
    # both workers took part (so one worker for the group is not just one worker for everything)
    assert {p.name.split("-", 1)[1] for p in log.iterdir()} == {"gw0", "gw1"}
