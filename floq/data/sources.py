"""Where a task's dataset comes from, and the task itself.

Three sources (gin `Task.source`):
  'ogbench'   the official download through ogbench (needs internet; cached in ~/.ogbench/data)
  'path'      a local file in OGBench's format (`Task.dataset_path`; its `-val` twin beside it)
  'generate'  made locally with OGBench's own scripted oracles and cached
              (`floq.data.generate`), for the manipulation datasets

Singletask rewards and masks always come from OGBench's own relabelling
(`ogbench.make_env_and_datasets(name, dataset_path=...)`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import zipfile

import gin

from floq import envs as envs_pool

# The file layer, re-exported: floq.data.sources is the package's public face.
from floq.data.files import (DataError, check_files, default_data_dir, env_space_dims,  # noqa: F401
                             finish_arrays, val_path_of, validate_dataset)

SOURCES = ("ogbench", "path", "generate")
SUCCESS_TIMINGS = ("pre", "post")

# Datasets of the floq paper plus the other OGBench state-based manipulation/locomotion sets.
MANIPULATION = (
    "cube-single-play", "cube-double-play", "cube-triple-play", "cube-quadruple-play",
    "cube-single-noisy", "cube-double-noisy", "cube-triple-noisy",
    "scene-play", "scene-noisy", "puzzle-3x3-play", "puzzle-4x4-play", "puzzle-4x5-play", "puzzle-4x6-play",
    "puzzle-3x3-noisy", "puzzle-4x4-noisy",
)
LOCOMOTION = (
    "antmaze-medium-navigate", "antmaze-large-navigate", "antmaze-giant-navigate", "antmaze-teleport-navigate",
    "antmaze-large-stitch", "antmaze-giant-stitch", "antmaze-large-explore",
    "humanoidmaze-medium-navigate", "humanoidmaze-large-navigate", "humanoidmaze-giant-navigate",
    "humanoidmaze-medium-stitch", "humanoidmaze-large-stitch",
    "antsoccer-arena-navigate", "antsoccer-medium-navigate", "antsoccer-arena-stitch",
    "pointmaze-medium-navigate", "pointmaze-large-navigate", "pointmaze-giant-navigate",
)
KNOWN_ENVS = MANIPULATION + LOCOMOTION


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Task:
    """An OGBench singletask problem and where its data comes from.

    Attributes:
      env: dataset family without version, e.g. 'cube-single-play'.
      task_id: singletask id (1..5).
      task_ids: several singletask ids trained in ONE program (gin macro PROGRAM_TASK_IDS;
        () = task_id alone; one id = that task alone). The tasks share the dataset's
        observations and actions; each (task, seed) is its own agent with its own rewards and
        masks, evaluated on its own task (floq/loop.py). `task_id` is then ignored.
      discount: gamma.
      source: 'ogbench' | 'path' | 'generate' (see module docstring).
      dataset_path: a local train file; when non-empty it is used whatever `source` says.
      dataset_dir: one of two things, told apart by what the folder holds:
        - a sharded dataset (OGBench's `<name>-100m-v0/` or `-1b-v0/` folders): a folder holding
          numbered train files `<stem>-<number>.npz`, each with its `-val` twin, or a folder named
          `*-<N>m-v<k>` / `*-<N>b-v<k>` (then it must hold such files). Training then uses one
          shard at a time, switching every `shard_interval` gradient steps (floq.data.shards;
          `Task.shards()`); this wins over `source` (but not over `dataset_path`);
        - otherwise the OGBench download/cache dir for source='ogbench' ('' = ~/.ogbench/data),
          which holds `<name>-v0.npz` files (no number) and is never sharded.
      generate_episodes: episodes to generate for source='generate'.
      generate_seed: seed of the generated dataset.
      standin: allow noisy random-walk stand-in data for locomotion (tests only).
      episode_length: generated episode length override (0 = OGBench's).
      success_timing: 'post' (ogbench < 1.2 rule, as in the FQL and floq papers) or 'pre'.
      r_min, r_max: pin the reward range (None: read from the training data).
      max_transitions: use only the first N transitions (0 = all; of each shard when sharded).
      shard_interval: sharded datasets: gradient steps per shard (gin macro SHARD_INTERVAL;
        1000 = horizon-reduction's --dataset_replace_interval default; 0 = stay on shard 0).
        The shard of the step after `s` completed steps is (s // shard_interval) % shards.
      num_shards: sharded datasets: use only the first N shards (0 = all; horizon-reduction's
        --num_datasets).
    """

    env: str = "cube-single-play"
    task_id: int = 1
    task_ids: tuple = ()
    discount: float = 0.99
    source: str = "ogbench"
    dataset_path: str = ""
    dataset_dir: str = ""
    generate_episodes: int = 100
    generate_seed: int = 0
    standin: bool = False
    episode_length: int = 0
    success_timing: str = "post"
    max_transitions: int = 0
    shard_interval: int = 1000
    num_shards: int = 0

    def __post_init__(self):
        from floq.config import check_fields

        check_fields(self)
        if self.env not in KNOWN_ENVS:
            raise ValueError(f"unknown OGBench dataset {self.env!r}; known: {', '.join(KNOWN_ENVS)}")
        if not 1 <= int(self.task_id) <= 5:
            raise ValueError(f"task_id must be in 1..5, got {self.task_id}")
        if isinstance(self.task_ids, (int, str)) or not all(isinstance(t, int) for t in self.task_ids):
            raise ValueError(f"Task.task_ids must be a list of task ids (1..5), got {self.task_ids!r}")
        object.__setattr__(self, "task_ids", tuple(int(t) for t in self.task_ids))
        bad = [t for t in self.task_ids if not 1 <= t <= 5]
        if bad or len(set(self.task_ids)) != len(self.task_ids):
            raise ValueError(f"Task.task_ids must be distinct task ids in 1..5, got {list(self.task_ids)}")
        if len(self.task_ids) == 1:  # one task is a lone run of that task (same run, same hash)
            object.__setattr__(self, "task_id", self.task_ids[0])
            object.__setattr__(self, "task_ids", ())
        if self.source not in SOURCES:
            raise ValueError(f"Task.source must be one of {SOURCES}, got {self.source!r}")
        if self.success_timing not in SUCCESS_TIMINGS:
            raise ValueError(f"success_timing must be one of {SUCCESS_TIMINGS}, got {self.success_timing!r}")
        if not 0.0 < self.discount < 1.0:
            raise ValueError(f"discount must be in (0, 1), got {self.discount}")
        if self.source == "generate" and self.generate_episodes < 1:
            raise ValueError(f"generate_episodes must be >= 1, got {self.generate_episodes}")
        if self.max_transitions < 0:
            raise ValueError(f"Task.max_transitions must be >= 0 (0 = all), got {self.max_transitions}")
        if self.shard_interval < 0 or self.num_shards < 0:
            raise ValueError(f"shard_interval and num_shards must be >= 0, got {self.shard_interval}, "
                             f"{self.num_shards}")

    @property
    def ids(self) -> tuple:
        """The task ids this program trains: task_ids, or (task_id,)."""
        return self.task_ids or (int(self.task_id),)

    @property
    def multi(self) -> bool:
        return len(self.ids) > 1

    def for_task(self, task_id: int) -> "Task":
        """The lone task `task_id` of a multi-task spec (same data, same settings)."""
        return dataclasses.replace(self, task_id=int(task_id), task_ids=())

    @property
    def dataset_name(self) -> str:
        return f"{self.env}-singletask-task{self.task_id}-v0"

    @property
    def task(self) -> str:
        return f"task{self.task_id}"

    def env_kwargs(self) -> dict:
        return {"success_timing": self.success_timing}

    @property
    def sharded(self) -> bool:
        """True when `dataset_dir` is a sharded dataset (see `dataset_dir`); `dataset_path` wins."""
        if not self.dataset_dir or self.dataset_path:
            return False
        from floq.data.shards import is_shard_dir

        return is_shard_dir(self.dataset_dir)

    def shards(self, validate: bool = True, prefetch: bool = True):
        """The sharded dataset of `dataset_dir` (floq.data.shards.ShardedData), validated against
        the environment; None when the task is not sharded (then use `load`)."""
        if not self.sharded:
            return None
        from floq.data.shards import ShardedData

        return ShardedData(os.path.expanduser(self.dataset_dir), self.dataset_name, interval=self.shard_interval,
                           num_shards=self.num_shards, env_kwargs=self.env_kwargs(),
                           max_transitions=self.max_transitions, validate=validate, prefetch=prefetch)

    def resolve_path(self, progress: bool = True) -> str | None:
        """The local train file to load (None: let ogbench download)."""
        if self.source == "path" or self.dataset_path:
            if not self.dataset_path:
                raise DataError("Task.source = 'path' needs Task.dataset_path (or the DATASET_PATH macro)")
            path = os.path.expanduser(self.dataset_path)
            check_files(path)
            validate_dataset(path, self.dataset_name, env_kwargs=self.env_kwargs())
            return path
        if self.source == "generate":
            path = ensure_generated(self, progress=progress)
            validate_dataset(path, self.dataset_name, env_kwargs=self.env_kwargs())
            return path
        return None

    def data_files(self) -> list[str]:
        """The train and validation files `load` reads (what run.json fingerprints): the
        given or generated file and its `-val` twin, or OGBench's cached download
        `<dataset_dir>/<env>-v0.npz` (ogbench drops 'singletask-taskN' from the name). Files
        that do not exist are left out."""
        if self.source == "path" or self.dataset_path:
            train = os.path.expanduser(self.dataset_path)
        elif self.source == "generate":
            train = generated_path(self)
        else:
            folder = os.path.expanduser(self.dataset_dir or "~/.ogbench/data")
            train = os.path.join(folder, f"{self.env}-v0.npz")
        return [p for p in (train, val_path_of(train)) if os.path.isfile(p)]

    def load(self, progress: bool = True):
        """Returns (train, val) dicts of numpy arrays with rewards and masks (OGBench relabelling)."""
        import ogbench

        path = self.resolve_path(progress=progress)
        kwargs = dict(dataset_path=path) if path else dict(
            dataset_dir=os.path.expanduser(self.dataset_dir or "~/.ogbench/data"))
        # The rewards are relabelled with the task's environment: one from floq.envs (the
        # evaluation that follows in this process takes it again).
        env = None
        try:
            env = envs_pool.acquire(self.dataset_name, self.env_kwargs())
            train, val = ogbench.make_env_and_datasets(self.dataset_name, **kwargs, dataset_only=True, cur_env=env)
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise DataError(f"cannot load dataset for {self.dataset_name} from {path or 'ogbench download'}: "
                            f"{type(e).__name__}: {e}") from None
        finally:
            if env is not None:
                envs_pool.release(self.dataset_name, self.env_kwargs(), env)
        return finish_arrays(train, self.max_transitions), finish_arrays(val, self.max_transitions)


def generated_path(task: Task) -> str:
    tag = f"e{task.generate_episodes}-s{task.generate_seed}"
    if task.episode_length:
        tag += f"-l{task.episode_length}"
    standin = "-standin" if task.env in LOCOMOTION else ""
    from floq.data.files import cached_data_path

    return cached_data_path(f"{task.env}{standin}-v0-{tag}.npz")


def ensure_generated(task: Task, progress: bool = True) -> str:
    """Generate (once) and cache the dataset of a 'generate' task; returns the train path."""
    path = generated_path(task)
    if os.path.isfile(path) and os.path.isfile(path.replace(".npz", "-val.npz")):
        return path
    if task.env in LOCOMOTION and not task.standin:
        raise DataError(
            f"{task.env} needs OGBench's expert policies, which are not shipped; use source='ogbench' "
            f"(download) or, for tests only, Task.standin = True")
    import shutil
    import tempfile

    from floq.data import generate as gen
    from floq.interrupts import phase_signals

    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    # Several trainers (a sweep's workers) may ask for the same dataset at once: one generates
    # it under an exclusive lock, in a private temporary folder; the others wait, then find it.
    # A stop signal (Ctrl-C, SIGTERM) ends the generator's workers, removes the temporary folder
    # and the lock file, and raises floq.interrupts.Interrupted ('interrupted during data generation').
    with phase_signals("data generation"), _generation_lock(path + ".lock") as _:
        if os.path.isfile(path) and os.path.isfile(path.replace(".npz", "-val.npz")):
            return path
        kwargs = {}
        if task.episode_length:
            kwargs["episode_length"] = task.episode_length
        if task.env in LOCOMOTION:
            kwargs["standin"] = True
        workers = min(2, os.cpu_count() or 1)
        print(f"floq: generating {task.env}-v0 ({task.generate_episodes} episodes, cached in {folder}; seed "
              f"{task.generate_seed}, {workers} worker{'s' if workers > 1 else ''})", file=sys.stderr, flush=True)
        tmp = tempfile.mkdtemp(prefix=".generating-", dir=folder)
        try:
            train, val = gen.generate(f"{task.env}-v0", task.generate_episodes, tmp,
                                      seed=task.generate_seed, workers=workers, progress=progress, **kwargs)
            # Rename into the cache key (atomic renames; the val file first so a crash never
            # leaves a train file without its val twin under the cache key).
            os.replace(val, path.replace(".npz", "-val.npz"))
            os.replace(train, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return path


class _generation_lock:
    """An exclusive flock on `lock_path` (blocking, with one line while it waits), removed when
    released. A waiter that gets the lock of a file its holder has removed meanwhile takes the
    lock again on the current file, so that two processes never both hold 'the' lock."""

    def __init__(self, lock_path: str):
        self.path, self.file = lock_path, None

    def __enter__(self):
        import fcntl

        said = False
        while True:
            f = open(self.path, "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not said:
                    print(f"floq: waiting for another process generating {self.path[:-len('.lock')]}",
                          file=sys.stderr, flush=True)
                    said = True
                try:
                    fcntl.flock(f, fcntl.LOCK_EX)
                except BaseException:
                    f.close()
                    raise
            try:
                same = os.fstat(f.fileno()).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.file = f
                return self
            f.close()  # its holder removed that file: lock the current one

    def __exit__(self, *exc):
        try:
            os.unlink(self.path)  # still held: nobody else holds this file's lock now
        except OSError:
            pass
        self.file.close()


def env_family(name: str) -> str:
    """'cube-single-play-singletask-task1-v0' -> 'cube-single-play'."""
    name = re.sub(r"-v\d+$", "", name)
    return re.sub(r"-singletask(-task\d)?$", "", name)
