"""Sweep expansion and validation: one gin sweep file -> a SweepPlan of named runs (see
:mod:`floq.launch.spec` for the syntax; :mod:`floq.launch.sweep` runs the plan)."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import os
import re
from typing import Callable, Mapping, Sequence

import gin

from floq import columns as _columns

from floq.launch import confound, spec
from floq.launch.runner import Run



#: The default output directory (relative to the working directory).
DEFAULT_OUT = "sweeps"
#: eval.csv columns the trainer always writes (docs/CONTRACTS.md); a tag never reuses one.
RESERVED_COLUMNS = frozenset(_columns.EVAL_COLUMNS)
STATES = _columns.SWEEP_STATES
#: States a run stays in until ``--retry-failed``.
KEPT_STATES = _columns.KEPT_STATES
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
    confound_grids: list[dict] = []  # what floq.launch.confound compares across grids
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
        declared_keys = set(bind_keys) | {k for *_, keys in axes_out for k in keys}
        if seeds is not None and seed_macro in gmacros:
            declared_keys |= _fed_by(gconfig, seed_macro)
        confound_grids.append({"name": gname, "config": gconfig, "files": list(gfiles),
                               "axis_files": [*(gtasks or []),
                                              *[o for t in (gtasks or [None]) for o in grid.overlay_files(t, file)]],
                               "declared": declared_keys})

    why = confound.check_grids(confound_grids)
    if why:
        raise SweepError(why)

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
