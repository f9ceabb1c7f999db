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

from floq.results import lock_holder
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
STATES = ("pending", "running", "done", "failed", "diverged")
#: States a run stays in until ``--retry-failed``.
KEPT_STATES = ("failed", "diverged")
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
      axes: the swept bindings, in declared order (of every grid, each key once).
      seeds: the seeds (``None``: the file's own).
      seed_macro: the macro seeds are bound through.
      runs: one per grid point: axes in declared order (the last varying fastest), seeds
        innermost.
      base_values: ``{lower-cased macro name: value}`` of the file's literal macros
        (used for estimates).
      grids: the sub-grids (:class:`Grid`; one unnamed grid without ``Sweep.grids``).
      bindings: extra bindings given with ``--bind`` (first in every run's bindings).
    """

    name: str
    file: str
    sweep_dir: str
    axes: list[Axis]
    seeds: list[int] | None
    seed_macro: str
    runs: list[Run]
    base_values: dict[str, object]
    grids: list = dataclasses.field(default_factory=list)
    bindings: list[str] = dataclasses.field(default_factory=list)

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


def _parse(parse: ParseFn, files: Sequence[str], bindings: Sequence[str], what: str) -> None:
    try:
        parse(list(files), list(bindings))
    except Exception as e:  # (gin raises many types)
        raise SweepError(f"{what}: {_one_line(e)}") from e


def _snapshot() -> dict:
    return {key: dict(params) for key, params in gin.config._CONFIG.items()}


def _resolve_macros(value, config: Mapping, what: str, depth: int = 0):
    """``value`` with every ``%MACRO`` replaced by the macro's value (``@refs`` stay)."""
    if depth > 32:
        raise SweepError(f"{what}: macros refer to each other in a loop")
    if isinstance(value, gin.config.ConfigurableReference) and value.config_key[1] == "gin.macro":
        name = value.config_key[0]
        if (name, "gin.macro") not in config:
            raise SweepError(f"{what}: unknown macro %{name}")
        return _resolve_macros(config[(name, "gin.macro")].get("value"), config, what, depth + 1)
    if isinstance(value, list):
        return [_resolve_macros(v, config, what, depth) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve_macros(v, config, what, depth) for v in value)
    if isinstance(value, dict):
        return {
            _resolve_macros(k, config, what, depth): _resolve_macros(v, config, what, depth)
            for k, v in value.items()
        }
    return value


def resolve_gin_path(path: str, sweep_file: str | None = None) -> str | None:
    """A gin file named in a sweep: the working directory, the repo root, then the sweep
    file's folder; ``None`` if none holds it."""
    if os.path.isabs(path):
        return path if os.path.isfile(path) else None
    roots = [os.getcwd(), spec.REPO_ROOT]
    if sweep_file:
        roots.append(os.path.dirname(sweep_file))
    for root in roots:
        candidate = os.path.join(root, path)
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def _file_list(value, what: str, sweep_file: str, allow_template: bool = False) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SweepError(f"{what} must be a list of gin file paths, got {gin_literal(value)}")
    out = []
    for path in value:
        if allow_template and "{task}" in path:
            out.append(path)  # checked per task
            continue
        found = resolve_gin_path(path, sweep_file)
        if found is None:
            raise SweepError(f"{what}: gin file not found: {path}")
        out.append(found)
    return out


def _task_label(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def _check_axis_values(key: str, values, where: str) -> None:
    if not isinstance(values, (list, tuple)):
        raise SweepError(f"axis '{key}'{where} must map to a list of values, got {gin_literal(values)}")
    if not values:
        raise SweepError(f"axis '{key}'{where} has no values")
    literals = [gin_literal(v) for v in values]
    for i, literal in enumerate(literals):
        if literal in literals[:i]:
            raise SweepError(f"axis '{key}'{where} lists the value {literal} twice")


def _clean_key(raw_key, what: str) -> str:
    if not isinstance(raw_key, str) or not raw_key.strip().lstrip("%"):
        raise SweepError(f"{what} keys must be binding names, got {raw_key!r}")
    return raw_key.strip().lstrip("%").strip()


def _target_keys(key: str, config: Mapping, macros_defined: set, what: str, base: str):
    """``(macro or None, binding keys it sets)`` for a binding target."""
    if "." not in key.rsplit("/", 1)[-1]:
        if key not in macros_defined:
            raise SweepError(f"{what} is not a macro that {base} (or a file it includes) defines")
        return key, _fed_by(config, key)
    try:
        pbk = gin.config.ParsedBindingKey.parse(key)
    except Exception as e:
        raise SweepError(f"{what} is not a known binding: {_one_line(e)}") from e
    return None, {(pbk.scope, pbk.complete_selector, pbk.arg_name)}


@dataclasses.dataclass(frozen=True)
class Grid:
    """One sub-grid of a sweep (``Sweep.grids``; a sweep without it has one unnamed grid).

    Attributes:
      name: its label (the ``grid`` tag), or ``None`` for the single unnamed grid.
      files: gin files read after the sweep file (absolute paths).
      bind: fixed bindings, as gin source lines.
      axes: its axes: its own, then ``Sweep.axes``.
      tasks: task files (absolute paths), or ``None`` (no environment axis).
      overlays: files read after the task file (``{task}`` templates expanded per task).
    """

    name: str | None
    files: tuple[str, ...]
    bind: tuple[str, ...]
    axes: tuple[Axis, ...]
    tasks: tuple[str, ...] | None
    overlays: tuple[str, ...]

    def overlay_files(self, task: str | None, sweep_file: str) -> list[str]:
        out = []
        for template in self.overlays:
            if "{task}" not in template:
                out.append(template)
                continue
            if task is None:
                raise SweepError(
                    f"grid '{self.name}': overlay {template} names {{task}} but the grid has no tasks"
                )
            path = template.replace("{task}", _task_label(task))
            found = resolve_gin_path(path, sweep_file)
            if found is None:
                raise SweepError(f"grid '{self.name}': overlay file not found: {path}")
            out.append(found)
        return out


GRID_KEYS = ("name", "files", "bind", "axes", "tasks", "overlays")
#: The tags the sweep itself writes (a swept binding never gets these names).
GRID_TAG, ENV_TAG = "grid", "env"
def expand(
    sweep_file: str,
    out_dir: str | None = None,
    parse: ParseFn | None = None,
    bindings: Sequence[str] = (),
) -> SweepPlan:
    """Reads and validates a sweep file and lists its runs (nothing is written).

    Args:
      sweep_file: the sweep gin file.
      out_dir: the sweeps' output directory (default ``sweeps/``).
      parse: ``parse(gin_files, bindings)`` that leaves the parsed config in gin
        (default ``floq.config.parse``).
      bindings: extra gin bindings, applied after the sweep file when it is read (so they
        can narrow ``Sweep.*`` through its macros) and first in every run's bindings.

    Returns:
      The plan.

    Raises:
      SweepError: with one line naming the problem: the file (or a grid's or task's
        files) does not parse or does not exist; an axis names an unknown binding, has no
        values, repeats a value, or binds a parameter that another axis, a grid's ``bind``
        (or the seeds) also binds; bad seeds, grids or tasks; clashing run names; two runs
        with the same configuration.
    """
    parse = parse or default_parse
    file = resolve_file(sweep_file)
    base = os.path.basename(file)
    extra = [b for b in bindings if b.strip()]
    _parse(parse, [file], extra, f"{base} does not parse")
    config = _snapshot()
    declared = spec.Sweep.from_bindings()
    name = declared.name if declared.name is not None else os.path.splitext(base)[0]
    name = _resolve_macros(name, config, "Sweep.name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SweepError(
            f"Sweep.name must be a plain folder name (letters, digits, ._+-), got {name!r}"
        )
    macros_defined = {scope for scope, selector in config if selector == "gin.macro"}

    raw_axes = _resolve_macros(declared.axes, config, "Sweep.axes")
    raw_axes = raw_axes if raw_axes is not None else {}
    if not isinstance(raw_axes, dict):
        raise SweepError(f"Sweep.axes must be a dict {{binding: [values]}}, got {raw_axes!r}")
    shared = []
    for raw_key, values in raw_axes.items():
        key = _clean_key(raw_key, "Sweep.axes")
        _check_axis_values(key, values, "")
        shared.append((raw_key, key, tuple(values)))

    seeds = _resolve_macros(declared.seeds, config, "Sweep.seeds")
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
        seeds = list(seeds)

    tasks_raw = _resolve_macros(declared.tasks, config, "Sweep.tasks")
    tasks = None
    if tasks_raw is not None:
        if not tasks_raw:
            raise SweepError("Sweep.tasks must be a non-empty list of task files")
        tasks = _file_list(tasks_raw, "Sweep.tasks", file)

    grids_raw = _resolve_macros(declared.grids, config, "Sweep.grids")
    named = grids_raw is not None
    if grids_raw is None:
        grids_raw = [{}]
    if not isinstance(grids_raw, (list, tuple)) or not grids_raw:
        raise SweepError("Sweep.grids must be a non-empty list of dicts (see floq/launch/spec.py)")

    grids: list[Grid] = []
    grid_names: list[str] = []
    grid_configs: list[dict] = []
    for i, raw in enumerate(grids_raw):
        if not isinstance(raw, dict):
            raise SweepError(f"Sweep.grids[{i}] must be a dict, got {gin_literal(raw)}")
        unknown = sorted(set(map(str, raw)) - set(GRID_KEYS))
        if unknown:
            raise SweepError(
                f"Sweep.grids[{i}] has unknown key(s) {', '.join(unknown)} "
                f"(known: {', '.join(GRID_KEYS)})"
            )
        gname = raw.get("name")
        if named:
            if not isinstance(gname, str) or not _NAME_RE.match(gname):
                raise SweepError(
                    f"Sweep.grids[{i}] needs a 'name' that is a plain folder name, got {gname!r}"
                )
            if gname in grid_names:
                raise SweepError(f"Sweep.grids names the grid '{gname}' twice")
        grid_names.append(gname)
        where = f" of grid '{gname}'" if named else ""
        label = f"grid '{gname}'" if named else base
        gfiles = _file_list(raw.get("files", []), f"grid '{gname}' files", file)
        gtasks = tasks
        if "tasks" in raw:
            if not raw["tasks"]:
                raise SweepError(f"grid '{gname}' tasks must be a non-empty list of task files")
            gtasks = _file_list(raw["tasks"], f"grid '{gname}' tasks", file)
        if gtasks is not None:
            labels = [_task_label(t) for t in gtasks]
            for j, lab in enumerate(labels):
                if lab in labels[:j]:
                    raise SweepError(f"{label}: two task files are named '{lab}' (one environment each)")
        overlays = _file_list(raw.get("overlays", []), f"grid '{gname}' overlays", file, True)
        bind_raw = raw.get("bind", {})
        if not isinstance(bind_raw, dict):
            raise SweepError(f"grid '{gname}' bind must be a dict {{binding: value}}")
        bind_lines = [f"{_clean_key(k, f'grid {gname!r} bind')} = {gin_literal(v)}" for k, v in bind_raw.items()]
        axes_raw = raw.get("axes", {})
        if not isinstance(axes_raw, dict):
            raise SweepError(f"grid '{gname}' axes must be a dict {{binding: [values]}}")
        own = []
        for raw_key, values in axes_raw.items():
            key = _clean_key(raw_key, f"grid '{gname}' axes")
            _check_axis_values(key, values, where)
            if any(key == k for _, k, _ in shared):
                raise SweepError(f"grid '{gname}' sweeps '{key}', which Sweep.axes also sweeps")
            own.append((raw_key, key, tuple(values)))

        grid = Grid(gname, tuple(gfiles), tuple(bind_lines), (), tuple(gtasks) if gtasks else None,
                    tuple(overlays))
        # Every file combination of the grid must parse (a typo'd task fails here).
        first_config = None
        for task in (gtasks or [None]):
            files = [file, *gfiles] + ([task] if task else []) + grid.overlay_files(task, file)
            what = f"{label}" + (f" with {os.path.relpath(task)}" if task else "") + " does not parse"
            _parse(parse, files, extra + bind_lines, what)
            if first_config is None:
                first_config = _snapshot()
                first_files = files
        gconfig = first_config
        gmacros = {scope for scope, selector in gconfig if selector == "gin.macro"}

        targets: list[tuple[str, set]] = []
        bind_keys: set = set()
        for line, (k, v) in zip(bind_lines, bind_raw.items()):
            key = _clean_key(k, "bind")
            _, keys = _target_keys(key, gconfig, gmacros, f"grid '{gname}' binds '{key}', which", base)
            bind_keys |= keys
            for what, other in targets:
                if keys & other:
                    raise SweepError(f"grid '{gname}' binds {_display_shared(keys & other)} twice")
            targets.append((f"bind '{key}'", keys))
        axes_out = []
        for raw_key, key, values in own + shared:
            macro, keys = _target_keys(key, gconfig, gmacros, f"axis '{key}'{where}", base)
            for literal in (gin_literal(v) for v in values):
                _parse(parse, first_files, extra + bind_lines + [f"{key} = {literal}"],
                       f"axis '{key}'{where} = {literal} is rejected")
            for what, other in targets:
                shared_keys = keys & other
                if shared_keys:
                    if what.startswith("bind"):
                        raise SweepError(
                            f"grid '{gname}' {what} and axis '{raw_key}' both bind "
                            f"{_display_shared(shared_keys)}"
                        )
                    raise SweepError(
                        f"axes '{what}' and '{raw_key}' both bind {_display_shared(shared_keys)}"
                    )
            targets.append((raw_key, keys))
            axes_out.append((key, macro, values, keys))
        if seeds is not None:
            keys = _fed_by(gconfig, seed_macro) if seed_macro in gmacros else set()
            for what, other in targets:
                if keys & other:
                    label_what = f"grid '{gname}' {what}" if what.startswith("bind") else f"axis '{what}'"
                    raise SweepError(f"{label_what} and Sweep.seeds both bind {_display_shared(keys & other)}")
        grids.append(dataclasses.replace(
            grid,
            axes=tuple(Axis(k, m, v, "", ()) for k, m, v, _ in axes_out),
        ))
        grid_configs.append((gconfig, axes_out))

    # Tags: one per distinct axis key, the same in every grid.
    keys_order: list[tuple[str, str | None]] = []
    for grid in grids:
        for axis in grid.axes:
            if axis.key not in [k for k, _ in keys_order]:
                keys_order.append((axis.key, axis.macro))
    own_tags = {GRID_TAG, ENV_TAG, "seed"}
    tags = [_short_tag(key, macro) for key, macro in keys_order]
    for i, (key, macro) in enumerate(keys_order):
        if tags[i] in RESERVED_COLUMNS or tags.count(tags[i]) > 1 or tags[i] in own_tags:
            tags[i] = _long_tag(key, macro)
    for i, tag in enumerate(tags):
        if tags.count(tag) > 1 or tag in RESERVED_COLUMNS or tag in own_tags or not tag:
            raise SweepError(
                f"axis '{keys_order[i][0]}' gets the column name '{tag}', which another "
                f"axis or a standard column also uses"
            )
    tag_of = {key: tag for (key, _), tag in zip(keys_order, tags)}
    union: dict[str, Axis] = {}
    for g, grid in enumerate(grids):
        gconfig, axes_out = grid_configs[g]
        gmacros = {scope for scope, selector in gconfig if selector == "gin.macro"}
        macro_feeds = {m: _fed_by(gconfig, m) for m in gmacros}
        new_axes = []
        for key, macro, values, keys in axes_out:
            if macro is not None:
                aliases = {scope.lower() for scope, selector, _ in keys if selector == "gin.macro"}
            else:
                aliases = {m.lower() for m, fed in macro_feeds.items() if keys & fed}
            axis = Axis(key, macro, values, tag_of[key], tuple(sorted(aliases)))
            new_axes.append(axis)
            union.setdefault(key, axis)
        grids[g] = dataclasses.replace(grid, axes=tuple(new_axes))

    sweep_dir = os.path.abspath(os.path.join(out_dir or DEFAULT_OUT, name))
    runs = []
    seed_choices = seeds if seeds is not None else [None]
    for grid in grids:
        for task in (grid.tasks or [None]):
            files = (file, *grid.files) + ((task,) if task else ()) + tuple(grid.overlay_files(task, file))
            head_parts, head_tags = [], {}
            if grid.name is not None:
                head_parts.append(f"{GRID_TAG}={grid.name}")
                head_tags[GRID_TAG] = grid.name
            if task is not None:
                head_parts.append(f"{ENV_TAG}={_task_label(task)}")
                head_tags[ENV_TAG] = _task_label(task)
            for point in itertools.product(*[a.values for a in grid.axes], seed_choices):
                values, seed = point[:-1], point[-1]
                parts = head_parts + [f"{a.tag}={name_value(v)}" for a, v in zip(grid.axes, values)]
                run_bindings = extra + list(grid.bind)
                run_bindings += [f"{a.key} = {gin_literal(v)}" for a, v in zip(grid.axes, values)]
                if seed is not None:
                    parts.append(f"seed={seed}")
                    run_bindings.append(f"{seed_macro} = {seed}")
                run_name = ",".join(parts) or "base"
                if len(run_name) > _MAX_NAME:
                    digest = hashlib.sha1(run_name.encode()).hexdigest()[:10]
                    run_name = run_name[: _MAX_NAME - 11] + "-" + digest
                runs.append(
                    Run(
                        name=run_name,
                        gin_files=files,
                        bindings=tuple(run_bindings),
                        run_dir=os.path.join(sweep_dir, run_name),
                        tags={**head_tags, **{a.tag: tag_value(v) for a, v in zip(grid.axes, values)}},
                    )
                )
    seen: set[str] = set()
    configs: dict[tuple, str] = {}
    for run in runs:
        if run.name in seen:
            raise SweepError(
                f"two runs get the same name '{run.name}' (values that differ only in "
                f"characters a folder name cannot hold)"
            )
        seen.add(run.name)
        key = (run.gin_files, tuple(sorted(run.bindings)))
        if key in configs:
            raise SweepError(
                f"runs '{configs[key]}' and '{run.name}' have the same files and bindings "
                f"(two grids that overlap)"
            )
        configs[key] = run.name
    base_values = _literal_macros(grid_configs[0][0] if grid_configs else config)
    gin.clear_config()
    return SweepPlan(
        name=name,
        file=file,
        sweep_dir=sweep_dir,
        axes=list(union.values()),
        seeds=seeds,
        seed_macro=seed_macro,
        runs=runs,
        base_values=base_values,
        grids=grids,
        bindings=extra,
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
# Estimates: FLOPs per update (lowered like run.json's) x measured throughput.

#: OGBench state-based environments: (observation width, action width, episode time limit).
#: Read from ogbench 1.2.2 by constructing each singletask env (``env.observation_space``,
#: ``env.action_space`` and the ``max_episode_steps`` it registers in ogbench/__init__.py).
OGBENCH_DIMS = {
    "antmaze-large-navigate": (29, 8, 1000),
    "antmaze-giant-navigate": (29, 8, 1000),
    "humanoidmaze-medium-navigate": (69, 21, 2000),
    "humanoidmaze-large-navigate": (69, 21, 2000),
    "antsoccer-arena-navigate": (42, 8, 1000),
    "cube-single-play": (28, 5, 200),
    "cube-double-play": (37, 5, 500),
    "cube-triple-play": (46, 5, 1000),
    "scene-play": (40, 5, 750),
    "puzzle-3x3-play": (55, 5, 500),
    "puzzle-4x4-play": (83, 5, 500),
}
#: Used when benchmarks/results has no GPU throughput row: an ASSUMED effective rate of one
#: H100 on these small-MLP updates (about 15% of its 67 TFLOP/s FP32 peak; floq bench's CPU
#: rows reach 30-50% of their matmul peak, small matmuls reach less on a GPU). Override with
#: FLOQ_ASSUMED_GPU_TFLOPS.
ASSUMED_GPU_TFLOPS = 10.0
#: Used when no ``eval`` bench row exists: an ASSUMED simulator rate (env steps/s, one worker).
ASSUMED_ENV_STEPS_PER_S = 500.0
_THROUGHPUT_ROWS = ("throughput", "throughput_squeezed")


@dataclasses.dataclass(frozen=True)
class RunCost:
    """What one run costs, independent of the device.

    Attributes:
      flops_per_update: FLOPs of one gradient step of one seed (XLA cost analysis of the
        lowered update, loops unrolled: what run.json records).
      updates: gradient steps x agents (offline steps + online steps x UTD ratio); agents =
        seeds x tasks of the program.
      env_steps: simulator steps x agents: evaluation episodes (each to its time limit, an
        upper bound) plus online environment steps.
      family: 'floq' or 'monolithic' (which bench rows give its rate).
      key: the configuration the FLOPs were computed for.
    """

    flops_per_update: float
    updates: float
    env_steps: float
    family: str
    key: str
    agents: int = 1


def _flops_cache_path() -> str:
    root = os.environ.get("FLOQ_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "floq")
    return os.path.join(root, "flops_per_update.json")


class FlopsCache:
    """FLOPs per update by configuration: in memory, and in a JSON file between dry runs
    (``$FLOQ_CACHE_DIR/flops_per_update.json``, default ``~/.cache/floq``). Keys hash the
    critic and actor specs, batch size, observation/action widths and the jax version."""

    def __init__(self, path: str | None = None):
        self.path = path or _flops_cache_path()
        self.values: dict[str, float] = {}
        self.dirty = False
        try:
            with open(self.path) as f:
                self.values = {k: float(v) for k, v in json.load(f).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self.values = {}

    def save(self) -> None:
        if not self.dirty:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            tmp = f"{self.path}.tmp{os.getpid()}"
            with open(tmp, "w") as f:
                json.dump(self.values, f, indent=0, sort_keys=True)
            os.replace(tmp, self.path)
            self.dirty = False
        except OSError:
            pass


def lowered_flops(algorithm, critic, batch_size: int, obs_dim: int, act_dim: int) -> float | None:
    """FLOPs of one update as ``floq.train.update_flops`` counts them for run.json, on a
    tiny fake dataset of the environment's widths (shapes only: nothing is computed)."""
    import jax
    import jax.numpy as jnp

    from floq import train

    n = 1024
    f32 = jnp.float32
    data = {
        "observations": jax.ShapeDtypeStruct((n, obs_dim), f32),
        "actions": jax.ShapeDtypeStruct((n, act_dim), f32),
        "rewards": jax.ShapeDtypeStruct((n,), f32),
        "masks": jax.ShapeDtypeStruct((n,), f32),
        "next_observations": jax.ShapeDtypeStruct((n, obs_dim), f32),
    }
    ex_obs, ex_act = jnp.zeros((2, obs_dim), f32), jnp.zeros((2, act_dim), f32)
    try:
        state1 = jax.eval_shape(lambda k: algorithm.init(k, critic, ex_obs, ex_act), jax.random.PRNGKey(0))
    except Exception:  # noqa: BLE001 - an estimate never breaks a dry run
        return None
    return train.update_flops(algorithm, critic, state1, data, batch_size)


def _profile_key(run: Run, seed_binding_prefix: str) -> tuple:
    return (run.gin_files, tuple(b for b in run.bindings if not b.startswith(seed_binding_prefix)))


def run_costs(plan: SweepPlan, runs: Sequence[Run], cache: FlopsCache | None = None,
              flops_fn: Callable | None = None) -> dict[str, RunCost | str]:
    """``{run name: RunCost, or the reason it has none}``: builds each distinct
    configuration (``floq.train.build``) and lowers its update once."""
    cache = cache if cache is not None else FlopsCache()
    flops_fn = flops_fn or lowered_flops
    try:
        import jax
        from floq import train
    except Exception as e:  # noqa: BLE001
        return {run.name: f"floq.train unavailable: {_one_line(e)}" for run in runs}
    out: dict[str, RunCost | str] = {}
    built: dict[tuple, RunCost | str] = {}
    memo: dict[str, float | None] = {}
    prefix = f"{plan.seed_macro} ="
    import warnings

    for run in runs:
        pkey = _profile_key(run, prefix)
        if pkey not in built:
            built[pkey] = _one_cost(run, train, jax, cache, memo, flops_fn, warnings)
        out[run.name] = built[pkey]
    cache.save()
    gin.clear_config()
    return out


def _one_cost(run, train, jax, cache, memo, flops_fn, warnings) -> RunCost | str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exp = train.build(list(run.gin_files), list(run.bindings))
    except Exception as e:  # noqa: BLE001
        return f"does not build: {_one_line(e)}"
    task, critic, algo, tr = exp.task, exp.critic, exp.algorithm, exp.trainer
    env = getattr(task, "env", None)
    if env not in OGBENCH_DIMS:
        return f"no observation/action widths for environment {env!r}"
    obs_dim, act_dim, horizon = OGBENCH_DIMS[env]
    try:
        critic = critic.configure(task.discount, -1.0, 0.0)
        if getattr(tr, "precision", "float32") == "bfloat16":
            critic = dataclasses.replace(critic, compute_dtype="bfloat16")
    except Exception as e:  # noqa: BLE001
        return f"critic does not configure: {_one_line(e)}"
    text = repr((repr(critic), repr(algo), tr.batch_size, obs_dim, act_dim, jax.__version__))
    key = hashlib.sha1(text.encode()).hexdigest()[:16]
    if key in memo:
        flops = memo[key]
    elif key in cache.values:
        flops = memo[key] = cache.values[key]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flops = flops_fn(algo, critic, tr.batch_size, obs_dim, act_dim)
        memo[key] = flops
        if flops is not None and math.isfinite(flops):
            cache.values[key] = float(flops)
            cache.dirty = True
    if flops is None or not math.isfinite(flops):
        return "its update could not be lowered"
    # Agents in the program: seeds x tasks (a multi-task program, Task.task_ids, is one job).
    seeds = int(getattr(tr, "num_seeds", 1)) * len(getattr(task, "ids", (1,)))
    online = int(getattr(tr, "online_steps", 0) or 0)
    utd = float(getattr(tr, "utd_ratio", 1) or 1)
    total = tr.train_steps + online
    n_evals = 0
    if tr.eval_interval:
        n_evals = total // tr.eval_interval + (1 if total % tr.eval_interval else 0)
    else:
        n_evals = 1
    n_evals += 1 if getattr(tr, "eval_at_start", True) else 0
    env_steps = seeds * (n_evals * tr.eval_episodes * horizon + online)
    family = "floq" if type(critic).__name__ == "FloqCritic" else "monolithic"
    return RunCost(float(flops), seeds * (tr.train_steps + online * utd), float(env_steps), family, key, seeds)


def _float(row: Mapping, col: str) -> float | None:
    try:
        v = float(row.get(col, ""))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def load_bench_rows(bench_dir: str) -> list[tuple[str, dict]]:
    """Every row (with its file) of the CSVs in ``bench_dir``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(bench_dir, "*.csv"))):
        try:
            with open(path, newline="") as f:
                rows += [(path, row) for row in csv.DictReader(f)]
        except OSError:
            continue
    return rows


@dataclasses.dataclass(frozen=True)
class Rate:
    """A throughput figure and where it comes from."""

    value: float
    source: str
    assumed: bool = False


def _is_cpu(row: Mapping) -> bool:
    return str(row.get("device", "")).strip().lower().startswith("cpu")


def flop_rates(bench: list[tuple[str, dict]], cpu: bool) -> dict[str, Rate]:
    """GFLOP/s per critic family on GPU (``cpu=False``) or CPU rows of ``floq bench``:
    its throughput rows of the largest configuration measured (the paper's, where present)."""
    rates = {}
    for family in ("floq", "monolithic"):
        rows = [
            (path, row) for path, row in bench
            if row.get("benchmark") in _THROUGHPUT_ROWS and _is_cpu(row) == cpu
            and str(row.get("critic", "")).strip() == family and _float(row, "gflop_per_s")
            and _float(row, "gflop_per_update") and str(row.get("precision", "float32")) in ("", "float32")
        ]
        if not rows:
            continue
        biggest = max(_float(r, "gflop_per_update") for _, r in rows)
        rows = [(p, r) for p, r in rows if _float(r, "gflop_per_update") == biggest]
        speeds = sorted(_float(r, "gflop_per_s") for _, r in rows)
        path, row = rows[0]
        config = row.get("config") or "?"
        rates[family] = Rate(
            speeds[len(speeds) // 2],
            f"{os.path.relpath(path)} ({row.get('device', '?')}, {family} '{config}' throughput)",
        )
    if cpu or rates:
        for family in ("floq", "monolithic"):  # one family measured: use it for both
            if family not in rates and rates:
                other = next(iter(rates.values()))
                rates[family] = Rate(other.value, other.source)
        return rates
    tflops = ASSUMED_GPU_TFLOPS
    try:
        tflops = float(os.environ.get("FLOQ_ASSUMED_GPU_TFLOPS", tflops))
    except ValueError:
        pass
    note = (f"ASSUMED: an H100's effective rate; benchmarks/results has no GPU row; "
            f"set FLOQ_ASSUMED_GPU_TFLOPS to change it")
    return {f: Rate(tflops * 1000.0, note, assumed=True) for f in ("floq", "monolithic")}


def env_rate(bench: list[tuple[str, dict]]) -> Rate:
    """Simulator steps/s from ``floq bench``'s ``eval`` rows (policy included, one worker)."""
    best = None
    for path, row in bench:
        if row.get("benchmark") != "eval" or not _float(row, "episodes_per_s"):
            continue
        match = re.search(r"mean length (\d+)", row.get("notes", ""))
        if not match or str(row.get("workers", "")).strip() != "1" or not row.get("critic"):
            continue
        rate = _float(row, "episodes_per_s") * int(match.group(1))
        if best is None or rate < best.value:
            best = Rate(rate, f"{os.path.relpath(path)} eval row ({row.get('device', '?')}, one worker)")
    if best is None:
        return Rate(ASSUMED_ENV_STEPS_PER_S, "ASSUMED: no eval row in benchmarks/results", assumed=True)
    return best


def _on_gpu() -> bool:
    try:
        import jax

        return jax.default_backend() != "cpu"
    except Exception:  # noqa: BLE001
        return False


def _fmt_hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.2f}"


def _rate_text(rates: dict[str, Rate], families: set[str]) -> str:
    parts, sources = [], []
    for f in sorted(families):
        r = rates[f]
        parts.append(f"{f} {r.value / 1000:.1f} TFLOP/s" if r.value >= 1000 else f"{f} {r.value:.1f} GFLOP/s")
        if r.source not in sources:
            sources.append(r.source)
    return ", ".join(parts) + " (" + "; ".join(sources) + ")"


def estimate_lines(plan: SweepPlan, runs: Sequence[Run], bench_dir: str | None = None,
                   costs: Mapping[str, RunCost | str] | None = None,
                   on_gpu: bool | None = None) -> list[str]:
    """The dry run's cost lines for ``runs``: GPU-hours (and CPU-hours on a CPU machine)
    from FLOPs per update x bench throughput x updates, plus simulator time."""
    bench_dir = bench_dir or os.path.join(spec.REPO_ROOT, "benchmarks", "results")
    if not runs:
        return ["estimated GPU-hours: 0 (nothing to run)"]
    costs = costs if costs is not None else run_costs(plan, runs)
    known = {r.name: costs[r.name] for r in runs if isinstance(costs.get(r.name), RunCost)}
    if not known:
        return [estimate_hours(plan, runs, bench_dir)]  # not floq runs: bench rows by tags
    bench = load_bench_rows(bench_dir)
    steps = env_rate(bench)
    on_gpu = _on_gpu() if on_gpu is None else on_gpu
    devices = [("GPU", flop_rates(bench, cpu=False))]
    if not on_gpu:
        cpu = flop_rates(bench, cpu=True)
        if cpu:
            devices.append(("CPU", cpu))
    families = {c.family for c in known.values()}
    lines = []
    unknown = [r.name for r in runs if r.name not in known]
    sim_h = sum(c.env_steps for c in known.values()) / steps.value / 3600
    agents = sum(c.agents for c in known.values())
    for label, rates in devices:
        train_h = sum(c.updates * c.flops_per_update / (rates[c.family].value * 1e9) for c in known.values()) / 3600
        where = "" if label == "GPU" else " (this machine has no GPU)"
        lines.append(
            f"estimated {label}-hours{where}: {'at least ' if unknown else ''}{_fmt_hours(train_h + sim_h)} "
            f"(training {_fmt_hours(train_h)} + evaluation {_fmt_hours(sim_h)}) for {len(known)} runs, "
            f"1 {'GPU' if label == 'GPU' else 'machine'} each"
            + (f" ({agents} agents: tasks x seeds trained together)" if agents != len(known) else "")
        )
        lines.append(f"  {label} training: FLOPs per update x updates at {_rate_text(rates, families)}")
        if label == "GPU" and len(plan.grids) > 1:
            by_grid: dict[str, float] = {}
            count: dict[str, int] = {}
            for r in runs:
                c = known.get(r.name)
                if c is None:
                    continue
                g = str(r.tags.get(GRID_TAG))
                h = (c.updates * c.flops_per_update / (rates[c.family].value * 1e9) + c.env_steps / steps.value) / 3600
                by_grid[g] = by_grid.get(g, 0.0) + h
                count[g] = count.get(g, 0) + 1
            lines.append("  GPU-hours by grid: " + ", ".join(
                f"{g} {_fmt_hours(h)} ({count[g]} runs)" for g, h in by_grid.items()))
    lines.append(
        f"  evaluation (+ online env steps): every episode to its time limit (an upper bound) at "
        f"{steps.value:,.0f} env steps/s from {steps.source}"
    )
    flops = sorted({c.flops_per_update for c in known.values()})
    lines.append(
        f"  FLOPs per update (one seed): {flops[0] / 1e9:.1f}-{flops[-1] / 1e9:.1f} GFLOP over "
        f"{len({c.key for c in known.values()})} distinct configurations"
    )
    if unknown:
        reasons = sorted({str(costs.get(n)) for n in unknown})
        lines.append(f"  {len(unknown)} of {len(runs)} runs have no estimate: {reasons[0]}")
    return lines


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
        path = self.plan.summary_path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.summary(), f, indent=1, default=str)
        os.replace(tmp, path)

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


def check_values(runs: Sequence[Run], seed_binding_prefix: str = "SEED =") -> None:
    """Builds each distinct configuration of ``runs`` (``floq.train.build``: the specs check
    their values, e.g. positive train_steps, task_id in 1..5) before anything is launched;
    raises SweepError (one line) naming the first run that does not build. Runs that differ
    only in the seed are built once."""
    import warnings

    from floq import train

    seen: dict[tuple, str | None] = {}
    bad = []
    try:
        for run in runs:
            key = _profile_key(run, seed_binding_prefix)
            if key not in seen:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        train.build(list(run.gin_files), list(run.bindings))
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
    plan = expand(sweep_file, out_dir, parse, bindings)
    statuses = {run.name: runner_lib.run_status(run.run_dir) for run in plan.runs}
    previous = SweepState.read(plan.summary_path) or {}
    prev_states = {r.get("name"): r for r in previous.get("runs", [])}

    kept = {
        r.name: kept_state(statuses[r.name], prev_states.get(r.name, {}).get("state"))
        for r in plan.runs
    }

    if parse is None and runner is None:  # floq run with the real gin: every run builds, or none is launched
        check_values([r for r in plan.runs if statuses[r.name] != "done"], f"{plan.seed_macro} =")

    if dry_run:
        todo = [
            r
            for r in plan.runs
            if statuses[r.name] != "done" and (retry_failed or kept[r.name] is None)
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
            echo(f"  {run.name:<{width}}  {status:<8}  {_describe_run(run)}")
        done = sum(1 for r in plan.runs if statuses[r.name] == "done")
        kept_counts = {s: sum(1 for k in kept.values() if k == s) for s in KEPT_STATES}
        kept_note = (
            "" if retry_failed else _kept_text(kept_counts, " (not retried without --retry-failed)")
        )
        if estimate:  # the budget and score rule, beside the reference code's (floq/launch/budget.py)
            from floq.launch.budget import budget_lines

            for line in budget_lines(plan.runs):
                echo(line)
        echo(f"{len(plan.runs)} runs: {done} done{kept_note}, {len(todo)} to run")
        if estimate:
            for line in estimate_lines(plan, todo, bench_dir):
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
