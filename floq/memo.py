"""Compiled programs kept per process, keyed by the configuration that defines them.

A run's programs (the training chunk, the online step, the explorer, the exported policy,
the FLOP count of one update) are pure functions of frozen configuration (the algorithm and
critic dataclasses, batch and chunk sizes) and of the shapes of their inputs. A second run
with the same configuration in the same process (the demo's runs, in-process sweeps and
resumes, a test session) takes the program the first one built: no tracing, lowering or
compilation again, and the same executable, so the same numbers.

Keys are strict: a dataclass is keyed by its module, class and every field; a float by its
repr (0.0 and -0.0, 1 and 1.0 differ, as they differ in a traced program); anything that is
not plain configuration (a function, an array) makes the call uncached rather than risk
two configurations sharing a program.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import threading
from collections.abc import Mapping

import numpy as np

#: Programs kept per builder (least recently used dropped first).
MAX_ENTRIES = 16

_UNPLAIN = object()


def config_key(x):
    """A hashable key equal for two values only when they define the same program; None when
    `x` holds something that is not plain configuration."""
    k = _key(x)
    return None if _has_unplain(k) else k


def _has_unplain(k) -> bool:
    if k is _UNPLAIN:
        return True
    return isinstance(k, tuple) and any(_has_unplain(v) for v in k)


def _key(x):
    if x is None or isinstance(x, (bool, str)):
        return (type(x).__name__, x)
    if isinstance(x, int):
        return ("int", x)
    if isinstance(x, float):
        return ("float", repr(x))
    if isinstance(x, np.generic):
        return ("np", str(x.dtype), repr(x.item()))
    if isinstance(x, (tuple, list)):
        return (type(x).__name__,) + tuple(_key(v) for v in x)
    if isinstance(x, Mapping):
        if not all(isinstance(k, str) for k in x):
            return _UNPLAIN
        return ("map",) + tuple((k, _key(x[k])) for k in sorted(x))
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        t = type(x)
        return ("dc", t.__module__, t.__qualname__) + tuple((f.name, _key(getattr(x, f.name)))
                                                          for f in dataclasses.fields(x))
    shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
    if type(x).__name__ == "ShapeDtypeStruct" and shape is not None:
        return ("abstract", tuple(shape), str(dtype), bool(getattr(x, "weak_type", False)))
    return _UNPLAIN


def memoized(fn):
    """`fn` with its results kept per process by `config_key` of its arguments (up to
    MAX_ENTRIES, least recently used dropped); calls with arguments that are not plain
    configuration are not cached. `fn.cache_clear()` empties it."""
    cache: collections.OrderedDict = collections.OrderedDict()
    lock = threading.Lock()

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        key = config_key((args, dict(kwargs)))
        if key is None:
            return fn(*args, **kwargs)
        with lock:
            if key in cache:
                cache.move_to_end(key)
                return cache[key]
        out = fn(*args, **kwargs)
        with lock:
            cache[key] = out
            while len(cache) > MAX_ENTRIES:
                cache.popitem(last=False)
        return out

    wrapper.cache_clear = cache.clear
    wrapper.cache_size = lambda: len(cache)
    return wrapper


# Ahead-of-time compiled executables (the trainer lowers and compiles its program itself, in
# a thread that a signal can interrupt): kept per (program, abstract signature of the
# arguments). The program objects come from memoized builders, so an equal configuration
# finds the executable an earlier run compiled.
_compiled: collections.OrderedDict = collections.OrderedDict()


def signature(args):
    """The abstract signature of a pytree of arrays: structure, shapes, dtypes, weak types and
    placements."""
    import jax

    leaves, tree = jax.tree_util.tree_flatten(args)
    return tree, tuple((tuple(np.shape(x)), str(getattr(x, "dtype", type(x).__name__)),
                        bool(getattr(getattr(x, "aval", None), "weak_type", False)),
                        repr(getattr(x, "sharding", None))) for x in leaves)


def compiled(program, args):
    """The executable compiled earlier in this process for `program` on arguments like `args`,
    or None."""
    key = (program, signature(args))
    with _compiled_lock:
        if key in _compiled:
            _compiled.move_to_end(key)
            return _compiled[key]
    return None


def keep_compiled(program, args, executable) -> None:
    with _compiled_lock:
        _compiled[(program, signature(args))] = executable
        while len(_compiled) > MAX_ENTRIES:
            _compiled.popitem(last=False)


_compiled_lock = threading.Lock()
