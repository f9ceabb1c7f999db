"""`floq bench`: throughput and scaling of floq's trainer, measured side by side in one run.

What is measured (each a group of rows of one table / CSV; see benchmarks/README.md):

  matmul_peak   a jitted large f32 matmul (n x n @ n x n, 2 n^3 FLOPs), measured at the
                start and at the end of the run: the "peak" that achieved GFLOP/s are
                compared to
  throughput    updates/s of the real trainer path (`floq.train.init_states` + `make_chunk`:
                device-resident data, lax.scan chunks, vmapped seed axis), GFLOP per update
                (`floq.train.update_flops`: XLA cost analysis with loops unrolled), achieved
                GFLOP/s and their ratio to the matmul peak, for FQL's monolithic critic and
                floq at the paper and the small configuration
  throughput_squeezed  the trainer's chunk with one proposed change (no vmap for a lone
                seed: `make_chunk_squeezed`), timed round-robin with the rows above
  per_step      the same update driven by the published code's loop (host NumPy sampling,
                one jitted update per step: benchmarks/per_step_baseline.py)
  flow_steps    floq (small): time per update and compiled peak memory vs K, + a linear fit
  seeds         floq (small): updates/s vs the number of vmapped seeds
  eval          evaluation episodes/s, side by side: a bare simulator loop (random actions, no
                JAX: the limit per core), whole-episode evaluation (EvalService) in-process and
                with 1 and N workers, and the old lock-step path (LockstepEvaluator), with
                cpu_scaling sampled in the same round-robin
  eval_overhead wall time of a short real training run (floq.loop.Run) with asynchronous
                evaluation vs evaluation off, over its training time
  bf16          critic compute in bfloat16 vs float32
  cpu_scaling   the parallel speed-up the machine offers at that moment (busy processes)

All training measurements run on synthetic device-resident data with OGBench cube shapes
(obs 28, act 5). Compilation is excluded (AOT-compiled, then one warm-up call); programs
compared with each other are timed round-robin, and each figure is the median of a few
timed repeats. Process CPU time is recorded beside wall-clock time (see the README).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime
import os
import platform
import re
import signal
import sys
import time

import numpy as np

COLUMNS = (
    "benchmark", "critic", "config", "K", "seeds", "workers", "precision", "updates_per_s", "gflop_per_update",
    "gflop_per_s", "peak_ratio", "speedup_vs_per_step", "episodes_per_s", "peak_mem_mb", "device", "jax_version",
    # extras
    "ms_per_update", "cpu_ms_per_update", "best_updates_per_s", "cpu_util", "cpu_peak_ratio", "seed_updates_per_s",
    "temp_mem_mb", "ratio", "vs_bare", "vs_cpu_scaling", "r2", "chunk", "rows", "load1", "impl", "xla_flags", "notes",
)
# What the printed table shows (device and jax_version go in its header).
SHOW = ("benchmark", "critic", "config", "K", "seeds", "workers", "precision", "updates_per_s", "ms_per_update",
        "cpu_ms_per_update", "gflop_per_update", "gflop_per_s", "peak_ratio", "cpu_peak_ratio", "speedup_vs_per_step",
        "episodes_per_s", "ratio", "vs_bare", "vs_cpu_scaling", "peak_mem_mb", "temp_mem_mb", "r2", "cpu_util",
        "load1", "notes")
BENCHMARKS = ("throughput", "per_step", "flow_steps", "seeds", "tasks", "eval", "eval_overhead", "bf16")
CRITICS = ("monolithic", "floq")  # the default --critics
#: Every critic a row can price: the defaults plus the literature's comparison critics
#: (gin/critics/{hlgauss,c51,bro,simbav2}.gin at the configuration's width, depth and ensembles).
KNOWN_CRITICS = CRITICS + ("hlgauss", "c51", "bro", "simbav2")

OBS_DIM, ACT_DIM = 28, 5  # OGBench cube-* observation / action sizes
EVAL_DATASET = "cube-single-play-singletask-task1-v0"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# eval_overhead: (gin files, bindings) of the short real training run, by configuration name.
_WIDE = ["ACTOR_DEPTH=4", "CRITIC_DEPTH=4", "FLOW_FIELD_DEPTH=4", "DISTILL_DEPTH=4"]
OVERHEAD_CONFIGS = {
    # gin/experiments/smoke.gin as it is (monolithic critic, width 32): for the tests.
    "smoke": (["gin/experiments/smoke.gin"], []),
    # The `small` configuration (floq, batch 64, width 128 x 4, K 4, R 8) on the smoke data.
    "small": (["gin/experiments/smoke.gin", "gin/critics/floq.gin"],
              ["BATCH_SIZE=64", "ACTOR_WIDTH=128", "CRITIC_WIDTH=128", "DISTILL_WIDTH=128", *_WIDE,
               "CRITIC_FLOW_STEPS=4", "NOISE_SAMPLES=8"]),
    # The `paper` configuration (floq, batch 256, 4 x 512, K 8, R 8) on the smoke data.
    "paper": (["gin/experiments/smoke.gin", "gin/critics/floq.gin"],
              ["BATCH_SIZE=256", "ACTOR_WIDTH=512", "CRITIC_WIDTH=512", "DISTILL_WIDTH=512", *_WIDE,
               "CRITIC_FLOW_STEPS=8", "NOISE_SAMPLES=8"]),
}


@dataclasses.dataclass(frozen=True)
class Size:
    """A network / batch configuration (every network width x depth)."""

    name: str
    batch: int
    width: int
    depth: int
    K: int  # floq flow steps
    R: int  # floq noise samples
    ensembles: int = 2
    actor_flow_steps: int = 10


SIZES = {
    # The floq paper's configuration (batch 256, actor / field / distill 4x512, K 8, R 8, 2 ensembles).
    "paper": Size("paper", batch=256, width=512, depth=4, K=8, R=8),
    "small": Size("small", batch=64, width=128, depth=4, K=4, R=8),
    # For the functional test only.
    "tiny": Size("tiny", batch=8, width=16, depth=1, K=2, R=2, actor_flow_steps=2),
}


@dataclasses.dataclass(frozen=True)
class Mode:
    name: str
    rows: int  # synthetic dataset transitions
    sizes: tuple  # configurations of throughput / per_step / bf16
    k_values: tuple
    seed_counts: tuple
    eval_workers: tuple | None  # None: 1 and os.cpu_count()
    eval_in_process: bool
    eval_units: int  # units per worker of the largest count, per timed evaluation
    repeats: int
    target_s: float  # wall time of one timed call
    matmul_n: int
    bf16_sizes: tuple
    max_chunk: int = 1000
    bf16_critics: tuple = ("monolithic", "floq")
    eval_width: int = 5  # episodes per unit (Trainer.eval_envs_per_worker)
    eval_max_steps: int = 0  # eval group: episodes cut at this many steps (0: the task's own length)
    overhead_config: str = "small"  # eval_overhead: a key of OVERHEAD_CONFIGS
    overhead_steps: int = 2000  # eval_overhead: training steps (4 evaluations)
    overhead_repeats: int = 1  # eval_overhead: (no-eval, async) pairs, median reported
    seed_configs: tuple = ()  # seeds group: configurations (default: small; tiny in tiny mode)
    scaling_s: float = 1.0  # cpu_scaling: seconds of busy work per sample
    k_config: str = ""  # flow_steps: configuration (default: small; tiny in tiny mode)
    task_counts: tuple = (1, 5)  # tasks: members of the multi-task program (1 = the lone program)
    task_configs: tuple = ()  # tasks: configurations, each for every --critics critic (default: floq at small)
    scaling_critics: tuple = ()  # seeds and tasks groups with configurations: these critics (default: --critics)


MODES = {
    "full": Mode("full", rows=1_000_000, sizes=("small", "paper"), k_values=(1, 2, 4, 8, 16, 32),
                 seed_counts=(1, 2, 4, 8), eval_workers=None, eval_in_process=True, eval_units=2, repeats=5,
                 target_s=1.0, matmul_n=2048, bf16_sizes=("small", "paper"), overhead_repeats=2),
    "quick": Mode("quick", rows=100_000, sizes=("small",), k_values=(1, 4, 16), seed_counts=(1, 2),
                  eval_workers=(1, 2), eval_in_process=True, eval_units=1, repeats=3, target_s=0.4,
                  matmul_n=2048, bf16_sizes=("small",), bf16_critics=("floq",), overhead_steps=800),
    "tiny": Mode("tiny", rows=1_000, sizes=("tiny",), k_values=(1, 2), seed_counts=(1, 2), eval_workers=(1, 2),
                 eval_in_process=True, eval_units=1, repeats=2, target_s=0.02, matmul_n=256,
                 bf16_sizes=("tiny",), max_chunk=20, eval_width=2, overhead_config="smoke", overhead_steps=80,
                 scaling_s=0.3, eval_max_steps=25),
}


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------

def build(critic_name: str, size: Size, K: int | None = None, precision: str = "float32"):
    """(FQL, critic) specs for a configuration; precision as Trainer.precision does it."""
    from floq.agents.fql import FQL
    from floq.critics.flow import FloqCritic
    from floq.critics.monolithic import MonolithicCritic
    from floq.nets.specs import MLPNet

    algo = FQL(alpha=300.0, actor_net=MLPNet(size.width, size.depth, layer_norm=False),
               flow_steps=size.actor_flow_steps)
    net = MLPNet(size.width, size.depth, layer_norm=True)
    if critic_name == "floq":
        critic = FloqCritic(field_net=net, distill_net=net, flow_steps=K or size.K, noise_samples=size.R,
                            num_ensembles=size.ensembles)
    elif critic_name == "monolithic":
        critic = MonolithicCritic(net=net, num_ensembles=size.ensembles)
    elif critic_name in ("hlgauss", "c51"):
        from floq.critics.c51 import C51Critic
        from floq.critics.hlgauss import HLGaussCritic

        cls = HLGaussCritic if critic_name == "hlgauss" else C51Critic
        critic = cls(net=net, num_ensembles=size.ensembles, num_bins=51)  # gin/critics/*.gin's 51 bins / atoms
    elif critic_name == "bro":
        from floq.nets.bro import BroNet

        critic = MonolithicCritic(net=BroNet(size.width, 2 * (size.depth // 2) or 2), num_ensembles=size.ensembles,
                                  name="bro")
    elif critic_name == "simbav2":
        from floq.critics.c51 import C51Critic
        from floq.nets.bro import BroNet

        critic = C51Critic(net=BroNet(size.width, 2 * (size.depth // 2) or 2, hyperspherical=True),
                           num_ensembles=size.ensembles, num_bins=51, name="simbav2")
    else:
        raise ValueError(f"unknown critic {critic_name!r}")
    from floq.train import with_precision

    critic = critic.configure(0.99, -1.0, 0.0)  # cube rewards are -1 / 0
    return with_precision(algo, critic, precision)


def synthetic_data(rows: int, seed: int = 0) -> dict:
    """Host (NumPy) arrays with the trainer's keys and OGBench cube shapes."""
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((rows, OBS_DIM), dtype=np.float32)
    return {
        "observations": obs,
        "actions": rng.uniform(-1, 1, (rows, ACT_DIM)).astype(np.float32),
        "rewards": -(rng.random(rows) > 0.05).astype(np.float32),
        "masks": (rng.random(rows) > 0.01).astype(np.float32),
        "next_observations": obs + 0.01 * rng.standard_normal((rows, OBS_DIM), dtype=np.float32),
    }


def to_device(data: dict) -> dict:
    import jax
    import jax.numpy as jnp

    return jax.device_put({k: jnp.asarray(v) for k, v in data.items()})


def memory_mb(compiled) -> tuple[float | None, float | None]:
    """(temp + argument, temp) MiB from XLA's memory analysis of a compiled program."""
    try:
        m = compiled.memory_analysis()
        if isinstance(m, (list, tuple)):
            m = m[0]
        temp, arg = float(m.temp_size_in_bytes), float(m.argument_size_in_bytes)
        return (temp + arg) / 2**20, temp / 2**20
    except Exception:  # noqa: BLE001 - some backends do not report it
        return None, None


def matmul_peak(n: int, repeats: int, calls: int = 3, dtype: str = "float32") -> list[tuple[float, float]]:
    """A jitted n x n @ n x n matmul (2 n^3 FLOPs) in `dtype` (random operands, never zeros):
    per repeat, (wall, process CPU) seconds per matmul, timed over `calls` back-to-back calls."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    b = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32), dtype=dtype)
    f = jax.jit(jnp.matmul).lower(a, b).compile()
    f(a, b).block_until_ready()
    out = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            f(a, b).block_until_ready()
        out.append(((time.perf_counter() - t0) / calls, (time.process_time() - c0) / calls))
    return out


def _spin(seconds: float) -> int:
    """Busy pure-Python work for `seconds` of wall time; returns the iterations done."""
    t_end = time.perf_counter() + seconds
    n, x = 0, 0
    while time.perf_counter() < t_end:
        for i in range(200):
            x = (x * 31 + i) % 1000003
        n += 1
    return n


def core_scaling(workers: int, seconds: float = 1.0) -> float:
    """How much parallel CPU this machine offers right now: the work N busy processes get
    done in `seconds`, over the work one process gets done (N on an idle N-core machine)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        pool.map(_spin, [0.05] * workers, chunksize=1)  # start-up
        one = pool.map(_spin, [seconds], chunksize=1)[0]
        many = sum(pool.map(_spin, [seconds] * workers, chunksize=1))
    return many / max(one, 1)


def flops_per_update(algo, critic, size: Size, data) -> float | None:
    from floq.train import init_states, update_flops

    states = init_states(algo, critic, [0], data["observations"][:2], data["actions"][:2])
    return update_flops(algo, critic, _first_seed(states), data, size.batch)


def _first_seed(states):
    import jax

    return jax.tree_util.tree_map(lambda x: x[0], states)


def chunk_length(gflop: float | None, peak: float, mode: Mode) -> int:
    """Steps per compiled chunk so that one timed call takes about mode.target_s (estimated
    at 30% of the matmul peak), rounded down to a power of two so that reruns usually find
    the same programs in the compilation cache (compile time does not depend on it)."""
    if not gflop or not np.isfinite(gflop) or not peak > 0:
        return min(64, mode.max_chunk)
    est = gflop / (0.3 * peak)
    n = int(np.clip(mode.target_s / est, 1, mode.max_chunk))
    return 2 ** int(np.log2(n))


def make_chunk_squeezed(algorithm, critic, batch_size: int, length: int):
    """The size-1 seed-axis squeeze this benchmark first measured is now what
    `floq.train.make_chunk` does; kept as a name so the `throughput_squeezed` rows (ratio ~1
    now) stay comparable with the recorded results."""
    from floq.train import make_chunk

    return make_chunk(algorithm, critic, batch_size, length)


class ChunkTimer:
    """The trainer's path: `init_states` + `make_chunk` (AOT-compiled; one warm-up call).
    Each `once()` runs one chunk of `length` steps for every seed."""

    def __init__(self, algo, critic, size: Size, data, seeds: int, length: int, maker=None):
        from floq.train import init_states, make_chunk

        maker = maker or make_chunk
        self.data, self.length, self.seeds = data, length, seeds
        self.states = init_states(algo, critic, list(range(seeds)), data["observations"][:2], data["actions"][:2])
        t0 = time.perf_counter()
        self.compiled = maker(algo, critic, size.batch, length).lower(self.states, data).compile()
        self.compile_s = time.perf_counter() - t0
        self.peak_mb, self.temp_mb = memory_mb(self.compiled)
        self.loss = None
        self.once()  # warm-up

    def once(self) -> None:
        import jax

        self.states, metrics = self.compiled(self.states, self.data)
        jax.block_until_ready((self.states, metrics))
        self.loss = metrics["critic/loss"]

    @property
    def finite(self) -> bool:
        return bool(np.all(np.isfinite(np.asarray(self.loss))))


class PerStepTimer:
    """The published loop (benchmarks/per_step_baseline.py): `length` x (host NumPy sample ->
    one jitted update), then wait for the device."""

    def __init__(self, algo, critic, size: Size, data, host: dict, length: int):
        import jax

        from benchmarks import per_step_baseline
        from floq.train import init_states

        self.length, self.seeds, self.batch = length, 1, size.batch
        self._train = per_step_baseline.train_steps
        self.update = per_step_baseline.make_update(algo, critic)
        self.sampler = per_step_baseline.HostSampler(host)
        self.state = _first_seed(init_states(algo, critic, [0], data["observations"][:2], data["actions"][:2]))
        t0 = time.perf_counter()
        self.state, _ = self._train(self.update, self.state, self.sampler, self.batch, 2)  # compile + warm-up
        jax.block_until_ready(self.state)
        self.compile_s = time.perf_counter() - t0
        self.peak_mb = self.temp_mb = None
        self.finite = True

    def once(self) -> None:
        import jax

        self.state, info = self._train(self.update, self.state, self.sampler, self.batch, self.length)
        jax.block_until_ready(self.state)
        self.finite = bool(np.isfinite(float(info["critic/loss"])))


class ProgramTimer:
    """The run's own program (`floq.train.make_program`, the multi-task form when tasks > 1):
    `tasks` members, one per task of a synthetic multi-task dataset (per-task rewards and
    masks), each `once()` one full chunk of `length` steps."""

    def __init__(self, algo, critic, size: Size, host: dict, tasks: int, length: int):
        from floq.train import PER_TASK, init_group_states, init_states, make_program, multi_task_data

        self.length, self.seeds = length, tasks
        if tasks == 1:
            data = to_device(host)
            self.program = make_program(algo, critic, size.batch, length)
            self.states = init_states(algo, critic, [0], data["observations"][:2], data["actions"][:2])
        else:
            rng = np.random.default_rng(1)
            per_task = [{**host, **{k: (host[k] if t == 0 else rng.permutation(host[k])) for k in PER_TASK}}
                        for t in range(tasks)]
            data = to_device(multi_task_data(per_task, [f"task{t + 1}" for t in range(tasks)]))
            groups = [(critic, list(range(tasks)), list(range(tasks)))]
            self.program = make_program(algo, critic, size.batch, length, groups=groups)
            self.states = init_group_states(algo, groups, [0] * tasks, data["observations"][:2],
                                            data["actions"][:2])
        self.data = data
        import jax.numpy as jnp

        self.alive = jnp.ones((tasks,), bool)  # per-member divergence flags (all healthy)
        t0 = time.perf_counter()
        self.compiled = self.program.lower(self.states, self.alive, data, length).compile()
        self.compile_s = time.perf_counter() - t0
        self.peak_mb, self.temp_mb = memory_mb(self.compiled)
        self.ok = None
        self.once()  # warm-up

    def once(self) -> None:
        import jax

        self.states, _, self.alive, _ = self.compiled(self.states, self.alive, self.data, self.length)
        jax.block_until_ready(self.states)
        self.ok = self.alive

    @property
    def finite(self) -> bool:
        return bool(np.all(np.asarray(self.ok)))


def interleave(timers: dict, repeats: int) -> dict:
    """Time every timer `repeats` times, round-robin (so that a shared machine's load drift
    hits all of them alike). Returns name -> {updates_per_s (median), best_updates_per_s,
    ms_per_update, cpu_util (process CPU seconds / wall seconds, median)}."""
    samples = {k: [] for k in timers}
    for _ in range(repeats):
        for k, t in timers.items():
            w0, c0 = time.perf_counter(), time.process_time()
            t.once()
            samples[k].append((time.perf_counter() - w0, time.process_time() - c0))
    out = {}
    for k, t in timers.items():
        wall = np.array([s[0] for s in samples[k]])
        cpu = np.array([s[1] for s in samples[k]])
        med = float(np.median(wall))
        out[k] = {"updates_per_s": t.length / med, "best_updates_per_s": t.length / float(wall.min()),
                  "ms_per_update": 1e3 * med / t.length, "cpu_util": float(np.median(cpu / wall)),
                  "cpu_ms_per_update": 1e3 * float(np.median(cpu)) / t.length,
                  "wall": wall.tolist()}
    return out


def fit_line(x, y) -> tuple[float, float, float]:
    """Least-squares y = a + b x; returns (a, b, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (a + b * x)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float(a), float(b), (1.0 - ss_res / ss_tot) if ss_tot > 0 else 1.0


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------

class Bench:
    def __init__(self, mode: Mode, only: tuple, critics: tuple = CRITICS, log=print, overhead_config=None,
                 overhead_steps=None, after_group=None):
        import jax

        from floq.results import device_description

        self.mode = mode
        self.only = only
        self.critics = critics
        self.log = log
        self.overhead_config, self.overhead_steps = overhead_config, overhead_steps
        self.after_group = after_group  # called with the rows so far after every group (partial CSVs)
        self.rows: list[dict] = []
        self.device = device_description()
        self.jax_version = jax.__version__
        self.peak_samples: list[float] = []  # matmul GFLOP per wall second
        self.peak_cpu_samples: list[float] = []  # matmul GFLOP per process-CPU second
        self.peak_bf16_samples: list[float] = []  # bf16 matmul GFLOP per wall second (bf16 rows' peak)
        self.gflop: dict = {}
        self._chunks: dict = {}  # (critic, config, K, seeds, precision) -> ChunkTimer (reused across groups)

    @property
    def peak(self) -> float:
        return float(np.median(self.peak_samples)) if self.peak_samples else float("nan")

    def add(self, **row) -> dict:
        row = {"device": self.device, "jax_version": self.jax_version, "load1": round(os.getloadavg()[0], 2), **row}
        self.rows.append(row)
        shown = {k: row[k] for k in ("benchmark", "critic", "config", "K", "seeds", "workers", "precision",
                                     "updates_per_s", "episodes_per_s", "gflop_per_s", "ratio", "cpu_util")
                 if row.get(k) not in (None, "")}
        self.log("  " + " ".join(f"{k}={_fmt(v)}" for k, v in shown.items()))
        return row

    def run(self) -> list[dict]:
        m = self.mode
        self.log(f"floq bench ({m.name}) on {self.device}, jax {self.jax_version}, load {os.getloadavg()}")
        self.host = synthetic_data(m.rows)
        self.data = to_device(self.host)
        self._group("matmul peak", self.bench_peak, "start")
        for size_name in m.sizes:
            self._group(f"{size_name} config", self.bench_config, SIZES[size_name])
        if "flow_steps" in self.only and "floq" in self.critics:
            self._group("flow steps", self.bench_flow_steps)
        if "seeds" in self.only and (m.seed_configs or "floq" in self.critics):
            self._group("seeds", self.bench_seeds)
        if "tasks" in self.only and (m.task_configs or "floq" in self.critics):
            self._group("tasks", self.bench_tasks)
        self._chunks.clear()
        if "eval" in self.only:
            self._group("evaluation", self.bench_eval)
        if "eval_overhead" in self.only:
            self._group("evaluation overhead", self.bench_eval_overhead)
        self._group("matmul peak", self.bench_peak, "end")
        self.peak_ratios()
        return self.rows

    def peak_ratios(self) -> None:
        """Ratios against the peak use every matmul sample of the run. cpu_peak_ratio is the
        same ratio per process-CPU second (robust to other processes sharing the cores)."""
        if self.peak_bf16_samples:  # bf16 rows against the bf16 matmul peak
            bf16_peak = float(np.median(self.peak_bf16_samples))
            for row in self.rows:
                if row["benchmark"] != "matmul_peak" and row.get("precision") == "bfloat16" \
                        and row.get("gflop_per_s") not in (None, ""):
                    row["peak_ratio"] = row["gflop_per_s"] / bf16_peak
        if not self.peak_cpu_samples:
            return
        cpu_peak = float(np.median(self.peak_cpu_samples))
        for row in self.rows:
            if row["benchmark"] == "matmul_peak" or row.get("precision") != "float32":
                continue
            if row.get("gflop_per_s") not in (None, ""):
                row["peak_ratio"] = row["gflop_per_s"] / self.peak
            if row.get("gflop_per_update") and row.get("cpu_ms_per_update"):
                row["cpu_peak_ratio"] = (row["gflop_per_update"] * row.get("seeds", 1)
                                         / (row["cpu_ms_per_update"] / 1e3) / cpu_peak)

    def _group(self, name, fn, *args):
        t0 = time.perf_counter()
        self.log(f"[{name}] load {os.getloadavg()[0]:.2f}")
        fn(*args)
        self.log(f"[{name}] {time.perf_counter() - t0:.0f} s")
        if self.after_group is not None:
            self.after_group(self.rows)

    # --- pieces ----------------------------------------------------------------------
    def bench_peak(self, when: str):
        """The f32 matmul peak (the f32 rows' ceiling) and, when bf16 rows are measured, the
        bf16 one (theirs)."""
        n = self.mode.matmul_n
        gflop = 2 * n**3 / 1e9
        for dtype in ("float32", "bfloat16") if "bf16" in self.only else ("float32",):
            samples = matmul_peak(n, self.mode.repeats, dtype=dtype)
            if dtype == "float32":
                self.peak_samples += [gflop / w for w, _ in samples]
                self.peak_cpu_samples += [gflop / c for _, c in samples]
            else:
                self.peak_bf16_samples += [gflop / w for w, _ in samples]
            wall = float(np.median([w for w, _ in samples]))
            what = f"{n}x{n} @ {n}x{n}" if dtype == "float32" else \
                f"bf16 {n}x{n} @ {n}x{n} (f32 accumulation as XLA chooses)"
            self.add(benchmark="matmul_peak", precision=dtype, gflop_per_update=gflop, gflop_per_s=gflop / wall,
                     ms_per_update=1e3 * wall, cpu_ms_per_update=1e3 * float(np.median([c for _, c in samples])),
                     cpu_util=float(np.median([c / w for w, c in samples])),
                     notes=f"{when}: {what}, median of {len(samples)}; best "
                           f"{max(gflop / w for w, _ in samples):.1f} GFLOP/s")

    def _size(self):
        return SIZES["tiny"] if self.mode.name == "tiny" else SIZES["small"]

    def _gflop(self, critic_name, size, K=None):
        key = (critic_name, size.name, K)
        if key not in self.gflop:
            algo, critic = build(critic_name, size, K)
            f = flops_per_update(algo, critic, size, self.data)
            self.gflop[key] = f / 1e9 if f else None
        return self.gflop[key]

    def chunk(self, critic_name: str, size: Size, K=None, seeds: int = 1, precision: str = "float32"):
        """The compiled trainer chunk for a configuration (compiled once, reused by every group)."""
        K = (K or size.K) if critic_name == "floq" else None
        key = (critic_name, size.name, K, seeds, precision)
        if key not in self._chunks:
            gflop = self._gflop(critic_name, size, K)
            length = chunk_length(_mul(gflop, seeds), self.peak, self.mode)
            algo, critic = build(critic_name, size, K, precision)
            self._chunks[key] = ChunkTimer(algo, critic, size, self.data, seeds, length)
        return self._chunks[key]

    def _train_row(self, benchmark, critic_name, size, timer, r, gflop, K=None, precision="float32", **extra):
        ups = r["updates_per_s"]
        total = ups * timer.seeds
        note = extra.pop("notes", "")
        if not timer.finite:
            note += "; NON-FINITE LOSS"
        return self.add(benchmark=benchmark, critic=critic_name, config=size.name,
                        K=(K or size.K) if critic_name == "floq" else "", seeds=timer.seeds, precision=precision,
                        updates_per_s=ups, best_updates_per_s=r["best_updates_per_s"],
                        ms_per_update=r["ms_per_update"], cpu_ms_per_update=r["cpu_ms_per_update"],
                        gflop_per_update=gflop, gflop_per_s=_mul(gflop, total),
                        peak_mem_mb=timer.peak_mb, temp_mem_mb=timer.temp_mb, cpu_util=r["cpu_util"],
                        rows=self.mode.rows, chunk=timer.length, notes=note, **extra)

    def bench_config(self, size: Size):
        """throughput, per_step and bf16 of one configuration, timed round-robin."""
        m = self.mode
        want_bf16 = "bf16" in self.only and size.name in m.bf16_sizes
        timers = {}
        for c in self.critics:
            if "throughput" in self.only or "per_step" in self.only or want_bf16:
                timers[("throughput", c)] = self.chunk(c, size)
            if "throughput" in self.only:
                algo, critic = build(c, size)
                t = timers[("throughput", c)]
                timers[("squeezed", c)] = ChunkTimer(algo, critic, size, self.data, 1, t.length,
                                                     maker=make_chunk_squeezed)
            if "per_step" in self.only:
                algo, critic = build(c, size)
                timers[("per_step", c)] = PerStepTimer(algo, critic, size, self.data, self.host,
                                                       max(3, timers[("throughput", c)].length))
            if want_bf16 and c in m.bf16_critics:
                timers[("bf16", c)] = self.chunk(c, size, precision="bfloat16")
        if not timers:
            return
        res = interleave(timers, m.repeats)
        for c in self.critics:
            gflop = self._gflop(c, size)
            scan, ps = res.get(("throughput", c)), res.get(("per_step", c))
            speedup = scan["updates_per_s"] / ps["updates_per_s"] if scan and ps else None
            if "throughput" in self.only and scan:
                t = timers[("throughput", c)]
                self._train_row("throughput", c, size, t, scan, gflop, speedup_vs_per_step=speedup,
                                notes=f"scan chunk {t.length}; compile {t.compile_s:.1f}s")
            if ("squeezed", c) in res:
                t, r = timers[("squeezed", c)], res[("squeezed", c)]
                self._train_row("throughput_squeezed", c, size, t, r, gflop,
                                speedup_vs_per_step=r["updates_per_s"] / ps["updates_per_s"] if ps else None,
                                ratio=r["updates_per_s"] / scan["updates_per_s"],
                                notes="proposed make_chunk: no vmap for 1 seed; ratio = vs throughput row")
            if ps:
                t = timers[("per_step", c)]
                self._train_row("per_step", c, size, t, ps, gflop, speedup_vs_per_step=1.0 if scan else None,
                                notes=f"host NumPy batch + 1 jitted update per step; {t.length} steps/sample")
            if ("bf16", c) in res:
                t, r = timers[("bf16", c)], res[("bf16", c)]
                self._train_row("bf16", c, size, t, r, gflop, precision="bfloat16",
                                ratio=r["updates_per_s"] / scan["updates_per_s"],
                                notes="critic compute_dtype bfloat16; ratio = updates/s vs float32 (same "
                                      "round-robin)")
        if size.name == "paper":  # free the big programs
            for key in [k for k in self._chunks if k[1] == "paper"]:
                del self._chunks[key]

    def bench_flow_steps(self):
        m = self.mode
        size = SIZES[m.k_config] if m.k_config else self._size()
        timers = {K: self.chunk("floq", size, K) for K in m.k_values}
        res = interleave(timers, m.repeats)
        ks, ms, temps, peaks = [], [], [], []
        for K, t in timers.items():
            gflop = self._gflop("floq", size, K)
            self._train_row("flow_steps", "floq", size, t, res[K], gflop, K=K, notes=f"scan chunk {t.length}")
            ks.append(K)
            ms.append(res[K]["ms_per_update"])
            temps.append(t.temp_mb)
            peaks.append(t.peak_mb)
        if len(ks) >= 2:
            a, b, r2 = fit_line(ks, ms)
            ac, bc, r2c = fit_line(ks, [res[K]["cpu_ms_per_update"] for K in ks])
            note = f"wall ms/update = {a:.3f} + {b:.3f}*K; CPU ms/update = {ac:.3f} + {bc:.3f}*K (R^2 {r2c:.4f})"
            if all(v is not None for v in temps + peaks):
                note += (f"; temp memory {min(temps):.1f}-{max(temps):.1f} MiB, temp+args "
                         f"{min(peaks):.1f}-{max(peaks):.1f} MiB")
            self.add(benchmark="flow_steps_fit", critic="floq", config=size.name, K=f"{ks[0]}-{ks[-1]}", seeds=1,
                     precision="float32", ms_per_update=b, cpu_ms_per_update=bc, r2=r2,
                     peak_mem_mb=max(peaks) if None not in peaks else None,
                     temp_mem_mb=max(temps) if None not in temps else None, notes=note)

    def _scaling_combos(self, configs):
        """(critic, size) pairs of the seeds / tasks groups: floq at the default size, or every
        --scaling-critics (else --critics) critic at each named configuration."""
        if not configs:
            return [("floq", self._size())]
        return [(c, SIZES[s]) for s in configs for c in (self.mode.scaling_critics or self.critics)]

    def _member_rows(self, benchmark, critic_name, size, timers, gflop, note):
        """Time programs of 1..N members round-robin; one row each, `ratio` = member-updates/s
        over the first program's per member."""
        res = interleave(timers, self.mode.repeats)
        base = None
        for n, t in timers.items():
            total = res[n]["updates_per_s"] * n
            base = base or total / n
            self._train_row(benchmark, critic_name, size, t, res[n], gflop, seed_updates_per_s=total,
                            ratio=total / base, notes=note(n, t))

    def bench_seeds(self):
        """Updates/s vs vmapped seeds: floq at the small configuration by default; with
        --seed-configs, every critic of --critics at each of those configurations."""
        for critic_name, size in self._scaling_combos(self.mode.seed_configs):
            timers = {n: self.chunk(critic_name, size, seeds=n) for n in self.mode.seed_counts}
            self._member_rows("seeds", critic_name, size, timers, self._gflop(critic_name, size),
                              lambda n, t: "updates_per_s per seed; ratio = seed-updates/s vs 1 seed")
            for key in [k for k in self._chunks if k[0] == critic_name and k[1] == size.name and k[3] > 1]:
                del self._chunks[key]  # free the multi-seed programs

    def bench_tasks(self):
        """Updates/s of the multi-task program (`floq.train.make_program` with groups: one
        environment's tasks trained together, one member per task, as `Task.task_ids` runs it)
        vs the lone program of one member: `seed_updates_per_s` = member-updates/s,
        `ratio` = that over the lone program's."""
        m = self.mode
        for critic_name, size in self._scaling_combos(m.task_configs):
            gflop = self._gflop(critic_name, size)
            length = chunk_length(gflop, self.peak, self.mode)
            algo, critic = build(critic_name, size)
            timers = {t: ProgramTimer(algo, critic, size, self.host, t, length) for t in m.task_counts}
            self._member_rows("tasks", critic_name, size, timers, gflop, lambda t, timer: (
                f"{t}-task program (one member per task, `seeds` = members); updates_per_s per member; "
                f"ratio = member-updates/s vs {m.task_counts[0]} member(s); compile {timer.compile_s:.1f}s"))

    def bench_eval(self):
        """Evaluation throughput, side by side in one round-robin (see the README):

          eval_bare           a bare simulator loop (one env, random NumPy actions, no JAX, this
                              process): episodes/s, the limit of one core
          eval_whole_episode  EvalService (the trainer's path: whole episodes per unit, the
                              policy inside each worker), 0 (in-process), 1 and N workers
          eval                the old lock-step path (LockstepEvaluator: a pipe round trip per
                              env step), 1 and N workers
          cpu_scaling         N busy processes vs 1, sampled in the same round-robin

        Every path runs the same seeded episodes (reset seed `reset_seed(seed, i, step)`, step = seed). An
        evaluation is `eval_units` units of `eval_width` episodes per worker of the largest
        count, so that N workers have N units to share."""
        import jax
        import jax.numpy as jnp

        from floq.evaluate import EvalService, LockstepEvaluator, Member, _make_env, export_policy, reset_seed
        from floq.train import init_states, make_policy

        m = self.mode
        n_cpu = os.cpu_count() or 1
        workers = list(m.eval_workers or (1, n_cpu))
        workers = list(dict.fromkeys(max(w, 1) for w in workers))
        n_max = max(workers)
        width = m.eval_width
        episodes = width * n_max * m.eval_units
        env_kwargs = {"success_timing": "post"}
        if m.eval_max_steps:  # tiny mode (the tests): short episodes, the same paths
            env_kwargs["max_episode_steps"] = m.eval_max_steps
        size = self._size()
        algo, critic = build("floq", size)
        params = _first_seed(init_states(algo, critic, [0], self.data["observations"][:2],
                                         self.data["actions"][:2]))["params"]
        policy = make_policy(algo, ACT_DIM)
        key = jax.random.PRNGKey(0)

        def untrained(obs, ep_ids, ts):
            return np.asarray(policy(params, jnp.asarray(obs), jnp.asarray(np.maximum(ep_ids, 0)), jnp.asarray(ts),
                                     key))

        rng = np.random.default_rng(0)

        def random_policy(obs, ep_ids, ts):
            return rng.uniform(-1, 1, (obs.shape[0], ACT_DIM)).astype(np.float32)

        policies = {"untrained": untrained}
        if m.name == "full":
            policies["random"] = random_policy

        bare_env = _make_env(EVAL_DATASET, env_kwargs)

        def bare(seed):
            """The simulator alone: one env, episodes one after another, random actions."""
            r = np.random.default_rng(seed)
            steps = 0
            for i in range(episodes):
                bare_env.reset(seed=reset_seed(seed, i, seed))  # as the service's evaluation at step = seed
                while True:
                    _, _, term, trunc, _ = bare_env.step(r.uniform(-1, 1, ACT_DIM).astype(np.float32))
                    steps += 1
                    if term or trunc:
                        break
            return steps / episodes

        snap = jax.device_get(algo.policy_params(params))
        pb = export_policy(algo, snap, OBS_DIM, ACT_DIM, width)
        whole_counts = [0] + workers if m.eval_in_process else list(workers)
        services, lockstep = {}, {}
        samples: dict = {}
        lengths: dict = {}
        scaling = []
        try:
            for w in whole_counts:
                services[w] = EvalService(pb, env_kwargs, w, width, episodes)
            for w in workers:
                lockstep[w] = LockstepEvaluator(EVAL_DATASET, env_kwargs, w)

            def run_whole(w, seed):
                svc = services[w]
                svc.submit(seed, [Member(0, seed, EVAL_DATASET)], [snap])
                return svc.wait()[0].summary(0)["episode_length"]

            timed = {("bare", 0, "random"): lambda seed: bare(seed)}
            for w in whole_counts:
                timed[("whole", w, "untrained")] = (lambda w: lambda seed: run_whole(w, seed))(w)
            for p in policies:
                for w in workers:
                    timed[("lockstep", w, p)] = (lambda w, p: lambda seed: lockstep[w].run(
                        policies[p], episodes, seed=seed, obs_dim=OBS_DIM, step=seed)["episode_length"])(w, p)
            for k, f in timed.items():  # warm-up: envs, first compile, first resets
                if k[0] == "lockstep":
                    lockstep[k[1]].run(policies[k[2]], k[1], seed=0, obs_dim=OBS_DIM)
                elif k[0] == "whole":
                    f(0)
                else:
                    bare_env.reset(seed=0)
            samples = {k: [] for k in timed}
            lengths = {k: [] for k in timed}
            for rep in range(m.repeats):  # round-robin, so that load drift hits every path alike
                for k, f in timed.items():
                    t0 = time.perf_counter()
                    lengths[k].append(f(rep + 1))
                    samples[k].append(time.perf_counter() - t0)
                if n_max > 1:
                    scaling.append(core_scaling(n_max, m.scaling_s))
        finally:
            for svc in services.values():
                svc.close()
            for ev in lockstep.values():
                ev.close()
            bare_env.close()

        eps = {k: episodes / float(np.median(v)) for k, v in samples.items()}
        cs = float(np.median(scaling)) if scaling else None
        if cs is not None:
            self.add(benchmark="cpu_scaling", workers=n_max, ratio=cs,
                     notes=f"pure-Python busy loop in {n_max} processes vs 1, sampled once per eval repeat "
                           f"(round-robin with the eval rows): the parallel speed-up the machine offered "
                           f"(ideal {n_max}; less when other processes share the cores)")
        bare_eps = eps[("bare", 0, "random")]
        common = f"{episodes} episodes x {m.repeats} (round-robin)"
        self.add(benchmark="eval_bare", workers=0, episodes_per_s=bare_eps, vs_bare=1.0,
                 notes=f"bare simulator loop: 1 env, random NumPy actions, no JAX, in-process (the limit per "
                       f"core); {common}; mean length {np.mean(lengths[('bare', 0, 'random')]):.0f}")

        def scaling_of(speedup, w):
            return speedup / cs if cs and w == n_max and w > 1 else None

        one = eps.get(("whole", 1, "untrained"))
        for w in whole_counts:
            k = ("whole", w, "untrained")
            speedup = eps[k] / one if one else None
            vcs = scaling_of(speedup, w)
            note = (f"untrained floq ({size.name}) policy; EvalService, whole-episode units of {width} envs in "
                    f"lock-step inside the worker; {common}; mean length {np.mean(lengths[k]):.0f}; "
                    f"ratio = vs 1 worker" + ("; in-process" if w == 0 else ""))
            if vcs is not None:
                note += f"; speed-up {speedup:.2f}x = {vcs:.2f} of cpu_scaling {cs:.2f}x"
            self.add(benchmark="eval_whole_episode", critic="floq", config=size.name, workers=w,
                     precision="float32", episodes_per_s=eps[k], ratio=speedup, vs_bare=eps[k] / bare_eps,
                     vs_cpu_scaling=vcs, notes=note)
        for p in policies:
            base = eps.get(("lockstep", 1, p))
            for w in workers:
                k = ("lockstep", w, p)
                speedup = eps[k] / base if base else None
                self.add(benchmark="eval", critic="floq" if p == "untrained" else "",
                         config=size.name if p == "untrained" else "", workers=w, precision="float32",
                         episodes_per_s=eps[k], ratio=speedup, vs_bare=eps[k] / bare_eps,
                         vs_cpu_scaling=scaling_of(speedup, w),
                         notes=f"{p} policy; old lock-step path (driver computes actions, a pipe round trip "
                               f"per env step); {common}; mean length {np.mean(lengths[k]):.0f}; ratio = vs 1 "
                               f"worker")

    def bench_eval_overhead(self):
        """Wall time of a short real training run (floq.loop.Run, in this process) with
        asynchronous evaluation (1 worker) vs the same run with evaluation off; overhead =
        (loop wall async - loop wall no-eval) / train_s of the no-eval run, where loop wall =
        the run's wall time minus its setup_s and compile_s (identical work in both runs)."""
        import tempfile

        from floq.loop import Run

        os.environ.setdefault("FLOQ_DATA_DIR", os.path.join(REPO, ".floq_cache", "data"))  # as `make demo`

        class NoEvalRun(Run):
            def evaluate(self, step):  # evaluation off (even the one at the end)
                return None

        m = self.mode
        cfg = self.overhead_config or m.overhead_config
        steps = self.overhead_steps or m.overhead_steps
        files, binds = OVERHEAD_CONFIGS[cfg]
        per = max(1, steps // 4)
        common = list(binds) + [f"TRAIN_STEPS={steps}", f"EVAL_INTERVAL={per}", f"EVAL_EPISODES={m.eval_width}",
                                f"LOG_INTERVAL={max(1, per // 2)}", "CHECKPOINT_INTERVAL=0",
                                f"CHUNK_SIZE={max(1, min(per // 2, 1000))}", "Trainer.eval_at_start=False",
                                "Trainer.progress=False", f"Trainer.eval_envs_per_worker={m.eval_width}"]
        variants = {"noeval": (NoEvalRun, ["Trainer.eval_workers=0", "Trainer.async_eval=False"]),
                    "async": (Run, ["Trainer.eval_workers=1", "Trainer.async_eval=True"])}
        out = {k: [] for k in variants}
        tmp = tempfile.mkdtemp(prefix="floq-bench-overhead-")
        try:
            for rep in range(m.overhead_repeats):
                for name, (cls, extra) in variants.items():
                    run = cls([os.path.join(REPO, f) for f in files], common + extra,
                              run_dir=os.path.join(tmp, f"{name}_{rep}"))
                    run.execute()
                    wall = time.time() - run.t_start
                    t = dict(run.times)
                    loop = wall - t.get("setup_s", 0.0) - t.get("compile_s", 0.0)
                    n_eval = len(run.eval_log) if hasattr(run, "eval_log") else None
                    out[name].append({"wall": wall, "loop": loop, "train_s": t.get("train_s", float("nan")),
                                      "eval_wait_s": t.get("eval_wait_s", 0.0),
                                      "eval_busy_s": t.get("eval_busy_s", 0.0), "evals": n_eval})
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)

        def med(name, k):
            return float(np.median([r[k] for r in out[name]]))

        ne_loop, as_loop = med("noeval", "loop"), med("async", "loop")
        ne_train, as_train = med("noeval", "train_s"), med("async", "train_s")
        wait = med("async", "eval_wait_s")
        overhead = (as_loop - ne_loop) / ne_train
        d_train = as_train - ne_train
        self.add(benchmark="eval_overhead", critic="floq" if "floq" in " ".join(files) else "monolithic",
                 config=cfg, workers=1, precision="float32", updates_per_s=steps / as_train,
                 ratio=overhead,
                 notes=f"{steps} steps, {out['async'][0]['evals']} async evaluations of {m.eval_width} episodes "
                       f"(1 worker) vs evaluation off, x{m.overhead_repeats}; ratio = (loop wall async "
                       f"{as_loop:.1f}s - no-eval {ne_loop:.1f}s) / train_s {ne_train:.1f}s; of which train_s "
                       f"{d_train:+.1f}s (contention), eval_wait_s {wait:.1f}s (blocked, incl. the last "
                       f"evaluation), other {as_loop - ne_loop - d_train - wait:.1f}s (export, worker start, "
                       f"snapshots); eval_busy_s {med('async', 'eval_busy_s'):.1f}s")


def _mul(a, b):
    return a * b if a is not None and b is not None else None


def _fmt(v) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (float, np.floating)):
        v = float(v)
        if not np.isfinite(v):
            return str(v)
        if v == 0:
            return "0"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        if abs(v) >= 0.1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


# --------------------------------------------------------------------------------------
# Targets, table, files
# --------------------------------------------------------------------------------------

def targets(rows: list[dict]) -> list[tuple[str, str, str]]:
    """(target, measured, verdict) for the agreed targets. Each is judged on wall-clock figures
    (what was asked) and, in brackets, on process-CPU-time figures (what the code does per
    core-second, robust to other processes sharing the machine)."""
    out = []

    def find(**kw):
        return [r for r in rows if all(r.get(k) == v for k, v in kw.items())]

    def verdict(*oks):
        return " / ".join("met" if ok else "missed" for ok in oks)

    for critic in ("floq", "monolithic"):
        for bench_name in ("throughput", "throughput_squeezed"):
            r = find(benchmark=bench_name, critic=critic, config="paper")
            ps = find(benchmark="per_step", critic=critic, config="paper")
            if r and r[0].get("peak_ratio") is not None:
                got, cpu = r[0]["peak_ratio"], r[0].get("cpu_peak_ratio") or float("nan")
                extra = ""
                if ps and ps[0].get("peak_ratio"):
                    ps_cpu = ps[0].get("cpu_peak_ratio") or float("nan")
                    extra = f"; per-step loop {ps[0]['peak_ratio']:.0%} [{ps_cpu:.0%}]"
                out.append((f"paper, {critic}, {bench_name}: >= 70% of matmul peak", f"{got:.0%} [{cpu:.0%}]{extra}",
                            verdict(got >= 0.7, cpu >= 0.7)))
    for critic in ("floq", "monolithic"):
        ps = find(benchmark="per_step", critic=critic, config="small")
        for bench_name in ("throughput", "throughput_squeezed"):
            r = find(benchmark=bench_name, critic=critic, config="small")
            if r and ps and r[0].get("speedup_vs_per_step"):
                got = r[0]["speedup_vs_per_step"]
                cpu = ps[0]["cpu_ms_per_update"] / r[0]["cpu_ms_per_update"]
                out.append((f"small, {critic}, {bench_name}: >= 2x per-step updates/s", f"{got:.2f}x [{cpu:.2f}x]",
                            verdict(got >= 2, cpu >= 2)))
    for r in find(benchmark="throughput", critic="floq", config="paper"):
        out.append(("paper, floq: >= 1000 updates/s (one seed, float32)", f"{r['updates_per_s']:.0f} updates/s",
                    verdict(r["updates_per_s"] >= 1000)))
    for r in find(benchmark="bf16", critic="floq", config="paper"):
        out.append(("paper, floq, bf16: >= 1000 updates/s (one seed)", f"{r['updates_per_s']:.0f} updates/s",
                    verdict(r["updates_per_s"] >= 1000)))
    for r in find(benchmark="seeds", seeds=8):
        out.append((f"{r['config']}, {r['critic']}: 8 vmapped seeds >= 6x one seed's updates/s", f"{r['ratio']:.2f}x",
                    verdict(r["ratio"] >= 6)))
    for r in rows:
        if r["benchmark"] == "tasks" and r.get("seeds", 1) > 1:
            out.append((f"{r['config']}, {r['critic']}: {r['seeds']}-task program >= 0.75 x {r['seeds']} x one task's "
                        f"updates/s", f"{r['ratio']:.2f}x", verdict(r["ratio"] >= 0.75 * r["seeds"])))
    ks = [r for r in rows if r["benchmark"] == "flow_steps"]
    if len(ks) >= 2:
        _, _, r2 = fit_line([r["K"] for r in ks], [r["ms_per_update"] for r in ks])
        _, _, r2c = fit_line([r["K"] for r in ks], [r["cpu_ms_per_update"] for r in ks])
        out.append(("time per update linear in K (R^2 >= 0.98)", f"R^2 = {r2:.3f} [{r2c:.3f}]",
                    verdict(r2 >= 0.98, r2c >= 0.98)))
        if all(r.get("temp_mem_mb") is not None for r in ks):
            lo, hi = min(r["temp_mem_mb"] for r in ks), max(r["temp_mem_mb"] for r in ks)
            tot_lo, tot_hi = min(r["peak_mem_mb"] for r in ks), max(r["peak_mem_mb"] for r in ks)
            out.append(("peak memory flat in K (temp+args within 10%; temp within 25%)",
                        f"temp {lo:.1f}-{hi:.1f} MiB, temp+args {tot_lo:.1f}-{tot_hi:.1f} MiB",
                        verdict(tot_hi <= 1.1 * tot_lo and hi <= 1.25 * lo)))
    # Evaluation (judged on wall-clock only: the work is spread over processes).
    cs = find(benchmark="cpu_scaling")
    whole = {r["workers"]: r for r in rows if r["benchmark"] == "eval_whole_episode"}
    many = [w for w in whole if w not in (0, 1)]
    if 1 in whole and many and cs:
        n = max(many)
        got = whole[n]["episodes_per_s"] / whole[1]["episodes_per_s"]
        offered = cs[0]["ratio"]
        out.append((f"eval, whole-episode, N={n} workers vs 1 >= 0.85 x cpu_scaling",
                    f"{got:.2f}x vs machine {offered:.2f}x = {got / offered:.2f}", verdict(got >= 0.85 * offered)))
    bare = find(benchmark="eval_bare")
    if 1 in whole and bare:
        got = whole[1]["episodes_per_s"] / bare[0]["episodes_per_s"]
        out.append(("eval, whole-episode, 1 worker >= 0.8 x bare simulator loop",
                    f"{got:.2f}x ({whole[1]['episodes_per_s']:.2f} vs {bare[0]['episodes_per_s']:.2f} episodes/s)",
                    verdict(got >= 0.8)))
    for r in find(benchmark="eval_overhead"):
        out.append((f"async eval overhead <= 10% of training time ({r['config']})", f"{r['ratio']:.1%}",
                    verdict(r["ratio"] <= 0.10)))
    return out


def table(rows: list[dict], columns=SHOW) -> str:
    cols = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]

    def line(vals):
        return "  ".join(v.rjust(w) if i not in (0, len(cols) - 1) else v.ljust(w)
                         for i, (v, w) in enumerate(zip(vals, widths))).rstrip()

    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def markdown(rows: list[dict], columns=SHOW) -> str:
    cols = [c for c in columns if any(r.get(c) not in (None, "") for r in rows)]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    out += ["| " + " | ".join(_fmt(r.get(c)).replace("|", "/") for c in cols) + " |" for r in rows]
    return "\n".join(out)


def host_kind() -> str:
    import jax

    d = jax.devices()[0]
    if d.platform == "cpu":
        return f"cpu{os.cpu_count()}"
    kind = getattr(d, "device_kind", d.platform)
    return re.sub(r"[^a-z0-9]+", "-", f"{d.platform}-{kind}".lower()).strip("-")


def write_csv(rows: list[dict], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    os.replace(tmp, path)


_TRAIN_ROWS = ("throughput", "throughput_squeezed", "per_step", "bf16", "flow_steps", "seeds", "tasks")


def fill_flops(path: str, log=print) -> list[dict]:
    """Rows of a bench CSV without `gflop_per_update` (a device whose lowering gave no cost
    analysis) get it from `floq.train.update_flops` computed here (XLA's HLO cost analysis,
    lowered for the CPU: the count does not depend on the device), then `gflop_per_s` and
    `peak_ratio` against the CSV's own matmul_peak rows of the same precision. The notes say so."""
    rows = list(csv.DictReader(open(path)))
    data = to_device(synthetic_data(1000))
    cache = {}
    peaks = {}
    for r in rows:
        if r["benchmark"] == "matmul_peak" and r.get("gflop_per_s"):
            peaks.setdefault(r.get("precision") or "float32", []).append(float(r["gflop_per_s"]))
    for r in rows:
        if r["benchmark"] not in _TRAIN_ROWS or r.get("gflop_per_update") or r.get("critic") not in KNOWN_CRITICS \
                or r.get("config") not in SIZES or not r.get("updates_per_s"):
            continue
        K = int(r["K"]) if r["critic"] == "floq" and str(r.get("K", "")).isdigit() else None
        key = (r["critic"], r["config"], K)
        if key not in cache:
            size = SIZES[r["config"]]
            algo, critic = build(r["critic"], size, K)
            f = flops_per_update(algo, critic, size, data)
            cache[key] = f / 1e9 if f else None
            log(f"  {key}: {cache[key]} GFLOP/update")
        g = cache[key]
        if g is None:
            continue
        members = int(r.get("seeds") or 1)
        r["gflop_per_update"] = g
        r["gflop_per_s"] = g * float(r["updates_per_s"]) * members
        prec = r.get("precision") or "float32"
        if prec in peaks:
            r["peak_ratio"] = r["gflop_per_s"] / float(np.median(peaks[prec]))
        r["notes"] = (r.get("notes") or "") + "; gflop_per_update computed afterwards on the CPU (floq bench --fill-flops)"
    write_csv(rows, path)
    return rows


class _Stopped(Exception):
    """SIGTERM (e.g. a time box) stopped the run; the rows so far are written."""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="floq bench", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="a subset that runs in a few minutes on a laptop CPU")
    g.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # tests: tiny sizes, seconds
    p.add_argument("--only", default=",".join(BENCHMARKS),
                   help=f"comma-separated subset of {','.join(BENCHMARKS)} (default: all)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                   help="directory for the CSV (and .md) (default: benchmarks/results)")
    p.add_argument("--name", default=None, help="CSV file name (default: bench_<host-kind>_<date>[_mode].csv)")
    p.add_argument("--critics", default=",".join(CRITICS),
                   help=f"comma-separated subset of {','.join(KNOWN_CRITICS)} (default: {','.join(CRITICS)})")
    p.add_argument("--configs", default=None,
                   help="comma-separated configurations for throughput/per_step/bf16 (small,paper; default: by mode)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (median reported)")
    p.add_argument("--rows", type=int, default=None, help="synthetic dataset transitions (default: 1M, quick 100k)")
    p.add_argument("--seed-counts", default=None, help="comma-separated vmapped seed counts of the seeds group "
                   "(default: 1,2,4,8; quick 1,2)")
    p.add_argument("--seed-configs", default=None,
                   help="configurations of the seeds group, each for every --critics critic (default: floq at small)")
    p.add_argument("--k-config", default=None, help="configuration of the flow_steps group (default: small)")
    p.add_argument("--k-values", default=None, help="comma-separated K of the flow_steps group (default 1,2,4,8,16,32)")
    p.add_argument("--task-counts", default=None,
                   help="comma-separated members of the tasks group's programs, the first the baseline (default 1,5)")
    p.add_argument("--task-configs", default=None,
                   help="configurations of the tasks group, each for every --critics critic (default: floq at small)")
    p.add_argument("--scaling-critics", default=None,
                   help="critics of the seeds and tasks groups when --seed-configs/--task-configs are given "
                        "(default: --critics)")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul_peak size n (default 2048; use 8192 on a GPU)")
    p.add_argument("--eval-workers", default=None,
                   help="comma-separated worker counts of the eval group (default: 1,<cores>; quick 1,2)")
    p.add_argument("--overhead-config", default=None, choices=tuple(OVERHEAD_CONFIGS),
                   help="eval_overhead: configuration of the short training run (default: small; tiny: smoke)")
    p.add_argument("--overhead-steps", type=int, default=None,
                   help="eval_overhead: training steps, 4 evaluations (default: 2000; quick 800)")
    p.add_argument("--no-write", action="store_true", help="print the table only")
    p.add_argument("--fill-flops", default=None, metavar="CSV",
                   help="fill gflop_per_update / gflop_per_s / peak_ratio of an existing bench CSV's rows that lack them "
                        "(computed here; FLOPs do not depend on the device), rewrite it and its .md table, and exit")
    p.add_argument("--cache", default=None,
                   help="persistent JAX compilation cache (default: $JAX_COMPILATION_CACHE_DIR or .floq_cache/jax; "
                        "'none' to disable). Compilation is never timed; the cache only shortens reruns.")
    a = p.parse_args(argv)
    if a.fill_flops:
        if not os.path.isfile(a.fill_flops):
            print(f"floq bench: --fill-flops: no such file {a.fill_flops}", file=sys.stderr)
            return 2
        rows = fill_flops(a.fill_flops, log=lambda s: print(s, file=sys.stderr))
        print(table(rows))
        return 0
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    bad = [s for s in only if s not in BENCHMARKS]
    if bad:
        print(f"floq bench: unknown benchmark(s) {bad}; choose from {BENCHMARKS}", file=sys.stderr)
        return 2
    critics = tuple(s.strip() for s in a.critics.split(",") if s.strip())
    if not critics or any(c not in KNOWN_CRITICS for c in critics):
        print(f"floq bench: --critics must name some of {KNOWN_CRITICS}", file=sys.stderr)
        return 2
    mode = MODES["tiny" if a.tiny else "quick" if a.quick else "full"]
    if a.rows:
        mode = dataclasses.replace(mode, rows=a.rows)
    if a.repeats:
        mode = dataclasses.replace(mode, repeats=max(1, a.repeats))
    try:
        if a.seed_counts:
            mode = dataclasses.replace(mode, seed_counts=tuple(int(x) for x in a.seed_counts.split(",") if x.strip()))
        if a.k_values:
            mode = dataclasses.replace(mode, k_values=tuple(int(x) for x in a.k_values.split(",") if x.strip()))
        if a.task_counts:
            mode = dataclasses.replace(mode, task_counts=tuple(int(x) for x in a.task_counts.split(",") if x.strip()))
        if a.eval_workers:
            mode = dataclasses.replace(mode, eval_workers=tuple(int(x) for x in a.eval_workers.split(",")
                                                                if x.strip()))
    except ValueError:
        print("floq bench: --seed-counts, --k-values, --task-counts and --eval-workers take comma-separated integers",
              file=sys.stderr)
        return 2
    if a.scaling_critics:
        sc = tuple(s.strip() for s in a.scaling_critics.split(",") if s.strip())
        if not sc or any(c not in KNOWN_CRITICS for c in sc):
            print(f"floq bench: --scaling-critics must name some of {KNOWN_CRITICS}", file=sys.stderr)
            return 2
        mode = dataclasses.replace(mode, scaling_critics=sc)
    if a.seed_configs:
        sc = tuple(s.strip() for s in a.seed_configs.split(",") if s.strip())
        if not sc or any(s not in SIZES for s in sc):
            print(f"floq bench: --seed-configs must name some of {tuple(SIZES)}", file=sys.stderr)
            return 2
        mode = dataclasses.replace(mode, seed_configs=sc)
    for opt, field in (("k_config", "k_config"), ("task_configs", "task_configs")):
        val = getattr(a, opt)
        if val:
            names = tuple(x.strip() for x in val.split(",") if x.strip())
            if not names or any(x not in SIZES for x in names) or (field == "k_config" and len(names) != 1):
                print(f"floq bench: --{opt.replace('_', '-')} must name {'one' if field == 'k_config' else 'some'} "
                      f"of {tuple(SIZES)}", file=sys.stderr)
                return 2
            mode = dataclasses.replace(mode, **{field: names[0] if field == "k_config" else names})
    if any(n < 1 for n in mode.seed_counts + mode.task_counts + mode.k_values):
        print("floq bench: --seed-counts, --k-values and --task-counts must be >= 1", file=sys.stderr)
        return 2
    if a.matmul_n:
        mode = dataclasses.replace(mode, matmul_n=a.matmul_n)
    if a.configs:
        sizes = tuple(s.strip() for s in a.configs.split(",") if s.strip())
        if not sizes or any(s not in SIZES for s in sizes):
            print(f"floq bench: --configs must name some of {tuple(SIZES)}", file=sys.stderr)
            return 2
        mode = dataclasses.replace(mode, sizes=sizes, bf16_sizes=tuple(s for s in sizes if s in mode.bf16_sizes
                                                                       or mode.name == "full"))

    cache = a.cache or os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".floq_cache", "jax")
    if cache != "none":
        import jax

        jax.config.update("jax_compilation_cache_dir", cache)
        if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # the caller's choice stands
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

    t0 = time.time()
    load_before = os.getloadavg()
    name = a.name or f"bench_{host_kind()}_{datetime.date.today():%Y%m%d}" + ("" if mode.name == "full" else
                                                                               f"_{mode.name}") + ".csv"
    path = os.path.join(a.out, name)
    bench = Bench(mode, only, critics, log=lambda s: print(s, file=sys.stderr, flush=True),
                  overhead_config=a.overhead_config, overhead_steps=a.overhead_steps,
                  after_group=None if a.no_write else (lambda rows: write_csv(rows, path)))
    stopped = ""

    def on_term(signum, frame):
        raise _Stopped(signal.Signals(signum).name)

    try:
        old = signal.signal(signal.SIGTERM, on_term)
    except ValueError:  # not the main thread
        old = None
    try:
        rows = bench.run()
    except (_Stopped, KeyboardInterrupt) as e:  # a time box: keep (and write) what was measured
        stopped = f" | STOPPED ({e or 'SIGINT'}): partial"
        bench.peak_ratios()
        rows = bench.rows
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    load_after = os.getloadavg()
    header = (f"floq bench ({mode.name}){stopped} | {bench.device} | jax {bench.jax_version} | "
              f"{platform.python_version()} | {datetime.datetime.now().isoformat(timespec='seconds')} | "
              f"load avg before {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, after "
              f"{load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} | {time.time() - t0:.0f} s")
    tgt = targets(rows)
    text = [header, "", table(rows)]
    if tgt:
        tw = max(len(t[0]) for t in tgt)
        text += ["", "targets: measured wall-clock [process-CPU time] -> verdict wall / CPU"]
        text += [f"  {t[0].ljust(tw)}  {t[1]}  -> {t[2]}" for t in tgt]
    print("\n".join(text))
    if not a.no_write and rows:
        write_csv(rows, path)
        md = [f"# {header}", "", markdown(rows)]
        if tgt:
            md += ["", "| target | measured: wall-clock [process-CPU time] | verdict (wall / CPU) |", "|---|---|---|"]
            md += [f"| {t[0]} | {t[1]} | {t[2]} |" for t in tgt]
        with open(os.path.splitext(path)[0] + ".md", "w") as f:
            f.write("\n".join(md) + "\n")
        print(f"\nwrote {path}")
    if stopped:  # being terminated: do not wait for the runtime's teardown (XLA threads, pools)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
