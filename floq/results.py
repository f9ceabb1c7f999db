"""Run directories: atomic files, CSV logs that never lose columns, manifests, status,
the run lock, and safe run-directory names."""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import hashlib
import json
import math
import os
import re
import platform
import subprocess
import tempfile
from importlib import metadata

PACKAGES = ("floq", "jax", "jaxlib", "flax", "optax", "ogbench", "mujoco", "gin-config", "orbax-checkpoint",
            "numpy", "pandas")

#: Prefix of the temp files `atomic_open` writes beside their target (`clean_temp` removes
#: those of killed writes).
TEMP_PREFIX = ".tmp_"
#: run.json statuses the trainer writes.
from floq.columns import RUN_STATUSES  # noqa: E402,F401
#: errnos that mean "no space left" (a full disk, or a full quota).
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class RunError(Exception):
    """A failure while a run trains (disk full, a run directory already in use, ...), stated
    in one line; `floq run` prints it and exits non-zero. Nothing already committed is lost."""


class RunDiverged(RunError):
    """Training produced a non-finite loss, gradient or parameter (`floq run` exits 3)."""


def is_disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in _NO_SPACE


def disk_full_error(path: str, e: OSError) -> RunError:
    return RunError(f"disk full while writing {path}: {e.strerror or e}")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """Open a temp file beside `path`; on success it replaces `path` in one rename, so readers
    see the old or the new content, never a mix; on error it is removed (and `path` is left
    as it was). A full disk becomes a one-line `RunError`."""
    d = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(d, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=TEMP_PREFIX + os.path.basename(path))
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(path, e) from None
        raise
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str, data: str | bytes) -> None:
    with atomic_open(path, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def write_json(path: str, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str):
    with open(path) as f:
        return json.load(f)


def _json_default(x):
    try:
        return x.item()
    except AttributeError:
        return str(x)


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return repr(v)
    if hasattr(v, "item"):
        return _fmt(v.item())
    return str(v)


class CsvLog:
    """An append-only CSV whose header grows when new keys appear.

    Rows are buffered in memory as dicts and the whole file is rewritten atomically on
    flush(), so a new column is never dropped (the released floq/FQL CsvLogger freezes its
    header at the first row) and a crash never leaves a torn row.
    """

    def __init__(self, path: str, first_columns: tuple[str, ...] = ()):
        self.path = path
        self.first = list(first_columns)
        self.rows: list[dict] = []
        if os.path.exists(path):
            with open(path, newline="") as f:
                self.rows = list(csv.DictReader(f))

    def __len__(self) -> int:
        return len(self.rows)

    def append(self, row: dict) -> None:
        self.rows.append(dict(row))

    def truncate(self, n: int) -> None:
        """Keep the first n rows (resume: roll back rows written after the checkpoint)."""
        self.rows = self.rows[:n]

    def columns(self) -> list[str]:
        cols = list(self.first)
        seen = set(cols)
        for r in self.rows:
            for k in r:
                if k not in seen:
                    seen.add(k)
                    cols.append(k)
        return cols

    def flush(self) -> None:
        """Rewrites the file atomically (RunError on a full disk; the old file stays)."""
        buf = io.StringIO()
        cols = self.columns()
        w = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n")
        # csv quotes a field holding '\n' (the line terminator) but not a lone '\r', which a
        # reader takes for a line break: rows (or a header) holding one are fully quoted.
        quoted = csv.DictWriter(buf, fieldnames=cols, restval="", lineterminator="\n", quoting=csv.QUOTE_ALL)
        (quoted if any("\r" in c for c in cols) else w).writeheader()
        for r in self.rows:
            cells = {k: _fmt(v) for k, v in r.items()}
            (quoted if any("\r" in c for c in cells.values()) else w).writerow(cells)
        atomic_write(self.path, buf.getvalue())


def run_status(run_dir: str) -> str:
    """What a run directory holds, for launchers and sweeps:

    'absent'   nothing there;
    'partial'  started, not finished (run.json says 'running' or 'preempted', or is missing or
               unreadable while checkpoints exist): launching it again resumes it;
    'done'     finished;
    'diverged' stopped by the trainer on non-finite values (a result, not a crash: relaunching
               reproduces it);
    'failed'   stopped by an error the trainer recorded (run.json's 'reason' says which).
    """
    manifest = os.path.join(run_dir, "run.json")
    if not os.path.exists(manifest):
        return "partial" if os.path.isdir(os.path.join(run_dir, "checkpoints")) else "absent"
    try:
        status = read_json(manifest).get("status")
    except (OSError, ValueError, AttributeError):
        return "partial"
    return status if status in ("done", "diverged", "failed") else "partial"


def run_reason(run_dir: str) -> str | None:
    """run.json's one-line 'reason' (and 'step') for a diverged or failed run, else None."""
    try:
        man = read_json(os.path.join(run_dir, "run.json"))
    except (OSError, ValueError):
        return None
    if not isinstance(man, dict) or man.get("status") not in ("diverged", "failed"):
        return None
    reason = str(man.get("reason") or man["status"])
    if man.get("step") is None or re.search(r"\bstep \d", reason):  # the reason names its step already
        return reason
    return f"{reason} (step {man['step']})"


#: The operative config the trainer writes into a run directory; `floq run RUN/config.gin`
#: (or `floq run RUN`) runs that run again.
CONFIG_NAME = "config.gin"


def run_dir_of(path: str) -> tuple[str, dict] | None:
    """`(run directory, its run.json)` when `path` is a run directory or the config.gin in one
    (a directory that holds run.json); None for any other path (an ordinary gin file).

    A directory without run.json, or a run directory whose run.json cannot be read, is a
    ConfigError (one line)."""
    from floq.config import ConfigError

    full = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(full):
        run_dir = full
    elif os.path.basename(full) == CONFIG_NAME:
        run_dir = os.path.dirname(full)
    else:
        return None
    manifest = os.path.join(run_dir, "run.json")
    if not os.path.isfile(manifest):
        if run_dir == full:
            raise ConfigError(f"{path} is a directory but not a run directory (no run.json in it)")
        return None  # a config.gin of one's own, outside a run directory
    try:
        man = read_json(manifest)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{manifest} cannot be read ({type(e).__name__}: {e})") from None
    if not isinstance(man, dict):
        raise ConfigError(f"{manifest} is not a run manifest (not a JSON object)")
    return run_dir, man


# --------------------------------------------------------------------------------------
# Run directories: names, writability, the trainer's lock
# --------------------------------------------------------------------------------------

def check_name(what: str, name) -> str:
    """A single, relative path component (ConfigError otherwise)."""
    from floq.config import ConfigError

    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{what} must be a non-empty name, got {name!r}")
    seps = {os.sep, "/", "\\"} | ({os.altsep} if os.altsep else set())
    if os.path.isabs(name) or any(c in name for c in seps):
        raise ConfigError(f"{what} must be a plain name without path separators, got {name!r}")
    if ".." in name or name == "." or "\0" in name:
        raise ConfigError(f"{what} must not contain '..' (it would leave the results directory), got {name!r}")
    return name


def path_arg(text: str) -> str:
    """argparse `type` of a directory option: an empty value (an unset shell variable,
    `--run-dir "$RUN"`) is refused rather than read as the working directory or the default."""
    if not str(text).strip():
        import argparse

        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); give a directory")
    return text


def safe_run_dir(out_dir: str, experiment: str, run_name: str) -> str:
    """`out_dir/experiment/run_name` as an absolute path; refuses (ConfigError) an experiment
    or run name that is empty, absolute, or holds a path separator or '..'."""
    check_name("Trainer.experiment", experiment)
    check_name("the run name", run_name)
    return os.path.join(os.path.abspath(os.path.expanduser(out_dir)), experiment, run_name)


def ensure_writable_dir(path: str, what: str = "--out") -> str:
    """Checks, without writing anything, that `path` is (or can be created as) a writable
    directory; ConfigError (one line) when it is a file, lies under a file, or is read-only."""
    from floq.config import ConfigError

    path = os.path.abspath(os.path.expanduser(path))
    probe = path
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        if probe == path:
            raise ConfigError(f"{what} {path} is a file, not a directory")
        raise ConfigError(f"{what} {path} cannot be created: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" ({probe} is not writable)"
        raise ConfigError(f"{what} {path} is not writable{where}: choose another directory")
    return path


class RunLock:
    """An exclusive lock on RUN/.lock, held by the trainer for the whole run: a second trainer
    on the same run directory gets RunError('<dir> is being trained by pid N').

    The lock is an advisory `flock`, released by the kernel when the process dies (no stale
    lock after a crash or SIGKILL)."""

    NAME = ".lock"

    def __init__(self, run_dir: str):
        self.run_dir = os.path.abspath(run_dir)
        self.path = os.path.join(self.run_dir, self.NAME)
        self._file = None

    def acquire(self) -> "RunLock":
        try:
            os.makedirs(self.run_dir, exist_ok=True)
            f = open(self.path, "a+")
        except OSError as e:
            if is_disk_full(e):
                raise disk_full_error(self.path, e) from None
            raise RunError(f"cannot lock {self.run_dir}: {e.strerror or e}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                who = f"pid {holder}" if holder.isdigit() else "another process"
                raise RunError(f"{self.run_dir} is being trained by {who}") from None
            raise
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f
        return self

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
            self._file.close()  # closing the descriptor releases the flock
            self._file = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def move_run_aside(run_dir: str, still_other) -> tuple[str, dict | None] | None:
    """Move the run in `run_dir` to ``RUN.replaced-<time>`` (never delete it), under its lock
    (RunError, with nothing touched, while a trainer holds it). `still_other(manifest)` is asked
    again under the lock (run.json may have changed meanwhile); when it says False nothing is
    moved and None is returned. Returns (where it went, its run.json). ``floq run --force`` and
    ``floq sweep --force`` both move runs aside this way."""
    import time

    lock = RunLock(run_dir)
    lock.acquire()
    try:
        try:
            prev = read_json(os.path.join(run_dir, "run.json"))
        except (OSError, ValueError):
            prev = None
        if not still_other(prev):
            return None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest, n = f"{run_dir}.replaced-{stamp}", 1
        while os.path.exists(dest):
            dest = f"{run_dir}.replaced-{stamp}-{n}"
            n += 1
        os.rename(run_dir, dest)
    finally:
        lock.release()
    return dest, prev if isinstance(prev, dict) else None


def lock_holder(run_dir: str) -> str | None:
    """'pid N' (or 'another process') when a live trainer holds RUN/.lock, else None. Probes
    without creating or changing anything."""
    path = os.path.join(os.path.abspath(run_dir), RunLock.NAME)
    try:
        f = open(path)
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = f.read().strip()
                return f"pid {holder}" if holder.isdigit() else "another process"
            return None
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def git_commit() -> str:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        sha = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not sha:
        return "unknown"
    return sha + (" (dirty)" if dirty else "")


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo_relative(path: str) -> str:
    """``path`` relative to floq's repository (the clone that runs it; e.g.
    ``gin/experiments/quickstart.gin``), so that run.json does not name a clone's folder;
    absolute when it lies outside the repository."""
    full = os.path.abspath(os.path.expanduser(path))
    rel = os.path.relpath(full, REPO_ROOT)
    return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


_FINGERPRINTS: dict[tuple, str] = {}


def file_fingerprint(path: str) -> dict:
    """``{"path", "bytes", "sha256"}`` of a data file, so that run.json says which bytes a
    run trained on. ``path`` is repository-relative when inside the repository (see
    ``repo_relative``). The digest is cached per process by (path, size, mtime)."""
    full = os.path.abspath(os.path.expanduser(path))
    st = os.stat(full)
    key = (full, st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(full, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FINGERPRINTS[key] = h.hexdigest()
    return {"path": repo_relative(full), "bytes": st.st_size, "sha256": _FINGERPRINTS[key]}


def package_versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


class MachineLoad:
    """The machine's 1-minute load average (``os.getloadavg()[0]``), sampled at every log
    point: run.json ``load`` = ``{"cpus", "loadavg_mean", "loadavg_max", "samples"}``, so that
    wall-clock figures can say when runs shared a loaded machine (``analysis.report``).
    ``previous``: the record of this run's earlier run.json (a resume continues it)."""

    def __init__(self, previous=None, loadavg=None):
        prev = previous if isinstance(previous, dict) else {}
        try:
            self.n = max(0, int(prev.get("samples") or 0))
            self.total = float(prev["loadavg_mean"]) * self.n if self.n else 0.0
            self.top = float(prev["loadavg_max"]) if self.n else 0.0
        except (KeyError, TypeError, ValueError):
            self.n, self.total, self.top = 0, 0.0, 0.0
        self.loadavg = loadavg or os.getloadavg

    def sample(self) -> None:
        try:
            now = float(self.loadavg()[0])
        except (OSError, AttributeError):  # no load average on this platform
            return
        self.n, self.total, self.top = self.n + 1, self.total + now, max(self.top, now)

    def record(self) -> dict | None:
        """run.json's ``load`` (None before the first sample)."""
        if not self.n:
            return None
        return {"cpus": os.cpu_count(), "loadavg_mean": round(self.total / self.n, 2),
                "loadavg_max": round(self.top, 2), "samples": self.n}


def device_description() -> str:
    import jax

    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu: {os.cpu_count()} cores ({platform.processor() or platform.machine()})"
    return f"{d.platform}: {getattr(d, 'device_kind', str(d))} x{jax.device_count()}"


def summary_table(run_dirs) -> str:
    """One line per run: success over evaluations, speed, size."""
    import pandas as pd

    rows = []
    for d in run_dirs:
        ev = pd.read_csv(os.path.join(d, "eval.csv"))
        man = read_json(os.path.join(d, "run.json"))
        curve = " -> ".join(f"{s:.0%}@{int(st) // 1000}k" for st, s in ev.groupby("step").success.mean().items())
        rows.append([man["critic"], curve, f"{man.get('updates_per_s', float('nan')):.1f}",
                     f"{man['params']['total']:,}", f"{man['params']['critic_total']:,}",
                     f"{(man.get('flops_per_update') or float('nan')) / 1e9:.2f}", f"{man.get('wall_time_s', 0):.0f}"])
    head = ["critic", f"success ({ev.eval_episodes.iloc[0]} episodes per evaluation)", "updates/s", "params",
            "critic params", "GFLOP/update", "wall s"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows])
