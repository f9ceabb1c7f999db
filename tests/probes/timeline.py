"""A pytest plugin that writes when each test starts and ends, per xdist worker: where a run's
wall time goes (a tail where one worker runs alone, gaps between tests).

    PYTHONPATH=tests/probes FLOQ_TIMELINE_DIR=/tmp/tl PYTEST_ADDOPTS="-p timeline" make test

writes /tmp/tl/<worker>.tsv lines "start|end <unix time> <node id> <cpu self> <cpu children>": the
two CPU columns are the worker's user + sys seconds so far, and those of its children that have
ended (a test's own CPU is the difference between its end and start lines). Not loaded otherwise."""

import os
import resource
import time

_DIR = os.environ.get("FLOQ_TIMELINE_DIR")


def _write(kind, nodeid):
    if _DIR:
        with open(os.path.join(_DIR, f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.tsv"), "a") as f:
            me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
            f.write(f"{kind}\t{time.time():.3f}\t{nodeid}\t{me.ru_utime + me.ru_stime:.2f}\t"
                    f"{kids.ru_utime + kids.ru_stime:.2f}\n")


def pytest_runtest_logstart(nodeid, location):
    _write("start", nodeid)


def pytest_runtest_logfinish(nodeid, location):
    _write("end", nodeid)
