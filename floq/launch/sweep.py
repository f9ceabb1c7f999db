"""Sweeps from one gin file: expansion, validation, bookkeeping and the ``floq sweep`` command.

A sweep file (see :mod:`floq.launch.spec`) binds ``Sweep.axes`` and ``Sweep.seeds``.
:func:`expand` turns it into runs, one per point of the grid, each named after its
swept values (``critic_flow_steps=2,task_id=1,seed=0``) and living in
``<out>/<sweep name>/<run name>``. :func:`run_sweep` skips runs that are done, hands
the others to a launcher (local processes, Slurm, Ray), and keeps
``<out>/<sweep name>/sweep.json`` up to date::

    {"sweep": "sweep_smoke", "file": ..., "launcher": "local", "updated": ...,
     "counts": {"pending": 0, "running": 1, "done": 6, "failed": 1},
     "runs": [{"name": ..., "state": "pending | running | done | failed",
               "reason": "<last line of its log>" | null, "run_dir": ..., "log": ...,
               "bindings": [...], "tags": {...}, "attempts": 1, ...}, ...]}

Validation happens before anything is launched; each problem is one line
(:class:`SweepError`) and ``floq sweep`` exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import glob
import hashlib
import itertools
import json
import math
import os
import re
import shlex
import sys
import threading
import time
from typing import Callable, Mapping, Sequence

import gin

from floq.launch import runner as runner_lib
from floq.launch import spec
from floq.launch.runner import Run

#: The default output directory (relative to the working directory).
DEFAULT_OUT = "sweeps"
#: eval.csv columns the trainer always writes (docs/CONTRACTS.md); a tag never reuses one.
RESERVED_COLUMNS = frozenset(
    (
        "experiment",
        "run",
        "env",
        "task",
        "dataset",
        "algorithm",
        "critic",
        "seed",
        "step",
        "success",
        "return",
        "episode_length",
        "wall_time",
        "eval_episodes",
        "train_steps",
        "ogbench_version",
        "success_timing",
    )
)
STATES = ("pending", "running", "done", "failed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
_MAX_NAME = 200

ParseFn = Callable[[Sequence[str], Sequence[str]], object]


class SweepError(ValueError):
    """A sweep file that cannot run; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Axis:
    """One swept binding.

    Attributes:
      key: the target as written in ``Sweep.axes`` (macro name or ``Configurable.param``).
      macro: the macro's name if the target is a macro, else ``None``.
      values: the values, in order.
      tag: the eval.csv column / run-name key (lower-cased macro or parameter name).
      aliases: lower-cased names of the macros whose value this axis sets or overrides
        (the macro itself, or the macros that fed the parameter in the file); estimates
        look benchmark columns up by these.
    """

    key: str
    macro: str | None
    values: tuple
    tag: str
    aliases: tuple[str, ...] = ()


@dataclasses.dataclass
class SweepPlan:
    """An expanded sweep.

    Attributes:
      name: the sweep's name.
      file: the sweep file (absolute path).
      sweep_dir: ``<out>/<name>``: run directories, ``sweep.json``, bookkeeping.
      axes: the swept bindings, in declared order.
      seeds: the seeds (``None``: the file's own).
      seed_macro: the macro seeds are bound through.
      runs: one per grid point: axes in declared order (the last varying fastest), seeds
        innermost.
      base_values: ``{lower-cased macro name: value}`` of the file's literal macros
        (used for estimates).
    """

    name: str
    file: str
    sweep_dir: str
    axes: list[Axis]
    seeds: list[int] | None
    seed_macro: str
    runs: list[Run]
    base_values: dict[str, object]

    @property
    def state_dir(self) -> str:
        return os.path.join(self.sweep_dir, ".launch")

    @property
    def summary_path(self) -> str:
        return os.path.join(self.sweep_dir, "sweep.json")


# --------------------------------------------------------------------------------------
# Expansion and validation.


def default_parse(gin_files: Sequence[str], bindings: Sequence[str]) -> object:
    """``floq.config.parse`` (imported on first use: it imports the whole library)."""
    from floq import config

    return config.parse(list(gin_files), list(bindings))


def _one_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    lines = [l.strip() for l in text.splitlines() if l.strip()]
    return lines[0] if lines else text


def resolve_file(path: str) -> str:
    """The sweep file's absolute path (relative paths: cwd first, then the repo root)."""
    candidates = [path] if os.path.isabs(path) else [path, os.path.join(spec.REPO_ROOT, path)]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    raise SweepError(f"sweep file not found: {path}")


def gin_literal(value) -> str:
    """``value`` as gin source for a binding (``'a'``, ``3``, ``@Foo()``, ``%MACRO``, ...)."""
    if isinstance(value, gin.config.ConfigurableReference):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(gin_literal(v) for v in value) + "]"
    if isinstance(value, tuple):
        inner = ", ".join(gin_literal(v) for v in value)
        return "(" + inner + (",)" if len(value) == 1 else ")")
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{gin_literal(k)}: {gin_literal(v)}" for k, v in value.items()) + "}"
        )
    return repr(value)


def _reference_name(ref) -> str:
    text = repr(ref)  # '@scope/Name()', '@Name', '%MACRO'
    text = text.lstrip("@%").removesuffix("()")
    return text.rsplit(".", 1)[-1].replace("/", "_")


def name_value(value) -> str:
    """``value`` as it appears in a run name (filesystem-safe, no ``=`` or ``,``)."""
    if isinstance(value, gin.config.ConfigurableReference):
        text = _reference_name(value)
    elif isinstance(value, (list, tuple)):
        text = "_".join(name_value(v) for v in value)
    elif isinstance(value, dict):
        text = "_".join(f"{name_value(k)}-{name_value(v)}" for k, v in value.items())
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text) or "_"


def tag_value(value):
    """``value`` as an eval.csv cell: scalars stay, the rest becomes its run-name text."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    return name_value(value)


def _snake(text: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", text)
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def _short_tag(key: str, macro: str | None) -> str:
    if macro is not None:
        return (
            _snake(macro.replace("/", "_")) if macro.isupper() else macro.lower().replace("/", "_")
        )
    return _snake(key.rsplit(".", 1)[-1])


def _long_tag(key: str, macro: str | None) -> str:
    if macro is not None:
        return "sweep_" + _short_tag(key, macro)
    selector, param = key.rsplit(".", 1)
    return _snake(selector.split("/")[-1].rsplit(".", 1)[-1]) + "_" + _snake(param)


def _is_macro_ref(value, macro: str) -> bool:
    if isinstance(value, gin.config.ConfigurableReference):
        return value.config_key == (macro, "gin.macro")
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_is_macro_ref(v, macro) for v in value)
    if isinstance(value, dict):
        return any(_is_macro_ref(k, macro) or _is_macro_ref(v, macro) for k, v in value.items())
    return False


def _fed_by(config: Mapping, macro: str) -> set[tuple[str, str, str]]:
    """Binding keys ``(scope, selector, param)`` whose value comes from ``macro``, transitively."""
    keys = {(macro, "gin.macro", "value")}
    frontier, seen = [macro], {macro}
    while frontier:
        current = frontier.pop()
        for (scope, selector), params in config.items():
            for param, value in params.items():
                if _is_macro_ref(value, current):
                    keys.add((scope, selector, param))
                    if selector == "gin.macro" and scope not in seen:
                        seen.add(scope)
                        frontier.append(scope)
    return keys


def _display_key(key: tuple[str, str, str]) -> str:
    scope, selector, param = key
    if selector == "gin.macro":
        return scope
    short = selector.rsplit(".", 1)[-1]
    return f"{scope + '/' if scope else ''}{short}.{param}"


def _display_shared(keys: set[tuple[str, str, str]]) -> str:
    # A parameter names the clash best; a macro only when no parameter is shared.
    params = sorted(k for k in keys if k[1] != "gin.macro")
    return _display_key(params[0] if params else sorted(keys)[0])


def _literal_macros(config: Mapping) -> dict[str, object]:
    macros = {
        scope: params.get("value")
        for (scope, selector), params in config.items()
        if selector == "gin.macro" and "value" in params
    }
    values = {}
    for name, value in macros.items():
        for _ in range(8):  # follow %A -> %B chains
            if (
                isinstance(value, gin.config.ConfigurableReference)
                and value.config_key[1] == "gin.macro"
                and value.config_key[0] in macros
            ):
                value = macros[value.config_key[0]]
            else:
                break
        if isinstance(value, (bool, int, float, str)):
            values[name.lower()] = value
    return values


def _parse(parse: ParseFn, file: str, bindings: Sequence[str], what: str) -> None:
    try:
        parse([file], list(bindings))
    except Exception as e:  # (gin raises many types)
        raise SweepError(f"{what}: {_one_line(e)}") from e


def expand(sweep_file: str, out_dir: str | None = None, parse: ParseFn | None = None) -> SweepPlan:
    """Reads and validates a sweep file and lists its runs (nothing is written).

    Args:
      sweep_file: the sweep gin file.
      out_dir: the sweeps' output directory (default ``sweeps/``).
      parse: ``parse(gin_files, bindings)`` that leaves the parsed config in gin
        (default ``floq.config.parse``).

    Returns:
      The plan.

    Raises:
      SweepError: with one line naming the problem: the file does not parse; an axis
        names an unknown binding, has no values, repeats a value, or binds a parameter
        that another axis (or the seeds) also binds; bad seeds; clashing run names.
    """
    parse = parse or default_parse
    file = resolve_file(sweep_file)
    base = os.path.basename(file)
    _parse(parse, file, [], f"{base} does not parse")
    config = {key: dict(params) for key, params in gin.config._CONFIG.items()}
    declared = spec.Sweep.from_bindings()
    name = declared.name if declared.name is not None else os.path.splitext(base)[0]
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SweepError(
            f"Sweep.name must be a plain folder name (letters, digits, ._+-), got {name!r}"
        )
    macros_defined = {scope for scope, selector in config if selector == "gin.macro"}

    raw_axes = declared.axes if declared.axes is not None else {}
    if not isinstance(raw_axes, dict):
        raise SweepError(f"Sweep.axes must be a dict {{binding: [values]}}, got {raw_axes!r}")
    axes: list[tuple[str, str | None, tuple]] = []
    targets: list[tuple[str, set]] = []  # (what, binding keys it sets)
    for raw_key, values in raw_axes.items():
        if not isinstance(raw_key, str) or not raw_key.strip().lstrip("%"):
            raise SweepError(f"Sweep.axes keys must be binding names, got {raw_key!r}")
        key = raw_key.strip().lstrip("%").strip()
        if not isinstance(values, (list, tuple)):
            raise SweepError(
                f"axis '{key}' must map to a list of values, got {gin_literal(values)}"
            )
        if not values:
            raise SweepError(f"axis '{key}' has no values")
        literals = [gin_literal(v) for v in values]
        for i, literal in enumerate(literals):
            if literal in literals[:i]:
                raise SweepError(f"axis '{key}' lists the value {literal} twice")
        if "." not in key.rsplit("/", 1)[-1]:
            macro = key
            if macro not in macros_defined:
                raise SweepError(
                    f"axis '{key}' is not a macro that {base} (or a file it includes) defines"
                )
            keys = _fed_by(config, macro)
        else:
            macro = None
            try:
                pbk = gin.config.ParsedBindingKey.parse(key)
            except Exception as e:
                raise SweepError(f"axis '{key}' is not a known binding: {_one_line(e)}") from e
            keys = {(pbk.scope, pbk.complete_selector, pbk.arg_name)}
        for literal in literals:
            _parse(parse, file, [f"{key} = {literal}"], f"axis '{key}' = {literal} is rejected")
        for what, other in targets:
            shared = keys & other
            if shared:
                raise SweepError(
                    f"axes '{what}' and '{raw_key}' both bind {_display_shared(shared)}"
                )
        targets.append((raw_key, keys))
        axes.append((key, macro, tuple(values)))

    seeds = declared.seeds
    seed_macro = declared.seed_macro
    if seeds is not None:
        if not isinstance(seeds, (list, tuple)) or not seeds:
            raise SweepError(
                "Sweep.seeds must be a non-empty list of integers "
                "(leave it unset to use the file's own seed)"
            )
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
            raise SweepError(f"Sweep.seeds must be integers, got {gin_literal(list(seeds))}")
        if len(set(seeds)) != len(seeds):
            raise SweepError(f"Sweep.seeds lists a seed twice: {gin_literal(list(seeds))}")
        if seed_macro not in macros_defined:
            raise SweepError(
                f"Sweep.seeds is bound through the macro {seed_macro}, which {base} "
                f"(or a file it includes) does not define"
            )
        keys = _fed_by(config, seed_macro)
        for what, other in targets:
            shared = keys & other
            if shared:
                raise SweepError(
                    f"axis '{what}' and Sweep.seeds both bind {_display_shared(shared)}"
                )
        seeds = list(seeds)

    tags = [_short_tag(key, macro) for key, macro, _ in axes]
    for i, (key, macro, _) in enumerate(axes):
        if tags[i] in RESERVED_COLUMNS or tags.count(tags[i]) > 1 or tags[i] == "seed":
            tags[i] = _long_tag(key, macro)
    for i, tag in enumerate(tags):
        if tags.count(tag) > 1 or tag in RESERVED_COLUMNS or not tag:
            raise SweepError(
                f"axis '{axes[i][0]}' gets the column name '{tag}', which another "
                f"axis or a standard column also uses"
            )
    macro_feeds = {m: _fed_by(config, m) for m in macros_defined}
    axis_objs = []
    for (key, macro, values), tag, (_, keys) in zip(axes, tags, targets):
        if macro is not None:  # the macro and the macros defined from it
            aliases = {scope.lower() for scope, selector, _ in keys if selector == "gin.macro"}
        else:  # the macros that fed the parameter in the file
            aliases = {m.lower() for m, fed in macro_feeds.items() if keys & fed}
        axis_objs.append(Axis(key, macro, values, tag, tuple(sorted(aliases))))

    sweep_dir = os.path.abspath(os.path.join(out_dir or DEFAULT_OUT, name))
    runs = []
    seed_choices = seeds if seeds is not None else [None]
    for point in itertools.product(*[a.values for a in axis_objs], seed_choices):
        values, seed = point[:-1], point[-1]
        parts = [f"{a.tag}={name_value(v)}" for a, v in zip(axis_objs, values)]
        bindings = [f"{a.key} = {gin_literal(v)}" for a, v in zip(axis_objs, values)]
        if seed is not None:
            parts.append(f"seed={seed}")
            bindings.append(f"{seed_macro} = {seed}")
        run_name = ",".join(parts) or "base"
        if len(run_name) > _MAX_NAME:
            digest = hashlib.sha1(run_name.encode()).hexdigest()[:10]
            run_name = run_name[: _MAX_NAME - 11] + "-" + digest
        runs.append(
            Run(
                name=run_name,
                gin_files=(file,),
                bindings=tuple(bindings),
                run_dir=os.path.join(sweep_dir, run_name),
                tags={a.tag: tag_value(v) for a, v in zip(axis_objs, values)},
            )
        )
    seen: set[str] = set()
    for run_name in (r.name for r in runs):
        if run_name in seen:
            raise SweepError(
                f"two runs get the same name '{run_name}' (values that differ only in "
                f"characters a folder name cannot hold)"
            )
        seen.add(run_name)
    base_values = _literal_macros(config)
    gin.clear_config()
    return SweepPlan(
        name=name,
        file=file,
        sweep_dir=sweep_dir,
        axes=axis_objs,
        seeds=seeds,
        seed_macro=seed_macro,
        runs=runs,
        base_values=base_values,
    )


# --------------------------------------------------------------------------------------
# Estimates from `floq bench` results.


def _speed_column(header: Sequence[str]) -> str | None:
    for name in ("updates_per_s", "updates/s", "updates_per_sec", "updates_per_second"):
        if name in header:
            return name
    return None


def _same(a, b) -> bool:
    if a is None or b is None or str(b).strip() == "":
        return False
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()


def load_bench(bench_dir: str) -> list[tuple[str, dict]]:
    """Rows (with their file) of ``floq bench`` CSVs that have an updates-per-second column."""
    rows = []
    for path in sorted(glob.glob(os.path.join(bench_dir, "*.csv"))):
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                speed = _speed_column(reader.fieldnames or [])
                if speed is None:
                    continue
                for row in reader:
                    try:
                        ups = float(row[speed])
                    except (TypeError, ValueError):
                        continue
                    if ups > 0:
                        rows.append((path, {**row, "_updates_per_s": ups}))
        except OSError:
            continue
    return rows


def estimate_run_hours(run: Run, plan: SweepPlan, bench: list[tuple[str, dict]]):
    """``(hours, source)`` for one run from benchmark rows, or ``None``.

    A row matches when every one of its columns that names a value of the run (a tag or
    a lower-cased macro of the file, e.g. ``critic_flow_steps``) agrees; the rows that
    agree on the most columns win, GPU rows before CPU rows; hours =
    ``train_steps / updates_per_s / 3600`` (training updates only).
    """
    values = dict(plan.base_values)
    for axis in plan.axes:
        for alias in axis.aliases:
            values[alias] = run.tags[axis.tag]
    values.update(run.tags)
    steps = values.get("train_steps")
    if not isinstance(steps, (int, float)) or isinstance(steps, bool) or steps <= 0:
        return None
    best, best_score = [], 0
    for path, row in bench:
        shared = [
            c for c in row if c in values and not c.startswith("_") and str(row[c]).strip() != ""
        ]
        if not shared or not all(_same(values[c], row[c]) for c in shared):
            continue
        score = len(shared)
        if score > best_score:
            best, best_score = [(path, row)], score
        elif score == best_score:
            best.append((path, row))
    if not best:
        return None
    gpu = [b for b in best if not str(b[1].get("device", "gpu")).lower().startswith("cpu")]
    best = gpu or best
    speeds = sorted(row["_updates_per_s"] for _, row in best)
    ups = speeds[len(speeds) // 2]
    path, row = best[0]
    return steps / ups / 3600.0, (os.path.relpath(path), row.get("device"))


def estimate_hours(plan: SweepPlan, runs: Sequence[Run], bench_dir: str | None = None) -> str:
    """The dry run's GPU-hours line for ``runs``."""
    bench_dir = bench_dir or os.path.join(spec.REPO_ROOT, "benchmarks", "results")
    if not runs:
        return "estimated GPU-hours: 0 (nothing to run)"
    bench = load_bench(bench_dir)
    estimates = [estimate_run_hours(run, plan, bench) for run in runs] if bench else []
    known = [e for e in estimates if e is not None]
    if not known:
        return "estimated GPU-hours: unknown (run floq bench)"
    total = sum(h for h, _ in known)
    sources = sorted({f"{p}" + (f" on {d}" if d else "") for _, (p, d) in known})
    text = f"estimated GPU-hours: {total:.2f}"
    if len(known) < len(runs):
        text = (
            f"estimated GPU-hours: at least {total:.2f} ({len(runs) - len(known)} of "
            f"{len(runs)} runs unknown: run floq bench)"
        )
    return text + f" (training updates only, 1 GPU per run; from {', '.join(sources)})"


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
            "seeds": self.plan.seeds,
            "runs": list(self.entries.values()),
        }

    def write(self) -> None:
        path = self.plan.summary_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.summary(), f, indent=1, default=str)
        os.replace(tmp, path)

    def progress_line(self) -> str:
        c = self.counts()
        return (
            f"[{self.plan.name}] {c['done']} done, {c['running']} running, "
            f"{c['failed']} failed, {c['pending']} pending"
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
            elif state in ("done", "failed"):
                entry["finished"] = _now()
                entry["reason"] = info.get("reason") if state == "failed" else None
            for key in ("job_id", "task_id", "host", "gpu"):
                if info.get(key) is not None:
                    entry[key] = info[key]
            self.write()
            if not quiet:
                detail = {
                    "running": f"running (log: {entry['log']})",
                    "done": "done",
                    "failed": f"failed: {entry['reason']} (log: {entry['log']})",
                    "pending": "pending",
                }[state]
                self.echo(f"{self.progress_line()} | {name} {detail}")


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
    return "; ".join(run.bindings) or "(the file as is)"


def run_sweep(
    sweep_file: str,
    launcher="local",
    out_dir: str | None = None,
    *,
    dry_run: bool = False,
    retry_failed: bool = False,
    runner: Sequence[str] | None = None,
    parse: ParseFn | None = None,
    echo: Callable[[str], None] | None = None,
    bench_dir: str | None = None,
    **launcher_options,
) -> dict:
    """Runs (or lists) a sweep; returns its summary (what ``sweep.json`` holds).

    Runs that are done are skipped; unfinished runs resume (they are simply launched
    again on the same run directory). Runs that failed before stay failed unless
    ``retry_failed``. One failing run never stops the others.

    Args:
      sweep_file: the sweep gin file.
      launcher: ``'local' | 'slurm' | 'ray'`` or a :class:`floq.launch.base.Launcher`.
      out_dir: the sweeps' output directory (default ``sweeps/``).
      dry_run: list the runs and the estimated GPU-hours; write and launch nothing.
      retry_failed: launch runs that ``sweep.json`` records as failed again.
      runner: the ``floq run`` command prefix (default ``python -m floq run``).
      parse: gin parsing function for validation (default ``floq.config.parse``).
      echo: where progress lines go (default ``print`` with flush).
      bench_dir: ``floq bench`` results for the estimate (default ``benchmarks/results``).
      **launcher_options: passed to the launcher (``workers=``; ``partition=``,
        ``time_min=``, ``gpus=``, ``array_parallelism=``, ``cluster=``; ``address=``).

    Raises:
      SweepError: (one line) for an invalid sweep, before anything is launched.
    """
    echo = echo or (lambda line: print(line, flush=True))
    plan = expand(sweep_file, out_dir, parse)
    statuses = {run.name: runner_lib.run_status(run.run_dir) for run in plan.runs}
    previous = SweepState.read(plan.summary_path) or {}
    prev_states = {r.get("name"): r for r in previous.get("runs", [])}

    if dry_run:
        failed = [
            r
            for r in plan.runs
            if statuses[r.name] != "done" and prev_states.get(r.name, {}).get("state") == "failed"
        ]
        todo = [
            r for r in plan.runs if statuses[r.name] != "done" and (retry_failed or r not in failed)
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
            if status != "done" and prev_states.get(run.name, {}).get("state") == "failed":
                status = "failed" if not retry_failed else "retry"
            echo(f"  {run.name:<{width}}  {status:<7}  {_describe_run(run)}")
        done = sum(1 for r in plan.runs if statuses[r.name] == "done")
        kept = (
            f", {len(failed)} failed (not retried without --retry-failed)"
            if failed and not retry_failed
            else ""
        )
        echo(f"{len(plan.runs)} runs: {done} done{kept}, {len(todo)} to run")
        echo(estimate_hours(plan, todo, bench_dir))
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
        state = SweepState(plan, launcher_name, echo)
        todo = []
        kept_failed = 0
        for run in plan.runs:
            entry = state.entries[run.name]
            if statuses[run.name] == "done":
                entry["state"], entry["reason"] = "done", None
            elif entry["state"] == "failed" and not retry_failed:
                kept_failed += 1
            else:
                entry["state"], entry["reason"] = "pending", None
                todo.append(run)
        state.write()
        c = state.counts()
        note = (
            f", {kept_failed} failed before (--retry-failed runs them again)" if kept_failed else ""
        )
        echo(
            f"sweep {plan.name}: {len(plan.runs)} runs, {c['done']} done{note}; "
            f"{len(todo)} to run with {launcher.describe()} -> {plan.sweep_dir}"
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
    echo(
        f"sweep {plan.name} finished: {c['done']} done, {c['failed']} failed"
        + (f", {c['pending'] + c['running']} unfinished" if c["pending"] + c["running"] else "")
        + f" ({plan.summary_path})"
    )
    return summary


# --------------------------------------------------------------------------------------
# The command line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="floq sweep",
        description="Run every run of a sweep gin file (Sweep.axes x "
        "Sweep.seeds); runs that are done are skipped, unfinished ones resume.",
    )
    parser.add_argument("file", help="sweep gin file")
    parser.add_argument("--launcher", choices=("local", "slurm", "ray"), default="local")
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="output directory; runs go to OUT/<sweep name>/<run name> (default: %(default)s)",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list the runs and the estimated GPU-hours, launch nothing",
    )
    parser.add_argument(
        "--retry-failed",
        action="store_true",
        help="run again the runs that sweep.json records as failed",
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
    try:
        summary = run_sweep(
            args.file,
            args.launcher,
            args.out,
            dry_run=args.dry_run,
            retry_failed=args.retry_failed,
            runner=runner,
            **options,
        )
    except (SweepError, ValueError) as e:
        print(f"floq sweep: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("floq sweep: interrupted (run it again to resume)", file=sys.stderr)
        return 130
    if args.dry_run:
        return 0
    return 0 if summary["counts"]["done"] == len(summary["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
