"""A pytest plugin that writes when each test starts and ends, per xdist worker: where a run's
wall time goes (a tail where one worker runs alone, gaps between tests).

    PYTHONPATH=tests/probes FLOQ_TIMELINE_DIR=/tmp/tl PYTEST_ADDOPTS="-p timeline" make test

writes /tmp/tl/<worker>.tsv lines "start|end <unix time> <node id>". Not loaded otherwise."""

import os
import time

_DIR = os.environ.get("FLOQ_TIMELINE_DIR")


def _write(kind, nodeid):
    if _DIR:
        with open(os.path.join(_DIR, f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.tsv"), "a") as f:
            f.write(f"{kind}\t{time.time():.3f}\t{nodeid}\n")


def pytest_runtest_logstart(nodeid, location):
    _write("start", nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _write("end", nodeid)
