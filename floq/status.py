"""Where runs stand: ``floq status DIR`` and the end-of-run summary table.

``floq status DIR`` lists the run directories under DIR (any folder holding ``run.json``,
``eval.csv`` or ``train.csv``; a sweep folder's runs come from its ``sweep.json``, so the
runs not started yet are listed too, as 'pending'), one line each:

- status: run.json's ``status`` (running, done, diverged, preempted, failed), checked against
  the processes that hold the run and the sweep: 'running' only while a trainer holds the
  run's lock (RUN/.lock, an flock the kernel releases when the trainer dies), else 'stopped'
  (killed: SIGKILL, out of memory, a lost node; running it again resumes it); 'starting' for a
  sweep run that its live sweep driver launched and whose trainer has not taken the lock yet
  (reading data, building; also a relaunch of a preempted run); 'failed' also when the sweep
  recorded the run as failed; 'partial' for a folder with result files but no manifest;
  'pending' for a sweep run not started (nothing on disk, or launched by a sweep driver that
  is gone); 'unreadable' for a run.json that is not a JSON object or names no known status.
  (The lock is a kernel flock: a run training on another host is seen only where the shared
  filesystem carries flocks across hosts, as NFSv4 and Lustre's `flock` mount option do.)
  A note after the status says what was found wrong (an eval.csv without rows, a sweep.json
  that cannot be read, a sweep state that run.json contradicts).
- step / train_steps: the largest step in run.json, train.csv and eval.csv, and the run's
  ``protocol.train_steps``.
- last success: the mean over seeds at the last evaluation, with its step.
- updates/s: the ``updates_per_s`` of the last train.csv logging point (wall-clock rate
  between logging points, evaluation included); run.json's median for finished runs.
- updated: how long ago the run last wrote run.json, train.csv or eval.csv.

Each sweep (and the loose runs of a folder, together) ends with one line and an ETA from
observed wall-clock time, so that start-up, compilation and evaluation are counted::

    seconds per step = a run's wall-clock seconds per step after compilation: between its
                       first and last train.csv logging points (evaluation and checkpoints
                       included), else run.json's (train_s + eval_wait_s + checkpoint_s) / step
    start-up         = run.json's setup_s + compile_s (data on the device, compilation)
    a run's time left = (train_steps - step) x its own seconds per step; a run that has not
                       trained yet (pending, starting, compiling) takes the group's median
                       seconds per step and start-up
    ETA              = sum of the runs' time left / the runs training at once (those running
                       or starting now; one when none is), and at least the longest run's
                       time left

A run not started counts the median train_steps of the group's known runs (when no run has
started yet, the ETA says how many runs of unknown length are left). When only the
training rate is known (updates/s of a run without wall-clock measurements), the ETA is
shown as a lower bound ('ETA >= ...'); when no speed is known at all it is 'unknown'. The
line names the runs training now; 'running' rows not updated for STALE_S seconds are said
to be stalled, never 'nothing running'.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import statistics
import sys
import time

RESULT_FILES = ("run.json", "eval.csv", "train.csv")
SKIP_DIRS = {"checkpoints", "wandb", "tensorboard", "__pycache__"}
STALE_S = 15 * 60
FINAL = {"done", "diverged", "failed"}
#: The statuses floq run writes into run.json.
KNOWN = {"running", "done", "diverged", "preempted", "failed"}


@dataclasses.dataclass
class RunInfo:
    """What one run directory says about itself."""

    name: str
    run_dir: str
    status: str
    step: int | None = None
    train_steps: int | None = None
    last_success: float | None = None
    last_eval_step: int | None = None
    updates_per_s: float | None = None
    updated: float | None = None
    reason: str | None = None
    s_per_step: float | None = None   # wall-clock seconds per step after compilation
    startup_s: float | None = None    # setup + compilation (run.json)
    note: str | None = None           # what was found wrong, shown after the status
    holder: str | None = None         # 'pid N' while a trainer holds the run's lock


@dataclasses.dataclass
class Group:
    """A sweep (with its sweep.json) or the loose runs of a folder."""

    title: str
    runs: list[RunInfo]
    sweep: dict | None = None
    note: str | None = None  # e.g. a sweep.json that cannot be read


# -- reading ---------------------------------------------------------------------------------


def _read_json(path: str):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _read_csv(path: str) -> list[dict]:
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _float(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _int(v) -> int | None:
    x = _float(v)
    return int(x) if x is not None else None


def _by_step(rows: list[dict], column: str) -> dict[int, float]:
    """{step: mean of `column` over the rows (seeds, tasks) at that step}, in step order."""
    acc: dict[int, list[float]] = {}
    for r in rows:
        s, v = _int(r.get("step")), _float(r.get(column))
        if s is not None and v is not None:
            acc.setdefault(s, []).append(v)
    return {s: sum(v) / len(v) for s, v in sorted(acc.items())}


def _wall_per_step(train: list[dict], manifest: dict | None) -> float | None:
    """Wall-clock seconds per step after compilation (see the module docstring)."""
    points: dict[int, float] = {}
    for r in train:
        s, w = _int(r.get("step")), _float(r.get("wall_time"))
        if s is not None and w is not None:
            points[s] = max(w, points.get(s, w))
    if len(points) >= 2:
        (s0, w0), (s1, w1) = min(points.items()), max(points.items())
        if s1 > s0 and w1 > w0:
            return (w1 - w0) / (s1 - s0)
    m = manifest or {}
    step = _int(m.get("step"))
    busy = [_float(m.get(k)) for k in ("train_s", "eval_wait_s", "checkpoint_s")]
    if step and busy[0]:
        return sum(b or 0.0 for b in busy) / step
    return None


def _startup(manifest: dict | None) -> float | None:
    m = manifest or {}
    setup, comp = _float(m.get("setup_s")), _float(m.get("compile_s"))
    return (setup or 0.0) + comp if comp else None


def _header_only(path: str) -> bool:
    """A CSV file that holds a header line and no row."""
    try:
        with open(path, newline="") as f:
            lines = [ln for ln in f.read(1 << 16).splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    return len(lines) == 1


def _flock_held(path: str) -> bool:
    """Whether a process holds an flock on `path` (probed, nothing created or changed)."""
    import errno
    import fcntl

    try:
        f = open(path)
    except OSError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            return e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)
        fcntl.flock(f, fcntl.LOCK_UN)
    return False


def _lock_pid(run_dir: str) -> str | None:
    """The pid a trainer wrote into RUN/.lock and did not clear (it ends without releasing the
    lock only when killed)."""
    try:
        with open(os.path.join(run_dir, ".lock")) as f:
            text = f.read().strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def read_run(run_dir: str, name: str | None = None) -> RunInfo:
    """A run directory's status, progress, last success and speed (missing files allowed)."""
    from floq.results import lock_holder

    manifest_path = os.path.join(run_dir, "run.json")
    manifest = _read_json(manifest_path)
    unreadable = os.path.exists(manifest_path) and not isinstance(manifest, dict)
    manifest = manifest if isinstance(manifest, dict) else None
    train_path, eval_path = os.path.join(run_dir, "train.csv"), os.path.join(run_dir, "eval.csv")
    train = _read_csv(train_path)
    evals = _read_csv(eval_path)
    holder = lock_holder(run_dir) if os.path.isdir(run_dir) else None
    reason = note = None
    if unreadable:
        status = "unreadable"  # a run.json that is not a JSON object: never 'pending'
        reason = "run.json is not a readable JSON object"
    elif manifest and manifest.get("status") not in (None, ""):
        status = manifest["status"]
        if not isinstance(status, str) or status not in KNOWN:
            reason = f"run.json's status {status!r} is not one floq writes"
            status = "unreadable"
    elif manifest is not None or train or evals or os.path.isdir(os.path.join(run_dir, "checkpoints")):
        status = "partial"
    else:
        status = "pending"
    if status == "running" and holder is None:
        # run.json says running, but no trainer holds the run's lock: it was killed (or stopped
        # by a second Ctrl-C) before it could say so.
        pid = _lock_pid(run_dir)
        status = "stopped"
        note = ((f"pid {pid} was killed" if pid else "its trainer ended") +
                " without updating run.json; run it again to resume")
    elif holder is not None and status in ("preempted", "partial", "pending", "stopped"):
        status = "running"  # a trainer resumed it and holds it (run.json follows soon)
    if manifest is not None and os.path.exists(eval_path) and not evals and _header_only(eval_path):
        note = "; ".join(x for x in (note, "eval.csv holds no rows (only its header)") if x)
    elif status == "done" and not evals:
        note = "; ".join(x for x in (note, "done but eval.csv is missing or unreadable") if x)
    steps = [_int((manifest or {}).get("step"))]
    steps += [_int(r.get("step")) for r in train[-64:]] + [_int(r.get("step")) for r in evals[-64:]]
    steps = [s for s in steps if s is not None]
    protocol = (manifest or {}).get("protocol") or {}
    if not isinstance(protocol, dict):
        protocol = {}
    train_steps = _int(protocol.get("train_steps"))
    if train_steps is not None:  # offline-to-online runs: total steps = offline steps + env steps
        train_steps += _int(protocol.get("online_steps")) or 0
    if train_steps is None and evals:
        train_steps = _int(evals[-1].get("train_steps"))
    success = _by_step(evals, "success")
    last_eval = next(reversed(success), None) if success else None
    ups = None
    if status == "done":
        ups = _float((manifest or {}).get("updates_per_s"))
    if ups is None and train:
        per_step = _by_step(train, "updates_per_s")
        if per_step:
            ups = per_step[next(reversed(per_step))]
    mtimes = []
    for f in RESULT_FILES:
        try:
            mtimes.append(os.path.getmtime(os.path.join(run_dir, f)))
        except OSError:
            pass
    return RunInfo(
        name=name or (manifest or {}).get("run") or os.path.basename(os.path.normpath(run_dir)),
        run_dir=run_dir,
        status=status,
        step=max(steps) if steps else None,
        train_steps=train_steps,
        last_success=success[last_eval] if last_eval is not None else None,
        last_eval_step=last_eval,
        updates_per_s=ups,
        updated=max(mtimes) if mtimes else None,
        reason=reason,
        s_per_step=_wall_per_step(train, manifest),
        startup_s=_startup(manifest),
        note=note,
        holder=holder,
    )


def read_sweep(sweep_dir: str) -> Group:
    """The runs sweep.json lists, each read from its run directory and reconciled with the
    sweep's own state (see the module docstring); a sweep.json that cannot be read is said so
    (the run directories found on disk are listed)."""
    path = os.path.join(sweep_dir, "sweep.json")
    raw = _read_json(path)
    note = None
    if not isinstance(raw, dict) or not isinstance(raw.get("runs"), list):
        why = "cannot be read (truncated or not JSON?)" if raw is None else "holds no list of runs"
        note = f"{path} {why}: listing the run directories found on disk; their sweep states are unknown"
    sweep = raw if isinstance(raw, dict) else {}
    entries = sweep.get("runs")
    if not isinstance(entries, list):  # a malformed sweep.json: its run directories, found on disk
        entries = [{"name": d} for d in sorted(os.listdir(sweep_dir))
                   if os.path.isfile(os.path.join(sweep_dir, d, "run.json"))]
        sweep = {k: v for k, v in sweep.items() if k in ("sweep", "launcher") and isinstance(v, str)}
    driver = _flock_held(os.path.join(sweep_dir, ".sweep.lock"))  # a floq sweep runs this sweep now
    runs = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("name"))
        run_dir = entry.get("run_dir") or os.path.join(sweep_dir, name)
        if not os.path.isdir(run_dir) and os.path.isdir(os.path.join(sweep_dir, name)):
            run_dir = os.path.join(sweep_dir, name)  # the sweep folder was moved
        info = read_run(run_dir, name=name)
        state = entry.get("state")
        if info.holder is not None:
            pass  # a trainer holds it: running, whatever an older state says
        elif state == "failed" and info.status not in ("done", "diverged"):
            info.status = "failed"
            info.reason = entry.get("reason")
        elif state == "running" and info.status not in FINAL:
            if driver:  # launched by the live driver; its trainer has not taken the lock yet
                was = info.status
                info.status = "starting"
                if was not in ("pending", "partial"):
                    info.note = f"relaunched (run.json still says {was} until its trainer starts)"
            else:
                info.note = "; ".join(x for x in (info.note, "sweep.json says running but no floq sweep "
                                                  "drives this sweep now (run floq sweep again to resume)") if x)
        elif state == "done" and info.status not in ("done", "pending"):
            info.note = "; ".join(x for x in (info.note, f"sweep.json says done but run.json says {info.status}")
                                  if x)
        runs.append(info)
    title = f"sweep {sweep.get('sweep') or os.path.basename(os.path.normpath(sweep_dir))} ({sweep_dir})"
    if sweep.get("launcher"):
        title += f", launcher {sweep['launcher']}"
    return Group(title, runs, sweep, note)


def find_groups(root: str) -> list[Group]:
    """Every sweep under root and, as one more group, the run directories outside sweeps."""
    root = os.path.abspath(root)
    groups: list[Group] = []
    loose: list[RunInfo] = []
    for d, dirs, files in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in SKIP_DIRS and not x.startswith("."))
        if "sweep.json" in files:
            groups.append(read_sweep(d))
            dirs[:] = []
        elif any(f in files for f in RESULT_FILES):
            rel = os.path.relpath(d, root)
            loose.append(read_run(d, name=os.path.basename(d) if rel == "." else rel))
            dirs[:] = []
    if loose:
        groups.append(Group(f"runs under {root}", loose))
    return groups


# -- formatting ------------------------------------------------------------------------------


def fmt_step(step) -> str:
    """1000 -> '1k', 1500 -> '1.5k', 2_000_000 -> '2M', 950 -> '950'."""
    if step is None:
        return "?"
    step = int(step)
    for div, unit in ((1_000_000, "M"), (1000, "k")):
        if abs(step) >= div:
            return f"{step / div:.3g}{unit}"
    return str(step)


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0, int(round(seconds)))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    if d:
        return f"{d}d {h}h"
    if h:
        return f"{h}h {m:02d}m"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    lines = [fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows]
    return "\n".join(ln.rstrip() for ln in lines)


def _median(xs):
    xs = [x for x in xs if x]
    return statistics.median(xs) if xs else None


def eta(runs: list[RunInfo], now: float | None = None) -> dict:
    """Remaining steps, speed and ETA of a group, computed as the module docstring says.

    Returns a dict: ``total_steps, done_steps, remaining_steps, unknown_runs`` (runs of
    unknown length), ``rate`` (updates/s summed over the runs training now, else the
    median), ``eta_s`` (None: unknown), ``lower_bound`` (only training time was known),
    ``active`` (runs training now), ``stalled`` ('running' rows not updated for STALE_S)
    and ``basis`` (the words that say how the ETA was made)."""
    now = time.time() if now is None else now
    known = [r.train_steps for r in runs if r.train_steps]
    default_total = int(statistics.median(known)) if known else None
    total = done_steps = remaining = 0
    unknown = unknown_todo = 0
    fresh = lambda r: r.updated is not None and now - r.updated <= STALE_S  # noqa: E731
    active = [r for r in runs if (r.status == "running" and fresh(r)) or r.status == "starting"]
    stalled = [r for r in runs if r.status == "running" and not fresh(r)]
    ref_step = _median(r.s_per_step for r in runs)
    ref_startup = _median(r.startup_s for r in runs)
    ref_ups = _median(r.updates_per_s for r in runs)
    lefts: list[float] = []
    lower = missing = False
    for r in runs:
        t = r.train_steps or default_total
        if t is None:
            unknown += 1
            unknown_todo += r.status not in FINAL
            continue
        s = min(r.step or 0, t)
        total += t
        done_steps += t if r.status == "done" else s
        if r.status in FINAL or t - s <= 0:
            continue
        remaining += t - s
        trained = s > 0 and r.s_per_step
        per_step = r.s_per_step if trained else (r.s_per_step or ref_step)
        if per_step:
            startup = 0.0 if trained or s > 0 else ref_startup
            if startup is None:
                lower = True  # no run has measured its start-up and compilation yet
            lefts.append((startup or 0.0) + (t - s) * per_step)
        elif r.updates_per_s or ref_ups:
            lower = True
            lefts.append((t - s) / (r.updates_per_s or ref_ups))
        else:
            missing = True
    workers = max(1, len(active))
    seconds = None if missing else (max(sum(lefts) / workers, max(lefts, default=0.0))
                                    if lefts else 0.0)
    rate = (sum(r.updates_per_s for r in active if r.updates_per_s)
            or ref_ups) if (active or ref_ups) else None
    if active:
        who = f"{len(active)} run{'s' if len(active) > 1 else ''} training now"
    elif stalled:
        who = (f"one run at a time; {len(stalled)} 'running' row{'s' if len(stalled) > 1 else ''}"
               f" not updated for over {STALE_S // 60} min (stalled?)")
    else:
        who = "one run at a time (none training now)"
    if missing:
        basis = f"unknown: no run has measured its speed yet (compiling?); {who}"
    elif lower:
        basis = (f"a lower bound: training time only, start-up/compilation/evaluation not "
                 f"measured yet; {who}")
    else:
        parts = []
        if ref_step:
            parts.append(f"{ref_step:.3g} s/step observed incl. evaluation")
        if ref_startup:
            parts.append(f"{fmt_duration(ref_startup)} start-up + compilation per new run")
        basis = "; ".join(parts + [who])
    return {"total_steps": total, "done_steps": done_steps, "remaining_steps": remaining,
            "unknown_runs": unknown, "unknown_todo": unknown_todo, "rate": rate, "eta_s": seconds, "lower_bound": lower,
            "active": len(active), "stalled": len(stalled), "basis": basis}


def _status_cell(r: RunInfo) -> str:
    status = r.status + (f": {r.reason}" if r.reason and r.status in ("failed", "unreadable") else "")
    if r.note:
        status += f" ({r.note})"
    return status


def group_text(group: Group, now: float | None = None) -> str:
    now = time.time() if now is None else now
    head = ["run", "status", "step", "last success", "updates/s", "updated"]
    rows = []
    for r in group.runs:
        step = "" if r.status == "pending" and not r.step else f"{fmt_step(r.step or 0)}/{fmt_step(r.train_steps)}"
        success = f"{_pct(r.last_success)}@{fmt_step(r.last_eval_step)}" if r.last_success is not None else ""
        ups = f"{r.updates_per_s:,.1f}" if r.updates_per_s else ""
        updated = f"{fmt_duration(now - r.updated)} ago" if r.updated else ""
        rows.append([r.name, _status_cell(r)[:160], step, success, ups, updated])
    counts: dict[str, int] = {}
    for r in group.runs:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = ["done", "running", "starting", "preempted", "stopped", "partial", "pending", "failed", "diverged"]
    keys = sorted(counts, key=lambda k: (order.index(k) if k in order else len(order), k))
    e = eta(group.runs, now)
    n = len(group.runs)
    line = f"{n} run{'s' if n != 1 else ''}: " + ", ".join(f"{counts[k]} {k}" for k in keys)
    line += f" | {fmt_step(e['done_steps'])} of {fmt_step(e['total_steps'])} steps"
    if e["unknown_runs"]:
        line += f" ({e['unknown_runs']} of unknown length)"
    line += " | " + eta_phrase(e)
    out = [group.title + ":"]
    if group.note:
        out.append(f"warning: {group.note}")
    return "\n".join(out + [_table(head, rows) if rows else "(no runs)", line])


def eta_phrase(e: dict) -> str:
    """'ETA 12m (340k steps left; ...)' from `eta`'s dict (also the sweep's progress lines)."""
    if e["remaining_steps"] == 0:
        if e.get("unknown_todo"):  # runs not started, and no run says how long runs are yet
            n = e["unknown_todo"]
            return (f"ETA unknown ({n} run{'s' if n != 1 else ''} to train, of unknown length until "
                    f"one has started)")
        return "nothing left to train"
    if e["eta_s"] is None:
        return f"ETA unknown ({fmt_step(e['remaining_steps'])} steps left; {e['basis']})"
    return (f"ETA {'>= ' if e['lower_bound'] else ''}{fmt_duration(e['eta_s'])} "
            f"({fmt_step(e['remaining_steps'])} steps left; {e['basis']})")


def sweep_eta(run_dirs, states=None) -> str:
    """The ETA phrase of a sweep's runs (floq sweep prints it each time a run ends); `states`:
    their sweep states, in the same order (a run the sweep recorded as failed or diverged is
    over, whatever its run.json still says)."""
    runs = [read_run(d) for d in run_dirs]
    for r, state in zip(runs, states or ()):
        if state in ("failed", "diverged") and r.status not in FINAL:
            r.status = state
    return eta_phrase(eta(runs))


def status_text(root: str, now: float | None = None) -> str:
    groups = find_groups(root)
    return "\n\n".join(group_text(g, now) for g in groups)


# -- the end-of-run table --------------------------------------------------------------------


def success_curve(success_by_step: dict[int, float]) -> str:
    """First, best and last evaluation: '0% -> best 32%@20k -> 28%@25k'.

    The best is the earliest evaluation with the highest success; it is marked in place
    ('(best)') when it is the first or the last one (the last wins a tie with an earlier
    one), and not at all when every evaluation scored the same.
    """
    if not success_by_step:
        return "no evaluation yet"
    steps = list(success_by_step)

    def at(s):
        return _pct(success_by_step[s]) if s == 0 else f"{_pct(success_by_step[s])}@{fmt_step(s)}"

    first, last = steps[0], steps[-1]
    if first == last:
        return at(last)
    values = list(success_by_step.values())
    top = max(values)
    if min(values) == top:
        return f"{at(first)} -> {at(last)}"
    if success_by_step[last] == top:
        return f"{at(first)} -> {at(last)} (best)"
    best = next(s for s in steps if success_by_step[s] == top)
    if best == first:
        return f"{at(first)} (best) -> {at(last)}"
    return f"{at(first)} -> best {at(best)} -> {at(last)}"


def _status_word(manifest) -> str:
    """run.json's status as the summary table shows it: a status floq writes as it is, '?'
    when none is recorded, else 'unreadable status 5' (a bare '5' reads as a count)."""
    if manifest is None:
        return "?"
    if not isinstance(manifest, dict):
        return "unreadable run.json"
    status = manifest.get("status")
    if status in (None, ""):
        return "?"
    return status if isinstance(status, str) and status in KNOWN else f"unreadable status {status!r}"


def summary_table(run_dirs) -> str:
    """One line per run: success (first / best / last evaluation, mean over seeds), speed,
    size, wall time. Missing fields show as '?', a run without eval.csv as 'no evaluation yet'."""
    rows, episodes, statuses = [], set(), []
    for d in run_dirs:
        man = _read_json(os.path.join(d, "run.json"))
        statuses.append(_status_word(man))
        man = man if isinstance(man, dict) else {}
        evals = _read_csv(os.path.join(d, "eval.csv"))
        episodes.update(r.get("eval_episodes") for r in evals if r.get("eval_episodes"))
        params = man.get("params") or {}
        seeds = man.get("seeds") or sorted({r.get("seed") for r in evals if r.get("seed") not in (None, "")})
        ups = _float(man.get("updates_per_s"))
        flops = _float(man.get("flops_per_update"))
        wall = _float(man.get("wall_time_s"))
        rows.append([
            str(man.get("run") or os.path.basename(os.path.normpath(d))),
            str(man.get("critic") or "?"),
            success_curve(_by_step(evals, "success")),
            str(len(seeds)) if seeds else "?",
            f"{ups:.1f}" if ups is not None else "?",
            f"{params['total']:,}" if isinstance(params.get("total"), int) else "?",
            f"{params['critic_total']:,}" if isinstance(params.get("critic_total"), int) else "?",
            f"{flops / 1e9:.2f}" if flops is not None else "?",
            f"{wall:.0f}" if wall is not None else "?",
        ])
    per = ", ".join(sorted(episodes, key=lambda x: _int(x) or 0)) if episodes else "?"
    head = ["run", "critic", f"success: first -> best -> last ({per} episodes per evaluation)", "seeds",
            "updates/s", "params", "critic params", "GFLOP/update", "wall s"]
    if any(s != "done" for s in statuses):
        head.insert(2, "status")
        for r, s in zip(rows, statuses):
            r.insert(2, s)
    return _table(head, rows)


# -- the command -----------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="floq status",
        description="List the runs under DIR (a sweep folder, a results folder or one run "
                    "directory): status, progress, last success, speed and the sweep's ETA.")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the runs as JSON (one object per group)")
    a = p.parse_args(argv)
    out, found = [], False
    for root in a.dirs:
        if not os.path.isdir(root):
            print(f"floq status: error: no such directory: {root}", file=sys.stderr)
            return 2
        groups = find_groups(root)
        if not groups:
            print(f"floq status: no run directories under {root}", file=sys.stderr)
            continue
        found = True
        if a.json:
            out.extend({"title": g.title, "runs": [dataclasses.asdict(r) for r in g.runs], **eta(g.runs)}
                       for g in groups)
        else:
            out.extend(group_text(g) for g in groups)
    if a.json:
        print(json.dumps(out, indent=1))
    elif out:
        print("\n\n".join(out))
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
