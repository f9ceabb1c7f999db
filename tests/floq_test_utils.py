"""Helpers shared by floq's top-level tests (imported by name; not a conftest, so that
conftest.py files in sub-directories cannot shadow it)."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, ".floq_cache")
# Long end-to-end tests (marked slow) run a small form under `make test` and their full form
# with FLOQ_FULL_TESTS=1 (`make test-full`): more kill points, evaluator variants, groups.
FULL = os.environ.get("FLOQ_FULL_TESTS", "") not in ("", "0")


def floq_cmd(*args, cwd=REPO, timeout=600, env=None):
    """Run `python -m floq ...`; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "floq", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def kill_after_checkpoint(args, run_dir, step: int, timeout: float = 300):
    """Start `floq run ARGS --run-dir RUN_DIR`, SIGKILL it once the checkpoint of `step` is on
    disk; returns whether the run was still going when killed (else the kill proved nothing)."""
    import signal
    import time

    proc = subprocess.Popen([sys.executable, "-m", "floq", "run", *args, "--run-dir", str(run_dir)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = os.path.join(str(run_dir), "checkpoints", f"step_{step}.json")
    deadline = time.time() + timeout
    while not os.path.exists(marker) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    interrupted = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return interrupted
