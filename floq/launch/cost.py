"""What a sweep will cost (``floq sweep --dry-run``): FLOPs per update lowered as run.json
counts them, times the throughput ``floq bench`` measured (or an assumed rate, said so)."""

from __future__ import annotations

import csv
import dataclasses
import glob
import hashlib
import json
import math
import os
import re
from typing import Callable, Mapping, Sequence

import gin

from floq.launch import spec
from floq.launch.runner import Run

from floq.launch.expand import GRID_TAG, SweepPlan, _one_line


# --------------------------------------------------------------------------------------
# Estimates from `floq bench` results.


def _speed_column(header: Sequence[str]) -> str | None:
    for name in ("updates_per_s", "updates/s", "updates_per_sec", "updates_per_second"):
        if name in header:
            return name
    return None


def _same(a, b) -> bool:
    if a is None or b is None or str(b).strip() == "":
        return False
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return str(a).strip().lower() == str(b).strip().lower()


def load_bench(bench_dir: str) -> list[tuple[str, dict]]:
    """Rows (with their file) of ``floq bench`` CSVs that have an updates-per-second column."""
    rows = []
    for path in sorted(glob.glob(os.path.join(bench_dir, "*.csv"))):
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                speed = _speed_column(reader.fieldnames or [])
                if speed is None:
                    continue
                for row in reader:
                    try:
                        ups = float(row[speed])
                    except (TypeError, ValueError):
                        continue
                    if ups > 0:
                        rows.append((path, {**row, "_updates_per_s": ups}))
        except OSError:
            continue
    return rows


def estimate_run_hours(run: Run, plan: SweepPlan, bench: list[tuple[str, dict]]):
    """``(hours, source)`` for one run from benchmark rows, or ``None``.

    A row matches when every one of its columns that names a value of the run (a tag or
    a lower-cased macro of the file, e.g. ``critic_flow_steps``) agrees; the rows that
    agree on the most columns win, GPU rows before CPU rows; hours =
    ``train_steps / updates_per_s / 3600`` (training updates only).
    """
    values = dict(plan.base_values)
    for axis in plan.axes:
        for alias in axis.aliases:
            values[alias] = run.tags[axis.tag]
    values.update(run.tags)
    steps = values.get("train_steps")
    if not isinstance(steps, (int, float)) or isinstance(steps, bool) or steps <= 0:
        return None
    best, best_score = [], 0
    for path, row in bench:
        shared = [
            c for c in row if c in values and not c.startswith("_") and str(row[c]).strip() != ""
        ]
        if not shared or not all(_same(values[c], row[c]) for c in shared):
            continue
        score = len(shared)
        if score > best_score:
            best, best_score = [(path, row)], score
        elif score == best_score:
            best.append((path, row))
    if not best:
        return None
    gpu = [b for b in best if not str(b[1].get("device", "gpu")).lower().startswith("cpu")]
    best = gpu or best
    speeds = sorted(row["_updates_per_s"] for _, row in best)
    ups = speeds[len(speeds) // 2]
    path, row = best[0]
    return steps / ups / 3600.0, (os.path.relpath(path), row.get("device"))


def estimate_hours(plan: SweepPlan, runs: Sequence[Run], bench_dir: str | None = None) -> str:
    """The dry run's GPU-hours line for ``runs``."""
    bench_dir = bench_dir or os.path.join(spec.REPO_ROOT, "benchmarks", "results")
    if not runs:
        return "estimated GPU-hours: 0 (nothing to run)"
    bench = load_bench(bench_dir)
    estimates = [estimate_run_hours(run, plan, bench) for run in runs] if bench else []
    known = [e for e in estimates if e is not None]
    if not known:
        return "estimated GPU-hours: unknown (run floq bench)"
    total = sum(h for h, _ in known)
    sources = sorted({f"{p}" + (f" on {d}" if d else "") for _, (p, d) in known})
    text = f"estimated GPU-hours: {total:.2f}"
    if len(known) < len(runs):
        text = (
            f"estimated GPU-hours: at least {total:.2f} ({len(runs) - len(known)} of "
            f"{len(runs)} runs unknown: run floq bench)"
        )
    return text + f" (training updates only, 1 GPU per run; from {', '.join(sources)})"


# --------------------------------------------------------------------------------------
# Estimates: FLOPs per update (lowered like run.json's) x measured throughput.

#: OGBench state-based environments: (observation width, action width, episode time limit).
#: Read from ogbench 1.2.2 by constructing each singletask env (``env.observation_space``,
#: ``env.action_space`` and the ``max_episode_steps`` it registers in ogbench/__init__.py).
OGBENCH_DIMS = {
    "antmaze-large-navigate": (29, 8, 1000),
    "antmaze-giant-navigate": (29, 8, 1000),
    "humanoidmaze-medium-navigate": (69, 21, 2000),
    "humanoidmaze-large-navigate": (69, 21, 2000),
    "antsoccer-arena-navigate": (42, 8, 1000),
    "cube-single-play": (28, 5, 200),
    "cube-double-play": (37, 5, 500),
    "cube-triple-play": (46, 5, 1000),
    "scene-play": (40, 5, 750),
    "puzzle-3x3-play": (55, 5, 500),
    "puzzle-4x4-play": (83, 5, 500),
}
#: Used when benchmarks/results has no GPU throughput row: an ASSUMED effective rate of one
#: H100 on these small-MLP updates (about 15% of its 67 TFLOP/s FP32 peak; floq bench's CPU
#: rows reach 30-50% of their matmul peak, small matmuls reach less on a GPU). Override with
#: FLOQ_ASSUMED_GPU_TFLOPS.
ASSUMED_GPU_TFLOPS = 10.0
#: Used when no ``eval`` bench row exists: an ASSUMED simulator rate (env steps/s, one worker).
ASSUMED_ENV_STEPS_PER_S = 500.0
_THROUGHPUT_ROWS = ("throughput", "throughput_squeezed")


#: The families of ``floq bench`` rows a run's rate is read from (a critic's ``bench_family``).
BENCH_FAMILIES = ("floq", "monolithic")


@dataclasses.dataclass(frozen=True)
class RunCost:
    """What one run costs, independent of the device.

    Attributes:
      flops_per_update: FLOPs of one gradient step of one seed (XLA cost analysis of the
        lowered update, loops unrolled: what run.json records).
      updates: gradient steps x agents (offline steps + online steps x UTD ratio); agents =
        seeds x tasks of the program.
      env_steps: simulator steps x agents: evaluation episodes (each to its time limit, an
        upper bound) plus online environment steps.
      family: 'floq' or 'monolithic' (which bench rows give its rate).
      key: the configuration the FLOPs were computed for.
    """

    flops_per_update: float
    updates: float
    env_steps: float
    family: str
    key: str
    agents: int = 1


def _flops_cache_path() -> str:
    root = os.environ.get("FLOQ_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "floq")
    return os.path.join(root, "flops_per_update.json")


class FlopsCache:
    """FLOPs per update by configuration: in memory, and in a JSON file between dry runs
    (``$FLOQ_CACHE_DIR/flops_per_update.json``, default ``~/.cache/floq``). Keys hash the
    critic and actor specs, batch size, observation/action widths and the jax version."""

    def __init__(self, path: str | None = None):
        self.path = path or _flops_cache_path()
        self.values: dict[str, float] = {}
        self.dirty = False
        try:
            with open(self.path) as f:
                self.values = {k: float(v) for k, v in json.load(f).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self.values = {}

    def save(self) -> None:
        if not self.dirty:
            return
        from floq.results import RunError, atomic_open

        try:
            with atomic_open(self.path) as f:
                json.dump(self.values, f, indent=0, sort_keys=True)
            self.dirty = False
        except (OSError, RunError):  # a cache: never worth failing a dry run for
            pass


def lowered_flops(algorithm, critic, batch_size: int, obs_dim: int, act_dim: int) -> float | None:
    """FLOPs of one update as ``floq.train.update_flops`` counts them for run.json, on a
    tiny fake dataset of the environment's widths (shapes only: nothing is computed)."""
    import jax
    import jax.numpy as jnp

    from floq import train

    from floq.agents.base import batch_keys

    n = 1024
    f32 = jnp.float32
    widths = {"observations": (obs_dim,), "actions": (act_dim,), "rewards": (), "masks": (),
              "next_observations": (obs_dim,), "next_actions": (act_dim,)}
    data = {k: jax.ShapeDtypeStruct((n, *widths[k]), f32) for k in batch_keys(algorithm) if k in widths}
    ex_obs, ex_act = jnp.zeros((2, obs_dim), f32), jnp.zeros((2, act_dim), f32)
    try:
        state1 = jax.eval_shape(lambda k: algorithm.init(k, critic, ex_obs, ex_act), jax.random.PRNGKey(0))
    except Exception:  # noqa: BLE001 - an estimate never breaks a dry run
        return None
    return train.update_flops(algorithm, critic, state1, data, batch_size)


def _profile_key(run: Run, seed_binding_prefix: str) -> tuple:
    return (run.gin_files, tuple(b for b in run.bindings if not b.startswith(seed_binding_prefix)))


def run_costs(plan: SweepPlan, runs: Sequence[Run], cache: FlopsCache | None = None,
              flops_fn: Callable | None = None, build: Callable | None = None) -> dict[str, RunCost | str]:
    """``{run name: RunCost, or the reason it has none}``: builds each distinct
    configuration (``build``, default ``floq.train.build``) and lowers its update once."""
    cache = cache if cache is not None else FlopsCache()
    flops_fn = flops_fn or lowered_flops
    try:
        import jax
        from floq import train
    except Exception as e:  # noqa: BLE001
        return {run.name: f"floq.train unavailable: {_one_line(e)}" for run in runs}
    out: dict[str, RunCost | str] = {}
    built: dict[tuple, RunCost | str] = {}
    memo: dict[str, float | None] = {}
    prefix = f"{plan.seed_macro} ="
    import warnings

    for run in runs:
        pkey = _profile_key(run, prefix)
        if pkey not in built:
            built[pkey] = _one_cost(run, build or train.build, jax, cache, memo, flops_fn, warnings)
        out[run.name] = built[pkey]
    cache.save()
    gin.clear_config()
    return out


def _one_cost(run, build, jax, cache, memo, flops_fn, warnings) -> RunCost | str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exp = build(list(run.gin_files), list(run.bindings))
    except Exception as e:  # noqa: BLE001
        return f"does not build: {_one_line(e)}"
    task, critic, algo, tr = exp.task, exp.critic, exp.algorithm, exp.trainer
    env = getattr(task, "env", None)
    if env not in OGBENCH_DIMS:
        return f"no observation/action widths for environment {env!r}"
    obs_dim, act_dim, horizon = OGBENCH_DIMS[env]
    try:
        critic = critic.configure(task.discount, -1.0, 0.0)
        if getattr(tr, "precision", "float32") == "bfloat16":
            critic = dataclasses.replace(critic, compute_dtype="bfloat16")
    except Exception as e:  # noqa: BLE001
        return f"critic does not configure: {_one_line(e)}"
    text = repr((repr(critic), repr(algo), tr.batch_size, obs_dim, act_dim, jax.__version__))
    key = hashlib.sha1(text.encode()).hexdigest()[:16]
    if key in memo:
        flops = memo[key]
    elif key in cache.values:
        flops = memo[key] = cache.values[key]
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flops = flops_fn(algo, critic, tr.batch_size, obs_dim, act_dim)
        memo[key] = flops
        if flops is not None and math.isfinite(flops):
            cache.values[key] = float(flops)
            cache.dirty = True
    if flops is None or not math.isfinite(flops):
        return "its update could not be lowered"
    # Agents in the program: seeds x tasks (a multi-task program, Task.task_ids, is one job).
    seeds = int(getattr(tr, "num_seeds", 1)) * len(getattr(task, "ids", (1,)))
    online = int(getattr(tr, "online_steps", 0) or 0)
    utd = float(getattr(tr, "utd_ratio", 1) or 1)
    total = tr.train_steps + online
    n_evals = 0
    if tr.eval_interval:
        n_evals = total // tr.eval_interval + (1 if total % tr.eval_interval else 0)
    else:
        n_evals = 1
    n_evals += 1 if getattr(tr, "eval_at_start", True) else 0
    env_steps = seeds * (n_evals * tr.eval_episodes * horizon + online)
    # Which bench rows give its FLOP rate: a critic declares its family (the floq critic's
    # integration loops run at another rate than plain MLPs); the sweep knows no critic.
    family = getattr(critic, "bench_family", "monolithic")
    if family not in BENCH_FAMILIES:
        family = "monolithic"
    return RunCost(float(flops), seeds * (tr.train_steps + online * utd), float(env_steps), family, key, seeds)


def _float(row: Mapping, col: str) -> float | None:
    try:
        v = float(row.get(col, ""))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def load_bench_rows(bench_dir: str) -> list[tuple[str, dict]]:
    """Every row (with its file) of the CSVs in ``bench_dir``."""
    rows = []
    for path in sorted(glob.glob(os.path.join(bench_dir, "*.csv"))):
        try:
            with open(path, newline="") as f:
                rows += [(path, row) for row in csv.DictReader(f)]
        except OSError:
            continue
    return rows


@dataclasses.dataclass(frozen=True)
class Rate:
    """A throughput figure and where it comes from."""

    value: float
    source: str
    assumed: bool = False


def _is_cpu(row: Mapping) -> bool:
    return str(row.get("device", "")).strip().lower().startswith("cpu")


def flop_rates(bench: list[tuple[str, dict]], cpu: bool) -> dict[str, Rate]:
    """GFLOP/s per critic family on GPU (``cpu=False``) or CPU rows of ``floq bench``:
    its throughput rows of the largest configuration measured (the paper's, where present)."""
    rates = {}
    for family in BENCH_FAMILIES:
        rows = [
            (path, row) for path, row in bench
            if row.get("benchmark") in _THROUGHPUT_ROWS and _is_cpu(row) == cpu
            and str(row.get("critic", "")).strip() == family and _float(row, "gflop_per_s")
            and _float(row, "gflop_per_update") and str(row.get("precision", "float32")) in ("", "float32")
        ]
        if not rows:
            continue
        biggest = max(_float(r, "gflop_per_update") for _, r in rows)
        rows = [(p, r) for p, r in rows if _float(r, "gflop_per_update") == biggest]
        speeds = sorted(_float(r, "gflop_per_s") for _, r in rows)
        path, row = rows[0]
        config = row.get("config") or "?"
        rates[family] = Rate(
            speeds[len(speeds) // 2],
            f"{os.path.relpath(path)} ({row.get('device', '?')}, {family} '{config}' throughput)",
        )
    if cpu or rates:
        for family in BENCH_FAMILIES:  # one family measured: use it for both
            if family not in rates and rates:
                other = next(iter(rates.values()))
                rates[family] = Rate(other.value, other.source)
        return rates
    tflops = ASSUMED_GPU_TFLOPS
    try:
        tflops = float(os.environ.get("FLOQ_ASSUMED_GPU_TFLOPS", tflops))
    except ValueError:
        pass
    note = (f"ASSUMED: an H100's effective rate; benchmarks/results has no GPU row; "
            f"set FLOQ_ASSUMED_GPU_TFLOPS to change it")
    return {f: Rate(tflops * 1000.0, note, assumed=True) for f in BENCH_FAMILIES}


def env_rate(bench: list[tuple[str, dict]]) -> Rate:
    """Simulator steps/s from ``floq bench``'s ``eval`` rows (policy included, one worker)."""
    best = None
    for path, row in bench:
        if row.get("benchmark") != "eval" or not _float(row, "episodes_per_s"):
            continue
        match = re.search(r"mean length (\d+)", row.get("notes", ""))
        if not match or str(row.get("workers", "")).strip() != "1" or not row.get("critic"):
            continue
        rate = _float(row, "episodes_per_s") * int(match.group(1))
        if best is None or rate < best.value:
            best = Rate(rate, f"{os.path.relpath(path)} eval row ({row.get('device', '?')}, one worker)")
    if best is None:
        return Rate(ASSUMED_ENV_STEPS_PER_S, "ASSUMED: no eval row in benchmarks/results", assumed=True)
    return best


def _on_gpu() -> bool:
    try:
        import jax

        return jax.default_backend() != "cpu"
    except Exception:  # noqa: BLE001
        return False


def _fmt_hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 100 else f"{h:.2f}"


def _rate_text(rates: dict[str, Rate], families: set[str]) -> str:
    parts, sources = [], []
    for f in sorted(families):
        r = rates[f]
        parts.append(f"{f} {r.value / 1000:.1f} TFLOP/s" if r.value >= 1000 else f"{f} {r.value:.1f} GFLOP/s")
        if r.source not in sources:
            sources.append(r.source)
    return ", ".join(parts) + " (" + "; ".join(sources) + ")"


def estimate_lines(plan: SweepPlan, runs: Sequence[Run], bench_dir: str | None = None,
                   costs: Mapping[str, RunCost | str] | None = None,
                   on_gpu: bool | None = None, build: Callable | None = None) -> list[str]:
    """The dry run's cost lines for ``runs``: GPU-hours (and CPU-hours on a CPU machine)
    from FLOPs per update x bench throughput x updates, plus simulator time (``build``: as
    for :func:`run_costs`)."""
    bench_dir = bench_dir or os.path.join(spec.REPO_ROOT, "benchmarks", "results")
    if not runs:
        return ["estimated GPU-hours: 0 (nothing to run)"]
    costs = costs if costs is not None else run_costs(plan, runs, build=build)
    known = {r.name: costs[r.name] for r in runs if isinstance(costs.get(r.name), RunCost)}
    if not known:
        return [estimate_hours(plan, runs, bench_dir)]  # not floq runs: bench rows by tags
    bench = load_bench_rows(bench_dir)
    steps = env_rate(bench)
    on_gpu = _on_gpu() if on_gpu is None else on_gpu
    devices = [("GPU", flop_rates(bench, cpu=False))]
    if not on_gpu:
        cpu = flop_rates(bench, cpu=True)
        if cpu:
            devices.append(("CPU", cpu))
    families = {c.family for c in known.values()}
    lines = []
    unknown = [r.name for r in runs if r.name not in known]
    sim_h = sum(c.env_steps for c in known.values()) / steps.value / 3600
    agents = sum(c.agents for c in known.values())
    for label, rates in devices:
        train_h = sum(c.updates * c.flops_per_update / (rates[c.family].value * 1e9) for c in known.values()) / 3600
        where = "" if label == "GPU" else " (this machine has no GPU)"
        lines.append(
            f"estimated {label}-hours{where}: {'at least ' if unknown else ''}{_fmt_hours(train_h + sim_h)} "
            f"(training {_fmt_hours(train_h)} + evaluation {_fmt_hours(sim_h)}) for {len(known)} runs, "
            f"1 {'GPU' if label == 'GPU' else 'machine'} each"
            + (f" ({agents} agents: tasks x seeds trained together)" if agents != len(known) else "")
        )
        lines.append(f"  {label} training: FLOPs per update x updates at {_rate_text(rates, families)}")
        if label == "GPU" and len(plan.grids) > 1:
            by_grid: dict[str, float] = {}
            count: dict[str, int] = {}
            for r in runs:
                c = known.get(r.name)
                if c is None:
                    continue
                g = str(r.tags.get(GRID_TAG))
                h = (c.updates * c.flops_per_update / (rates[c.family].value * 1e9) + c.env_steps / steps.value) / 3600
                by_grid[g] = by_grid.get(g, 0.0) + h
                count[g] = count.get(g, 0) + 1
            lines.append("  GPU-hours by grid: " + ", ".join(
                f"{g} {_fmt_hours(h)} ({count[g]} runs)" for g, h in by_grid.items()))
    lines.append(
        f"  evaluation (+ online env steps): every episode to its time limit (an upper bound) at "
        f"{steps.value:,.0f} env steps/s from {steps.source}"
    )
    flops = sorted({c.flops_per_update for c in known.values()})
    lines.append(
        f"  FLOPs per update (one seed): {flops[0] / 1e9:.1f}-{flops[-1] / 1e9:.1f} GFLOP over "
        f"{len({c.key for c in known.values()})} distinct configurations"
    )
    if unknown:
        reasons = sorted({str(costs.get(n)) for n in unknown})
        lines.append(f"  {len(unknown)} of {len(runs)} runs have no estimate: {reasons[0]}")
    return lines
