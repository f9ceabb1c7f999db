"""A sweep's bookkeeping: sweep.json (every run's state, reason and attempts), written
atomically under a file lock so that concurrent drivers never lose an update."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from typing import Callable, Mapping



from floq.results import atomic_open
from floq.launch.expand import KEPT_STATES, STATES, SweepError, SweepPlan, tag_value


# --------------------------------------------------------------------------------------
# Bookkeeping: sweep.json.


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class SweepState:
    """The states of a sweep's runs, written to ``sweep.json`` (atomically) on every change."""

    def __init__(self, plan: SweepPlan, launcher: str, echo: Callable[[str], None] = print):
        self.plan = plan
        self.launcher = launcher
        self.echo = echo
        self._lock = threading.Lock()
        previous = self.read(plan.summary_path)
        prev_runs = {r.get("name"): r for r in (previous or {}).get("runs", [])}
        self.entries: dict[str, dict] = {}
        for run in plan.runs:
            prev = prev_runs.get(run.name, {})
            self.entries[run.name] = {
                "name": run.name,
                "state": prev.get("state", "pending"),
                "reason": prev.get("reason"),
                "run_dir": run.run_dir,
                "log": run.log_path,
                "bindings": list(run.bindings),
                "tags": dict(run.tags),
                "attempts": int(prev.get("attempts", 0)),
                "job_id": prev.get("job_id"),
                "started": prev.get("started"),
                "finished": prev.get("finished"),
            }

    @staticmethod
    def read(path: str) -> dict | None:
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def counts(self) -> dict[str, int]:
        counts = {state: 0 for state in STATES}
        for entry in self.entries.values():
            counts[entry["state"]] = counts.get(entry["state"], 0) + 1
        return counts

    def summary(self) -> dict:
        return {
            "sweep": self.plan.name,
            "file": self.plan.file,
            "sweep_dir": self.plan.sweep_dir,
            "launcher": self.launcher,
            "updated": _now(),
            "counts": self.counts(),
            "axes": {a.key: [tag_value(v) for v in a.values] for a in self.plan.axes},
            "grids": [g.name for g in self.plan.grids if g.name is not None],
            "bindings": list(self.plan.bindings),
            "seeds": self.plan.seeds,
            "runs": list(self.entries.values()),
        }

    def write(self) -> None:
        # floq.results' one atomic writer (a full disk: one-line RunError, the old file kept)
        with atomic_open(self.plan.summary_path) as f:
            json.dump(self.summary(), f, indent=1, default=str)

    def progress_line(self) -> str:
        c = self.counts()
        diverged = f"{c['diverged']} diverged, " if c["diverged"] else ""
        return (
            f"[{self.plan.name}] {c['done']} done, {c['running']} running, "
            f"{c['failed']} failed, {diverged}{c['pending']} pending"
        )

    def set(
        self, name: str, state: str, info: Mapping[str, object] | None = None, quiet: bool = False
    ) -> None:
        info = dict(info or {})
        with self._lock:
            entry = self.entries[name]
            entry["state"] = state
            if state == "running":
                entry["attempts"] += 1
                entry["started"] = _now()
                entry["reason"] = None
                entry["finished"] = None
            elif state in ("done", *KEPT_STATES):
                entry["finished"] = _now()
                entry["reason"] = info.get("reason") if state in KEPT_STATES else None
            for key in ("job_id", "task_id", "host", "gpu"):
                if info.get(key) is not None:
                    entry[key] = info[key]
            self.write()
            if not quiet:
                detail = {
                    "running": f"running (log: {entry['log']})",
                    "done": "done",
                    "failed": f"failed: {entry['reason']} (log: {entry['log']})",
                    "diverged": f"diverged: {entry['reason']} (log: {entry['log']})",
                    "pending": "pending",
                }[state]
                line = f"{self.progress_line()} | {name} {detail}"
                if state in ("done", *KEPT_STATES):
                    line += self._eta()
                self.echo(line)

    def _eta(self) -> str:
        """' | ETA ...' over the sweep's runs, as `floq status` computes it ('' if it cannot)."""
        try:
            from floq.status import sweep_eta

            return " | " + sweep_eta([run.run_dir for run in self.plan.runs],
                                     [self.entries[run.name]["state"] for run in self.plan.runs])
        except Exception:  # noqa: BLE001 - an estimate never breaks a sweep
            return ""


class _SweepLock:
    """One driver per sweep directory at a time (an advisory ``flock``)."""

    def __init__(self, sweep_dir: str):
        os.makedirs(sweep_dir, exist_ok=True)
        self.path = os.path.join(sweep_dir, ".sweep.lock")
        self.file = None

    def __enter__(self):
        self.file = open(self.path, "a+")
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise SweepError(
                f"this sweep is already being run by {holder} (lock {self.path})"
            ) from e
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"pid {os.getpid()}")
        self.file.flush()
        return self

    def __exit__(self, *exc):
        self.file.close()
