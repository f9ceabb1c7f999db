"""The trainer's specs and compiled pieces; the loop that runs them is floq/loop.py.

Gin stops at construction: `experiment()` is the one root configurable; it returns frozen
specs (Task, critic, algorithm, Trainer) that the compiled step receives as static configuration.

Exactness: the training state (parameters, targets, optimiser state, the PRNG key that
drives both updates and batch sampling, the step) is one pytree with a leading member axis
(one member per seed). `make_program` compiles ONE program per run (two on a GPU: full chunks
without per-step conditionals, and the remainders): a scan over a fixed `chunk_size` steps of
which only the first `n` (a run-time argument) are taken, so any chunk length costs no new
compilation, and the state after step k is the same however the steps were grouped into calls
(the loop sizes calls by time, to stay responsive to signals).
"""

from __future__ import annotations

import dataclasses
import re

import gin
import jax
import jax.numpy as jnp
import numpy as np

from floq.agents.base import noise_shape
from floq.config import ConfigError, parse
from floq.critics.base import Q_AGGREGATIONS, REWARD_RANGE_RULES
from floq.memo import memoized
from floq.nets.embeddings import TIME_EMBEDDINGS

#: XLA options floq's programs rely on, by backend: the one place they are set (`set_xla_flags`,
#: before JAX starts a backend: the benchmarks' entry points) and recorded (run.json and the
#: benchmark rows carry `xla_flags()`). None today: a flag joins only with a device measurement
#: that shows its gain (benchmarks/results), e.g. command buffers for while loops on a GPU.
XLA_FLAGS_BY_BACKEND: dict = {"gpu": (), "cpu": ()}


def set_xla_flags(backend: str = "gpu") -> str:
    """Add XLA_FLAGS_BY_BACKEND[backend] to $XLA_FLAGS (flags already there win: a user's
    setting is kept) and return the result. Call it before JAX initialises the backend."""
    import os

    have = os.environ.get("XLA_FLAGS", "").split()
    names = {f.split("=")[0] for f in have}
    add = [f for f in XLA_FLAGS_BY_BACKEND.get(backend, ()) if f.split("=")[0] not in names]
    if add:
        os.environ["XLA_FLAGS"] = " ".join(have + add)
    return os.environ.get("XLA_FLAGS", "")


def xla_flags() -> str:
    """The XLA flags this process runs with ($XLA_FLAGS), as run.json records them."""
    import os

    return os.environ.get("XLA_FLAGS", "")


#: The most members (seeds x tasks) one vmapped program takes: beyond it a typo (NUM_SEEDS =
#: 100000) would spend many silent minutes building states before failing for memory.
MAX_MEMBERS = 1024

#: Macros whose values are checked even where no configurable of this experiment reads them
#: (e.g. TIME_EMBED under a monolithic critic): the choices, or where they come from.
MACRO_CHOICES = {"TIME_EMBED": TIME_EMBEDDINGS, "REWARD_RANGE": REWARD_RANGE_RULES, "Q_AGG": Q_AGGREGATIONS}


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
      eval_workers: env worker processes (-1: one per core but one; 0: in this process).
      eval_envs_per_worker: episodes a worker steps in lock-step (its policy batch).
      async_eval: 'auto' | True | False. Asynchronous: training goes on while workers
        evaluate a snapshot of the parameters; 'auto' = on whenever there are workers.
      max_chunk_seconds: a compiled call is sized to take about this long (at most
        chunk_size steps), so that signals and evaluation results are handled promptly.
      loggers: extra loggers besides the CSVs: 'wandb', 'tensorboard'.
      online_steps, utd_ratio, balanced_sampling: offline-to-online fine-tuning (environment
        steps after train_steps offline steps; gradient steps per environment step; half
        offline, half online batches).
      buffer_size: the online replay buffer's capacity, as the released code's `--buffer_size`
        (default 2M): without balanced sampling the buffer starts as the dataset and holds
        max(buffer_size, N + 1) rows, overwriting the oldest rows (dataset rows first) once
        full; with balanced sampling the online transitions have their own buffer of
        buffer_size rows (see `sample_mixed`).
      experiment: experiment name (a results sub-directory and a CSV column).
      out_dir: where run directories go.
      precision: 'float32' or 'bfloat16': bf16 activations end to end in the critic's and the
        actor's networks (matmuls, GELU, LayerNorm's normalisation; f32 row statistics), with
        parameters, optimiser, z, the HL-Gauss embedding and the Euler updates in f32
        (`with_precision`, floq.nets.mlp).
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
    eval_envs_per_worker: int = 5
    async_eval: object = "auto"
    max_chunk_seconds: float = 3.0
    loggers: tuple = ()
    online_steps: int = 0
    utd_ratio: int = 1
    balanced_sampling: bool = False
    buffer_size: int = 2_000_000
    eval_at_start: bool = True
    experiment: str = "default"
    out_dir: str = "runs"
    precision: str = "float32"
    progress: bool = True

    def __post_init__(self):
        from floq.config import check_fields

        check_fields(self)
        for name in ("train_steps", "batch_size", "num_seeds", "chunk_size", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Trainer.{name} must be positive, got {getattr(self, name)}")
        for name in ("log_interval", "eval_interval", "checkpoint_interval"):
            if getattr(self, name) < 0:
                raise ValueError(f"Trainer.{name} must be >= 0, got {getattr(self, name)}")
        for name, low in (("eval_envs_per_worker", 1), ("utd_ratio", 1), ("online_steps", 0), ("eval_workers", -1)):
            if getattr(self, name) < low:
                raise ValueError(f"Trainer.{name} must be >= {low}, got {getattr(self, name)}"
                                 + (" (-1: one per core but one; 0: in this process)" if name == "eval_workers" else ""))
        if self.num_seeds > MAX_MEMBERS:
            raise ValueError(f"Trainer.num_seeds = {self.num_seeds} seeds in one vmapped program is more than "
                             f"{MAX_MEMBERS}; train them as several runs (Sweep.seeds, or SEED + NUM_SEEDS per run)")
        if self.buffer_size < 2:  # the released buffer samples its first min(written, size - 1) rows
            raise ValueError(f"Trainer.buffer_size must be >= 2, got {self.buffer_size}")
        if self.async_eval not in ("auto", True, False):
            raise ValueError(f"Trainer.async_eval must be 'auto', True or False, got {self.async_eval!r}")
        if not self.max_chunk_seconds > 0:
            raise ValueError(f"Trainer.max_chunk_seconds must be > 0, got {self.max_chunk_seconds}")
        unknown = [lg for lg in self.loggers if lg not in ("wandb", "tensorboard")]
        if unknown or isinstance(self.loggers, str):
            raise ValueError(f"Trainer.loggers must be a list of 'wandb' / 'tensorboard', got {self.loggers!r}")
        if self.precision not in ("float32", "bfloat16"):
            raise ValueError(f"Trainer.precision must be 'float32' or 'bfloat16', got {self.precision!r}")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]


def with_precision(algorithm, critic, precision: str):
    """(algorithm, critic) computing in `precision` (Trainer.precision): 'bfloat16' sets the
    critic's `compute_dtype` and the algorithm's, where it has one (FQL's actor networks);
    'float32' returns them as they are."""
    if precision != "bfloat16":
        return algorithm, critic
    if critic is not None and hasattr(critic, "compute_dtype"):
        critic = dataclasses.replace(critic, compute_dtype="bfloat16")
    if hasattr(algorithm, "compute_dtype"):
        algorithm = dataclasses.replace(algorithm, compute_dtype="bfloat16")
    return algorithm, critic


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
    for macro, choices in MACRO_CHOICES.items():
        try:
            value = gin.query_parameter(f"%{macro}")
        except (ValueError, KeyError):
            continue
        if isinstance(value, str) and value not in choices:
            raise ConfigError(f"{macro} must be one of {choices}, got {value!r}")
    try:
        exp = experiment()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001
        from floq.config import one_line

        missing = re.search(r"in scope '(RECIPE_\w+)'", str(e))
        undefined = re.search(r"macro\(\) missing 1 required positional argument: 'value'.*in scope '(\w+)'", str(e), re.S)
        if undefined and not missing:
            raise ConfigError(f"undefined macro {undefined.group(1)}: something reads %{undefined.group(1)} but "
                              f"no file or --bind defines it") from None
        if missing:
            raise ConfigError(f"no recipe: {missing.group(1)} is undefined; name whose tuned per-environment values "
                              f"this experiment uses by including a recipe, e.g. gin/recipes/fql_paper.gin or "
                              f"gin/recipes/floq_paper.gin (see gin/defaults.gin)") from None
        raise ConfigError(f"bad configuration: {one_line(e)}") from None
    for field, kind in (("task", "Task"), ("trainer", "Trainer")):
        if type(getattr(exp, field)).__name__ != kind:
            raise ConfigError(f"experiment.{field} must be a @{kind}()")
    return exp


# --------------------------------------------------------------------------------------
# Compiled pieces
# --------------------------------------------------------------------------------------

# Arrays that differ between the tasks of one environment (OGBench's singletask relabelling):
# in a multi-task program they are (transitions, tasks); every other array is shared.
PER_TASK = ("rewards", "masks")


def sample_batch(data: dict, key, batch_size: int, task=None) -> dict:
    """Uniform sampling with replacement, inside the compiled step. `task` (a traced index)
    picks the task's column of the per-task arrays of a multi-task dataset: the same indices,
    so a task's batch is the one its lone run would draw."""
    n = data["observations"].shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    if task is None:
        return jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), data)
    out = {k: jnp.take(v, idx, axis=0) for k, v in data.items() if k not in PER_TASK}
    out.update({k: data[k][idx, task] for k in PER_TASK})
    return out


def with_batch_keys(train: dict, keys) -> dict:
    """The training arrays an algorithm's batches need (its `batch_keys`): the loaded
    dataset's, plus 'next_actions' when asked for, the action of the next row,
    actions[min(i + 1, N - 1)] (FQL's Dataset with return_next_actions, which ReBRAC uses;
    across an episode boundary that is the next episode's first action, as there)."""
    keys = tuple(keys)
    out = dict(train)
    if "next_actions" in keys and "next_actions" not in out:
        acts = out["actions"]
        out["next_actions"] = acts[np.minimum(np.arange(acts.shape[0]) + 1, acts.shape[0] - 1)]
    missing = [k for k in keys if k not in out]
    if missing:
        raise ConfigError(f"the algorithm needs batch arrays {missing}, which no dataset provides")
    return out


def task_view(data: dict, t: int) -> dict:
    """Task t's dataset of a multi-task dataset (for one-off uses such as FLOP counting)."""
    return {k: (v[:, t] if k in PER_TASK else v) for k, v in data.items()}


def multi_task_data(datasets: list[dict], names: list[str]) -> dict:
    """One dataset for several tasks of one environment: the shared arrays once, rewards and
    masks stacked as (transitions, tasks). Refuses datasets whose shared arrays differ."""
    first = datasets[0]
    for d, name in zip(datasets[1:], names[1:]):
        for k in first:
            if k in PER_TASK:
                continue
            if d[k].shape != first[k].shape or not np.array_equal(d[k], first[k]):
                raise ConfigError(f"Task.task_ids: {name}'s '{k}' differ from {names[0]}'s; tasks trained in one "
                                  f"program must share one dataset (train them as separate runs)")
    out = {k: v for k, v in first.items() if k not in PER_TASK}
    out.update({k: np.stack([d[k] for d in datasets], axis=1) for k in PER_TASK})
    return out


def make_step(algorithm, critic, batch_size: int):
    """(state, data[, task]) -> (state, metrics) for one agent: sample a batch, then update."""

    def step(state, data, task=None):
        rng, k_data = jax.random.split(state["rng"])
        batch = sample_batch(data, k_data, batch_size, task)
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


@memoized  # one program per configuration and process (floq.memo)
def make_program(algorithm, critic, batch_size: int, chunk_size: int, groups=None, split=None):
    """The run's program: (states, alive, data, n) -> (states, metrics, alive, bad_at).

    A scan over `chunk_size` steps of which the first `n` update the state (lax.cond on an
    unbatched predicate stays a real branch under vmap, so skipped steps cost nothing).
    `metrics` are per step, shape (members, chunk_size) (rows >= n are zeros).

    split (default: on every backend but the CPU): the program is two compiled programs, a
    full chunk of `chunk_size` steps with no per-step conditional, run whenever
    n == chunk_size, and the conditional one above for the remainders (n < chunk_size). On a
    GPU a conditional copies its predicate to the host and waits, every step; the full chunk
    runs without a sync. On the CPU there is no such cost, and one program compiles once. The
    two forms give the same states, alive and bad_at for any sequence of calls (the states to
    the bit on this project's x86-64 CPU), and per-step metrics equal within rounding (XLA
    fuses a metric's reduction differently outside the conditional: 1 ulp of actor/mse seen)
    (tests/test_train_split.py).

    Divergence is per member (members are independent): a step whose metrics or new
    parameters are not all finite is not applied, and the member is frozen from then on
    (`alive` (members,) bool in and out; its state stays the last finite one, its metrics
    at later steps are NaN); `bad_at` (members,) is the index in the call of the step at which
    a member diverged (chunk_size when it did not). A healthy member's state is exactly what
    it would be without the check.

    Multi-task programs pass `groups`: [(critic, member indices, task indices)], one entry
    per distinct critic configuration (tasks whose reward ranges differ get differently
    configured critics); each group is its own vmap over its members inside the one program.
    """
    if split is None:
        split = jax.default_backend() != "cpu"
    if groups is not None:
        rest = _make_group_program(algorithm, groups, batch_size, chunk_size)
        if not split:
            return rest
        return SplitProgram(_make_group_program(algorithm, groups, batch_size, chunk_size, full=True), rest,
                            chunk_size)
    rest = _make_program(algorithm, critic, batch_size, chunk_size)
    if not split:
        return rest
    return SplitProgram(_make_program(algorithm, critic, batch_size, chunk_size, full=True), rest, chunk_size)


def _make_program(algorithm, critic, batch_size: int, chunk_size: int, full: bool = False):
    step = make_step(algorithm, critic, batch_size)
    one = _scan_one(step, chunk_size, full)

    vone = jax.vmap(one, in_axes=(0, 0, None, None))

    def program(states, alive, data, n):
        if jax.tree_util.tree_leaves(states)[0].shape[0] == 1:  # squeeze a size-1 member axis
            out = one(jax.tree_util.tree_map(lambda x: x[0], states), alive[0], data, n)
            return jax.tree_util.tree_map(lambda x: x[None], out)
        return vone(states, alive, data, n)

    return jax.jit(program, donate_argnums=(0,))


class SplitProgram:
    """`make_program`'s split form: `full` (chunk_size steps, no per-step conditional) for
    calls of n == chunk_size steps, `rest` (the conditional program) for the others. Used as a
    jitted function is: called directly, or `.lower(*args).compile()` to an executable of the
    same call signature (floq.loop compiles it so, both programs at once)."""

    def __init__(self, full, rest, chunk_size: int):
        self.full, self.rest, self.chunk_size = full, rest, int(chunk_size)

    def _pick(self, n):
        return self.full if int(n) == self.chunk_size else self.rest

    def __call__(self, states, alive, data, n):
        return self._pick(n)(states, alive, data, n)

    def lower(self, *args):
        program = self

        class Lowered:
            def compile(self):
                return SplitProgram(program.full.lower(*args).compile(), program.rest.lower(*args).compile(),
                                    program.chunk_size)

        return Lowered()


def _all_finite(tree):
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.inexact)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.asarray(True)


def guarded(step):
    """`step` (state, *args) -> (state, metrics) made per-member safe: (state, alive, *args) ->
    (state, metrics, ok). The new state is kept only when the member was alive and the step's
    metrics and new parameters are all finite (ok); otherwise the member keeps its last finite
    state (frozen). Metrics of a member frozen before this step are NaN."""

    def g(state, alive, *args):
        new, metrics = step(state, *args)
        ok = alive & _all_finite(new["params"]) & _all_finite(metrics)
        state = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new, state)
        metrics = jax.tree_util.tree_map(
            lambda m: jnp.where(alive, m, jnp.nan).astype(m.dtype) if jnp.issubdtype(m.dtype, jnp.inexact) else m,
            metrics)
        return state, metrics, ok

    return g


def _scan_one(step, chunk_size: int, full: bool = False):
    """One agent's chunk: (state, alive, data, n[, task]) -> (state, per-step metrics, alive,
    bad_at) (see `make_program`). full: every one of the chunk_size steps is taken (n is not
    read), with no per-step conditional."""
    safe = guarded(step)

    def one(state, alive, data, n, task=None):
        metric_shapes = jax.eval_shape(step, state, data, task)[1]

        def body(carry, i):
            def take(carry):
                s, a, bad = carry
                s, m, ok = safe(s, a, data, task)
                return (s, ok, jnp.where(a & ~ok, i, bad)), m

            def skip(carry):
                return carry, jax.tree_util.tree_map(lambda m: jnp.zeros(m.shape, m.dtype), metric_shapes)

            if full:
                return take(carry)
            return jax.lax.cond(i < n, take, skip, carry)

        init = (state, jnp.asarray(alive, bool), jnp.asarray(chunk_size, jnp.int32))
        (state, alive, bad_at), metrics = jax.lax.scan(body, init, jnp.arange(chunk_size, dtype=jnp.int32))
        return state, metrics, alive, bad_at

    return one


def _join_members(outs, order):
    """Per-group outputs (member axis first) -> one tree in member order (`order` lists the
    members of the groups, concatenated)."""
    if len(outs) == 1 and list(order) == list(range(len(order))):
        return outs[0]
    joined = jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs, axis=0), *outs)
    inverse = np.argsort(np.asarray(order))
    return jax.tree_util.tree_map(lambda x: x[inverse], joined)


def _make_group_program(algorithm, groups, batch_size: int, chunk_size: int, full: bool = False):
    order = [int(m) for _, members, _ in groups for m in members]
    parts = []
    for critic, members, tasks in groups:
        one = _scan_one(make_step(algorithm, critic, batch_size), chunk_size, full)
        parts.append((jax.vmap(one, in_axes=(0, 0, None, None, 0)), np.asarray(members, np.int32),
                      jnp.asarray(tasks, jnp.int32)))

    def program(states, alive, data, n):
        outs = []
        for vone, members, tasks in parts:
            sub = jax.tree_util.tree_map(lambda x: x[members], states) if len(parts) > 1 else states
            sub_alive = alive[members] if len(parts) > 1 else alive
            outs.append(vone(sub, sub_alive, data, n, tasks))
        return _join_members(outs, order)

    return jax.jit(program, donate_argnums=(0,))


def init_group_states(algorithm, groups, seeds, ex_obs, ex_act):
    """Initial states of a multi-task program: member m (of seed seeds[m]) initialised by its
    group's critic, exactly as a lone run of that seed (same key)."""
    outs = [init_states(algorithm, critic, [seeds[m] for m in members], ex_obs, ex_act)
            for critic, members, _ in groups]
    return _join_members(outs, [int(m) for _, members, _ in groups for m in members])


def init_buffer(num_members: int, length: int, example: dict) -> dict:
    """The online replay buffer: `length` transitions per member, zeros until written
    (the number written is the run's environment-step count, the same for every member)."""
    return {k: jnp.zeros((num_members, length) + tuple(v.shape[1:]), v.dtype) for k, v in example.items()}


def buffer_capacity(n_data: int, buffer_size: int, balanced: bool) -> int:
    """Rows of the released code's replay buffer (CMU-AIRe/floq main.py, as FQL's): the
    dataset plus online rows in max(buffer_size, N + 1) rows, or, balanced, online rows
    alone in buffer_size rows."""
    return int(buffer_size) if balanced else max(int(buffer_size), int(n_data) + 1)


def sample_mixed(data: dict, buffer: dict, n_online, key, batch_size: int, balanced: bool,
                 buffer_size: int = 2_000_000) -> dict:
    """A batch from the offline data and the first `n_online` buffer rows, as the released
    code's ring buffer (CMU-AIRe/floq utils/datasets.py `ReplayBuffer`, FQL's the same) holds them.

    Not balanced: the released buffer starts as the dataset (N rows, pointer at N) in
    C = max(buffer_size, N + 1) rows; online transition k goes to row (N + k) mod C, so once
    full the oldest rows are overwritten, dataset rows first; batches are uniform over its
    min(N + n_online, C) filled rows. Balanced: half from the dataset, half uniform over a
    separate buffer of C = buffer_size online rows (FQL's `balanced_sampling`), also FIFO.
    The released buffer's `size = max(pointer, size)` never reaches C (the pointer wraps to
    0 when row C - 1 is written), so batches are uniform over its first min(written, C - 1)
    rows: row C - 1 is never drawn. floq draws exactly so.

    floq keeps every online transition in `buffer` (row k = online transition k: a resume
    replays the current episode from it) and draws the released buffer's row v, then reads
    the transition that row holds: online transition k = the latest k < n_online with
    k = (v - N) mod C (k = v mod C when balanced), else dataset row v. Without eviction
    (N + n_online < C) the draws are those of uniform sampling over N + n_online rows."""
    n_data = data["observations"].shape[0]
    cap = buffer_capacity(n_data, buffer_size, balanced)
    n_online = jnp.asarray(n_online, jnp.int32)

    def latest(r):  # the latest online transition k < n_online with k = r (mod cap); needs r < n_online
        return r + cap * ((n_online - 1 - r) // cap)

    if balanced:
        k1, k2 = jax.random.split(key)
        half = batch_size // 2
        a = sample_batch(data, k1, half)
        v = jax.random.randint(k2, (batch_size - half,), 0, jnp.minimum(n_online, cap - 1))
        idx = latest(v)
        b = jax.tree_util.tree_map(lambda x: jnp.take(x, idx, axis=0), buffer)
        return jax.tree_util.tree_map(lambda u, w: jnp.concatenate([u, w], axis=0), a, b)
    v = jax.random.randint(key, (batch_size,), 0, jnp.minimum(n_data + n_online, cap - 1))
    r = jnp.where(v >= n_data, v - n_data, v - n_data + cap)  # (v - N) mod C, v in [0, C)
    from_data = r >= n_online
    i_data = jnp.clip(v, 0, n_data - 1)
    i_buf = jnp.clip(latest(r), 0, buffer["observations"].shape[0] - 1)

    def pick(d, b):
        u, w = jnp.take(d, i_data, axis=0), jnp.take(b, i_buf, axis=0)
        return jnp.where(from_data.reshape((-1,) + (1,) * (u.ndim - 1)), u, w)

    return {k: pick(data[k], buffer[k]) for k in buffer}


@memoized  # one program per configuration and process (floq.memo)
def make_online_program(algorithm, critic, batch_size: int, utd_ratio: int, balanced: bool,
                        buffer_size: int = 2_000_000):
    """The online phase's compiled program: (states, alive, buffer, data, transitions, idx) ->
    (states, buffer, metrics (members, utd), alive (members,), bad_at (members,)).

    Divergence is per member as in `make_program`: a frozen member's state is not updated.

    Writes each member's new transition at buffer row `idx` (= environment steps so far),
    then takes `utd_ratio` gradient steps on batches from the dataset and the `idx + 1`
    online transitions, as the released code's buffer of `buffer_size` rows holds them
    (see `sample_mixed`)."""

    def one(state, alive, buf, data, trans, idx):
        buf = {k: jax.lax.dynamic_update_index_in_dim(buf[k], trans[k].astype(buf[k].dtype), idx, 0) for k in buf}

        def update(s):
            rng, k_data = jax.random.split(s["rng"])
            batch = sample_mixed(data, buf, idx + 1, k_data, batch_size, balanced, buffer_size)
            return algorithm.update(critic, {**s, "rng": rng}, batch)

        safe = guarded(update)

        def body(carry, i):
            s, a, bad = carry
            s, m, ok = safe(s, a)
            return (s, ok, jnp.where(a & ~ok, i, bad)), m

        init = (state, jnp.asarray(alive, bool), jnp.asarray(utd_ratio, jnp.int32))
        (state, alive, bad_at), metrics = jax.lax.scan(body, init, jnp.arange(utd_ratio, dtype=jnp.int32))
        return state, buf, metrics, alive, bad_at

    vone = jax.vmap(one, in_axes=(0, 0, 0, None, 0, None))

    def program(states, alive, buffer, data, trans, idx):
        if jax.tree_util.tree_leaves(states)[0].shape[0] == 1:  # squeeze a size-1 member axis
            sq = lambda t: jax.tree_util.tree_map(lambda x: x[0], t)  # noqa: E731
            out = one(sq(states), alive[0], sq(buffer), data, sq(trans), idx)
            return jax.tree_util.tree_map(lambda x: x[None], out)
        return vone(states, alive, buffer, data, trans, idx)

    return jax.jit(program, donate_argnums=(0, 2))


def exploration_key(seed: int, env_step):
    """Key of member `seed`'s exploration noise at environment step `env_step`."""
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), 0x6F6E6C), env_step)


@memoized  # one program per configuration and process (floq.memo)
def make_explorer(algorithm, action_dim: int):
    """(policy params (members, ...), obs (members, O), seeds (members,), env_step) -> actions:
    the algorithm's exploration policy (`act(..., explore=True)`; FQL: the one-step policy
    with its sampling noise, `sample_actions(temperature=1)`), one action per member, its
    noise seeded by (seed, env_step) so a resume repeats it."""
    shape = noise_shape(algorithm, action_dim)

    @jax.jit
    def act(params, obs, seeds, env_step):
        def one(p, o, s):
            z = jax.random.normal(exploration_key(s, env_step), shape)
            return algorithm.act(p, o[None], z[None], explore=True)[0]

        return jax.vmap(one)(params, obs, seeds)

    return act


# Compiler options for a program that runs once per run (parameter initialisation). On the CPU
# it is compiled without LLVM's optimisation passes: XLA spends seconds optimising the
# threefry draws of a network's initialisers (4.3 s -> 0.7 s for a small FQL + floq
# initialisation, idle 2-core CPU) that run once, and the result is the same to the bit
# (tests/test_train.py::test_initialisation_is_compiled_fast_with_the_same_bits).
RUN_ONCE_CPU_OPTIONS = {"xla_backend_optimization_level": 0}


def run_once_jit(fn):
    """jax.jit for a program a run calls once (see RUN_ONCE_CPU_OPTIONS); on other backends
    the default compilation."""
    return jax.jit(fn, compiler_options=RUN_ONCE_CPU_OPTIONS if jax.default_backend() == "cpu" else None)


def init_states(algorithm, critic, seeds, ex_obs, ex_act):
    keys = jnp.stack([jax.random.PRNGKey(s) for s in seeds])
    return run_once_jit(jax.vmap(lambda k: algorithm.init(k, critic, ex_obs, ex_act)))(keys)


def update_flops(algorithm, critic, state1, data, batch_size: int) -> float | None:
    """FLOPs of one gradient step from XLA's cost analysis (loops unrolled so that the
    K-step integrations are counted K times)."""
    try:
        # Abstract arguments: arrays committed to a GPU cannot be lowered for the CPU.
        abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), getattr(x, "dtype", None) or np.asarray(x).dtype), (state1, data))
        return _update_flops(algorithm, critic, abstract, batch_size)
    except Exception:  # noqa: BLE001 - accounting must never break a run
        return None


@memoized
def _update_flops(algorithm, critic, abstract, batch_size: int) -> float | None:
    try:
        with unrolled_loops():
            step = make_step(algorithm, critic, batch_size)
            # HLO-level analysis of the lowered program: no compilation needed. Lowered for
            # the CPU whatever the device: the count is the same, and on a GPU (jax 0.11, H200)
            # the default lowering's cost_analysis() gave nothing.
            traced = jax.jit(step).trace(*abstract)
            try:
                cost = traced.lower(lowering_platforms=("cpu",)).cost_analysis()
            except Exception:  # noqa: BLE001 - no CPU backend: the device's own lowering
                cost = traced.lower().cost_analysis()
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
    repeat exactly whatever worker runs them (floq.evaluate.export_policy is the same
    function, serialized for the evaluation workers).
    """

    shape = noise_shape(algorithm, action_dim)

    @jax.jit
    def policy(params, obs, ep_ids, ts, key):
        def noise(e, t):
            return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, e), t), shape)

        z = jax.vmap(noise)(ep_ids, ts)
        return algorithm.act(params, obs, z)

    return policy
