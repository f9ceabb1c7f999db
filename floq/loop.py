"""The training loop: one run directory, from gin files to result CSVs.

    Run(gin_files, bindings, ...).execute()
      __init__        parse + validate the config, name the run directory, refuse a done run
                      with a different config (nothing is written before this passes)
      setup()         data on the device, critic configured from the data's reward range,
                      members (one per seed), the compiled program, run.json, CSV logs
      resume()        last good checkpoint -> state, committed CSV rows, pending evaluations
      execute()       the loop below, under the run's lock and signal handlers
        while step < total:
          step_chunk()       one compiled call of n <= chunk_size steps, sized by time
          check_finite()     a member with a non-finite loss / gradient / parameter is frozen
                             (run.json diverged_members); none left -> status 'diverged'
          log()              at LOG_INTERVAL: one train.csv row per member (means over the window)
          evaluate()         at EVAL_INTERVAL: hand a parameter snapshot to the evaluator
          collect()          rows of finished evaluations -> eval.csv (in step order)
          checkpoint()       at CHECKPOINT_INTERVAL (and on a signal)
        finish()          wait for evaluations, final checkpoint, status 'done'

Evaluation is a service (floq/evaluate.py): synchronous evaluation is the same interface with
the loop waiting for the result; asynchronous evaluation lets training go on while workers
run episodes. Rows are identical either way, and identical after a kill and a resume: a
checkpoint records the evaluations still pending at its step, and a resume re-submits them
from the restored (identical) parameters.

Failure is a state in run.json, never a silent number: 'running', 'done', 'diverged' (with
the step, member and quantity), 'preempted' (a signal: checkpoint and exit 143), 'failed'.
Members of a vmapped program are independent, so divergence is per member: a diverged member
is frozen at its last finite state (the program stops updating it; no row, evaluation or
non-finite checkpoint for it after that), recorded in run.json `diverged_members` (member,
task, seed, step, quantity), and the run ends 'done' with them listed when the others finish;
only when every member has diverged is the run 'diverged' (exit 3).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import sys
import threading
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np

from floq import memo, results
from floq.config import ConfigError, binding_tag
from floq.evaluate import EvalAbandoned, EvalService, Member, WorkerDied, export_policy
from floq.agents.base import BASE_BATCH_KEYS, batch_keys, check_pair, partial_metrics, window_means
from floq.train import (build, init_group_states, init_states, make_program, multi_task_data, task_view,
                        update_flops, with_batch_keys, with_precision, xla_flags)
from floq.columns import EVAL_COLUMNS  # noqa: F401  (floq.loop.EVAL_COLUMNS: the eval.csv columns)

TRAIN_COLUMNS = ("experiment", "run", "seed", "step", "phase", "env_steps", "wall_time", "updates_per_s")
# Bindings that describe the protocol or the plumbing rather than the thing studied: they are
# recorded in run.json, not turned into result columns or run names.
NOT_TAGS = {"seed", "num_seeds", "task_ids", "program_task_ids", "dataset_path", "data_source", "train_steps", "eval_interval", "eval_episodes",
            "log_interval", "checkpoint_interval", "chunk_size", "experiment", "out_dir", "progress",
            "eval_workers", "eval_envs_per_worker", "async_eval", "max_chunk_seconds", "loggers"}
PREEMPT_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGUSR1", "SIGHUP", "SIGINT"))
                        if s is not None)

# The error types live in floq.results (one home); re-exported here for the loop's callers.
RunError = results.RunError
RunDiverged = results.RunDiverged


class Preempted(Exception):
    """A signal asked the run to stop; the state is checkpointed (exit 143)."""


def task_label(task) -> str:
    """'task2' for one task, 'tasks1,2,3,4,5' for a multi-task program."""
    return "tasks" + ",".join(map(str, task.task_ids)) if task.task_ids else task.task


# Settings that are not tags (they describe the protocol) but make another run when a binding
# changes them: the run-directory name says so (name: config_fields path).
NAME_FIELDS = {"train_steps": "trainer.train_steps", "eval_interval": "trainer.eval_interval",
               "eval_episodes": "trainer.eval_episodes", "dataset_path": "task.dataset_path",
               "data_source": "task.source"}


def legacy_run_name(exp, tags: dict) -> str:
    """The default run-directory name before it named seeds and protocol bindings (a directory
    of that name holding this very run is still used)."""
    algo = getattr(exp.algorithm, "name", "fql")
    parts = ([algo] if algo != "fql" else []) + [exp.critic.name, exp.task.env, task_label(exp.task)]
    parts += [f"{k}={v}" for k, v in sorted(tags.items()) if k not in ("seed", "task_id")]
    return _safe_name("_".join(str(p) for p in parts))


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_=.," else "-" for c in name)


def seeds_label(seeds) -> str:
    """'seed=0'; 'seeds=0-3' for consecutive seeds; 'seeds=0,2,5' otherwise."""
    seeds = [int(s) for s in seeds]
    if len(seeds) == 1:
        return f"seed={seeds[0]}"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds={seeds[0]}-{seeds[-1]}"
    return "seeds=" + ",".join(map(str, seeds))


def default_run_name(exp, tags: dict, base=None, bound=(), with_algorithm: bool = True) -> str:
    """[algorithm_]critic_env_task, the tags (values bound on the command line), the protocol settings
    (NAME_FIELDS) that the bindings changed from the gin files' values (`base`: the same gin
    files built without bindings; when unknown, every bound one), and the seeds:
    'monolithic_cube-single-play_task1_train_steps=2000_seed=1'. Two runs that differ in a
    binding or a seed never share a directory. The algorithm leads the name unless it is FQL
    (the default algorithm: FQL runs keep the names they always had), so an FQL run and a
    ReBRAC run of one critic and task never share one either ('iql_monolithic_cube-single-play_
    task1_seed=0'). `with_algorithm=False`: the name runs of other algorithms had before it led
    (a directory of that name holding this very run is still used)."""
    items = {k: v for k, v in tags.items() if k not in ("seed", "task_id")}
    now = config_fields(exp)
    was = config_fields(base) if base is not None else None
    for key, path in NAME_FIELDS.items():
        if key in items or path not in now:
            continue
        if (was is not None and was.get(path) != now[path]) or (was is None and key in bound):
            v = now[path]
            items[key] = os.path.splitext(os.path.basename(v))[0] if key == "dataset_path" and v else v
    algo = getattr(exp.algorithm, "name", "fql")
    parts = ([algo] if with_algorithm and algo != "fql" else []) + [exp.critic.name, exp.task.env,
                                                                   task_label(exp.task)]
    parts += [f"{k}={v}" for k, v in sorted(items.items())]
    parts.append(seeds_label(exp.trainer.seeds))
    return _safe_name("_".join(str(p) for p in parts))


def next_boundary(step: int, total: int, intervals) -> int:
    """The next step after `step` at which something happens: a multiple of any interval, or total."""
    nxt = total
    for iv in intervals:
        if iv > 0:
            nxt = min(nxt, (step // iv + 1) * iv)
    return nxt


# Trainer fields that change how a run is executed but not a single number it produces (rows
# are identical whatever the chunking, the evaluation workers or the loggers).
PLUMBING = {"progress", "eval_workers", "eval_envs_per_worker", "async_eval", "max_chunk_seconds", "loggers",
            "out_dir", "chunk_size"}


# The head of every run's config.gin: how to read it (a comment, so the file still parses).
CONFIG_HEADER = (
    "# The operative configuration of this run: every parameter a configurable read, with the\n"
    "# macros it read. A scoped binding (e.g. floq_k4/FloqCritic.flow_steps = 4) wins over the\n"
    "# unscoped macro beside it (CRITIC_FLOW_STEPS), so read the scoped value; the specs as\n"
    "# built, field by field, are run.json's config_fields. `floq run` on this file re-trains it.\n\n"
)

# Task fields that only matter for sharded datasets: left out of the hash of other runs, so
# that adding them did not change any existing run's identity.
SHARD_FIELDS = ("shard_interval", "num_shards")
# Trainer fields that only matter with an online phase: left out of the hash of offline runs.
ONLINE_FIELDS = ("buffer_size",)
# Spec fields added after runs were recorded, with the value every earlier run had: left out of
# the hash and of config_fields while they hold it, so that adding them changed no run's identity.
# (FQL.compute_dtype follows Trainer.precision, which the hash has; FQL.flat_adam is opt-in.)
LATER_FIELDS = {("FQL", "compute_dtype"): "float32", ("FQL", "flat_adam"): False}


def _later_default(x, name: str) -> bool:
    key = (type(x).__name__, name)
    return key in LATER_FIELDS and getattr(x, name) == LATER_FIELDS[key]


def spec_hash(exp) -> str:
    """What a run *is*: every field of its specs (task, critic, algorithm, trainer) except
    the plumbing above. A done or partial run directory is only continued under the same hash."""
    def canon(x):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            return (type(x).__name__, tuple((f.name, canon(getattr(x, f.name))) for f in dataclasses.fields(x)
                                            if not (type(x).__name__ == "Trainer" and f.name in PLUMBING)
                                            and not (type(x).__name__ == "Trainer" and f.name in ONLINE_FIELDS
                                                     and not getattr(x, "online_steps", 0))
                                            and not (type(x).__name__ == "Task" and f.name in SHARD_FIELDS
                                                     and not getattr(x, "sharded", False))
                                            and not (type(x).__name__ == "Task" and f.name == "task_ids"
                                                     and not getattr(x, "task_ids", ()))
                                            and not _later_default(x, f.name)))
        if isinstance(x, (list, tuple)):
            return tuple(canon(v) for v in x)
        if isinstance(x, dict):
            return tuple(sorted((str(k), canon(v)) for k, v in x.items()))
        return x

    text = repr(tuple(canon(getattr(exp, f.name)) for f in dataclasses.fields(exp)))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Fields a run of one configuration may differ in from another run of that configuration:
# its seeds, the experiment (a results folder), the task (runs of one method on several tasks,
# alone or in a multi-task program) and when it logs or saves.
NOT_CONFIG = {("Trainer", "seed"), ("Trainer", "num_seeds"), ("Trainer", "experiment"),
              ("Trainer", "log_interval"), ("Trainer", "checkpoint_interval"), ("Task", "task_id"),
              ("Task", "task_ids"), ("Task", "dataset_dir")}


def config_fields(exp) -> dict:
    """What makes a run's numbers apart from its seeds and task, as flat
    ``{'trainer.batch_size': 32, 'algorithm.actor_net.width': 32, 'critic': 'MonolithicCritic',
    ...}``: every field of the specs but the plumbing and ``NOT_CONFIG``. Recorded in run.json
    so that the analysis never pools two configurations as seeds of one method, and can name
    the fields in which they differ."""
    out: dict = {}

    def walk(x, path):
        if dataclasses.is_dataclass(x) and not isinstance(x, type):
            kind = type(x).__name__
            out[path] = kind
            for f in dataclasses.fields(x):
                if (kind, f.name) in NOT_CONFIG or (kind == "Trainer" and f.name in PLUMBING) \
                        or (kind == "Task" and f.name in SHARD_FIELDS and not getattr(x, "sharded", False)) \
                        or _later_default(x, f.name):
                    continue
                walk(getattr(x, f.name), f"{path}.{f.name}")
        elif isinstance(x, (list, tuple)):
            if any(dataclasses.is_dataclass(v) for v in x):
                for i, v in enumerate(x):
                    walk(v, f"{path}.{i}")
            else:
                out[path] = [v if isinstance(v, (int, float, str, bool)) or v is None else repr(v) for v in x]
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k], f"{path}.{k}")
        else:
            out[path] = x if isinstance(x, (int, float, str, bool)) or x is None else repr(x)

    for f in dataclasses.fields(exp):
        walk(getattr(exp, f.name), f.name)
    return out


def seedless_hash(fields: dict) -> str:
    """The hash of `config_fields`: equal for the runs of one configuration, whatever their
    seeds and tasks (run.json `seedless_config_hash`)."""
    import json

    text = json.dumps(fields, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _typed(v):
    """A tag value as a number when it reads as one (run.json tags are typed)."""
    if not isinstance(v, str):
        return v
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"True": True, "False": False}.get(v, v)


def applied_reward_rule(rule: str, balanced: bool) -> str:
    """The rule by which the reward range is read, as the released code reads it
    (github:CMU-AIRe/floq main.py): 'released' reads r_min/r_max from the replay buffer that
    starts as the zero-padded dataset, so 0 is in the range; with balanced sampling its
    training set is the raw dataset (the online rows have a buffer of their own), so the
    range is the raw one ('data'). Other rules apply as they are."""
    return "data" if rule == "released" and balanced else rule


def reward_range(rewards, rule: str):
    try:
        from floq.critics.base import reward_range as rr
    except ImportError:  # pragma: no cover - older critics module
        rr = None
    if rr is not None:
        return rr(rewards, rule)
    lo, hi = float(np.min(rewards)), float(np.max(rewards))
    return (min(lo, 0.0), max(hi, 0.0)) if rule == "released" else (lo, hi)


class Run:
    """One run directory being trained (see the module docstring for the shape)."""

    def __init__(self, gin_files, bindings=(), out_dir=None, run_dir=None, tags=None, force=False,
                 retry_failed=False):
        self.t_start = time.time()
        self.gin_files, self.bindings = list(gin_files), list(bindings)
        base = None
        if run_dir is None and self.bindings:  # the gin files' own values, to name what the bindings changed
            try:
                base = build(self.gin_files, [])
            except ConfigError:  # the files need a binding: every bound protocol setting is named
                pass
        self.exp = build(self.gin_files, self.bindings)
        self.config_hash = spec_hash(self.exp)
        self.config_fields = config_fields(self.exp)
        self.tr = tr = self.exp.trainer
        self.total_steps = tr.train_steps + tr.online_steps  # offline gradient steps + environment steps
        tags = dict(tags or {})
        for b in self.bindings:
            kv = binding_tag(b)
            if kv and kv[0] not in NOT_TAGS and not str(kv[1]).startswith("@"):
                tags.setdefault(*kv)
        self.tags = {k: _typed(v) for k, v in tags.items()}
        self.exp_name = tr.experiment
        if run_dir is None:
            bound = {kv[0] for kv in map(binding_tag, self.bindings) if kv}
            run_dir = results.safe_run_dir(out_dir or tr.out_dir, self.exp_name,
                                           default_run_name(self.exp, self.tags, base, bound))
            if not os.path.exists(run_dir):
                # this very run under an older default name (resumed or done there): before names
                # held the algorithm, and before they held the seed
                older = [default_run_name(self.exp, self.tags, base, bound, with_algorithm=False),
                         legacy_run_name(self.exp, self.tags)]
                for name in older:
                    old = results.safe_run_dir(out_dir or tr.out_dir, self.exp_name, name)
                    if old != run_dir and self._holds_this_run(old):
                        run_dir = old
                        break
        self.run_dir = os.path.abspath(run_dir)
        self.run_name = os.path.basename(self.run_dir)
        self.force, self.retry_failed, self.replace = force, retry_failed, False
        self.times = {"setup_s": 0.0, "compile_s": 0.0, "train_s": 0.0, "eval_wait_s": 0.0, "eval_busy_s": 0.0,
                      "checkpoint_s": 0.0, "env_s": 0.0}
        self.preempt_signal = None
        self.previous = self._previous_manifest()

    # ------------------------------------------------------------------ before anything is written
    def _holds_this_run(self, run_dir) -> bool:
        try:
            return results.read_json(os.path.join(run_dir, "run.json")).get("config_hash") == self.config_hash
        except (OSError, ValueError, AttributeError):
            return False

    def _previous_manifest(self):
        path = os.path.join(self.run_dir, "run.json")
        if not os.path.exists(path):
            return None
        try:
            return results.read_json(path)
        except (OSError, ValueError):
            return None

    def already_done(self) -> bool:
        """True when the run directory holds this very run, finished; refuses other cases
        where continuing would mix two configurations or hide a failure. Writes nothing: a
        run of another config that --force replaces is moved aside later, under its lock
        (`_move_aside`)."""
        prev = self.previous
        self.replace = False
        if prev is None:
            return False
        same = prev.get("config_hash") == self.config_hash
        if not same and not self.force:
            raise ConfigError(f"{self.run_dir} holds a run with a different config (status "
                              f"{prev.get('status')}); give this run another --run-dir (or --out), or pass "
                              f"--force to move that run aside to {os.path.basename(self.run_dir)}.replaced-<time> "
                              f"(kept, but floq analyze then leaves it out) and start this one in its place")
        if not same:
            self.replace = True
            return False
        status = prev.get("status")
        if status == "done":
            return True
        if status == "diverged" and not self.retry_failed:
            raise RunDiverged(f"{self.run_dir} diverged before ({prev.get('reason', 'no reason recorded')}); "
                              f"re-run with --retry-failed to train it again from its last good checkpoint")
        return False

    def _move_aside(self):
        """--force over a run of another config: take that run's lock (RunError, with nothing
        touched, while a trainer holds it), then move its directory to
        RUN.replaced-<time> (never delete) and say where."""
        def other(prev):
            if not isinstance(prev, dict) or prev.get("config_hash") == self.config_hash:  # changed meanwhile
                self.previous = prev if isinstance(prev, dict) else None
                return False
            return True

        moved = results.move_run_aside(self.run_dir, other)
        if moved is None:
            return
        dest, prev = moved
        prev = prev or {}
        self.previous = None
        print(f"floq: {self.run_dir} held a run with a different config (status {prev.get('status')}); "
              f"moved it to {dest}", file=sys.stderr)

    # ------------------------------------------------------------------ setup
    def setup(self):
        exp, tr = self.exp, self.tr
        # Several tasks in one program (Task.task_ids): one agent per (task, seed), task-major.
        self.multi = bool(getattr(exp.task, "task_ids", ()))
        self.tasks = [exp.task.for_task(t) for t in exp.task.ids] if self.multi else [exp.task]
        if self.multi and tr.online_steps > 0:
            raise ConfigError("Task.task_ids (several tasks in one program) trains offline only; "
                              "run online fine-tuning one task per run (TASK_ID)")
        try:
            # OGBench's -100m shard folders (floq/data/shards.py): one shard on the device at a time.
            self.shards = exp.task.shards() if hasattr(exp.task, "shards") else None
            if self.shards is not None and self.multi:
                raise ConfigError("Task.task_ids (several tasks in one program) does not take sharded datasets; "
                                  "train one task per run (TASK_ID)")
            if self.shards is not None:
                self.shard_index, train = self.shards.at(0)
                ranges = [tuple(float(v) for v in self.shards.data_range())]
            else:
                loaded = [t.load(progress=tr.progress)[0] for t in self.tasks]
                ranges = [(float(d["rewards"].min()), float(d["rewards"].max())) for d in loaded]
                train = (multi_task_data(loaded, [t.dataset_name for t in self.tasks]) if self.multi
                         else loaded[0])
                del loaded
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.data_sha256 = _data_sha256(self.tasks if self.shards is None else [])
        rule = getattr(exp.critic, "reward_range_rule", "released")
        applied = applied_reward_rule(rule, tr.balanced_sampling)
        self.data_range = ranges[0]
        bounds = [reward_range(np.asarray(lo_hi, np.float32), applied) for lo_hi in ranges]
        critics = []
        for lo, hi in bounds:  # one configured critic per task (they differ only by reward range)
            c = exp.critic.configure(exp.task.discount, lo, hi)
            critics.append(with_precision(None, c, tr.precision)[1])
        (r_min, r_max), critic = bounds[0], critics[0]
        self.critic, self.algo = critic, with_precision(exp.algorithm, None, tr.precision)[0]
        try:
            check_pair(self.algo, critic)  # an algorithm's one-line refusal (or warning) of a critic
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if hasattr(self.algo, "bind_critic"):  # an algorithm whose act() scores actions with the critic (IFQL)
            self.algo = self.algo.bind_critic(critic)
        self.batch_keys = batch_keys(self.algo)
        if tr.online_steps > 0 and set(self.batch_keys) - set(BASE_BATCH_KEYS):
            raise ConfigError(f"{self.algo.name} has no online phase in floq: its batches need "
                              f"{sorted(set(self.batch_keys) - set(BASE_BATCH_KEYS))}, which online transitions do "
                              f"not carry (Trainer.online_steps must be 0)")
        train = with_batch_keys(train, self.batch_keys)
        self.data = jax.device_put({k: jnp.asarray(v) for k, v in train.items()})
        self.obs_dim, self.act_dim = train["observations"].shape[1], train["actions"].shape[1]
        self.n_transitions = int(train["observations"].shape[0])
        ex_obs, ex_act = self.data["observations"][:2], self.data["actions"][:2]
        n_seeds = len(tr.seeds)
        self.members = [Member(ti * n_seeds + i, s, t.dataset_name)
                        for ti, t in enumerate(self.tasks) for i, s in enumerate(tr.seeds)]
        self.member_task = [ti for ti in range(len(self.tasks)) for _ in tr.seeds]
        if self.multi:
            self.groups = []  # (critic, members, task columns): one per distinct critic configuration
            distinct = []
            for c in critics:
                if not any(c == d for d in distinct):
                    distinct.append(c)
            for c in distinct:
                tis = [ti for ti, ci in enumerate(critics) if ci == c]
                mem = [m.index for m in self.members if self.member_task[m.index] in tis]
                self.groups.append((c, mem, [self.member_task[m] for m in mem]))
            seeds = [m.seed for m in self.members]
            self.states = init_group_states(self.algo, self.groups, seeds, ex_obs, ex_act)
            self.program = make_program(self.algo, None, tr.batch_size, tr.chunk_size, groups=self.groups)
        else:
            self.states = init_states(self.algo, critic, tr.seeds, ex_obs, ex_act)
            self.program = make_program(self.algo, critic, tr.batch_size, tr.chunk_size)
        self.compiled = None
        # Per-member divergence: a diverged member is frozen (the program no longer updates it)
        # while the others train on; `diverged_members` says which, when and why.
        self.alive = np.ones(len(self.members), bool)
        self.diverged_members: list[dict] = []
        self.online = None
        if tr.online_steps > 0:
            from floq.online import OnlinePhase

            self.online = OnlinePhase(self)

        self.step, self.wall_offset, self.last_ckpt_step = 0, 0.0, -1
        self.window: list[dict] = []  # per-step metrics since the last log point
        self.last_log = (time.time(), 0, 0.0)  # (clock, step, train seconds) at the last log point
        self.pending_resubmit: list[int] = []
        self.resubmit_policies: dict = {}  # step -> policy parameters of a pending evaluation
        self.eval_snapshots: dict = {}  # step -> policy parameters of a submitted evaluation
        self.last_success = float("nan")

        state1 = jax.tree_util.tree_map(lambda x: x[0], self.states)
        describe = {**self.algo.describe(), **critic.describe()}
        self.protocol = {
            "ogbench_version": results.package_versions().get("ogbench", "unknown"),
            "success_timing": exp.task.success_timing,
            "r_min": getattr(critic, "r_min", None) if getattr(critic, "r_min", None) is not None else r_min,
            "r_max": getattr(critic, "r_max", None) if getattr(critic, "r_max", None) is not None else r_max,
            "reward_range_rule": rule, "reward_range_applied": applied,
            "reward_range_source": ("raw dataset (balanced sampling: the released code reads r_min/r_max from "
                                    "the dataset, not the zero-padded replay buffer)" if applied != rule else
                                    "as the rule says"),
            "data_r_min": self.data_range[0], "data_r_max": self.data_range[1],
            "released_r_min": min(self.data_range[0], 0.0), "released_r_max": max(self.data_range[1], 0.0),
            "time_embedding": describe.get("time_embed", "n/a"),
            "train_steps": tr.train_steps, "eval_interval": tr.eval_interval, "eval_episodes": tr.eval_episodes,
            "online_steps": tr.online_steps, "utd_ratio": tr.utd_ratio, "balanced_sampling": tr.balanced_sampling,
            "discount": exp.task.discount, "batch_size": tr.batch_size, "dataset_source": exp.task.source,
            "dataset_transitions": self.n_transitions,
            "success_rule": "info['success'] at the last step; episodes end at success or time limit",
            "eval_starts": "fresh per (seed, step, episode)",  # floq.evaluate.reset_seed
        }
        if self.shards is not None:
            self.protocol.update(self.shards.describe())
        if tr.online_steps > 0:  # the released ring buffer (floq.train.sample_mixed)
            from floq.train import buffer_capacity

            self.protocol.update({"buffer_size": tr.buffer_size, "buffer_capacity": buffer_capacity(
                self.n_transitions, tr.buffer_size, tr.balanced_sampling), "buffer_eviction": "fifo"})
        if self.multi:  # per task, in the order of task_ids
            self.protocol.update({
                "task_ids": list(exp.task.ids),
                "data_r_min": [r[0] for r in ranges], "data_r_max": [r[1] for r in ranges],
                "r_min": [getattr(c, "r_min", None) for c in critics],
                "r_max": [getattr(c, "r_max", None) for c in critics],
                "critic_groups": [[exp.task.ids[t] for t in sorted(set(g[2]))] for g in self.groups]})
        self.manifest = {
            "experiment": self.exp_name, "run": self.run_name, "status": "running", "seeds": tr.seeds,
            "git_commit": results.git_commit(), "packages": results.package_versions(), "xla_flags": xla_flags(),
            "device": results.device_description(), "env": exp.task.env, "task": task_label(exp.task),
            "task_id": list(exp.task.ids) if self.multi else exp.task.task_id,
            "dataset": [t.dataset_name for t in self.tasks] if self.multi else exp.task.dataset_name,
            "algorithm": self.algo.name,
            "critic": critic.name, "params": self.algo.param_counts(critic, state1["params"]),
            "flops_per_update": update_flops(self.algo, critic, state1,
                                             task_view(self.data, 0) if self.multi else self.data, tr.batch_size),
            "protocol": self.protocol, "tags": self.tags, "describe": describe, "config_hash": self.config_hash,
            "seedless_config_hash": seedless_hash(self.config_fields), "config_fields": self.config_fields,
            "step": 0, "gin_files": [results.repo_relative(f) for f in self.gin_files],
            "bindings": self.bindings, "data_files": self._data_files(),
        }
        if self.multi:
            self.manifest["members"] = [{"task_id": exp.task.ids[self.member_task[m.index]], "seed": m.seed}
                                        for m in self.members]
        prev = self.previous or {}
        same = prev.get("config_hash") == self.config_hash
        if same:  # the same run, maybe resumed from its own config.gin
            self.manifest["gin_files"] = prev.get("gin_files", self.gin_files)
            self.manifest["bindings"] = prev.get("bindings", self.bindings)
        self.load = results.MachineLoad(prev.get("load") if same else None)
        self.common = {"experiment": self.exp_name, "run": self.run_name, "env": exp.task.env,
                       "task": exp.task.task, "task_id": exp.task.task_id, "dataset": exp.task.dataset_name,
                       "algorithm": self.algo.name, "critic": critic.name, "eval_episodes": tr.eval_episodes,
                       "train_steps": tr.train_steps, "ogbench_version": self.protocol["ogbench_version"],
                       "success_timing": exp.task.success_timing}
        for k, v in self.tags.items():
            self.common.setdefault(k, v)
        # The critic's axes, and the algorithm's own knobs (its `columns`; FQL: alpha).
        for k in ("critic_flow_steps", "critic_width", "critic_depth", *getattr(self.algo, "columns", ("alpha",))):
            if k in describe:
                self.common.setdefault(k, describe[k])

        n_workers = tr.eval_workers if tr.eval_workers >= 0 else max(1, (os.cpu_count() or 2) - 1)
        units = len(self.members) * -(-tr.eval_episodes // tr.eval_envs_per_worker)
        self.n_workers = min(n_workers, units)
        self.async_eval = (self.n_workers > 0) if tr.async_eval == "auto" else bool(tr.async_eval)
        if self.async_eval and self.n_workers == 0:
            raise ConfigError("Trainer.async_eval needs evaluation workers (Trainer.eval_workers >= 1)")
        self.evaluator = None
        self.loggers = []
        if tr.loggers:
            from floq.loggers import check_loggers

            check_loggers(tuple(tr.loggers))  # a missing package fails before anything is written
        self.manifest["eval"] = {"workers": self.n_workers, "envs_per_worker": tr.eval_envs_per_worker,
                                 "async": self.async_eval}
        self.times["setup_s"] = time.time() - self.t_start

    def open(self):
        """The run directory's files, under the run's lock: leftovers of killed writes are
        removed, then the CSV logs and checkpoints are opened."""
        from floq.checkpoints import Checkpoints, clean_temp

        clean_temp(self.run_dir)
        self.ckpts = Checkpoints(self.run_dir)
        self.eval_log = results.CsvLog(os.path.join(self.run_dir, "eval.csv"), EVAL_COLUMNS)
        self.train_log = results.CsvLog(os.path.join(self.run_dir, "train.csv"), TRAIN_COLUMNS)

    # ------------------------------------------------------------------ resume
    def resume(self):
        def like(meta):  # a checkpoint taken at a stop signal also holds older evaluations' policies
            steps = meta.get("pending_policies") or []
            if not steps:
                return self._saved_tree()
            pp = jax.device_get(self.algo.policy_params(self.states["params"]))
            return {"run": self._saved_tree(), "pending_policies": {f"step_{int(s)}": pp for s in steps}}

        restored = self.ckpts.restore_latest(like)
        if restored is None:
            self.eval_log.truncate(0)
            self.train_log.truncate(0)
            return
        tree, meta = restored
        if meta.get("pending_policies"):
            self.resubmit_policies = {int(s): tree["pending_policies"][f"step_{int(s)}"]
                                      for s in meta["pending_policies"]}
            tree = tree["run"]
        if self.online is not None:
            self.states = tree["train"]
            self.online.restore(tree["buffer"], meta.get("online"))
        else:
            self.states = tree
        if meta.get("config_hash") != self.config_hash:
            raise ConfigError(f"{self.run_dir} holds a run with a different config; use another --run-dir")
        self.step = self.last_ckpt_step = int(meta["step"])
        self._use_shard(self.step)
        self.wall_offset = float(meta["wall_time"])
        for k, v in (meta.get("times") or {}).items():
            self.times[k] = float(v)
        self._check_resume(meta)
        self.eval_log.truncate(meta["eval_rows"])
        self.train_log.truncate(meta["train_rows"])
        self.pending_resubmit = [int(s) for s in meta.get("pending_evals", [])]
        self.diverged_members = [dict(d) for d in meta.get("diverged_members", [])]
        for d in self.diverged_members:
            self.alive[int(d["member"])] = False
        if self.diverged_members:
            self.manifest["diverged_members"] = self.diverged_members
        self.window = _unpack_window(meta.get("log_window"))
        succ = [r.get("success") for r in self.eval_log.rows]
        if succ:
            self.last_success = float(succ[-1])
        self.last_log = (time.time(), self.step, self.times["train_s"])
        print(f"floq: resuming {self.run_name} from step {self.step}", file=sys.stderr)

    def _check_resume(self, meta: dict):
        """What a resume continues must be what the checkpoint saw: every CSV row it
        committed (a lost or truncated eval.csv would end 'done' with evaluations missing) and
        the same dataset bytes (another file under the same path would be trained on silently).
        One line, nothing changed, otherwise."""
        step = meta.get("step")
        for log, key in ((self.eval_log, "eval_rows"), (self.train_log, "train_rows")):
            want = int(meta.get(key) or 0)
            if len(log) < want:
                name = os.path.basename(log.path)
                raise RunError(f"{name} in {self.run_dir} has {len(log)} row(s) but the checkpoint at step {step} "
                               f"was taken after {want}: rows were lost since (a sync tool, a clean-up, a restore "
                               f"from backup?); put the full {name} back to resume, or move {self.run_dir} aside "
                               f"to train this run again")
        then = meta.get("data_sha256")
        if then is not None and sorted(then.values()) != sorted(self.data_sha256.values()):
            changed = sorted(p for p, h in self.data_sha256.items() if h not in then.values())
            raise ConfigError(f"the dataset changed since {self.run_dir} was checkpointed at step {step} "
                              f"({', '.join(changed) or 'other files'}: other bytes): resuming would train on other "
                              f"data; put the original file back, or give this run another --run-dir")

    # ------------------------------------------------------------------ the loop
    def execute(self) -> str:
        try:
            return self._execute()
        except SystemExit as e:
            th = getattr(self, "_compile_thread", None)
            if e.code == 143 and th is not None and th.is_alive():
                th.join(2.0)
                if th.is_alive() and threading.current_thread() is threading.main_thread():
                    # XLA is still compiling in its thread and cannot be cancelled; ending the
                    # interpreter under it aborts the process (SIGABRT, exit 134), which a
                    # scheduler reads as a crash. run.json and the checkpoint are written and
                    # the lock released: leave at once.
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(143)
            raise

    def _execute(self) -> str:
        if self.already_done():
            print(f"floq: {self.run_dir} is already done; nothing to do")
            return self.run_dir
        self.setup()  # reads data and builds the program; writes nothing
        results.ensure_writable_dir(os.path.dirname(self.run_dir))
        if self.replace:
            self._move_aside()
        os.makedirs(self.run_dir, exist_ok=True)
        with _run_lock(self.run_dir), self._signals():
            self.open()
            self.resume()
            self._write_manifest()
            if self.tr.loggers:
                from floq.loggers import make_loggers

                self.loggers = make_loggers(tuple(self.tr.loggers), run_dir=self.run_dir, manifest=self.manifest,
                                            config_str=gin.config_str(), resume_step=self.step or None)
            bar = self._progress_bar()
            try:
                for s in self.pending_resubmit:
                    self.evaluate(s, policy=self.resubmit_policies.get(s))
                if self.step == 0 and self.tr.eval_at_start and not self.pending_resubmit \
                        and not len(self.eval_log):
                    self.evaluate(0)
                self.collect()
                total, offline = self.total_steps, self.tr.train_steps
                intervals = (self.tr.log_interval, self.tr.eval_interval, self.tr.checkpoint_interval,
                             self.shards.change_interval if self.shards is not None else 0)
                while self.step < total:
                    self._check_signal()
                    before = self.step
                    if self.step < offline:
                        compiling = self.compiled is None
                        self.step_chunk(next_boundary(self.step, offline, intervals))
                    else:
                        compiling = not getattr(self, "_online_compiled", False)
                        self.env_step()
                    if bar is not None:
                        if compiling:  # that call compiled the program: not a step's time
                            _restart_bar(bar, self.step)
                        else:
                            bar.update(self.step - before)
                    if self._at(self.tr.log_interval):
                        self.log()
                    if self._at(self.tr.eval_interval):
                        self.evaluate(self.step)
                    self.collect()
                    if bar is not None and self.last_success == self.last_success:
                        bar.set_postfix(success=f"{self.last_success:.2f}")
                    if self._at(self.tr.checkpoint_interval):
                        self.checkpoint()
                self.finish()
            except Preempted:
                self._on_preempt()
                raise SystemExit(143)
            except RunDiverged:
                raise
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException as e:
                if self._stopped_by(e):
                    self._on_preempt()
                    raise SystemExit(143) from None
                self._set_status("failed", reason=f"{type(e).__name__}: {e}"[:500])
                raise
            finally:
                if bar is not None:
                    bar.close()
                if self.evaluator is not None:
                    self.evaluator.close()
                for lg in self.loggers:
                    try:
                        lg.close()
                    except Exception:  # noqa: BLE001 - loggers never break a run
                        pass
        return self.run_dir

    def _at(self, interval: int) -> bool:
        """At a multiple of `interval` (in total steps), at the end of the offline phase, at the end."""
        return (interval > 0 and self.step % interval == 0) or self.step in (self.tr.train_steps, self.total_steps)

    def phase(self, step: int) -> tuple[str, int]:
        """(phase, environment steps) of the state after `step` total steps: the step that ends
        the offline phase is offline; every later step is one environment step."""
        env_steps = max(0, step - self.tr.train_steps)
        return ("online" if env_steps > 0 else "offline"), env_steps

    def updates(self, step: int) -> int:
        """Gradient updates taken in the first `step` total steps."""
        return min(step, self.tr.train_steps) + max(0, step - self.tr.train_steps) * self.tr.utd_ratio

    def _saved_tree(self):
        return {"train": self.states, "buffer": self.online.buffer} if self.online is not None else self.states

    def wall(self) -> float:
        return self.wall_offset + time.time() - self.t_start

    # ------------------------------------------------------------------ one compiled call
    def _compile(self, n):
        """Compile the program in a thread, so that a signal during a long compilation is
        still honoured within a fraction of a second."""
        out = {}

        args = (self.states, jnp.asarray(self.alive), self.data, n)
        self.compiled = memo.compiled(self.program, args)  # compiled for an earlier run in this process
        if self.compiled is not None:
            return

        def work():
            try:
                out["c"] = self.program.lower(*args).compile()
            except BaseException as e:  # noqa: BLE001
                out["e"] = e

        t0 = time.time()
        th = self._compile_thread = threading.Thread(target=work, daemon=True)
        th.start()
        while th.is_alive():
            th.join(0.1)
            self._check_signal()
        self.times["compile_s"] += time.time() - t0
        if "e" in out:
            raise out["e"]
        self.compiled = out["c"]
        memo.keep_compiled(self.program, args, self.compiled)

    def _use_shard(self, step: int):
        """Sharded data: put the shard of `step` on the device (the online phase keeps the
        last offline shard)."""
        if self.shards is None:
            return
        i, train = self.shards.at(min(step, self.tr.train_steps - 1))
        if i != self.shard_index:
            for v in self.data.values():
                v.delete()  # one shard on the device at a time
            train = with_batch_keys(train, self.batch_keys)
            self.data = jax.device_put({k: jnp.asarray(v) for k, v in train.items()})
            self.shard_index = i

    def step_chunk(self, boundary: int):
        """Advance towards `boundary` by one compiled call of at most chunk_size steps, sized
        to take about max_chunk_seconds."""
        self._use_shard(self.step)
        n_arg = jnp.asarray(1, jnp.int32)
        if self.compiled is None:
            self._compile(n_arg)
        per_step = getattr(self, "_per_step", None)
        budget = 1 if per_step is None else max(1, int(self.tr.max_chunk_seconds / max(per_step, 1e-9)))
        n = int(min(self.tr.chunk_size, boundary - self.step, budget))
        t0 = time.time()
        self.states, metrics, alive, bad_at = self.compiled(self.states, jnp.asarray(self.alive), self.data,
                                                            jnp.asarray(n, jnp.int32))
        metrics, alive, bad_at = jax.device_get((metrics, alive, bad_at))
        dt = time.time() - t0
        self.times["train_s"] += dt
        self._per_step = dt / n if per_step is None else 0.7 * per_step + 0.3 * dt / n
        metrics = {k: np.asarray(v)[:, :n] for k, v in metrics.items()}
        self.check_finite(metrics, np.asarray(alive), np.asarray(bad_at))
        self.window.append(metrics)
        self.step += n
        if not os.path.exists(os.path.join(self.run_dir, "config.gin")):
            results.atomic_write(os.path.join(self.run_dir, "config.gin"), CONFIG_HEADER + gin.operative_config_str())

    def env_step(self):
        """One environment step of the online phase (floq/online.py) and its gradient steps."""
        first = not getattr(self, "_online_compiled", False)
        train0 = self.times["train_s"]
        metrics, alive, bad_at = self.online.step(self.step - self.tr.train_steps)
        if first:  # the first call compiles the online programs: compile time, not training time
            self._online_compiled = True
            self.times["compile_s"] += self.times["train_s"] - train0
            self.times["train_s"] = train0
        self.check_finite(metrics, alive, np.zeros_like(bad_at), quantity_step=bad_at)
        self.window.append(metrics)
        self.step += 1

    def check_finite(self, metrics: dict, alive, bad_at, quantity_step=None):
        """Members that diverged in the last call (alive before, not after): recorded in
        run.json `diverged_members` (member, task, seed, step, quantity) and frozen by the
        program; the others train on. When no member is left, the run is 'diverged' (exit 3).
        `bad_at[m]` is the call's step index at which member m diverged (the total step is
        self.step + bad_at + 1); `quantity_step[m]` the metrics column to name the quantity
        from, when it differs (online: one env step of utd_ratio gradient steps)."""
        new = [m for m in range(len(self.members)) if self.alive[m] and not alive[m]]
        if not new:
            return
        for m in new:
            j = int(bad_at[m])
            jq = int(quantity_step[m]) if quantity_step is not None else j
            quantity = next((k for k in sorted(metrics) if not np.all(np.isfinite(metrics[k][m, jq]))), None)
            where = (f"{quantity} is {metrics[quantity][m, jq]}" if quantity is not None
                     else "a parameter is non-finite")
            step = self.step + j + 1
            record = {"member": m, "seed": self.members[m].seed, "step": step,
                      "quantity": quantity or "parameters"}
            task = self.tasks[self.member_task[m]]
            record.update({"task": task.task, "task_id": task.task_id})
            seed_txt = f"seed {record['seed']}" + (f", {task.task}" if self.multi else "")
            record["reason"] = f"{where} at step {step} ({seed_txt})"
            self.diverged_members.append(record)
            self.alive[m] = False
        self.manifest["diverged_members"] = self.diverged_members
        if self.alive.any():
            self._write_manifest()
            for d in self.diverged_members[-len(new):]:
                print(f"floq: {self.run_name}: a member diverged: {d['reason']}; it is frozen and left out of "
                      f"later rows, the other members train on", file=sys.stderr)
            return
        first = min(self.diverged_members, key=lambda d: (d["step"], d["member"]))
        reason = first["reason"]
        last = self.ckpts.steps()
        self.flush()
        self._set_status("diverged", reason=reason, diverged_at=first["step"],
                         last_good_checkpoint=last[-1] if last else None)
        raise RunDiverged(f"{self.run_name} diverged: {reason}; the last good checkpoint "
                          f"({'step ' + str(last[-1]) if last else 'none'}) is kept")

    # ------------------------------------------------------------------ hooks between calls
    def log(self):
        """One train.csv row per member: metric means over the steps since the last log point
        (in float64, from per-step values, so the grouping of steps into calls never shows);
        metrics computed on some steps only (ReBRAC's actor/*) are means over those steps
        (floq.agents.base.window_means)."""
        self.load.sample()
        if not self.window:
            return
        keys = sorted(self.window[0])
        means = window_means({k: np.concatenate([w[k] for w in self.window], axis=1) for k in keys})
        partial = partial_metrics(keys)
        self.window = []
        now, train_s = time.time(), self.times["train_s"]
        ups = (self.updates(self.step) - self.updates(self.last_log[1])) / max(train_s - self.last_log[2], 1e-9)
        phase, env_steps = self.phase(self.step)
        self.last_log = (now, self.step, train_s)
        rows = []
        for i, mem in enumerate(self.members):
            if not self.alive[i]:  # a diverged member's metrics are not results (they hold non-finite values)
                continue
            row = {"experiment": self.exp_name, "run": self.run_name, "seed": mem.seed, "step": self.step,
                   "phase": phase, "env_steps": env_steps, "wall_time": round(self.wall(), 3),
                   "updates_per_s": round(ups, 2)}
            if self.multi:
                row.update(self._task_columns(i))
            if self.shards is not None:
                row["shard"] = self.shard_index
            if self.online is not None:
                row.update({"online_episodes": self.online.finished[i], "online_successes": self.online.successes[i]})
            # a metric computed on none of the window's steps is left out (an empty cell)
            row.update({k: float(means[k][i]) for k in keys if not (k in partial and np.isnan(means[k][i]))})
            rows.append(row)
        for r in rows:
            self.train_log.append(r)
        self.train_log.flush()
        self._to_loggers("train", rows)

    def evaluate(self, step: int, policy=None):
        """Hand a snapshot of every member's policy at `step` to the evaluator (`policy`: the
        members' stacked policy parameters of that step, when they are not the current ones)."""
        if self.evaluator is None:
            p0 = jax.device_get(self.algo.policy_params(jax.tree_util.tree_map(lambda x: x[0], self.states["params"])))
            pb = export_policy(self.algo, p0, self.obs_dim, self.act_dim, self.tr.eval_envs_per_worker)
            # Asynchronous evaluation does not wait for the workers to start (they import
            # MuJoCo and the policy while the program compiles and trains).
            self.evaluator = EvalService(pb, self.exp.task.env_kwargs(), self.n_workers,
                                         self.tr.eval_envs_per_worker, self.tr.eval_episodes,
                                         wait_ready=not self.async_eval)
        pp = jax.device_get(self.algo.policy_params(self.states["params"])) if policy is None else jax.device_get(policy)
        self.eval_snapshots[step] = pp
        members = [m for m in self.members if self.alive[m.index]]  # a diverged member is not evaluated
        snaps = [jax.tree_util.tree_map(lambda x: np.asarray(x[m.index]), pp) for m in members]
        self.evaluator.submit(step, members, snaps)
        if not self.async_eval:
            self._wait_evals()

    def _wait_evals(self, until_step=None):
        t0 = time.time()
        try:
            done = self.evaluator.wait(until_step, should_stop=lambda: self.preempt_signal is not None)
        except EvalAbandoned:
            raise Preempted() from None
        finally:
            self.times["eval_wait_s"] += time.time() - t0
        self._write_evals(done)

    def collect(self):
        """Rows of evaluations that have finished (non-blocking)."""
        if self.evaluator is not None:
            self._write_evals(self.evaluator.poll())

    def _write_evals(self, done):
        for ev in done:
            self.eval_snapshots.pop(ev.step, None)
            self.times["eval_busy_s"] += ev.busy_s
            rows = []
            phase, env_steps = self.phase(ev.step)
            for m in ev.members:
                res = ev.summary(m.index)
                rows.append({**self.common, **(self._task_columns(m.index) if self.multi else {}),
                             "seed": m.seed, "step": ev.step, "phase": phase, "env_steps": env_steps,
                             "success": res["success"], "return": res["return"],
                             "episode_length": res["episode_length"], "wall_time": round(self.wall(), 3)})
                self.last_success = res["success"]
            for r in rows:
                self.eval_log.append(r)
            self.eval_log.flush()
            self._to_loggers("eval", rows)

    def _task_columns(self, m: int) -> dict:
        """The task of member m of a multi-task program, as every row names it."""
        t = self.tasks[self.member_task[m]]
        return {"task": t.task, "task_id": t.task_id, "dataset": t.dataset_name}

    def _to_loggers(self, kind, rows):
        for lg in self.loggers:
            try:
                lg.log(kind, rows)
            except Exception as e:  # noqa: BLE001 - CSVs are the source of truth
                print(f"floq: logger {type(lg).__name__} failed ({e}); CSVs are unaffected", file=sys.stderr)

    def flush(self):
        self.eval_log.flush()
        self.train_log.flush()

    def checkpoint(self, wait_older: bool = True):
        """Save the state; evaluations older than this step are finished first, those at this
        step are recorded as pending (resume re-submits them from the same parameters).
        With wait_older=False (a stop signal) older evaluations are not waited for: their
        policy parameters go into the checkpoint beside the state, as 'pending_policies'."""
        if self.step == self.last_ckpt_step:
            return
        if wait_older and self.evaluator is not None and any(s < self.step for s in self.evaluator.pending_steps()):
            self._wait_evals(until_step=self.step - 1)
        self.collect()
        t0 = time.time()
        self.flush()
        pending = self.evaluator.pending_steps() if self.evaluator is not None else []
        self.times["checkpoint_s"] += time.time() - t0
        meta = {"step": self.step, "wall_time": self.wall(), "eval_rows": len(self.eval_log),
                "train_rows": len(self.train_log), "config_hash": self.config_hash,
                "pending_evals": pending, "times": dict(self.times),
                "diverged_members": list(self.diverged_members),
                "data_sha256": self.data_sha256}
        tree = self._saved_tree()
        older = [s for s in pending if s < self.step]
        if older:  # only at a stop signal: every other checkpoint keeps its plain layout
            meta["pending_policies"] = older
            tree = {"run": tree, "pending_policies": {f"step_{s}": self.eval_snapshots[s] for s in older}}
        if self.online is not None:
            meta["online"] = self.online.meta()
        if self.shards is not None:
            meta["shard"] = self.shards.index_at(min(self.step, self.tr.train_steps - 1))
        meta["log_window"] = _pack_window(self.window)  # steps since the last log point (resume exactly)
        t0 = time.time()
        self.ckpts.save(self.step, tree, meta)
        self.times["checkpoint_s"] += time.time() - t0
        self.last_ckpt_step = self.step
        self.manifest["step"] = self.step
        self._write_manifest()

    def finish(self):
        if self.online is not None:
            self.online.close()
        if self.shards is not None:
            self.shards.close()
        if self.evaluator is not None:
            self._wait_evals()
        self.checkpoint()
        self.flush()
        self.manifest.update({"step": self.step, "wall_time_s": round(self.wall(), 2)})
        self._set_status("done")

    # ------------------------------------------------------------------ status, signals
    def _throughput(self) -> dict:
        t = self.times
        trained = self.updates(self.step)
        return {"updates_per_s": round(trained / t["train_s"], 2) if t["train_s"] > 0 else None,
                **{k: round(v, 3) for k, v in t.items()}}

    def _write_manifest(self):
        self.manifest.update(self._throughput())
        if getattr(self, "load", None) is not None and self.load.record() is not None:
            self.manifest["load"] = self.load.record()
        results.write_json(os.path.join(self.run_dir, "run.json"), self.manifest)

    def _set_status(self, status: str, **extra):
        if not hasattr(self, "manifest"):
            return
        self.manifest.update({"status": status, **extra})
        self._write_manifest()

    def _stopped_by(self, e: BaseException) -> bool:
        """Whether `e` is an evaluation worker killed by a stop signal that this process got
        too (a signal to the whole process group or cgroup reaches every process at once; the
        handler here may run a moment after the worker is seen dead): then the run is
        preempted, not failed. Workers ignore those signals (floq/evaluate.py); this covers a
        worker killed before it could."""
        if not (isinstance(e, WorkerDied) and e.by_stop_signal()):
            return False
        deadline = time.time() + 2.0
        while self.preempt_signal is None and time.time() < deadline:
            time.sleep(0.05)
        return self.preempt_signal is not None

    def _check_signal(self):
        if self.preempt_signal is not None:
            raise Preempted()

    def _on_preempt(self):
        """Record 'preempted' at once (a SIGKILL after the scheduler's grace time then leaves
        the right status and the previous checkpoint), then checkpoint the step reached without
        waiting for evaluations still running: the checkpoint carries the parameters of those
        of earlier steps, and a resume re-submits them."""
        if not hasattr(self, "states"):
            return
        name = signal.Signals(self.preempt_signal).name if self.preempt_signal else "signal"
        self._set_status("preempted", reason=f"{name} at step {self.step}")
        if self.step > 0:
            try:
                self.collect()
            except RuntimeError:  # the workers are gone: their evaluations stay pending
                pass
            self.checkpoint(wait_older=False)
        kept = self.ckpts.steps() if hasattr(self, "ckpts") else []
        where = (f"checkpoint at step {kept[-1]} kept, re-run to resume" if kept
                 else "no checkpoint yet: a re-run starts from step 0")
        print(f"\nfloq: preempted ({name}) at step {self.step}; {where}", file=sys.stderr)

    def _signals(self):
        """SIGTERM / SIGUSR1 / SIGHUP / SIGINT set a flag the loop checks between calls."""
        run = self

        class _Ctx:
            def __enter__(self_):
                self_.old = {}

                def handler(signum, frame):
                    if run.preempt_signal is not None and signum == signal.SIGINT:
                        raise KeyboardInterrupt  # a second Ctrl-C stops at once
                    run.preempt_signal = signum

                for s in PREEMPT_SIGNALS:
                    try:
                        self_.old[s] = signal.signal(s, handler)
                    except ValueError:  # not in the main thread
                        pass
                return self_

            def __exit__(self_, *exc):
                for s, h in self_.old.items():
                    signal.signal(s, h)

        return _Ctx()

    def _data_files(self) -> list[dict]:
        """Path, size and sha256 of every dataset file this run reads (run.json)."""
        files = (list(self.shards.paths) if self.shards is not None
                 else [f for t in self.tasks for f in t.data_files()])
        return [results.file_fingerprint(f) for f in dict.fromkeys(files)]

    def _progress_bar(self):
        if not self.tr.progress:
            return None
        from tqdm import tqdm

        name = self.run_name if len(self.run_name) <= 40 else "…" + self.run_name[-39:]
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True, desc=name,
                   file=sys.stderr, smoothing=0.1)
        bar.set_postfix_str("compiling…")
        return bar


def _restart_bar(bar, step: int) -> None:
    """Start the bar's clock (rate, ETA) over at `step`, after the call that compiled the
    program, so that compilation is neither counted as a step nor in the steps' rate."""
    bar.reset(total=bar.total)
    bar.initial = bar.n = bar.last_print_n = step
    bar.set_postfix_str("")
    bar.refresh()


# ---------------------------------------------------------------------------------- helpers
def _data_sha256(tasks) -> dict:
    """{path: sha256} of the local dataset files the tasks read (DATASET_PATH or generated,
    with their -val twins); OGBench's own downloads and shard folders are not hashed. The
    digests are run.json's `data_files` ones (`results.file_fingerprint`, cached per process):
    each file is read once."""
    from floq.data import sources

    paths = []
    for t in tasks:
        if t.source == "path" or t.dataset_path:
            paths.append(os.path.abspath(os.path.expanduser(t.dataset_path)))
        elif t.source == "generate":
            paths.append(sources.generated_path(t))
    out = {}
    for p in dict.fromkeys(paths):
        for f in (p, sources.val_path_of(p)):
            if os.path.isfile(f):
                out[f] = results.file_fingerprint(f)["sha256"]
    return out


def _pack_window(window: list[dict]) -> dict | None:
    """The per-step metrics since the last log point, for a checkpoint's JSON sidecar (raw
    float32 bytes, base64): a run resumed between two log points writes the same mean."""
    import base64

    if not window:
        return None
    out = {}
    for k in sorted(window[0]):
        a = np.ascontiguousarray(np.concatenate([np.asarray(w[k]) for w in window], axis=1))
        out[k] = {"dtype": str(a.dtype), "shape": list(a.shape), "b64": base64.b64encode(a.tobytes()).decode()}
    return out


def _unpack_window(packed: dict | None) -> list[dict]:
    import base64

    if not packed:
        return []
    return [{k: np.frombuffer(base64.b64decode(v["b64"]), dtype=v["dtype"]).reshape(v["shape"])
             for k, v in packed.items()}]


class _run_lock:
    """One trainer per run directory (an flock held for the whole run)."""

    def __init__(self, run_dir):
        self.inner = results.RunLock(run_dir)

    def __enter__(self):
        self.inner.__enter__()
        return self

    def __exit__(self, *exc):
        return self.inner.__exit__(*exc)


def run(gin_files, bindings=(), out_dir: str | None = None, run_dir: str | None = None,
        tags: dict | None = None, force: bool = False, retry_failed: bool = False) -> str:
    """Train one run described by gin files + bindings; returns its run directory.

    Resumes from run_dir's last good checkpoint; does nothing when the run is already done
    with the same config. Bad configuration raises ConfigError before anything is written.
    See floq/loop.py.
    """
    return Run(gin_files, bindings, out_dir=out_dir, run_dir=run_dir, tags=tags, force=force,
               retry_failed=retry_failed).execute()
