"""The trainer: device-resident data, scanned update chunks, vmapped seeds, seeded
evaluation between chunks, checkpoints with exact resume.

Gin stops at construction: `experiment()` is the one root configurable; it returns frozen
specs (Task, critic, FQL, Trainer) that the compiled step receives as static configuration.

Exactness: the training state (parameters, targets, optimiser state, the PRNG key that
drives both updates and batch sampling, the step) is one pytree with a leading seed axis.
Chunk boundaries are a function of the absolute step only (multiples of chunk_size and of
every log/eval/checkpoint interval), so a run resumed from a checkpoint executes exactly the
same compiled programs on exactly the same state as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import shutil
import signal
import sys
import time

import gin
import jax
import jax.numpy as jnp
import numpy as np

from floq import results
from floq.config import ConfigError, binding_tag, parse

EVAL_COLUMNS = ("experiment", "run", "env", "task", "dataset", "algorithm", "critic", "seed", "step", "success",
                "return", "episode_length", "wall_time", "eval_episodes", "train_steps", "ogbench_version",
                "success_timing")
# Bindings that describe the protocol or the plumbing rather than the thing studied: they are
# recorded in run.json, not turned into result columns or run names.
NOT_TAGS = {"seed", "num_seeds", "dataset_path", "data_source", "train_steps", "eval_interval", "eval_episodes",
            "log_interval", "checkpoint_interval", "chunk_size", "experiment", "out_dir", "progress",
            "eval_workers"}
TRAIN_COLUMNS = ("experiment", "run", "seed", "step", "wall_time", "updates_per_s")


@gin.configurable
@dataclasses.dataclass(frozen=True)
class Trainer:
    """How long and how a run trains, evaluates and saves.

    Attributes:
      train_steps: gradient steps.
      batch_size: transitions per gradient step.
      seed: first seed; num_seeds seeds (seed, seed+1, ...) train in one vmapped program.
      chunk_size: gradient steps per compiled call (lax.scan); logging/eval happen between.
      log_interval, eval_interval, checkpoint_interval: in gradient steps (0 = never;
        evaluation also runs at step 0 and at the end, checkpoints also at the end).
      eval_episodes: episodes per evaluation (50 in the FQL and floq papers).
      eval_workers: env worker processes (-1: one per core, capped by eval_episodes; 0: in-process).
      experiment: experiment name (a results sub-directory and a CSV column).
      out_dir: where run directories go.
      precision: 'float32' or 'bfloat16' (matmul inputs in bf16, parameters in f32).
      progress: show a progress bar.
    """

    train_steps: int = 1_000_000
    batch_size: int = 256
    seed: int = 0
    num_seeds: int = 1
    chunk_size: int = 1000
    log_interval: int = 5000
    eval_interval: int = 100_000
    checkpoint_interval: int = 100_000
    eval_episodes: int = 50
    eval_workers: int = -1
    eval_at_start: bool = True
    experiment: str = "default"
    out_dir: str = "runs"
    precision: str = "float32"
    progress: bool = True

    def __post_init__(self):
        for name in ("train_steps", "batch_size", "num_seeds", "chunk_size", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Trainer.{name} must be positive, got {getattr(self, name)}")
        for name in ("log_interval", "eval_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"Trainer.{name} must be >= 0, got {getattr(self, name)}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"Trainer.precision must be 'float32' or 'bfloat16', got {self.precision!r}")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]


@dataclasses.dataclass(frozen=True)
class Experiment:
    task: object
    critic: object
    algorithm: object
    trainer: Trainer


@gin.configurable
def experiment(task=gin.REQUIRED, critic=gin.REQUIRED, algorithm=gin.REQUIRED, trainer=gin.REQUIRED) -> Experiment:
    """The root configurable: everything a run is, as frozen specs."""
    return Experiment(task=task, critic=critic, algorithm=algorithm, trainer=trainer)


def build(gin_files, bindings=()) -> Experiment:
    """Parse gin and construct the specs; any bad value becomes one ConfigError line."""
    parse(gin_files, bindings)
    try:
        exp = experiment()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        from floq.config import one_line

        raise ConfigError(f"bad configuration: {one_line(e)}") from None
    for field, kind in (("task", "Task"), ("trainer", "Trainer")):
        if type(getattr(exp, field)).__name__ != kind:
            raise ConfigError(f"experiment.{field} must be a @{kind}()")
    return exp


# --------------------------------------------------------------------------------------
# Compiled pieces
# --------------------------------------------------------------------------------------

def sample_batch(data: dict, key, batch_size: int) -> dict:
    """Uniform sampling with replacement, inside the compiled step."""
    n = data["observations"].shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), data)


def make_step(algorithm, critic, batch_size: int):
    """(state, data) -> (state, metrics) for one seed: sample a batch, then update."""

    def step(state, data):
        rng, k_data = jax.random.split(state["rng"])
        batch = sample_batch(data, k_data, batch_size)
        return algorithm.update(critic, {**state, "rng": rng}, batch)

    return step


def make_chunk(algorithm, critic, batch_size: int, length: int):
    """(states, data) -> (states, chunk-mean metrics), vmapped over the seed axis."""
    step = make_step(algorithm, critic, batch_size)

    def chunk(state, data):
        def body(s, _):
            return step(s, data)

        state, metrics = jax.lax.scan(body, state, None, length=length)
        return state, jax.tree_util.tree_map(lambda m: m.mean(axis=0), metrics)

    vchunk = jax.vmap(chunk, in_axes=(0, None))

    def run_chunk(states, data):
        # A seed axis of size 1 is squeezed out: vmapped size-1 batch dims make XLA's CPU
        # matmuls ~1.8x slower (floq bench: +65% updates/s on the small config).
        if jax.tree_util.tree_leaves(states)[0].shape[0] == 1:
            out = chunk(jax.tree_util.tree_map(lambda x: x[0], states), data)
            return jax.tree_util.tree_map(lambda x: x[None], out)
        return vchunk(states, data)

    return jax.jit(run_chunk, donate_argnums=(0,))


def init_states(algorithm, critic, seeds, ex_obs, ex_act):
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    return jax.jit(jax.vmap(lambda k: algorithm.init(k, critic, ex_obs, ex_act)))(keys)


def update_flops(algorithm, critic, state1, data, batch_size: int) -> float | None:
    """FLOPs of one gradient step from XLA's cost analysis (loops unrolled so that the
    K-step integrations are counted K times)."""
    try:
        with unrolled_loops():
            step = make_step(algorithm, critic, batch_size)
            # HLO-level analysis of the lowered program: no compilation needed.
            cost = jax.jit(step).lower(state1, data).cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0]
        return float(cost.get("flops", float("nan")))
    except Exception:  # noqa: BLE001 - accounting must never break a run
        return None


class unrolled_loops:
    """Context in which jax.lax.fori_loop unrolls (for honest FLOP counting only)."""

    def __enter__(self):
        self._orig = jax.lax.fori_loop

        def fori_loop(lower, upper, body, init, **kw):
            x = init
            for i in range(lower, upper):
                x = body(i, x)
            return x

        jax.lax.fori_loop = fori_loop
        return self

    def __exit__(self, *exc):
        jax.lax.fori_loop = self._orig


def make_policy(algorithm, action_dim: int):
    """Evaluation policy: (params, obs (W, O), episode ids (W,), t (W,), key) -> actions.

    Action noise of episode e at time t is normal(fold_in(fold_in(key, e), t)), so episodes
    repeat exactly whatever worker runs them.
    """

    @jax.jit
    def policy(params, obs, ep_ids, ts, key):
        def noise(e, t):
            return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, e), t), (action_dim,))

        z = jax.vmap(noise)(ep_ids, ts)
        return algorithm.act_from_noise(params, obs, z)

    return policy


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------

class Checkpoints:
    """orbax checkpoints under RUN/checkpoints/step_N plus a JSON sidecar (written after
    the checkpoint is committed, so a sidecar always names a complete checkpoint)."""

    def __init__(self, run_dir: str, keep: int = 2):
        import orbax.checkpoint as ocp

        self.dir = os.path.join(os.path.abspath(run_dir), "checkpoints")
        self.keep = keep
        self._ckptr = ocp.PyTreeCheckpointer()

    def steps(self) -> list[int]:
        if not os.path.isdir(self.dir):
            return []
        out = []
        for name in os.listdir(self.dir):
            if name.startswith("step_") and name.endswith(".json"):
                s = int(name[5:-5])
                if os.path.isdir(os.path.join(self.dir, f"step_{s}")):
                    out.append(s)
        return sorted(out)

    def save(self, step: int, state, meta: dict) -> None:
        path = os.path.join(self.dir, f"step_{step}")
        if os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(self.dir, exist_ok=True)
        self._ckptr.save(path, jax.device_get(state))
        results.write_json(os.path.join(self.dir, f"step_{step}.json"), meta)
        for old in self.steps()[:-self.keep]:
            os.unlink(os.path.join(self.dir, f"step_{old}.json"))
            shutil.rmtree(os.path.join(self.dir, f"step_{old}"), ignore_errors=True)

    def restore(self, step: int, like):
        import orbax.checkpoint as ocp

        path = os.path.join(self.dir, f"step_{step}")
        restored = self._ckptr.restore(path, item=jax.device_get(like),
                                       restore_args=ocp.checkpoint_utils.construct_restore_args(jax.device_get(like)))
        meta = results.read_json(os.path.join(self.dir, f"step_{step}.json"))
        return jax.tree_util.tree_map(jnp.asarray, restored), meta


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------

def default_run_name(exp: Experiment, tags: dict) -> str:
    parts = [exp.critic.name, exp.task.env, exp.task.task]
    parts += [f"{k}={v}" for k, v in sorted(tags.items()) if k not in ("seed", "task_id")]
    name = "_".join(str(p) for p in parts)
    return "".join(c if c.isalnum() or c in "-_=.," else "-" for c in name)


def boundaries(step: int, total: int, intervals) -> int:
    """The next chunk end after `step`: the nearest multiple of any interval, or total."""
    nxt = total
    for iv in intervals:
        if iv > 0:
            nxt = min(nxt, (step // iv + 1) * iv)
    return nxt


class _Preempted(Exception):
    pass


def run(gin_files, bindings=(), out_dir: str | None = None, run_dir: str | None = None,
        tags: dict | None = None) -> str:
    """Train one run described by gin files + bindings; returns its run directory.

    Resumes from run_dir's last checkpoint when there is one; does nothing when the run is
    already done. Bad configuration raises ConfigError before anything is written.
    """
    t_start = time.time()
    bindings = list(bindings)
    exp = build(gin_files, bindings)
    tr = exp.trainer
    tags = dict(tags or {})
    for b in bindings:
        kv = binding_tag(b)
        if kv and kv[0] not in NOT_TAGS:
            tags.setdefault(*kv)
    exp_name = tr.experiment
    if run_dir is None:
        run_dir = os.path.join(out_dir or tr.out_dir, exp_name, default_run_name(exp, tags))
    run_dir = os.path.abspath(run_dir)
    run_name = os.path.basename(run_dir)
    if results.run_status(run_dir) == "done":
        print(f"floq: {run_dir} is already done; nothing to do")
        return run_dir

    # Data (before any file is written: a missing dataset is a config error).
    try:
        train, _val = exp.task.load(progress=tr.progress)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    r_min, r_max = float(train["rewards"].min()), float(train["rewards"].max())
    critic = exp.critic.configure(exp.task.discount, r_min, r_max)
    if tr.precision == "bfloat16":
        critic = dataclasses.replace(critic, compute_dtype="bfloat16")
    algo = exp.algorithm
    config_hash = hashlib.sha256(gin.config_str().encode()).hexdigest()[:16]

    data = jax.device_put({k: jnp.asarray(v) for k, v in train.items()})
    obs_dim, act_dim = train["observations"].shape[1], train["actions"].shape[1]
    ex_obs, ex_act = data["observations"][:2], data["actions"][:2]
    seeds = tr.seeds
    states = init_states(algo, critic, seeds, ex_obs, ex_act)

    os.makedirs(run_dir, exist_ok=True)
    ckpts = Checkpoints(run_dir)
    eval_log = results.CsvLog(os.path.join(run_dir, "eval.csv"), EVAL_COLUMNS)
    train_log = results.CsvLog(os.path.join(run_dir, "train.csv"), TRAIN_COLUMNS)
    step, wall_offset = 0, 0.0
    saved = ckpts.steps()
    if saved:
        states, meta = ckpts.restore(saved[-1], states)
        if meta.get("config_hash") != config_hash:
            raise ConfigError(f"{run_dir} holds a run with a different config; use another --run-dir")
        step, wall_offset = int(meta["step"]), float(meta["wall_time"])
        eval_log.truncate(meta["eval_rows"])
        train_log.truncate(meta["train_rows"])
        print(f"floq: resuming {run_name} from step {step}")
    else:
        eval_log.truncate(0)
        train_log.truncate(0)

    import ogbench  # noqa: F401  (version for the manifest)

    state1 = jax.tree_util.tree_map(lambda x: x[0], states)
    counts = algo.param_counts(critic, state1["params"])
    flops = update_flops(algo, critic, state1, data, tr.batch_size)
    describe = {**algo.describe(), **critic.describe()}
    protocol = {
        "ogbench_version": results.package_versions().get("ogbench", "unknown"),
        "success_timing": exp.task.success_timing,
        "r_min": getattr(critic, "r_min", r_min) if getattr(critic, "r_min", None) is not None else r_min,
        "r_max": getattr(critic, "r_max", r_max) if getattr(critic, "r_max", None) is not None else r_max,
        "data_r_min": r_min, "data_r_max": r_max,
        "time_embedding": describe.get("time_embed", "n/a"),
        "train_steps": tr.train_steps, "eval_interval": tr.eval_interval, "eval_episodes": tr.eval_episodes,
        "discount": exp.task.discount, "batch_size": tr.batch_size, "dataset_source": exp.task.source,
        "dataset_transitions": int(train["observations"].shape[0]),
        "success_rule": "info['success'] at the last step; episodes end at success or time limit",
    }
    manifest = {
        "experiment": exp_name, "run": run_name, "status": "running", "seeds": seeds,
        "git_commit": results.git_commit(), "packages": results.package_versions(),
        "device": results.device_description(), "env": exp.task.env, "task": exp.task.task,
        "dataset": exp.task.dataset_name, "algorithm": algo.name, "critic": critic.name,
        "params": counts, "flops_per_update": flops, "protocol": protocol, "tags": tags,
        "describe": describe, "config_hash": config_hash, "step": step, "gin_files": list(gin_files),
        "bindings": bindings,
    }
    results.write_json(os.path.join(run_dir, "run.json"), manifest)

    common = {"experiment": exp_name, "run": run_name, "env": exp.task.env, "task": exp.task.task,
              "dataset": exp.task.dataset_name, "algorithm": algo.name, "critic": critic.name,
              "eval_episodes": tr.eval_episodes, "train_steps": tr.train_steps,
              "ogbench_version": protocol["ogbench_version"], "success_timing": exp.task.success_timing}
    for k, v in tags.items():
        common.setdefault(k, v)
    for k in ("critic_flow_steps", "critic_width", "critic_depth", "alpha"):
        if k in describe:
            common.setdefault(k, describe[k])

    n_workers = tr.eval_workers if tr.eval_workers >= 0 else min(os.cpu_count() or 1, tr.eval_episodes)
    evaluator = None
    policy = make_policy(algo, act_dim)
    wrote_config = os.path.exists(os.path.join(run_dir, "config.gin")) and step > 0
    intervals = (tr.chunk_size, tr.log_interval, tr.eval_interval, tr.checkpoint_interval)
    chunks = {}
    last_success = [float("nan")]
    preempt = {"flag": False}

    def on_signal(signum, frame):
        preempt["flag"] = True

    old_handlers = {}
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        try:
            old_handlers[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not in the main thread
            pass

    def wall():
        return wall_offset + time.time() - t_start

    def evaluate(at_step):
        nonlocal evaluator
        if evaluator is None:
            from floq.evaluate import Evaluator

            evaluator = Evaluator(exp.task.dataset_name, exp.task.env_kwargs(), n_workers)
        for i, s in enumerate(seeds):
            params = jax.tree_util.tree_map(lambda x: x[i], states["params"])
            key = jax.random.fold_in(jax.random.PRNGKey(s), at_step)

            def pol(obs, ep_ids, ts):
                return np.asarray(policy(params, jnp.asarray(obs), jnp.asarray(np.maximum(ep_ids, 0)),
                                         jnp.asarray(ts), key))

            res = evaluator.run(pol, tr.eval_episodes, seed=s, obs_dim=obs_dim)
            eval_log.append({**common, "seed": s, "step": at_step, "success": res["success"],
                             "return": res["return"], "episode_length": res["episode_length"],
                             "wall_time": round(wall(), 3)})
            last_success[0] = res["success"]
        eval_log.flush()

    def checkpoint(at_step):
        eval_log.flush()
        train_log.flush()
        ckpts.save(at_step, states, {"step": at_step, "wall_time": wall(), "eval_rows": len(eval_log),
                                     "train_rows": len(train_log), "config_hash": config_hash})

    bar = None
    if tr.progress:
        from tqdm import tqdm

        bar = tqdm(total=tr.train_steps, initial=step, unit="step", dynamic_ncols=True, desc=run_name[:40],
                   file=sys.stderr, smoothing=0.1)
    last_log_t, last_log_step = time.time(), step
    try:
        if step == 0 and tr.eval_at_start:
            evaluate(0)
        while step < tr.train_steps:
            nxt = boundaries(step, tr.train_steps, intervals)
            length = nxt - step
            if length not in chunks:
                chunks[length] = make_chunk(algo, critic, tr.batch_size, length)
            states, metrics = chunks[length](states, data)
            step = nxt
            if bar is not None:
                bar.update(length)
            if not wrote_config:
                results.atomic_write(os.path.join(run_dir, "config.gin"), gin.operative_config_str())
                wrote_config = True
            if tr.log_interval and step % tr.log_interval == 0 or step == tr.train_steps:
                metrics = jax.device_get(metrics)
                now = time.time()
                ups = (step - last_log_step) / max(now - last_log_t, 1e-9)
                last_log_t, last_log_step = now, step
                for i, s in enumerate(seeds):
                    row = {"experiment": exp_name, "run": run_name, "seed": s, "step": step,
                           "wall_time": round(wall(), 3), "updates_per_s": round(ups, 2)}
                    row.update({k: float(v[i]) for k, v in sorted(metrics.items())})
                    train_log.append(row)
                train_log.flush()
            if (tr.eval_interval and step % tr.eval_interval == 0) or step == tr.train_steps:
                evaluate(step)
            if bar is not None:
                bar.set_postfix(success=f"{last_success[0]:.2f}")
            if (tr.checkpoint_interval and step % tr.checkpoint_interval == 0) or step == tr.train_steps:
                checkpoint(step)
            elif preempt["flag"]:
                checkpoint(step)
            if preempt["flag"]:
                raise _Preempted()
    except _Preempted:
        print(f"\nfloq: preempted at step {step}; checkpoint saved, re-run to resume", file=sys.stderr)
        raise SystemExit(143)
    finally:
        if bar is not None:
            bar.close()
        if evaluator is not None:
            evaluator.close()
        for sig, h in old_handlers.items():
            signal.signal(sig, h)

    elapsed = wall()
    manifest.update({"status": "done", "step": step, "wall_time_s": round(elapsed, 2),
                     "updates_per_s": round(_mean_ups(train_log), 2)})
    results.write_json(os.path.join(run_dir, "run.json"), manifest)
    return run_dir


def _mean_ups(log) -> float:
    vals = [float(r["updates_per_s"]) for r in log.rows if r.get("updates_per_s") not in (None, "")]
    vals = [v for v in vals if math.isfinite(v)]
    return float(np.median(vals)) if vals else float("nan")
