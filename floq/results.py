"""Run directories: atomic files, CSV logs that never lose columns, manifests, status."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata

PACKAGES = ("floq", "jax", "jaxlib", "flax", "optax", "ogbench", "mujoco", "gin-config", "orbax-checkpoint",
            "numpy", "pandas")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w"):
    """Open a temp file beside `path`; on success it replaces `path` in one rename, so readers
    see the old or the new content, never a mix; on error it is removed."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_" + os.path.basename(path))
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.columns(), restval="", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: _fmt(v) for k, v in r.items()})
        atomic_write(self.path, buf.getvalue())


def run_status(run_dir: str) -> str:
    """'absent' (nothing there), 'partial' (started, not finished) or 'done'."""
    manifest = os.path.join(run_dir, "run.json")
    if not os.path.exists(manifest):
        return "partial" if os.path.isdir(os.path.join(run_dir, "checkpoints")) else "absent"
    try:
        status = read_json(manifest).get("status")
    except (OSError, ValueError):
        return "partial"
    return "done" if status == "done" else "partial"


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


def package_versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pass
    out["python"] = platform.python_version()
    return out


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
