"""Helpers shared by floq's top-level tests (imported by name; not a conftest, so that
conftest.py files in sub-directories cannot shadow it)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from importlib import metadata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Long end-to-end tests (marked slow) run a small form under `make test` and their full form
# with FLOQ_FULL_TESTS=1 (`make test-full`): more kill points, evaluator variants, groups.
FULL = os.environ.get("FLOQ_FULL_TESTS", "") not in ("", "0")


# -- caches outside the clone ------------------------------------------------------------------
# Compiled programs and generated test datasets are pure functions of their inputs, so they are
# kept across sessions and clones in a user cache folder ($FLOQ_CACHE_DIR, else
# $XDG_CACHE_HOME/floq, else ~/.cache/floq; the folder floq sweep's FLOP cache uses), keyed by
# what they depend on: the jax/jaxlib versions, and the generator's version (the source of
# floq/data/generate.py and the simulator packages it drives). A new key starts a fresh folder;
# an empty cache only makes the suite slower (`make test-cold` proves it passes that way).

def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "none"


def cache_root() -> str:
    root = os.environ.get("FLOQ_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "floq")
    return os.path.abspath(root)


def jax_cache_dir() -> str:
    return os.path.join(cache_root(), "jax", f"jax-{_version('jax')}-jaxlib-{_version('jaxlib')}")


def generator_version() -> str:
    """A short digest of what generated data depends on besides (dataset, episodes, seed,
    length): floq's generator code and the versions of the simulator packages it drives."""
    h = hashlib.sha256()
    with open(os.path.join(REPO, "floq", "data", "generate.py"), "rb") as f:
        h.update(f.read())
    for dist in ("ogbench", "mujoco", "gymnasium", "numpy"):
        h.update(f"{dist}={_version(dist)};".encode())
    return h.hexdigest()[:16]


def test_data_dir() -> str:
    return os.path.join(cache_root(), "test-data", f"gen-{generator_version()}")


test_data_dir.__test__ = False  # a helper, not a test
CACHE = cache_root()


# The run the SIGKILL / resume tests compare against (conftest.resume_reference): floq critic,
# two seeds, 300 steps with evaluations every 100, logs and checkpoints every 50
# (test_seeds_and_resume, test_async_resume).
RESUME_ARGS = ["gin/experiments/smoke.gin", "gin/critics/floq.gin", "--bind", "TRAIN_STEPS=300",
               "--bind", "CHECKPOINT_INTERVAL=50", "--bind", "EVAL_INTERVAL=100", "--bind", "LOG_INTERVAL=50",
               "--bind", "NUM_SEEDS=2"]


# -- running floq ------------------------------------------------------------------------------

def floq_cmd(*args, cwd=REPO, timeout=600, env=None):
    """Run `python -m floq ...` in a child process; returns the CompletedProcess. Only for what
    the process itself proves (exit paths, signals, kills, locks across processes)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "floq", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def floq_main(*args, cwd=REPO, env=None):
    """`floq ARGS` in this process (floq.cli.main): the same exit code, stdout and stderr as
    `floq_cmd`, without a new interpreter, JAX/MuJoCo import or compilation (programs compiled
    by earlier in-process runs are reused). Returns a CompletedProcess."""
    from floq import cli

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_env = os.getcwd(), dict(os.environ)
    os.chdir(cwd)
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main([str(a) for a in args])
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
    return subprocess.CompletedProcess(["floq", *args], code, out.getvalue(), err.getvalue())


def copy_run(src, dst):
    """A private copy of a (session-scoped, shared) run directory, for a test that changes it."""
    shutil.copytree(str(src), str(dst), ignore=shutil.ignore_patterns(".lock"))
    return dst


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


def init_state(algorithm, critic, key, obs, act):
    """`algorithm.init(key, critic, obs, act)` as one program compiled as the trainer compiles
    initialisation (floq.train.run_once_jit: the same bits as op by op, compiled in a fraction
    of the time XLA takes to compile each initialiser's operations one at a time)."""
    from floq.train import run_once_jit

    return run_once_jit(lambda k: algorithm.init(k, critic, obs, act))(key)


def honour_xdist_groups(items):
    """pytest-xdist (3.8.0) puts a test in its xdist_group by renaming `item._nodeid` to
    `<id>@<group>`, and the controller groups by that suffix; pytest 9.2's `Node.nodeid` reads
    `item._id` instead, so the rename is lost and `--dist loadgroup` spreads a group over both
    workers like `--dist load`. Carry the rename over to the id pytest reads (a no-op where
    pytest still reads `_nodeid`, or outside pytest-xdist)."""
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # pytest < 9.2: the rename already took effect
        return
    for item in items:
        renamed = item.__dict__.get("_nodeid")
        if isinstance(renamed, str) and "@" in renamed and renamed != item.nodeid:
            item._id = coerce_node_id(renamed)
