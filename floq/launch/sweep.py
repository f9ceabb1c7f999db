"""Sweeps from one gin file: expansion, validation, bookkeeping, cost and ``floq sweep``.

A sweep file (see :mod:`floq.launch.spec` for the syntax) binds ``Sweep.axes``,
``Sweep.seeds`` and optionally ``Sweep.tasks`` (environments as task files) and
``Sweep.grids`` (a union of sub-grids). :func:`expand` turns it into runs, one per point,
each named after its grid, environment and swept values
(``grid=floq,env=cube-double-play,critic_flow_steps=2,seed=0``) and living in
``<out>/<sweep name>/<run name>``. :func:`run_sweep` skips runs that are done, hands
the others to a launcher (local processes, Slurm, Ray), and keeps
``<out>/<sweep name>/sweep.json`` up to date::

    {"sweep": "sweep_smoke", "file": ..., "launcher": "local", "updated": ...,
     "counts": {"pending": 0, "running": 1, "done": 5, "failed": 1, "diverged": 1},
     "runs": [{"name": ..., "state": "pending | running | done | failed | diverged",
               "reason": "<last line of its log>" | null, "run_dir": ..., "log": ...,
               "bindings": [...], "tags": {...}, "attempts": 1, ...}, ...]}

A run that diverged (run.json ``diverged``, ``floq run`` exit 3) is ``diverged``, never
``done``; like a failed run it is not launched again unless ``--retry-failed``, which the
sweep also passes to each run's ``floq run`` (so a diverged run trains again from its last
good checkpoint instead of being refused).

Validation happens before anything is launched; each problem is one line
(:class:`SweepError`) and ``floq sweep`` exits with status 2.

``--dry-run`` prices the runs (:func:`estimate_lines`): each distinct configuration is
built (``floq.train.build``) and its update lowered once on a fake dataset of the
environment's widths (:data:`OGBENCH_DIMS`), FLOPs counted as run.json counts them
(``floq.train.update_flops``) and cached by configuration; GPU-hours = FLOPs per update x
updates / the GFLOP/s of ``floq bench``'s GPU throughput rows (an assumed H100 rate, said
so, when there are none) + simulator time for evaluation episodes and online steps at
the bench's measured env steps/s. On a machine without a GPU it prints CPU-hours too.
"""


from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import sys
from typing import Callable, Mapping, Sequence

import gin

from floq.results import lock_holder
from floq.launch import runner as runner_lib
from floq.launch import spec
from floq.launch.runner import Run

from floq.launch import cost, expand as expand_lib, state as state_lib  # noqa: F401
# The sweep's public names, re-exported: floq.launch.sweep is the package's face (the CLI and
# the tests reach expansion, cost and state through it).
from floq.launch.expand import *  # noqa: F401,F403
from floq.launch.expand import (DEFAULT_OUT, KEPT_STATES, STATES, ParseFn, SweepError, SweepPlan,  # noqa: F401
                                _one_line, default_parse, expand)
from floq.launch.cost import *  # noqa: F401,F403
from floq.launch.cost import _profile_key, estimate_lines, load_bench, load_bench_rows  # noqa: F401
from floq.launch.state import *  # noqa: F401,F403
from floq.launch.state import SweepState, _SweepLock  # noqa: F401

# --------------------------------------------------------------------------------------
# Running a sweep.


def make_launcher(launcher: str, runner: Sequence[str] | None = None, **options):
    """Builds a launcher by name (cluster libraries are imported only here)."""
    options = {k: v for k, v in options.items() if v is not None}
    if launcher == "local":
        from floq.launch.local import LocalLauncher

        return LocalLauncher(runner=runner, **options)
    if launcher == "slurm":
        try:
            from floq.launch.slurm import SlurmLauncher
        except ImportError as e:
            raise SweepError('--launcher slurm needs submitit: pip install -e ".[cluster]"') from e
        return SlurmLauncher(runner=runner, **options)
    if launcher == "ray":
        try:
            from floq.launch.ray_launcher import RayLauncher
        except ImportError as e:
            raise SweepError('--launcher ray needs ray: pip install -e ".[cluster]"') from e
        return RayLauncher(runner=runner, **options)
    raise SweepError(f"unknown launcher '{launcher}' (local, slurm or ray)")


def _describe_run(run: Run) -> str:
    """The run's files after the sweep file (repo-relative) and its bindings."""
    files = []
    for path in run.gin_files[1:]:
        rel = os.path.relpath(path, spec.REPO_ROOT)
        files.append(path if rel.startswith("..") else rel)
    text = "; ".join(run.bindings) or "(the file as is)"
    return (f"[{' '.join(files)}] " if files else "") + text


def kept_state(status: str, recorded: str | None) -> str | None:
    """``'failed' | 'diverged'`` for a run that stays so until ``--retry-failed``, else ``None``.

    Args:
      status: what its run directory holds (:func:`floq.results.run_status`).
      recorded: its state in the sweep's previous ``sweep.json`` (``None``: none).

    run.json's ``diverged`` always counts (the trainer refuses the run without
    ``--retry-failed``); a ``failed`` that sweep.json recorded counts unless the run is
    done (a crashed trainer may leave run.json ``running``); a ``diverged`` that sweep.json
    recorded counts only while run.json still says so (the run may have been retried since).
    """
    if status == "done":
        return None
    if status == "diverged":
        return "diverged"
    if recorded == "failed":
        return "failed"
    return None


def _kept_text(counts: Mapping[str, int], suffix: str) -> str:
    """', 1 failed, 2 diverged<suffix>' (empty when there are none)."""
    parts = [f"{counts[s]} {s}" for s in KEPT_STATES if counts.get(s)]
    return f", {', '.join(parts)}{suffix}" if parts else ""


class BuildMemo:
    """``floq.train.build`` remembered by (gin files, bindings) for one sweep command: the
    value check, the budget and the cost estimate of a dry run build the same configurations
    (each the first run of a seed group), so each is parsed once. A build that raised raises
    again."""

    def __init__(self):
        self._memo: dict[tuple, tuple[bool, object]] = {}

    def __call__(self, gin_files, bindings):
        key = (tuple(gin_files), tuple(bindings))
        if key not in self._memo:
            from floq import train

            try:
                self._memo[key] = (True, train.build(list(gin_files), list(bindings)))
            except Exception as e:  # noqa: BLE001 - remembered, raised to every caller
                self._memo[key] = (False, e)
        ok, value = self._memo[key]
        if not ok:
            raise value
        return value


def check_values(runs: Sequence[Run], seed_binding_prefix: str = "SEED =", build=None) -> None:
    """Builds each distinct configuration of ``runs`` (``build``, default ``floq.train.build``:
    the specs check their values, e.g. positive train_steps, task_id in 1..5) before anything
    is launched; raises SweepError (one line) naming the first run that does not build. Runs
    that differ only in the seed are built once."""
    import warnings

    if build is None:
        from floq.train import build

    seen: dict[tuple, str | None] = {}
    bad = []
    try:
        for run in runs:
            key = _profile_key(run, seed_binding_prefix)
            if key not in seen:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        build(list(run.gin_files), list(run.bindings))
                    seen[key] = None
                except Exception as e:  # noqa: BLE001 - any build error is the run's bad value
                    seen[key] = re.sub(r" \(In call to configurable .*\)$", "", _one_line(e))
            if seen[key]:
                bad.append((run.name, seen[key]))
    finally:
        gin.clear_config()
    if bad:
        name, why = bad[0]
        raise SweepError(f"{len(bad)} of {len(runs)} run(s) do not build, e.g. {name}: {why}; nothing was launched")


def config_conflicts(runs: Sequence[Run], build=None, limit: int = 8) -> dict[str, str]:
    """``{run name: what changed}`` for the runs whose directory already holds a run (its
    run.json) of another configuration than the sweep now asks for: ``floq run`` would refuse
    it (or, done, the sweep would count a result of other settings). ``what changed`` names the
    settings, old -> new (run.json's ``config_fields``, seeds and task), e.g.
    ``'algorithm.alpha: 3.0 -> 10.0'``. Built with ``build`` (default ``floq.train.build``);
    nothing is compiled, so a sweep refuses (or ``--force`` moves aside) before any compilation."""
    import json
    import warnings

    from floq.loop import config_fields, spec_hash
    from floq.results import read_json

    if build is None:
        from floq.train import build
    out: dict[str, str] = {}
    try:
        for run in runs:
            try:
                man = read_json(os.path.join(run.run_dir, "run.json"))
            except (OSError, ValueError):
                continue
            if not isinstance(man, dict) or not man.get("config_hash"):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                exp = build(list(run.gin_files), list(run.bindings))
            if spec_hash(exp) == man["config_hash"]:
                continue
            new = json.loads(json.dumps(config_fields(exp), default=repr))
            old = man.get("config_fields") if isinstance(man.get("config_fields"), dict) else {}
            new["seeds"], old = list(exp.trainer.seeds), {**old, "seeds": man.get("seeds")}
            ids = list(exp.task.ids)
            new["task_id"], old["task_id"] = ids if len(ids) > 1 else ids[0], man.get("task_id")
            missing = object()
            keys = sorted(k for k in set(old) | set(new) if old.get(k, missing) != new.get(k, missing))
            # a changed class first (its fields then differ too)
            keys.sort(key=lambda k: (not isinstance(new.get(k), str) or k.count(".") > 1, k))
            fmt = lambda v: "(unset)" if v is missing else repr(v)  # noqa: E731
            parts = [f"{k}: {fmt(old.get(k, missing))} -> {fmt(new.get(k, missing))}" for k in keys[:limit]]
            if len(keys) > limit:
                parts.append(f"and {len(keys) - limit} more setting(s)")
            out[run.name] = (", ".join(parts) if parts else
                             "a setting outside run.json's config_fields (its config_hash differs)")
    finally:
        gin.clear_config()
    return out


def _move_conflicts_aside(runs: Sequence[Run], conflicts: Mapping[str, str], build, echo) -> None:
    """``floq sweep --force``: each run of another configuration moves to RUN.replaced-<time>
    (as ``floq run --force`` does: kept, never deleted; RunError while a trainer holds it)."""
    from floq.loop import spec_hash
    from floq.results import move_run_aside

    for run in runs:
        if run.name not in conflicts:
            continue
        want = spec_hash(build(list(run.gin_files), list(run.bindings)))
        moved = move_run_aside(run.run_dir, lambda prev: isinstance(prev, dict) and prev.get("config_hash") != want)
        if moved is not None:
            echo(f"{run.name}: held a run of another configuration ({conflicts[run.name]}); "
                 f"moved it to {moved[0]} (kept; floq analyze leaves it out)")
    gin.clear_config()


def run_sweep(
    sweep_file: str,
    launcher="local",
    out_dir: str | None = None,
    *,
    dry_run: bool = False,
    retry_failed: bool = False,
    force: bool = False,
    runner: Sequence[str] | None = None,
    parse: ParseFn | None = None,
    echo: Callable[[str], None] | None = None,
    bench_dir: str | None = None,
    bindings: Sequence[str] = (),
    estimate: bool = True,
    **launcher_options,
) -> dict:
    """Runs (or lists) a sweep; returns its summary (what ``sweep.json`` holds).

    Runs that are done are skipped; unfinished runs resume (they are simply launched
    again on the same run directory). Runs that failed or diverged before (:func:`kept_state`)
    stay so unless ``retry_failed``, which also reaches each launched run's ``floq run``
    (``--retry-failed``). One failing run never stops the others.

    Args:
      sweep_file: the sweep gin file.
      launcher: ``'local' | 'slurm' | 'ray'`` or a :class:`floq.launch.base.Launcher`.
      out_dir: the sweeps' output directory (default ``sweeps/``).
      dry_run: list the runs and the estimated GPU-hours; write and launch nothing.
      retry_failed: launch runs that failed or diverged again, with ``floq run
        --retry-failed`` (a diverged run resumes from its last good checkpoint).
      force: a run directory that holds a run of another configuration
        (:func:`config_conflicts`) is moved aside to ``RUN.replaced-<time>`` before anything is
        launched, and the run starts there anew; without it such a sweep is refused (SweepError).
      runner: the ``floq run`` command prefix (default ``python -m floq run``).
      parse: gin parsing function for validation (default ``floq.config.parse``).
      echo: where progress lines go (default ``print`` with flush).
      bench_dir: ``floq bench`` results for the estimate (default ``benchmarks/results``).
      bindings: extra gin bindings (``--bind``): applied when the sweep file is read and
        first in every run's bindings.
      estimate: print the dry run's cost estimate (it lowers each distinct configuration's
        update once; FLOPs are cached by configuration).
      **launcher_options: passed to the launcher (``workers=``; ``partition=``,
        ``time_min=``, ``gpus=``, ``array_parallelism=``, ``cluster=``; ``address=``).

    Raises:
      SweepError: (one line) for an invalid sweep, before anything is launched.
    """
    echo = echo or (lambda line: print(line, flush=True))
    plan = expand(sweep_file, out_dir, parse or default_parse, bindings)
    statuses = {run.name: runner_lib.run_status(run.run_dir) for run in plan.runs}
    previous = SweepState.read(plan.summary_path) or {}
    prev_states = {r.get("name"): r for r in previous.get("runs", [])}

    kept = {
        r.name: kept_state(statuses[r.name], prev_states.get(r.name, {}).get("state"))
        for r in plan.runs
    }

    builds = BuildMemo()  # each configuration parsed once by the checks below
    conflicts: dict[str, str] = {}
    if parse is None and runner is None:  # floq run with the real gin: every run builds, or none is launched
        unfinished = [r for r in plan.runs if statuses[r.name] != "done"]
        n_conf = len({_profile_key(r, f"{plan.seed_macro} =") for r in unfinished})
        if n_conf:
            echo(f"sweep {plan.name}: building {n_conf} configuration{'s' if n_conf != 1 else ''} "
                 f"(checking every value before anything is launched)...")
        check_values(unfinished, f"{plan.seed_macro} =", builds)
        # a run directory that holds another configuration: named now, before anything compiles
        conflicts = config_conflicts([r for r in plan.runs if statuses[r.name] != "absent"], builds)
        for name in conflicts:
            kept[name] = None  # its failure or divergence belongs to the old configuration
    if conflicts and not dry_run and not force:
        name = next(iter(conflicts))
        raise SweepError(
            f"{len(conflicts)} of {len(plan.runs)} run directories hold a run of another configuration, "
            f"e.g. {name}: {conflicts[name]}; pass --force to move them aside to RUN.replaced-<time> "
            f"(kept, but left out of floq analyze), or give this sweep another --out; nothing was launched")

    if dry_run:
        todo = [
            r
            for r in plan.runs
            if (statuses[r.name] != "done" or r.name in conflicts) and (retry_failed or kept[r.name] is None)
        ]
        width = max(len(r.name) for r in plan.runs)
        echo(
            f"sweep {plan.name}: {len(plan.runs)} run{'s' if len(plan.runs) != 1 else ''} "
            f"from {os.path.relpath(plan.file)} -> {os.path.relpath(plan.sweep_dir)}"
        )
        for run in plan.runs:
            status = {"absent": "new", "partial": "resume"}.get(
                statuses[run.name], statuses[run.name]
            )
            if kept[run.name] is not None:
                status = kept[run.name] if not retry_failed else "retry"
            if run.name in conflicts:
                status = "replace" if force else "conflict"
            echo(f"  {run.name:<{width}}  {status:<8}  {_describe_run(run)}")
            if run.name in conflicts:
                echo(f"  {'':<{width}}  {'':<8}  another configuration there: {conflicts[run.name]}")
        done = sum(1 for r in plan.runs if statuses[r.name] == "done" and r.name not in conflicts)
        kept_counts = {s: sum(1 for k in kept.values() if k == s) for s in KEPT_STATES}
        kept_note = (
            "" if retry_failed else _kept_text(kept_counts, " (not retried without --retry-failed)")
        )
        if estimate:  # the budget and score rule, beside the reference code's (floq/launch/budget.py)
            from floq.launch.budget import budget_lines

            if todo:
                echo("pricing the runs to do (each configuration's update lowered once, FLOPs cached)...")

            for line in budget_lines(plan.runs, build=builds, seed_binding_prefix=f"{plan.seed_macro} ="):
                echo(line)
        echo(f"{len(plan.runs)} runs: {done} done{kept_note}, {len(todo)} to run")
        if conflicts:
            echo(f"{len(conflicts)} run director{'ies hold' if len(conflicts) > 1 else 'y holds'} a run of "
                 f"another configuration: "
                 + ("floq sweep --force moves them aside to RUN.replaced-<time> (kept, but left out of "
                    "floq analyze) before launching" if not force else
                    "--force moves them aside to RUN.replaced-<time> before launching")
                 + "; without --force the sweep is refused")
        if estimate:
            for line in estimate_lines(plan, todo, bench_dir, build=builds):
                echo(line)
        return {
            "sweep": plan.name,
            "sweep_dir": plan.sweep_dir,
            "runs": [
                {
                    "name": r.name,
                    "run_dir": r.run_dir,
                    "bindings": list(r.bindings),
                    "tags": dict(r.tags),
                    "status": statuses[r.name],
                }
                for r in plan.runs
            ],
        }

    if isinstance(launcher, str):
        launcher_name = launcher
        if launcher == "slurm":
            launcher_options.setdefault("name", plan.name)
        launcher = make_launcher(launcher, runner=runner, **launcher_options)
    else:
        launcher_name = launcher.name
    with _SweepLock(plan.sweep_dir):
        if conflicts:  # --force: moved aside before anything is launched
            _move_conflicts_aside(plan.runs, conflicts, builds, echo)
            for name in conflicts:
                statuses[name] = runner_lib.run_status(next(r.run_dir for r in plan.runs if r.name == name))
        state = SweepState(plan, launcher_name, echo)
        todo = []
        still = 0
        kept_counts = {s: 0 for s in KEPT_STATES}
        for run in plan.runs:
            entry = state.entries[run.name]
            if statuses[run.name] == "done":
                entry["state"], entry["reason"] = "done", None
            elif kept[run.name] is not None and not retry_failed:
                if entry["state"] != kept[run.name]:  # e.g. run.json says diverged
                    entry["state"] = kept[run.name]
                    entry["reason"] = runner_lib.run_reason(run.run_dir) or entry["reason"]
                kept_counts[kept[run.name]] += 1
            elif (holder := lock_holder(run.run_dir)) is not None:
                # A trainer of an earlier driver (killed; trainers have sessions of their own)
                # still trains it: launching another would be refused by its lock and read as
                # a failure. It stays running; the next floq sweep finds it done or resumes it.
                entry["state"] = "running"
                entry["reason"] = f"still being trained by {holder} (started by an earlier floq sweep)"
                still += 1
            else:
                entry["state"], entry["reason"] = "pending", None
                # `floq run` refuses a diverged run without it; harmless for the others.
                todo.append(dataclasses.replace(run, retry_failed=True) if retry_failed else run)
        state.write()
        c = state.counts()
        note = _kept_text(kept_counts, " before (--retry-failed runs them again)")
        echo(
            f"sweep {plan.name}: {len(plan.runs)} runs, {c['done']} done{note}; "
            + (f"{still} still running (trainers of an earlier floq sweep; run it again once they "
               f"end); " if still else "")
            + f"{len(todo)} to run with {launcher.describe()} -> {plan.sweep_dir}"
        )
        if todo:
            try:
                launcher.launch(todo, plan.state_dir, state.set)
            except BaseException:
                for entry in state.entries.values():  # interrupted: unfinished, not failed
                    if entry["state"] == "running":
                        entry["state"] = "pending"
                state.write()
                raise
        summary = state.summary()
        state.write()
    c = summary["counts"]
    for line in closing_lines(plan, summary, retry_failed):
        echo(line)
    echo(
        f"sweep {plan.name} finished: {c['done']} done, {c['failed']} failed"
        + (f", {c['diverged']} diverged" if c["diverged"] else "")
        + (f", {c['pending'] + c['running']} unfinished" if c["pending"] + c["running"] else "")
        + f" ({plan.summary_path})"
        + (f" | next: {_analyze_command(plan.sweep_dir)}" if c["done"] else "")
    )
    return summary


def _rel(path: str) -> str:
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


def _analyze_command(sweep_dir: str) -> str:
    d = _rel(sweep_dir)
    return f"floq analyze {d} --out {os.path.join(d, 'report')}"


def closing_lines(plan: SweepPlan, summary: Mapping, retry_failed: bool = False) -> list[str]:
    """What a finished ``floq sweep`` prints before its last line: the results table of
    ``floq run`` (success first -> best -> last, speed, size, wall time; one line per run
    that wrote run.json), where the runs are, and the commands to run next."""
    from floq import status as status_lib

    dirs = [e["run_dir"] for e in summary.get("runs", [])
            if os.path.exists(os.path.join(e["run_dir"], "run.json"))]
    lines = []
    if dirs:
        lines += ["", status_lib.summary_table(dirs), ""]
    c = summary.get("counts", {})
    lines.append(f"runs: {_rel(plan.sweep_dir)}/<run>/ (eval.csv, train.csv, run.json, "
                 f"log.txt); progress and ETA: floq status {_rel(plan.sweep_dir)}")
    if c.get("done"):
        lines.append(f"figures and tables: {_analyze_command(plan.sweep_dir)}")
    if (c.get("failed") or c.get("diverged")) and not retry_failed:
        lines.append(f"run the failed/diverged ones again: floq sweep {_rel(plan.file)} "
                     f"--out {_rel(os.path.dirname(plan.sweep_dir))} --retry-failed")
    if c.get("pending") or c.get("running"):
        lines.append(f"resume the unfinished ones: floq sweep {_rel(plan.file)} "
                     f"--out {_rel(os.path.dirname(plan.sweep_dir))}")
    return lines


# --------------------------------------------------------------------------------------
# The command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floq sweep",
        description="Run every run of a sweep gin file (Sweep.grids x Sweep.tasks x "
        "Sweep.axes x Sweep.seeds); runs that are done are skipped, unfinished ones resume.",
    )
    parser.add_argument("file", help="sweep gin file")
    parser.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="BINDING",
        help="gin binding applied when the file is read and to every run, e.g. "
        "\"ENVS = ['gin/tasks/scene-play.gin']\" (repeatable)",
    )
    parser.add_argument(
        "--logger",
        action="append",
        default=[],
        choices=("wandb", "tensorboard"),
        help="also log every run to this tracker (repeatable; as `floq run --logger`: the "
        "binding Trainer.loggers = (...) after --bind); the CSV files are always written",
    )
    parser.add_argument("--launcher", choices=("local", "slurm", "ray"), default="local")
    from floq.results import path_arg

    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        type=path_arg,
        help="output directory; runs go to OUT/<sweep name>/<run name> (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs and the estimated GPU-hours (CPU-hours too on a machine "
        "without a GPU), launch nothing",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the runs that failed or diverged, each with `floq run --retry-failed` "
        "(a diverged run trains again from its last good checkpoint)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="a run directory that holds a run of another configuration is moved aside to "
        "RUN.replaced-<time> (nothing is deleted; floq analyze leaves it out), as floq run --force "
        "does, and the run starts there anew",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="local: runs at once (default: one per GPU, or 1)"
    )
    slurm = parser.add_argument_group("slurm")
    slurm.add_argument("--slurm-partition", default=None)
    slurm.add_argument(
        "--slurm-time",
        type=int,
        default=24 * 60,
        metavar="MIN",
        help="minutes per job; jobs are requeued when they run out (default: %(default)s)",
    )
    slurm.add_argument(
        "--slurm-gpus", type=int, default=1, metavar="G", help="GPUs per job (default: %(default)s)"
    )
    slurm.add_argument(
        "--slurm-array-parallelism",
        type=int,
        default=None,
        metavar="K",
        help="at most K jobs of the array at once",
    )
    slurm.add_argument(
        "--slurm-cpus",
        type=int,
        default=None,
        metavar="C",
        help="CPUs per job (default: the cluster default)",
    )
    slurm.add_argument(
        "--slurm-cluster",
        choices=("slurm", "local", "debug"),
        default=None,
        help="submitit executor: 'local' runs the jobs on this machine",
    )
    ray_group = parser.add_argument_group("ray")
    ray_group.add_argument(
        "--ray-address",
        default=None,
        help="Ray cluster address (default: RAY_ADDRESS or a local instance)",
    )
    parser.add_argument("--runner", default=None, help=argparse.SUPPRESS)  # tests: fake trainer
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``floq sweep``: returns 0 when every run is done, 1 if any failed, 2 on a bad sweep."""
    args = build_parser().parse_args(argv)
    options: dict[str, object] = {}
    if args.launcher == "local":
        options["workers"] = args.workers
    elif args.launcher == "slurm":
        options.update(
            partition=args.slurm_partition,
            time_min=args.slurm_time,
            gpus=args.slurm_gpus,
            array_parallelism=args.slurm_array_parallelism,
            cpus_per_task=args.slurm_cpus,
            cluster=args.slurm_cluster,
        )
    elif args.launcher == "ray":
        options["address"] = args.ray_address
    runner = shlex.split(args.runner) if args.runner else None
    bindings = list(args.bind)
    if args.logger:
        from floq.loggers import check_loggers

        try:
            names = check_loggers(args.logger)  # a missing package: one line, nothing launched
        except ValueError as e:
            print(f"floq sweep: error: {_one_line(e)}", file=sys.stderr)
            return 2
        bindings.append("Trainer.loggers = (" + "".join(f"'{n}', " for n in names).rstrip() + ")")
    from floq.launch.base import StopSignals
    from floq.results import RunError

    stop = StopSignals()  # SIGTERM/SIGHUP stop the driver as SIGINT does
    try:
        from floq.results import ensure_writable_dir

        ensure_writable_dir(args.out, "--out")  # a file or a read-only place: one line, exit 2
        with stop:
            summary = run_sweep(
                args.file,
                args.launcher,
                args.out,
                dry_run=args.dry_run,
                retry_failed=args.retry_failed,
                force=args.force,
                runner=runner,
                bindings=bindings,
                **options,
            )
    except (SweepError, ValueError) as e:
        print(f"floq sweep: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except RunError as e:  # a full disk while writing sweep.json: one line
        print(f"floq sweep: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a vanished folder: one line
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"floq sweep: error: {e.strerror or _one_line(e)}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            f"floq sweep: stopped by {stop.name}; trainers were asked to checkpoint and unfinished "
            f"runs are pending in sweep.json (run it again to resume)",
            file=sys.stderr,
        )
        return stop.exit_code
    if args.dry_run:
        return 0
    return 0 if summary["counts"]["done"] == len(summary["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
