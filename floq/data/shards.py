"""Sharded datasets: a folder of numbered OGBench files, one shard on the device at a time.

OGBench's large datasets (``<name>-100m-v0``, downloaded as a folder; the ``-1b-v0`` ones are
generated into one) come as numbered train files, each with its ``-val`` twin::

    cube-octuple-play-100m-v0/
        cube-octuple-play-v0-000.npz   cube-octuple-play-v0-000-val.npz
        cube-octuple-play-v0-001.npz   cube-octuple-play-v0-001-val.npz
        ...

(file names as in horizon-reduction's README generation commands, ``--save_path=<dir>/
cube-octuple-play-v0-$i.npz`` for ``i in $(seq -w 0 999)``; OGBench's generator writes the
``-val`` twin beside each.) horizon-reduction (github:seohongpark/horizon-reduction, main.py)
trains on such a folder by taking every ``*.npz`` but the ``-val`` ones in sorted order, starting
on the first, and after every ``dataset_replace_interval`` (default 1000) gradient steps moving to
the next one, cyclically.

Here:

* A shard is a file ``<stem>-<number>.npz`` (not ``-val.npz``); a folder holding any is a sharded
  dataset (``is_shard_dir``). Shards are ordered by their number (numeric, so zero padding does not
  matter), which must run without gaps from 0 (or 1); every shard needs its ``-val`` twin (OGBench's
  loader reads it) and all shards one common stem. Other files in the folder are ignored.
* ``shard_index(step, interval, n)``: the shard trained on by the gradient step that follows
  ``step`` completed steps is ``(step // interval) % n`` (always 0 when interval is 0, as
  horizon-reduction's ``dataset_replace_interval=0``). This is horizon-reduction's schedule: its
  updates ``i = 1..interval`` (1-based) use the first file, and it switches after the update with
  ``i % interval == 0``. The index is a pure function of the step, so a resumed run loads the very
  shard it was on.
* Each shard is loaded and relabelled for the singletask reward exactly as ``Task.load`` loads a
  file (``ogbench.make_env_and_datasets(dataset_name, dataset_path=shard, ...)``, then
  ``sources.finish_arrays``: float32, actions clipped 1e-5 inside the box, ``Task.max_transitions``).
  The environment is made once and passed as ``cur_env``.
* Every shard is cut to the same number of transitions, ``ShardedData.rows`` (the smallest shard's,
  or ``max_transitions``), so the compiled training program never sees a new shape. OGBench's
  shards all hold the same number of fixed-length episodes, so nothing is cut from them.
* Reward range: ``data_range()`` is (min, max) of the relabelled rewards over the first ``rows``
  transitions of every shard. It needs one pass over all shards, reading only ``terminals`` and
  ``qpos``/``button_states`` (never the observations) and relabelling them with OGBench's own
  ``relabel_dataset``, shard by shard (one shard in memory). The result is cached in memory and in
  ``floq-shard-stats-<dataset>.json`` beside the shards (or, when that folder is not writable,
  under ``$FLOQ_DATA_DIR/shard-stats/``), keyed by the shard files' names, sizes and mtimes, the
  ogbench version and ``rows``; a changed folder recomputes it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import re
import threading
import zipfile

import numpy as np

from floq.data.files import (DataError, array_headers, finish_arrays, default_data_dir, env_qpos_width, env_space_dims,
                             val_path_of, validate_arrays, validate_dataset)

SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d+)\.npz$")
# Folder names of OGBench's large datasets: such a folder is a sharded dataset even when empty
# (so that an empty or wrong download fails with "no shards", not with an ogbench download).
LARGE_DIR_RE = re.compile(r"-\d+[mMbB]-v\d+$")
DEFAULT_INTERVAL = 1000  # horizon-reduction's --dataset_replace_interval default
STATS_VERSION = 2  # 2: the first pass also checks every shard's values (validate_values)


def shard_index(step: int, interval: int, n_shards: int) -> int:
    """The shard used by the gradient step after `step` completed steps: (step // interval) % n
    (0 when interval is 0 or there is one shard). Steps 0..interval-1 -> shard 0, then shard 1,
    ..., cyclically (horizon-reduction's rule, see the module docstring)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    if interval < 0:
        raise ValueError(f"shard interval must be >= 0, got {interval}")
    if interval == 0 or n_shards == 1:
        return 0
    return (int(step) // interval) % n_shards


def _numbered(folder: str) -> list[tuple[int, str, str]]:
    """(number, stem, file name) of every train shard in `folder` (unsorted)."""
    out = []
    for name in os.listdir(folder):
        if name.endswith("-val.npz"):
            continue
        m = SHARD_RE.match(name)
        if m and os.path.isfile(os.path.join(folder, name)):
            out.append((int(m.group("index")), m.group("stem"), name))
    return out


def is_shard_dir(folder: str) -> bool:
    """True when `folder` is a sharded dataset: a directory holding numbered shard files, or one
    named like OGBench's large datasets (``*-100m-v0``, ``*-1b-v0``), whatever it holds."""
    folder = os.path.expanduser(folder)
    if LARGE_DIR_RE.search(os.path.basename(os.path.normpath(folder))):
        return True
    return os.path.isdir(folder) and bool(_numbered(folder))


def discover(folder: str) -> list[str]:
    """The shard files of `folder`, in shard order; one-line DataError when there are none, when
    the numbering has a gap or a duplicate, when two stems are mixed or a `-val` twin is missing."""
    folder = os.path.expanduser(folder)
    if not os.path.isdir(folder):
        raise DataError(f"shard folder not found: {folder}")
    found = _numbered(folder)
    if not found:
        raise DataError(f"shard folder {folder} holds no shards (files named <name>-<number>.npz, "
                        f"each with its <name>-<number>-val.npz twin)")
    stems = sorted({s for _, s, _ in found})
    if len(stems) > 1:
        raise DataError(f"shard folder {folder} mixes shard series {', '.join(repr(s) for s in stems)} "
                        f"(one series per folder)")
    found.sort()
    numbers = [i for i, _, _ in found]
    for a, b in zip(found, found[1:]):
        if a[0] == b[0]:
            raise DataError(f"shard folder {folder}: {a[2]} and {b[2]} are both shard {a[0]}")
    first = numbers[0]
    if first not in (0, 1):
        raise DataError(f"shard folder {folder}: shards start at {found[0][2]}; shard {first - 1} "
                        f"(and any before it) is missing")
    missing = sorted(set(range(first, numbers[-1] + 1)) - set(numbers))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"shard folder {folder}: shard {missing[0]} is missing{more} "
                        f"(shards {first}..{numbers[-1]} must all be present)")
    paths = [os.path.join(folder, name) for _, _, name in found]
    for p in paths:
        if not os.path.isfile(val_path_of(p)):
            raise DataError(f"shard {p} has no val twin {os.path.basename(val_path_of(p))} "
                            f"(OGBench's loader reads it)")
    return paths


def validate_shards(paths, dataset_name: str | None, env_kwargs: dict | None = None) -> None:
    """Cheap checks of every shard and val twin before training (only the .npy headers are read):
    OGBench arrays present, 2-D, equal rows, widths equal to the environment's (asked with the
    task's `env_kwargs`, so that evaluation takes that environment next). A shard is checked in
    full (``validate_dataset``) when it is loaded."""
    dims = env_space_dims(dataset_name, env_kwargs) if dataset_name else None
    nq = env_qpos_width(dataset_name, env_kwargs) if dataset_name else None
    for p in paths:
        for q in (p, val_path_of(p)):
            validate_arrays(q, array_headers(q), dims, nq)


def _singletask_env_name(dataset_name: str) -> str:
    """'cube-single-play-singletask-task1-v0' -> 'cube-single-singletask-task1-v0' (as ogbench)."""
    splits = dataset_name.split("-")
    if "singletask" not in splits:
        raise DataError(f"{dataset_name} is not a singletask dataset name (no reward to relabel)")
    pos = splits.index("singletask")
    return "-".join(splits[: pos - 1] + splits[pos:])


def _file_key(paths) -> list:
    out = []
    for p in paths:
        st = os.stat(p)
        out.append([os.path.basename(p), int(st.st_size), int(st.st_mtime_ns)])
    return out


class ShardedData:
    """A folder of numbered shards of one OGBench singletask dataset (see the module docstring).

    Args:
      folder: the shard folder.
      dataset_name: e.g. 'cube-single-play-singletask-task1-v0' (rewards are relabelled for it).
      interval: gradient steps per shard (0: stay on the first shard).
      num_shards: use only the first N shards (0 = all; horizon-reduction's --num_datasets).
      env_kwargs: keyword arguments of the environment (``Task.env_kwargs()``).
      max_transitions: use only the first N transitions of each shard (0 = all).
      validate: check every shard's headers against the environment's widths now.
      prefetch: ``at(step)`` loads the next shard in a background thread.
    """

    def __init__(self, folder: str, dataset_name: str, interval: int = DEFAULT_INTERVAL, num_shards: int = 0,
                 env_kwargs: dict | None = None, max_transitions: int = 0, validate: bool = True,
                 prefetch: bool = True):
        if isinstance(interval, bool) or int(interval) != interval or interval < 0:
            raise ValueError(f"shard interval must be an integer >= 0, got {interval!r}")
        if isinstance(num_shards, bool) or int(num_shards) != num_shards or num_shards < 0:
            raise ValueError(f"num_shards must be an integer >= 0, got {num_shards!r}")
        self.folder = os.path.abspath(os.path.expanduser(folder))
        self.dataset_name = dataset_name
        self.interval = int(interval)
        self.env_kwargs = dict(env_kwargs or {})
        self.max_transitions = int(max_transitions)
        paths = discover(self.folder)
        if num_shards:
            if num_shards > len(paths):
                raise DataError(f"shard folder {self.folder} holds {len(paths)} shards, "
                                f"but {num_shards} were asked for (Task.num_shards)")
            paths = paths[:num_shards]
        self.paths = paths
        if validate:
            validate_shards(self.paths, dataset_name, self.env_kwargs)
        self._prefetch = prefetch
        self._env = None
        self._env_lock = threading.Lock()
        self._cache: dict[int, object] = {}  # shard -> Future of its train dict (at most 2 kept)
        self._cache_lock = threading.Lock()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="floq-shard")
        self._stats: dict | None = None
        self._checked: set[int] = set()

    # ------------------------------------------------------------------ schedule
    @property
    def n_shards(self) -> int:
        return len(self.paths)

    @property
    def change_interval(self) -> int:
        """Steps between shard changes, 0 when the shard never changes (for next_boundary)."""
        return self.interval if (self.interval > 0 and self.n_shards > 1) else 0

    def index_at(self, step: int) -> int:
        return shard_index(step, self.interval, self.n_shards)

    def next_change(self, step: int) -> int | None:
        """The first step > `step` at which the shard is switched (None: never)."""
        iv = self.change_interval
        return (int(step) // iv + 1) * iv if iv else None

    def boundary(self, step: int, total: int) -> int:
        """min(next_change(step), total): a compiled call from `step` must stop there."""
        nxt = self.next_change(step)
        return total if nxt is None else min(nxt, total)

    def schedule(self, total: int) -> list[tuple[int, int, int]]:
        """(first step, end step, shard) of each stretch of steps 0..total on one shard."""
        out, s = [], 0
        while s < total:
            e = self.boundary(s, total)
            out.append((s, e, self.index_at(s)))
            s = e
        return out

    # ------------------------------------------------------------------ loading
    def _get_env(self):
        if self._env is None:
            import ogbench

            self._env = ogbench.make_env_and_datasets(self.dataset_name, env_only=True, **self.env_kwargs)
        return self._env

    def _load_now(self, i: int) -> dict:
        import ogbench

        path = self.paths[i]
        if i not in self._checked:
            validate_dataset(path, self.dataset_name, env_kwargs=self.env_kwargs)
            self._checked.add(i)
        rows = self.rows
        with self._env_lock:
            env = self._get_env()
            try:
                train, _val = ogbench.make_env_and_datasets(self.dataset_name, dataset_path=path, dataset_only=True,
                                                            cur_env=env, **self.env_kwargs)
            except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"cannot load shard {path} for {self.dataset_name}: {type(e).__name__}: {e}") from None
        out = finish_arrays(train, rows)
        if out["observations"].shape[0] != rows:  # the stats pass counted from 'terminals'
            raise DataError(f"shard {path} has {out['observations'].shape[0]} transitions, expected {rows}")
        return out

    def _future(self, i: int):
        if not 0 <= i < self.n_shards:
            raise IndexError(f"shard {i} out of range 0..{self.n_shards - 1}")
        with self._cache_lock:
            fut = self._cache.get(i)
            if fut is None:
                fut = self._pool.submit(self._load_now, i)
                self._cache[i] = fut
            return fut

    def _keep(self, keep) -> None:
        with self._cache_lock:
            for j in [j for j in self._cache if j not in keep]:
                self._cache.pop(j).cancel()

    def load(self, i: int) -> dict:
        """Shard i's train dict (observations, actions, rewards, masks, next_observations; float32;
        `rows` transitions), from the cache when it is there (the current shard and a prefetched
        one are kept)."""
        self.rows  # the stats pass runs on this thread, not inside the loader thread
        fut = self._future(i)
        try:
            return fut.result()
        except BaseException:
            with self._cache_lock:
                if self._cache.get(i) is fut:
                    del self._cache[i]
            raise

    def prefetch(self, i: int) -> None:
        """Start loading shard i in the background (a later load(i) waits for it)."""
        self.rows
        self._future(i)

    def at(self, step: int) -> tuple[int, dict]:
        """(shard index, train dict) for the gradient steps from `step`; prefetches the shard of
        the next change and drops every other cached shard."""
        i = self.index_at(step)
        nxt = self.next_change(step)
        j = self.index_at(nxt) if nxt is not None else i
        self._keep({i, j})
        if self._prefetch and j != i:
            self.prefetch(j)
        return i, self.load(i)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._cache_lock:
            self._cache.clear()
        if self._env is not None:
            self._env.close()
            self._env = None

    # ------------------------------------------------------------------ stats (one pass, cached)
    @property
    def rows(self) -> int:
        """Transitions per loaded shard: the smallest shard's (capped by max_transitions)."""
        return self.stats()["rows"]

    @property
    def transitions(self) -> list[int]:
        """Transitions in each shard file (before the cut to `rows`)."""
        return list(self.stats()["transitions"])

    def data_range(self) -> tuple[float, float]:
        """(min, max) of the relabelled rewards over the first `rows` transitions of every shard
        (feed it to the critic's rule, e.g. reward_range(np.array([lo, hi]), rule))."""
        s = self.stats()
        return float(s["r_min"]), float(s["r_max"])

    def _stats_paths(self) -> list[str]:
        name = f"floq-shard-stats-{self.dataset_name}.json"
        digest = hashlib.sha1(self.folder.encode()).hexdigest()[:12]
        return [os.path.join(self.folder, name), os.path.join(default_data_dir(), "shard-stats", f"{digest}-{name}")]

    def stats(self) -> dict:
        """{'rows', 'transitions', 'r_min', 'r_max', 'shard_r_min', 'shard_r_max'}, computed once
        (see the module docstring for the cache)."""
        if self._stats is not None:
            return self._stats
        try:
            import ogbench

            version = getattr(ogbench, "__version__", "unknown")
        except ImportError:  # pragma: no cover
            version = "unknown"
        key = {"version": STATS_VERSION, "dataset": self.dataset_name, "ogbench": str(version),
               "max_transitions": self.max_transitions, "files": _file_key(self.paths)}
        for p in self._stats_paths():
            try:
                with open(p) as f:
                    cached = json.load(f)
            except (OSError, ValueError):
                continue
            if isinstance(cached, dict) and cached.get("key") == key:
                self._stats = cached["stats"]
                return self._stats
        stats = self._compute_stats()
        for p in self._stats_paths():
            try:
                os.makedirs(os.path.dirname(p), exist_ok=True)
                tmp = f"{p}.tmp-{os.getpid()}-{threading.get_ident()}"
                with open(tmp, "w") as f:
                    json.dump({"key": key, "stats": stats}, f, indent=1)
                os.replace(tmp, p)
                break
            except OSError:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        self._stats = stats
        return stats

    def _compute_stats(self) -> dict:
        from ogbench.relabel_utils import relabel_dataset

        env_name = _singletask_env_name(self.dataset_name)
        # Every shard's values (NaN, actions outside the box, terminals), train and val files, at
        # start: a bad later shard is refused before training, not when the rotation reaches it.
        # Cached with the stats (keyed by the files' names, sizes and mtimes): once per folder.
        from floq.data.files import validate_values

        for p in self.paths:
            for q in (p, val_path_of(p)):
                validate_values(q, list(array_headers(q)))
        counts, masks = [], []
        for p in self.paths:
            with np.load(p) as f:
                if "terminals" not in f.files:
                    raise DataError(f"dataset file {p} lacks terminals (not in OGBench's format)")
                term = np.asarray(f["terminals"]).astype(np.float32, copy=False)
            ob_mask = (1.0 - term).astype(bool)  # as ogbench.utils.load_dataset (regular dataset)
            counts.append(int(ob_mask.sum()))
            masks.append(ob_mask)
        rows = min(counts)
        if self.max_transitions:
            rows = min(rows, self.max_transitions)
        if rows < 1:
            bad = self.paths[counts.index(min(counts))]
            raise DataError(f"shard {bad} has no transitions (every state is an episode's last)")
        lo, hi = [], []
        with self._env_lock:
            env = self._get_env()
            for p, ob_mask in zip(self.paths, masks):
                ds = {}
                with np.load(p) as f:
                    for k in ("qpos", "qvel", "button_states"):
                        if k in f.files:
                            ds[k] = np.asarray(f[k])[ob_mask][:rows]
                if "qpos" not in ds:
                    raise DataError(f"dataset file {p} lacks qpos (needed to relabel singletask rewards)")
                try:
                    relabel_dataset(env_name, env, ds)
                except (KeyError, ValueError, IndexError) as e:
                    raise DataError(f"cannot relabel shard {p} for {self.dataset_name}: "
                                    f"{type(e).__name__}: {e}") from None
                r = np.asarray(ds["rewards"], np.float32)
                lo.append(float(r.min()))
                hi.append(float(r.max()))
        return {"rows": int(rows), "transitions": counts, "r_min": min(lo), "r_max": max(hi),
                "shard_r_min": lo, "shard_r_max": hi}

    # ------------------------------------------------------------------ record
    def describe(self) -> dict:
        """What a run should record (run.json protocol)."""
        s = self.stats()
        return {"shard_dir": self.folder, "shards": self.n_shards, "shard_interval": self.interval,
                "shard_files": [os.path.basename(p) for p in self.paths], "shard_transitions": s["rows"],
                "shard_rule": "shard of the step after `step` completed gradient steps = "
                              "(step // shard_interval) % shards (horizon-reduction's rotation)",
                "shard_data_r_min": s["r_min"], "shard_data_r_max": s["r_max"]}

    def __repr__(self) -> str:
        return f"ShardedData({self.folder!r}, {self.n_shards} shards, interval {self.interval})"
