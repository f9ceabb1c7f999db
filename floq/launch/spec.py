"""The sweep declaration: what a sweep gin file binds.

A sweep file is an ordinary experiment file plus three bindings::

    include 'gin/experiments/smoke.gin'
    Sweep.name = 'sweep_smoke'
    Sweep.axes = {'CRITIC_FLOW_STEPS': [1, 2], 'TASK_ID': [1, 2]}
    Sweep.seeds = [0, 1]          # bound through the SEED macro

Every key of ``Sweep.axes`` is a gin binding target: a macro name (``CRITIC_FLOW_STEPS``)
or a ``Configurable.param`` (``maybe/scope/Configurable.param``). The sweep runs the
grid (the Cartesian product of the axes, then the seeds); each run is the same file
with one ``TARGET = value`` binding per axis and ``SEED = seed``.

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
    """

    def __init__(
        self,
        name: str | None = None,
        axes: dict | None = None,
        seeds: list | None = None,
        seed_macro: str = "SEED",
    ):
        self.name = name
        self.axes = axes
        self.seeds = seeds
        self.seed_macro = seed_macro

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
        return sweep
