"""Grids that cannot confound: a sweep's sub-grids may differ only where the sweep says so.

An algorithm x critic study is a union of grids (``Sweep.grids``), each adding an algorithm
file and a critic file to the sweep file. If one grid's files re-set a setting of the run
protocol (a file that re-reads a base layer, an experiment file listed as a grid file), its
runs silently get another budget, width or data source than their neighbours', and the study
compares algorithms and budgets at once. :func:`check_grids` refuses such a sweep with one
line, before anything is built or compiled, naming the setting, its values and the grids.

What may differ between grids (everything else must be equal):

- a setting the sweep declares: bound by a grid's ``bind``, an axis (``Sweep.axes`` or a
  grid's ``axes``), the seeds or ``--bind``;
- the settings an algorithm or critic *is*: bindings made by the grid's own files and their
  includes (``FQL.alpha``, ``ReBRAC.actor_freq``, ``Q_AGG = 'min'`` in IQL's file...). For a
  setting of the run protocol (the macros of gin/defaults.gin, ``Trainer.*``, ``Task.*``) only
  an algorithm file (gin/algorithms/) or a recipe (gin/recipes/: a paper's tuned values) may
  do so: RLPD's file sets ``TRAIN_STEPS = 1`` (no offline phase), IQL's ``Q_AGG``, the FQL
  paper's IQL recipe its widths. A critic, experiment or any other file listed as a grid file
  that re-sets the budget is a confound;
- the environment of a grid's tasks (``tasks``) and ``overlays``: the grid's own axes.

gin/defaults.gin itself is read once, first (floq.config.parse), so no file re-reads it; its
bindings are never a grid's own.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import gin
from gin import config_parser

from floq import config as floq_config

#: Settings that do not change a run's numbers or that the sweep varies per run by design.
BOOKKEEPING_MACROS = frozenset({"SEED", "NUM_SEEDS", "LOG_INTERVAL", "CHECKPOINT_INTERVAL", "CHUNK_SIZE",
                                "EXPERIMENT"})
BOOKKEEPING_PARAMS = frozenset({"seed", "num_seeds", "log_interval", "checkpoint_interval", "chunk_size",
                                "experiment", "eval_workers", "eval_envs_per_worker", "async_eval"})
#: Configurables whose every parameter belongs to the run protocol.
PROTOCOL_CONFIGURABLES = frozenset({"Trainer", "Task"})


def _short(selector: str) -> str:
    return selector.rsplit(".", 1)[-1]


def display(key: tuple[str, str, str]) -> str:
    scope, selector, param = key
    if selector == "gin.macro":
        return scope
    return f"{scope + '/' if scope else ''}{_short(selector)}.{param}"


def _key(scope: str, selector: str, param: str) -> tuple[str, str, str]:
    """A binding key as comparable between a file's statements and gin's parsed config."""
    if selector == "gin.macro":
        return (scope, "gin.macro", "value")
    return (scope, _short(selector), param)


def file_bindings(path: str, _seen: set | None = None) -> set[tuple[str, str, str]]:
    """The keys a gin file binds, through its includes (gin/defaults.gin's excepted)."""
    seen = _seen if _seen is not None else set()
    real = os.path.realpath(path)
    if real in seen or os.path.realpath(floq_config.DEFAULTS_FILE) == real:
        return set()
    seen.add(real)
    keys: set[tuple[str, str, str]] = set()
    with open(path) as f:
        text = f.read()
    for statement in config_parser.ConfigParser(text, gin.config.ParserDelegate(skip_unknown=True)):
        if isinstance(statement, config_parser.IncludeStatement):
            found = _resolve_include(statement.filename, path)
            if found is not None:
                keys |= file_bindings(found, seen)
        elif isinstance(statement, config_parser.BindingStatement):
            scope, selector, arg = statement.scope, statement.selector, statement.arg_name
            if not arg:  # a macro: NAME = value
                keys.add((selector, "gin.macro", "value"))
            else:
                keys.add((scope or "", _short(selector), arg))
    return keys


def _resolve_include(name: str, including: str) -> str | None:
    for base in (os.getcwd(), floq_config.REPO_ROOT, os.path.dirname(including)):
        cand = os.path.join(base, name)
        if os.path.isfile(cand):
            return cand
    return None


def _defaults_macros() -> set[str]:
    return {k[0] for k in file_bindings_any(floq_config.DEFAULTS_FILE) if k[1] == "gin.macro"}


def file_bindings_any(path: str) -> set[tuple[str, str, str]]:
    """The keys a file binds itself (gin/defaults.gin included), without following includes."""
    keys = set()
    with open(path) as f:
        for st in config_parser.ConfigParser(f.read(), gin.config.ParserDelegate(skip_unknown=True)):
            if isinstance(st, config_parser.BindingStatement):
                keys.add((st.selector, "gin.macro", "value") if not st.arg_name
                         else (st.scope or "", _short(st.selector), st.arg_name))
    return keys


def is_algorithm_file(path: str) -> bool:
    """A file under gin/algorithms/ or gin/recipes/: an algorithm's definition, or a paper's
    tuned values for it (the FQL paper's IQL at width 256: gin/recipes/fql_paper_iql.gin)."""
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(os.path.join(floq_config.REPO_ROOT, "gin", d)) + os.sep)
               for d in ("algorithms", "recipes"))


def _comparable(config: Mapping) -> dict[tuple[str, str, str], str]:
    out = {}
    for (scope, selector), params in config.items():
        if _short(selector) == "Sweep" or selector.startswith("floq.launch"):
            continue
        for param, value in params.items():
            key = _key(scope, selector, param)
            if key[1] == "gin.macro" and key[0] in BOOKKEEPING_MACROS:
                continue
            if key[1] in PROTOCOL_CONFIGURABLES and param in BOOKKEEPING_PARAMS:
                continue
            out[key] = repr(value)
    return out


def check_grids(grids: Sequence[dict]) -> str | None:
    """The one-line refusal for grids that differ in an undeclared setting, or None.

    Each grid is a dict with ``name``, ``config`` (gin's parsed config for the grid: the sweep
    file, the grid's files, its first task and overlays, its ``bind``), ``files`` (the grid's own
    files: ``files``, its task files and overlays) and ``declared`` (binding keys set by its
    ``bind``, its axes, the seeds and ``--bind``, as ``(scope, selector, param)``).
    """
    if len(grids) < 2:
        return None
    protocol_macros = _defaults_macros()

    def is_protocol(key):
        return (key[1] == "gin.macro" and key[0] in protocol_macros) or key[1] in PROTOCOL_CONFIGURABLES

    values = [_comparable(g["config"]) for g in grids]
    declared: set = set()
    own: set = set()          # keys any grid's own files bind (protocol keys: algorithm files only)
    own_protocol: set = set()
    for g in grids:
        declared |= {_key(*k) for k in g["declared"]}
        for path in g.get("axis_files", ()):
            declared |= file_bindings(path)
        for path in g["files"]:
            keys = file_bindings(path)
            own |= keys
            if is_algorithm_file(path):
                own_protocol |= keys
    common = set(values[0]).intersection(*values[1:])
    bad = []
    for key in sorted(common, key=display):
        seen = {v[key] for v in values}
        if len(seen) == 1 or key in declared:
            continue
        if (key in own_protocol) or (key in own and not is_protocol(key)):
            continue
        bad.append(key)
    if not bad:
        return None
    key = bad[0]
    first = values[0][key]
    other = next(i for i, v in enumerate(values) if v[key] != first)
    names = [g["name"] for g in grids]
    more = f" (and {len(bad) - 1} more: {', '.join(display(k) for k in bad[1:4])}{', ...' if len(bad) > 4 else ''})" if len(bad) > 1 else ""
    return (f"grids '{names[0]}' and '{names[other]}' differ in {display(key)} ({first} vs {values[other][key]}){more}, "
            f"which the sweep does not declare: the study would compare their algorithms and critics under different "
            f"settings; make the setting equal (a grid file that re-sets it, e.g. an experiment file, does not belong "
            f"in a grid), or declare the difference as a grid 'bind' or an axis")
