"""Evaluation episodes in the OGBench simulator, in parallel worker processes.

Each worker process holds one singletask env. The driver keeps every worker busy: actions
for all active envs are computed in one compiled call, and a worker that finishes an
episode starts the next pending one. Every episode is seeded (env reset seed and action
noise both derive from (eval_seed, episode index)), so an evaluation repeats exactly
whatever the number of workers.

Success is the last step's info['success'] (OGBench; FQL's evaluation); episodes end at
termination (success in singletask envs) or at the env's time limit.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import traceback

import numpy as np


def _make_env(dataset_name: str, env_kwargs: dict):
    import ogbench

    return ogbench.make_env_and_datasets(dataset_name, env_only=True, **env_kwargs)


def _worker(conn, dataset_name, env_kwargs):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from floq.cli import quiet_warnings

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


class _LocalEnv:
    """The same protocol as a worker, in-process (num_workers == 0)."""

    def __init__(self, dataset_name, env_kwargs):
        self.env = _make_env(dataset_name, env_kwargs)
        self._reply = None

    def send(self, msg):
        cmd, arg = msg
        if cmd == "reset":
            obs, _ = self.env.reset(seed=int(arg))
            self._reply = np.asarray(obs, np.float32)
        elif cmd == "step":
            obs, rew, term, trunc, info = self.env.step(arg)
            self._reply = (np.asarray(obs, np.float32), float(rew), bool(term), bool(trunc),
                           float(info.get("success", 0.0)))
        elif cmd == "close":
            self.env.close()

    def recv(self):
        return self._reply


class Evaluator:
    """A pool of env workers for one task.

    Args:
      dataset_name: OGBench singletask dataset name.
      env_kwargs: e.g. {'success_timing': 'post'}.
      num_workers: worker processes (0: one env in this process).
    """

    def __init__(self, dataset_name: str, env_kwargs: dict, num_workers: int = 0):
        self.num_workers = num_workers
        self.conns = []
        self.procs = []
        if num_workers <= 0:
            self.conns = [_LocalEnv(dataset_name, env_kwargs)]
            return
        ctx = mp.get_context("spawn")
        for _ in range(num_workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, dataset_name, env_kwargs), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            status, msg = self._recv(c, timeout=300)
            if status != "ready":
                self.close()
                raise RuntimeError(f"evaluation worker failed to start:\n{msg}")

    def _recv(self, conn, timeout: float = 600.0):
        """Receive from a worker, failing loudly (never hanging) if it died."""
        if isinstance(conn, _LocalEnv):
            return conn.recv()
        waited = 0.0
        while not conn.poll(1.0):
            waited += 1.0
            i = self.conns.index(conn)
            if not self.procs[i].is_alive() or waited >= timeout:
                code = self.procs[i].exitcode
                self.close()
                raise RuntimeError(f"evaluation worker {i} died (exit code {code}) or stopped answering")
        return conn.recv()

    @property
    def width(self) -> int:
        return len(self.conns)

    def run(self, policy, num_episodes: int, seed: int, obs_dim: int) -> dict:
        """Run `num_episodes` seeded episodes.

        Args:
          policy: (obs (W, O) float32, episode_ids (W,) int, t (W,) int) -> actions (W, A);
            rows of inactive slots are ignored.
          seed: evaluation seed; episode i resets the env with seed * 100_003 + i.

        Returns:
          dict with success, return, episode_length (means) and per-episode arrays.
        """
        w = self.width
        pending = list(range(num_episodes))[::-1]
        slot_ep = [-1] * w
        obs = np.zeros((w, obs_dim), np.float32)
        t = np.zeros(w, np.int64)
        ret = np.zeros(w)
        results = {}

        def start(i):
            ep = pending.pop()
            slot_ep[i] = ep
            t[i] = 0
            ret[i] = 0.0
            self.conns[i].send(("reset", seed * 100_003 + ep))

        for i in range(w):
            if pending:
                start(i)
        for i in range(w):
            if slot_ep[i] >= 0:
                obs[i] = self._recv(self.conns[i])
        while any(e >= 0 for e in slot_ep):
            actions = np.asarray(policy(obs, np.asarray(slot_ep), t.copy()))
            active = [i for i in range(w) if slot_ep[i] >= 0]
            for i in active:
                self.conns[i].send(("step", actions[i]))
            for i in active:
                o, r, term, trunc, succ = self._recv(self.conns[i])
                ret[i] += r
                t[i] += 1
                obs[i] = o
                if term or trunc:
                    results[slot_ep[i]] = (succ, ret[i], t[i])
                    slot_ep[i] = -1
                    if pending:
                        start(i)
                        obs[i] = self._recv(self.conns[i])
        eps = [results[i] for i in range(num_episodes)]
        succ = np.array([e[0] for e in eps], np.float64)
        rets = np.array([e[1] for e in eps], np.float64)
        lens = np.array([e[2] for e in eps], np.float64)
        return {"success": float(succ.mean()), "return": float(rets.mean()), "episode_length": float(lens.mean()),
                "episode_success": succ, "episode_return": rets}

    def close(self):
        for c in self.conns:
            try:
                c.send(("close", None))
            except (BrokenPipeError, OSError):
                pass
        for p in self.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
        self.conns, self.procs = [], []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
