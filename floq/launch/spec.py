"""The sweep declaration: what a sweep gin file binds.

A sweep file is an ordinary experiment file plus bindings of ``Sweep``::

    include 'gin/experiments/smoke.gin'
    Sweep.name = 'sweep_smoke'
    Sweep.axes = {'CRITIC_FLOW_STEPS': [1, 2], 'TASK_ID': [1, 2]}
    Sweep.seeds = [0, 1]          # bound through the SEED macro

Every key of ``Sweep.axes`` is a gin binding target: a macro name (``CRITIC_FLOW_STEPS``)
or a ``Configurable.param`` (``maybe/scope/Configurable.param``). The sweep runs the
grid (the Cartesian product of the axes, then the seeds); each run is the same file
with one ``TARGET = value`` binding per axis and ``SEED = seed``.

Environments: ``Sweep.tasks`` is an axis over whole task files::

    Sweep.tasks = ['gin/tasks/cube-double-play.gin', 'gin/tasks/scene-play.gin']

Each run then reads ``[sweep file, <grid files>, <task file>, <overlays>]`` in that
order, so the task file comes after gin/algorithms/fql.gin (and gin/defaults.gin) and
brings that environment's alpha, discount, batch size, field depth and default task
(task files set only ``Task.env`` and ``TASK_*`` macros, which no other layer defines, so
they never overwrite an experiment's own overrides). Paths resolve against the working
directory, then the repository root, then the sweep file's folder; a missing file is a
validation error. Run names get ``env=<task file name without .gin>`` and runs the tag
``env``.

Unions of grids: ``Sweep.grids`` is a list of sub-grids that share ``Sweep.axes``,
``Sweep.tasks``, ``Sweep.seeds`` and the output folder::

    Sweep.grids = [
        {'name': 'floq', 'files': ['gin/critics/floq.gin'],
         'axes': {'CRITIC_FLOW_STEPS': [1, 4, 16]}},
        {'name': 'monolithic', 'files': ['gin/critics/monolithic.gin']},
        {'name': 'floq-best', 'files': ['gin/critics/floq.gin'],
         'overlays': ['gin/tasks/floq_best/{task}.gin'],
         'tasks': ['gin/tasks/antmaze-giant-navigate.gin']},
    ]
    Sweep.axes = {'CRITIC_WIDTH': [256, 512]}          # every grid

Keys of a grid (all optional except ``name`` when there are several grids):

- ``name``: folder-safe label; run names start with ``grid=<name>`` and runs get the tag
  ``grid`` (the method label of a leaderboard).
- ``files``: gin files read after the sweep file (e.g. a critic file).
- ``bind``: ``{target: value}`` fixed bindings of this grid (not in run names).
- ``axes``: ``{target: [values]}`` this grid's own axes, crossed with ``Sweep.axes``
  (a grid axis may not repeat a shared axis).
- ``tasks``: this grid's task files instead of ``Sweep.tasks``.
- ``overlays``: gin files read after the task file; ``{task}`` is replaced by the task
  file's name without ``.gin`` (e.g. floq-best's ``gin/tasks/floq_best/{task}.gin``).

A grid's runs are ``tasks x grid axes x shared axes x seeds`` (names in that order, the
last varying fastest); a grid without a K axis has no K in its names or tags, so a
monolithic run is never repeated per K. Two runs with the same files and bindings are an
error. Values anywhere in ``Sweep.*`` may be macros (``Sweep.tasks = %ENVS``), so a file
can expose what narrows it (``floq sweep FILE --bind "ENVS = [...]"``).

K = 1: the sweep knows no critic. The floq critic resolves its own one-step setting
(``FloqCritic.train_at_zero_only = 'auto'``: True exactly at K = 1), so a K = 1 run trains
the same under ``floq run`` and inside a sweep.

This module is imported by ``floq.config`` so that ``Sweep`` is registered whenever a
gin file is parsed (a training run parses the sweep file too and simply ignores
``Sweep``). It must stay light: gin and the standard library only.

Importing it also adds the repository root to gin's include search path, so that
``include 'gin/...'`` lines resolve from any working directory.
"""

from __future__ import annotations

import logging
import os

import gin

#: The directory holding the ``floq`` package and ``gin/`` (the repository root).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def add_repo_search_path() -> None:
    """Adds the repository root to gin's include search path (idempotent).

    gin tries an include path as given (relative to the working directory) first,
    then under each search path; ``gin.clear_config`` keeps search paths.
    """
    prefixes = gin.config._LOCATION_PREFIXES
    if REPO_ROOT not in prefixes:
        gin.add_config_file_search_path(REPO_ROOT)


class _QuietMissingIncludes(logging.Filter):
    """Drops gin's 'Path not found' errors: gin logs one for every search path it tries
    before the one that holds an include (e.g. the working directory before the repo root)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.module == "resource_reader" and str(record.msg).startswith("Path not found")
        )


def _quiet_missing_includes() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _QuietMissingIncludes) for f in root.filters):
        root.addFilter(_QuietMissingIncludes())


add_repo_search_path()
_quiet_missing_includes()


@gin.configurable
class Sweep:
    """A grid of runs over one experiment file (read from gin bindings, never called in training).

    Args:
      name: the sweep's name: the folder under the sweep output directory. Defaults to
        the sweep file's name without ``.gin``.
      axes: ``{binding target: [values, ...]}``; targets are macro names or
        ``[scope/]Configurable.param``; values are gin literals or ``@references``.
        Axes vary in declared order, the last one fastest.
      seeds: seeds to run, bound through ``seed_macro``; ``None`` keeps the file's
        own seed and leaves ``seed=`` out of run names.
      seed_macro: the macro that receives each seed.
      tasks: task files (an axis over environments); see the module docstring.
      grids: sub-grids (a list of dicts); see the module docstring.
    """

    def __init__(
        self,
        name: str | None = None,
        axes: dict | None = None,
        seeds: list | None = None,
        seed_macro: str = "SEED",
        tasks: list | None = None,
        grids: list | None = None,
    ):
        self.name = name
        self.axes = axes
        self.seeds = seeds
        self.seed_macro = seed_macro
        self.tasks = tasks
        self.grids = grids

    @classmethod
    def from_bindings(cls) -> "Sweep":
        """Builds a ``Sweep`` from the currently parsed gin config, without resolving references.

        ``@Configurable()`` values in ``axes`` stay ``gin.config.ConfigurableReference``
        objects (so that they can be written back as bindings); nothing is constructed.
        """
        try:
            bound = gin.get_bindings(Sweep, resolve_references=False)
        except (ValueError, KeyError):
            bound = {}
        sweep = cls.__new__(cls)  # not cls(): no gin injection, no operative-config entry
        sweep.name = bound.get("name")
        sweep.axes = bound.get("axes")
        sweep.seeds = bound.get("seeds")
        sweep.seed_macro = bound.get("seed_macro", "SEED")
        sweep.tasks = bound.get("tasks")
        sweep.grids = bound.get("grids")
        return sweep
