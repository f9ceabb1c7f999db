"""Evaluation episodes in the OGBench simulator, as a service the training loop hands work to.

The loop gives `EvalService.submit(step, members, snapshots)` a copy of each member's policy
parameters and goes on training; `poll()` returns finished evaluations (in submission order)
and `wait()` blocks for them. Inside:

- The policy is compiled once per run and shipped to the workers as a serialized JAX export
  (`export_policy`), so a worker needs neither gin nor floq's model code, and every worker and
  the in-process path run the very same program.
- Work is split into *units*: up to `envs_per_worker` episodes of one member, stepped in
  lock-step in one worker with one batched policy call per simulator step (the batch is
  always padded to `envs_per_worker` rows, so the program's shapes never change). Units of
  every member of an evaluation go into one queue that all workers draw from: N vmapped seeds
  are evaluated together, not seed after seed.
- Workers run whole episodes; the only messages are the parameters (once per evaluation and
  worker) and one result per unit. `num_workers = 0` runs the same units in this process.

Every episode is seeded: episode i of seed s's evaluation at `step` resets with
`reset_seed(s, i, step)`, a hash of (seed, step, episode), so every evaluation draws fresh
start states (as the references' unseeded resets do) and still repeats exactly; its action
noise at time t is `normal(fold_in(fold_in(key, i), t))` with `key = fold_in(PRNGKey(s), step)`
(`eval_key`). Results therefore do not depend on the number of workers, on which worker ran an
episode, or on whether evaluation ran asynchronously.

Success is the last step's info['success'] (OGBench; FQL's evaluation); episodes end at
termination (success in singletask envs) or at the env's time limit.

`LockstepEvaluator` is the earlier design (one pipe round trip per simulator step), kept as the
baseline `floq bench` compares against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
import traceback

import numpy as np

from floq import envs as envs_pool
from floq.memo import memoized
from floq.quiet import quiet_warnings

SEED_STRIDE = 100_003

# The signals the trainer turns into a checkpoint and exit 143 (floq/loop.py): a scheduler's
# stop (scancel, a Slurm time limit, docker stop, systemd, `kill -- -PGID`) and Ctrl-C reach
# every process of the job, workers included. A worker must neither die of them first (the
# trainer would see a dead worker, not a preemption) nor print a traceback: workers ignore
# them and are closed by the trainer (or end when it is gone).
STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1"))
                     if s is not None)


@contextlib.contextmanager
def stop_signals_blocked():
    """Start worker processes inside this: the calling thread blocks the stop signals, so a
    spawned child starts with them blocked (the mask survives fork and exec) and a signal that
    reaches it while it boots stays pending until `ignore_stop_signals` discards it. Nothing is
    lost in this process: a signal stays pending here too (or another thread takes it) and the
    handler runs once the mask is restored. CPython's own resource tracker starts the same way."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def ignore_stop_signals():
    """In a worker process, first thing: ignore the stop signals (discarding any pending one)."""
    for s in STOP_SIGNALS:
        try:
            signal.signal(s, signal.SIG_IGN)
        except (OSError, ValueError):  # pragma: no cover - not the main thread
            pass
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class WorkerDied(RuntimeError):
    """An evaluation worker process ended while work was outstanding (`exitcodes`: negative
    for a signal, as multiprocessing reports them)."""

    def __init__(self, msg: str, exitcodes=()):
        super().__init__(msg)
        self.exitcodes = tuple(exitcodes)

    def by_stop_signal(self) -> bool:
        """Killed by one of the stop signals (the whole job is being stopped)."""
        return any(c is not None and -c in STOP_SIGNALS for c in self.exitcodes)


def _zigzag(x: int) -> int:
    x = int(x)
    return 2 * x if x >= 0 else -2 * x - 1


def reset_seed(seed: int, episode: int, step: int) -> int:
    """The env reset seed of episode `episode` of seed `seed`'s evaluation at `step`: 63 bits
    of numpy's SeedSequence hash of (seed, step, episode). Fresh start states at every
    evaluation (the three evaluations a final score averages do not share them), exactly
    repeatable, and (with overwhelming probability) never an online episode's seed
    (floq.online.online_reset_seed, below 2**31 for the seeds floq uses)."""
    ss = np.random.SeedSequence([_zigzag(seed), _zigzag(step), _zigzag(episode)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _make_env(dataset_name: str, env_kwargs: dict):
    """A new OGBench environment (runners and the online phase take theirs from floq.envs)."""
    return envs_pool.make(dataset_name, env_kwargs)


# --------------------------------------------------------------------------------------
# The policy program
# --------------------------------------------------------------------------------------

def eval_key(seed: int, step: int):
    """The PRNG key (raw uint32[2]) of seed `seed`'s evaluation at `step`."""
    import jax

    return np.asarray(jax.random.fold_in(jax.random.PRNGKey(seed), step))


def export_policy(algorithm, params_example, obs_dim: int, act_dim: int, width: int) -> bytes:
    """Serialize the evaluation policy (params, obs (W, O), episode ids (W,), t (W,), key) ->
    actions (W, A) for W = width rows, for the CPU."""
    import jax

    spec = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), params_example)
    return _export_policy(algorithm, spec, int(obs_dim), int(act_dim), int(width))


@memoized
def _export_policy(algorithm, spec, obs_dim: int, act_dim: int, width: int) -> bytes:
    import jax
    import jax.numpy as jnp

    from floq.agents.base import noise_shape

    shape = noise_shape(algorithm, act_dim)

    def policy(params, obs, ep_ids, ts, key):
        def noise(e, t):
            return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, e), t), shape)

        return algorithm.act(params, obs, jax.vmap(noise)(ep_ids, ts))

    args = (spec, jax.ShapeDtypeStruct((width, obs_dim), jnp.float32), jax.ShapeDtypeStruct((width,), jnp.int32),
            jax.ShapeDtypeStruct((width,), jnp.int32), jax.ShapeDtypeStruct((2,), jnp.uint32))
    exported = jax.export.export(jax.jit(policy), platforms=["cpu"])(*args)
    return bytes(exported.serialize())


@functools.lru_cache(maxsize=8)
def _policy_program(policy_bytes: bytes):
    """The exported policy as a jitted callable, one per policy in this process (a later
    runner of the same policy calls the program the first one compiled)."""
    import jax

    return jax.jit(jax.export.deserialize(bytearray(policy_bytes)).call)


class EpisodeRunner:
    """Runs units of seeded episodes with one batched policy call per simulator step."""

    def __init__(self, policy_bytes: bytes, width: int, env_kwargs: dict):
        import jax

        self._policy = _policy_program(bytes(policy_bytes))
        self.width = width
        self.env_kwargs = dict(env_kwargs)
        self._envs: dict[str, list] = {}

    def envs(self, dataset: str, n: int) -> list:
        """The first n of this runner's environments of `dataset` (taken from floq.envs when
        first needed: a unit of fewer episodes than the width uses only as many)."""
        envs = self._envs.setdefault(dataset, [])
        while len(envs) < n:
            envs.append(envs_pool.acquire(dataset, self.env_kwargs))
        return envs[:n]

    def run(self, params, key, dataset: str, seed: int, episodes, step: int) -> np.ndarray:
        """Episodes `episodes` (at most width) of seed `seed`'s evaluation at `step` ->
        array (n, 3): success, return, length."""
        episodes = list(episodes)
        n, w = len(episodes), self.width
        if not 0 < n <= w:
            raise ValueError(f"a unit holds 1..{w} episodes, got {n}")
        import jax

        # On the device once per unit: passing numpy parameters to every policy call copies
        # them every simulator step (4 MB per step for a 4x512 actor).
        params, key = jax.device_put(params), jax.device_put(np.asarray(key))
        envs = self.envs(dataset, n)
        first = [np.asarray(envs[j].reset(seed=reset_seed(seed, e, step))[0], np.float32)
                 for j, e in enumerate(episodes)]
        obs = np.zeros((w, first[0].shape[0]), np.float32)
        obs[:n] = np.stack(first)
        ep_ids = np.zeros(w, np.int32)
        ep_ids[:n] = episodes
        t = np.zeros(w, np.int32)
        active = np.zeros(w, bool)
        active[:n] = True
        out = np.zeros((n, 3), np.float64)
        while active.any():
            actions = np.asarray(self._policy(params, obs, ep_ids, t, key))
            for j in np.flatnonzero(active):
                o, r, term, trunc, info = envs[j].step(actions[j])
                out[j, 1] += float(r)
                t[j] += 1
                obs[j] = o
                if term or trunc:
                    out[j, 0] = float(info.get("success", 0.0))
                    out[j, 2] = float(t[j])
                    active[j] = False
        return out

    def close(self):
        for dataset, envs in self._envs.items():
            for e in envs:
                envs_pool.release(dataset, self.env_kwargs, e)
        self._envs = {}


def _worker_main(policy_bytes, width, env_kwargs, ctrl, tasks, results):
    ignore_stop_signals()
    parent = os.getppid()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    quiet_warnings()
    try:
        runner = EpisodeRunner(policy_bytes, width, env_kwargs)
    except Exception:  # noqa: BLE001
        results.put(("error", None, traceback.format_exc()))
        return
    results.put(("ready", None, None))
    params: dict = {}

    def handle(msg):
        if msg[0] == "params":
            params[msg[1]] = msg[2]
        elif msg[0] == "drop":
            params.pop(msg[1], None)
        return msg[0] != "close"

    try:
        while True:
            if os.getppid() != parent:  # the trainer is gone (SIGKILL): nobody reads the results
                return
            while ctrl.poll():
                if not handle(ctrl.recv()):
                    return
            try:
                unit = tasks.get(timeout=0.1)
            except queue.Empty:
                continue
            if unit is None:
                return
            if not _worker_unit(unit, params, handle, ctrl, runner, results):
                return
    except (EOFError, OSError):  # the trainer closed its end (it ended): nothing left to do
        return


def _worker_unit(unit, params, handle, ctrl, runner, results) -> bool:
    """Run one unit in a worker; False when the trainer said to close meanwhile."""
    eval_id, member = unit[0], unit[1]
    while eval_id not in params:
        if not handle(ctrl.recv()):
            return False
    p, key, dataset, seed, step = params[eval_id][member]
    t0 = time.time()
    try:
        res = runner.run(p, key, dataset, seed, unit[2], step)
    except Exception:  # noqa: BLE001
        results.put(("error", unit, traceback.format_exc()))
        return True
    results.put(("done", unit, (res, time.time() - t0)))
    return True


# --------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Member:
    """One trained agent of a program: its row in the state, its seed and its task's env."""

    index: int
    seed: int
    dataset: str


@dataclasses.dataclass
class Evaluation:
    """One submitted evaluation; `results[m]` is member m's (episodes, 3) array when done."""

    eval_id: int
    step: int
    members: tuple
    episodes: int
    units_left: int
    results: dict
    submitted: float
    busy_s: float = 0.0

    @property
    def done(self) -> bool:
        return self.units_left == 0

    def summary(self, member_index: int) -> dict:
        arr = self.results[member_index]
        return {"success": float(arr[:, 0].mean()), "return": float(arr[:, 1].mean()),
                "episode_length": float(arr[:, 2].mean()), "episode_success": arr[:, 0].copy(),
                "episode_return": arr[:, 1].copy()}


class EvalAbandoned(Exception):
    """wait() gave up because should_stop() became true."""


class EvalService:
    """Evaluation workers for one run (see the module docstring).

    Args:
      policy_bytes: `export_policy(...)` of this run's policy.
      env_kwargs: e.g. {'success_timing': 'post'}.
      num_workers: worker processes (0: run units in this process, inside wait()).
      envs_per_worker: episodes stepped in lock-step per unit (the policy's batch).
      episodes: episodes per member and evaluation.
    """

    def __init__(self, policy_bytes: bytes, env_kwargs: dict, num_workers: int, envs_per_worker: int,
                 episodes: int, start_timeout: float = 600.0, wait_ready: bool = True):
        self.num_workers = int(num_workers)
        self.width = int(envs_per_worker)
        self.episodes = int(episodes)
        self.env_kwargs = dict(env_kwargs)
        self._policy_bytes = policy_bytes
        self._evals: list[Evaluation] = []
        self._next_id = 0
        self._local_units: list = []
        self._runner = None
        self.procs, self.ctrls = [], []
        if self.num_workers <= 0:
            return
        ctx = mp.get_context("spawn")
        with stop_signals_blocked():
            self._tasks, self._results = ctx.Queue(), ctx.Queue()
            for _ in range(self.num_workers):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker_main, daemon=True,
                                args=(policy_bytes, self.width, self.env_kwargs, child, self._tasks, self._results))
                p.start()
                self.procs.append(p)
                self.ctrls.append(parent)
        # Parameters go to the workers from a sender thread: a pipe blocks once its buffer is
        # full until the worker reads it, which a busy (or still starting) worker does only
        # between units; the training loop must never wait for that.
        self._outbox: queue.Queue = queue.Queue()
        self._send_error: list = []
        self._sender = threading.Thread(target=self._send_loop, daemon=True)
        self._sender.start()
        self._ready = 0
        if not wait_ready:  # asynchronous evaluation: training starts while workers import
            return
        deadline = time.time() + start_timeout
        while self._ready < self.num_workers:
            kind, _, msg = self._get(deadline - time.time())
            if kind == "error":
                self.close()
                raise RuntimeError(f"evaluation worker failed to start:\n{msg}")
            self._ready += kind == "ready"

    def _send_loop(self):
        while True:
            msg = self._outbox.get()
            if msg is None:
                return
            for c in self.ctrls:
                try:
                    c.send(msg)
                except (BrokenPipeError, OSError) as e:  # a dead worker: _drain reports it
                    self._send_error.append(e)

    # -- plumbing ------------------------------------------------------------------
    def _get(self, timeout: float):
        """One message from the workers, failing loudly (never hanging) if one died."""
        waited = 0.0
        while True:
            try:
                return self._results.get(timeout=min(1.0, max(timeout - waited, 0.01)))
            except queue.Empty:
                waited += 1.0
                dead = [i for i, p in enumerate(self.procs) if not p.is_alive()]
                if dead or waited >= timeout:
                    codes = [self.procs[i].exitcode for i in dead]
                    self.close()
                    if dead:
                        raise WorkerDied(f"evaluation worker(s) {dead} died (exit codes {codes})", codes)
                    raise RuntimeError("evaluation workers stopped answering")

    def _units(self, ev: Evaluation):
        for m in ev.members:
            for lo in range(0, ev.episodes, self.width):
                yield (ev.eval_id, m.index, tuple(range(lo, min(lo + self.width, ev.episodes))))

    def _record(self, unit, res, busy):
        ev = next(e for e in self._evals if e.eval_id == unit[0])
        arr = ev.results.setdefault(unit[1], np.zeros((ev.episodes, 3)))
        arr[list(unit[2])] = res
        ev.units_left -= 1
        ev.busy_s += busy
        if ev.done and self.ctrls:
            self._outbox.put(("drop", ev.eval_id))

    def _drain(self, block_s: float = 0.0):
        deadline = time.time() + block_s
        while True:
            try:
                kind, unit, payload = (self._results.get_nowait() if block_s <= 0
                                       else self._results.get(timeout=max(deadline - time.time(), 0.001)))
            except queue.Empty:
                if any(not p.is_alive() for p in self.procs):
                    self._get(0.0)  # raises with the exit codes
                return
            if kind == "error":
                self.close()
                where = "failed to start" if unit is None else "failed in a worker"
                raise RuntimeError(f"evaluation {where}:\n{payload}")
            if kind == "ready":
                self._ready += 1
            if kind == "done":
                self._record(unit, *payload)
            block_s = 0.0

    # -- the interface ---------------------------------------------------------------
    def submit(self, step: int, members, snapshots) -> None:
        """Evaluate members (a list of Member) at `step`; snapshots[i] are member i's policy
        parameters (numpy pytrees, copied now: training may go on)."""
        ev = Evaluation(self._next_id, int(step), tuple(members), self.episodes, 0, {}, time.time())
        self._next_id += 1
        payload = {m.index: (snap, eval_key(m.seed, step), m.dataset, m.seed, int(step))
                   for m, snap in zip(members, snapshots)}
        units = list(self._units(ev))
        ev.units_left = len(units)
        self._evals.append(ev)
        if self.num_workers <= 0:
            self._local_units.extend((u, payload[u[1]]) for u in units)
            return
        self._outbox.put(("params", ev.eval_id, payload))
        for u in units:
            self._tasks.put(u)

    def pending_steps(self) -> list[int]:
        return [e.step for e in self._evals]

    def poll(self) -> list[Evaluation]:
        """Finished evaluations, oldest first; an evaluation is returned only once every
        evaluation submitted before it is finished (rows stay in step order)."""
        if self.num_workers > 0:
            self._drain()
        out = []
        while self._evals and self._evals[0].done:
            out.append(self._evals.pop(0))
        return out

    def wait(self, until_step: int | None = None, should_stop=None) -> list[Evaluation]:
        """Block until every evaluation (or every one at steps <= until_step) is finished.
        Raises EvalAbandoned as soon as should_stop() is true."""
        def outstanding():
            return [e for e in self._evals if not e.done and (until_step is None or e.step <= until_step)]

        while outstanding():
            if should_stop is not None and should_stop():
                raise EvalAbandoned()
            if self.num_workers <= 0:
                self._run_local_unit()
            else:
                self._drain(block_s=0.2)
        return self.poll()

    def _run_local_unit(self):
        if self._runner is None:
            self._runner = EpisodeRunner(self._policy_bytes, self.width, self.env_kwargs)
        unit, (p, key, dataset, seed, step) = self._local_units.pop(0)
        t0 = time.time()
        res = self._runner.run(p, key, dataset, seed, unit[2], step)
        self._record(unit, res, time.time() - t0)

    def close(self):
        sender = getattr(self, "_sender", None)
        if sender is not None and sender.is_alive():
            self._outbox.put(("close", None))
            self._outbox.put(None)
            sender.join(timeout=5)
        self._sender = None
        for p in self.procs:
            p.join(timeout=2)
            if p.is_alive():  # mid-episode: workers ignore SIGTERM (STOP_SIGNALS), so SIGKILL
                p.kill()
                p.join(timeout=2)
        self.procs, self.ctrls = [], []
        if self._runner is not None:
            self._runner.close()
            self._runner = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------------------
# The earlier lock-step design (a pipe round trip per simulator step): the benchmark baseline
# --------------------------------------------------------------------------------------

def _lockstep_worker(conn, dataset_name, env_kwargs):
    ignore_stop_signals()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    quiet_warnings()
    try:
        env = _make_env(dataset_name, env_kwargs)
        conn.send(("ready", None))
    except Exception:  # noqa: BLE001
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        cmd, arg = conn.recv()
        if cmd == "reset":
            obs, _ = env.reset(seed=int(arg))
            conn.send(np.asarray(obs, np.float32))
        elif cmd == "step":
            obs, rew, term, trunc, info = env.step(arg)
            conn.send((np.asarray(obs, np.float32), float(rew), bool(term), bool(trunc), float(info.get("success", 0.0))))
        elif cmd == "close":
            env.close()
            conn.close()
            return


class LockstepEvaluator:
    """One env per worker; the driver computes every action and sends it down a pipe.

    `run(policy, num_episodes, seed, obs_dim, step=0)` with policy (obs (W, O), episode ids (W,),
    t (W,)) -> actions (W, A). Kept as the baseline of `floq bench`'s eval group.
    """

    def __init__(self, dataset_name: str, env_kwargs: dict, num_workers: int = 1):
        ctx = mp.get_context("spawn")
        self.conns, self.procs = [], []
        with stop_signals_blocked():
            for _ in range(max(num_workers, 1)):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_lockstep_worker, args=(child, dataset_name, env_kwargs), daemon=True)
                p.start()
                self.conns.append(parent)
                self.procs.append(p)
        for c in self.conns:
            status, msg = c.recv()
            if status != "ready":
                self.close()
                raise RuntimeError(f"evaluation worker failed to start:\n{msg}")

    def run(self, policy, num_episodes: int, seed: int, obs_dim: int, step: int = 0) -> dict:
        w = len(self.conns)
        pending = list(range(num_episodes))[::-1]
        slot_ep = [-1] * w
        obs = np.zeros((w, obs_dim), np.float32)
        t = np.zeros(w, np.int64)
        ret = np.zeros(w)
        out = {}

        def start(i):
            slot_ep[i] = pending.pop()
            t[i], ret[i] = 0, 0.0
            self.conns[i].send(("reset", reset_seed(seed, slot_ep[i], step)))
            obs[i] = self.conns[i].recv()

        for i in range(w):
            if pending:
                start(i)
        while any(e >= 0 for e in slot_ep):
            actions = np.asarray(policy(obs, np.maximum(np.asarray(slot_ep), 0), t.copy()))
            active = [i for i in range(w) if slot_ep[i] >= 0]
            for i in active:
                self.conns[i].send(("step", actions[i]))
            for i in active:
                o, r, term, trunc, succ = self.conns[i].recv()
                ret[i] += r
                t[i] += 1
                obs[i] = o
                if term or trunc:
                    out[slot_ep[i]] = (succ, ret[i], t[i])
                    slot_ep[i] = -1
                    if pending:
                        start(i)
        arr = np.array([out[i] for i in range(num_episodes)], np.float64)
        return {"success": float(arr[:, 0].mean()), "return": float(arr[:, 1].mean()),
                "episode_length": float(arr[:, 2].mean()), "episode_success": arr[:, 0], "episode_return": arr[:, 1]}

    def close(self):
        for c in self.conns:
            try:
                c.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self.conns, self.procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
