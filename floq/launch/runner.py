"""One run, executed where a launcher put it: a ``floq run`` subprocess with its log.

Every launcher (local processes, Slurm jobs, Ray tasks) ends up calling :func:`execute`
on the machine that trains. It runs ``python -m floq run FILE.gin --bind ... --run-dir
DIR --tag k=v`` as a child process, appends its stdout and stderr to ``DIR/log.txt``,
and reports whether the run is done (``run.json`` says ``"status": "done"``) or why not
(the last line of the log).

Standard library only (and :mod:`floq.results`, which is too): Slurm and Ray workers
unpickle this module, and the trainer's own imports happen in the child process.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Mapping, Sequence

# run_status / run_reason are floq.results' (standard library only, like this module);
# re-exported here for the launchers.
from floq.results import run_reason, run_status  # noqa: F401

#: Lines the launcher itself writes into log.txt start with this.
LOG_MARK = "==== floq launch"
#: The file in a run directory that holds the run's output (CONTRACTS.md).
LOG_NAME = "log.txt"
#: Seconds a terminated child gets to exit (and maybe save) before SIGKILL.
TERMINATE_GRACE_S = 30.0
#: ``floq run``'s exit status for a run that diverged (floq/cli.py's EXIT_DIVERGED).
EXIT_DIVERGED = 3

# Child processes started by execute() in this process (for cleanup on signals).
_ACTIVE: dict[int, subprocess.Popen] = {}
_ACTIVE_LOCK = threading.Lock()
# Set by terminate_active(): a child that registers afterwards is stopped at once, so no
# trainer starts (and outlives the driver) while the launcher is shutting down.
_STOPPING = threading.Event()


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: what ``floq run`` receives.

    Attributes:
      name: the run's name (its directory's base name), e.g. ``critic_flow_steps=2,seed=0``.
      gin_files: gin files, in order (absolute paths).
      bindings: gin bindings applied after the files, e.g. ``('CRITIC_FLOW_STEPS = 2',)``.
      run_dir: the run directory (absolute path).
      tags: ``{column name: value}``; each becomes an eval.csv column.
      retry_failed: pass ``--retry-failed`` (``floq sweep --retry-failed``): a run that
        diverged trains again from its last good checkpoint instead of being refused.
    """

    name: str
    gin_files: tuple[str, ...]
    bindings: tuple[str, ...]
    run_dir: str
    tags: Mapping[str, object] = dataclasses.field(default_factory=dict)
    retry_failed: bool = False

    @property
    def log_path(self) -> str:
        return os.path.join(self.run_dir, LOG_NAME)

    def command(self, runner: Sequence[str] | None = None) -> list[str]:
        """The command line that trains this run; ``runner`` is the ``floq run`` prefix."""
        cmd = list(runner) if runner else default_runner()
        cmd += list(self.gin_files)
        for binding in self.bindings:
            cmd += ["--bind", binding]
        cmd += ["--run-dir", self.run_dir]
        for key, value in self.tags.items():
            cmd += ["--tag", f"{key}={value}"]
        if self.retry_failed:
            cmd.append("--retry-failed")
        return cmd


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one execution of a run ended.

    Attributes:
      ok: the run is done (exit code 0 and ``run.json`` status ``done``).
      reason: why not (one line), or ``None`` when ok.
      returncode: the child's exit code (``None`` when it never started).
      diverged: the run diverged (``floq run`` exited 3, or 0, and run.json says
        ``diverged``): a result, not a crash; sweeps count it apart from failures.
    """

    ok: bool
    reason: str | None = None
    returncode: int | None = None
    diverged: bool = False

    @property
    def state(self) -> str:
        """The sweep state this outcome puts a run in: ``'done' | 'diverged' | 'failed'``."""
        return "done" if self.ok else "diverged" if self.diverged else "failed"


def default_runner() -> list[str]:
    """``python -m floq run`` with this process's interpreter."""
    return [sys.executable, "-m", "floq", "run"]


def package_root() -> str:
    """The directory that holds the ``floq`` package (put on the child's PYTHONPATH)."""
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_log_line(log_path: str, max_bytes: int = 65536, max_chars: int = 300) -> str | None:
    """The last error line of ``floq run`` in the log, else the last non-empty line the run
    printed (tqdm's ``\\r`` redraws split lines)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            tail = f.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    text = _ANSI.sub("", tail)
    # floq run's own one-line account wins over a progress bar redrawn after it (another
    # process writing the same log, e.g. a trainer of an earlier driver)
    at = max(text.rfind("floq run: error:"), text.rfind("floq run: diverged"))
    if at >= 0:  # floq run's own one line, whole (its advice must not be cut mid-word)
        return re.split(r"[\r\n]", text[at:])[0].strip()
    for line in reversed(re.split(r"[\r\n]", text)):
        line = line.strip()
        if line and not line.startswith(LOG_MARK):
            return line[:max_chars]
    return None


def _ends_with_newline(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
    except OSError:  # empty or missing
        return True


def marker_path(state_dir: str, run_name: str) -> str:
    return os.path.join(state_dir, run_name + ".started")


def read_marker(state_dir: str, run_name: str) -> dict | None:
    """The start marker ``execute`` wrote for ``run_name`` (``None`` if none or unreadable)."""
    try:
        with open(marker_path(state_dir, run_name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: str, obj) -> None:
    """floq.results' one atomic writer (temp file beside `path`, one rename; removed on error)."""
    from floq.results import atomic_open

    with atomic_open(path) as f:
        json.dump(obj, f, indent=1)


def signal_active(sig: int = signal.SIGTERM) -> None:
    """Sends ``sig`` to every child this process started (no waiting: safe in a signal handler).

    Only the trainer itself is signalled (it stops its own evaluation workers);
    ``SIGKILL`` escalations go to its whole process group.
    """
    with _ACTIVE_LOCK:
        pids = list(_ACTIVE)
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def _kill_group(pid: int) -> None:
    """SIGKILLs what is left of a child's process group (its evaluation workers, say) once the
    child itself has exited: nothing a run started outlives it."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:  # ESRCH: the group is already empty
        pass


def _wait_interruptibly(proc: subprocess.Popen) -> int:
    """proc.wait() in short slices: an exception raised in this thread from outside (Ray's
    cancel of a task, submitit's requeue) is delivered within a second instead of only when
    the child exits, so the child can still be stopped gracefully."""
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


def stopping() -> bool:
    """Whether terminate_active() was called (and no launch has started since)."""
    return _STOPPING.is_set()


def reset_stopping() -> None:
    """Clears the stopping state (a launcher calls it when a new launch starts)."""
    _STOPPING.clear()


def terminate_active(grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERMs every child this process started (the trainer checkpoints and exits 143);
    SIGKILLs the process group of those alive after ``grace_s``, and of every child that
    exited (stragglers). Children that register afterwards are stopped on registration."""
    with _ACTIVE_LOCK:
        _STOPPING.set()
        procs = list(_ACTIVE.values())
    for proc in procs:
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except OSError:
                pass
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.wait()
        _kill_group(proc.pid)


def execute(
    run: Run,
    runner: Sequence[str] | None = None,
    state_dir: str | None = None,
    launch_id: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Trains ``run`` in a child process (resuming if its directory holds a checkpoint).

    Args:
      run: the run.
      runner: command prefix that takes ``FILE.gin ... --bind --run-dir --tag`` (default
        ``python -m floq run``); tests pass a fake trainer.
      state_dir: the sweep's bookkeeping folder: ``execute`` holds ``<name>.lock`` there
        while the run trains (so no run trains twice at once) and writes ``<name>.started``
        (with ``launch_id``) so the launcher can tell it started.
      launch_id: an opaque token written into the start marker.
      env: extra environment variables for the child (e.g. ``CUDA_VISIBLE_DEVICES``).

    Returns:
      The outcome; never raises for a failing run.
    """
    os.makedirs(run.run_dir, exist_ok=True)
    lock_file = None
    if state_dir is not None:
        os.makedirs(state_dir, exist_ok=True)
        lock_file = open(os.path.join(state_dir, run.name + ".lock"), "a+")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            lock_file.close()
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return Outcome(False, "already training in another process (its lock is held)")
            raise
        marker = {
            "launch_id": launch_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
        }
        _write_json_atomic(marker_path(state_dir, run.name), marker)
    try:
        outcome = _execute_child(run, runner, env)
        if state_dir is not None:
            _write_json_atomic(
                marker_path(state_dir, run.name),
                {
                    **marker,
                    "ended": time.time(),
                    "ok": outcome.ok,
                    "reason": outcome.reason,
                    "returncode": outcome.returncode,
                    "diverged": outcome.diverged,
                },
            )
        return outcome
    finally:
        if lock_file is not None:
            lock_file.close()


def _execute_child(
    run: Run, runner: Sequence[str] | None, env: Mapping[str, str] | None
) -> Outcome:
    cmd = run.command(runner)
    child_env = dict(os.environ)
    root = package_root()
    path = child_env.get("PYTHONPATH", "")
    if root not in path.split(os.pathsep):
        child_env["PYTHONPATH"] = root + (os.pathsep + path if path else "")
    child_env.setdefault("PYTHONUNBUFFERED", "1")
    child_env.update(env or {})
    start = time.time()
    with open(run.log_path, "a", encoding="utf-8") as log:
        gpu = child_env.get("CUDA_VISIBLE_DEVICES")
        if log.tell() > 0 and not _ends_with_newline(run.log_path):
            log.write("\n")
        log.write(
            f"{LOG_MARK}: {time.strftime('%Y-%m-%d %H:%M:%S')} on {socket.gethostname()}"
            + (f" CUDA_VISIBLE_DEVICES={gpu}" if gpu is not None else "")
            + "\n"
        )
        log.write(f"{LOG_MARK}: {shlex.join(cmd)}\n")
        log.flush()
        try:
            # A new session: the child and its evaluation workers are signalled as a group.
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as e:
            log.write(f"{LOG_MARK}: could not start: {e}\n")
            return Outcome(False, f"could not start {cmd[0]}: {e}")
        with _ACTIVE_LOCK:
            _ACTIVE[proc.pid] = proc
            late = _STOPPING.is_set()
        if late:  # the launcher is stopping: this run must not start training
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except OSError:
                pass
        try:
            returncode = _wait_interruptibly(proc)
        except BaseException as e:  # e.g. SystemExit from submitit's requeue, KeyboardInterrupt
            log.write(
                f"\n{LOG_MARK}: stopped by the launcher ({type(e).__name__}) after "
                f"{time.time() - start:.1f} s; the run resumes when launched again\n"
            )
            raise
        finally:
            if proc.poll() is None:  # interrupted (e.g. SystemExit from a signal handler)
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                    proc.wait(timeout=TERMINATE_GRACE_S)
                except (OSError, subprocess.TimeoutExpired):
                    _kill_group(proc.pid)
                    proc.wait()
            _kill_group(proc.pid)  # stragglers of the run's own process group
            with _ACTIVE_LOCK:
                _ACTIVE.pop(proc.pid, None)
        log.flush()
        last = last_log_line(run.log_path)
        if not _ends_with_newline(run.log_path):
            log.write("\n")
        log.write(f"{LOG_MARK}: exit code {returncode} after {time.time() - start:.1f} s\n")
    if returncode < 0:
        name = (
            signal.Signals(-returncode).name
            if -returncode in signal.valid_signals()
            else -returncode
        )
        return Outcome(
            False, f"killed by {name}" + (f" (last line: {last})" if last else ""), returncode
        )
    if returncode != 0:
        recorded = run_reason(run.run_dir)  # the trainer's own account (diverged, failed)
        diverged = returncode == EXIT_DIVERGED and run_status(run.run_dir) == "diverged"
        return Outcome(False, recorded or last or f"exit code {returncode}", returncode, diverged)
    status = run_status(run.run_dir)
    if status in ("diverged", "failed"):
        return Outcome(
            False, f"{status}: {run_reason(run.run_dir)}", returncode, status == "diverged"
        )
    if status != "done":
        return Outcome(
            False,
            f"exited 0 but the run's status is {status!r}"
            + (f" (last line: {last})" if last else ""),
            returncode,
        )
    return Outcome(True, None, returncode)
