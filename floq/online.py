"""The online phase of offline-to-online fine-tuning (FQL's protocol, as the released FQL and
floq code run it).

After `Trainer.train_steps` offline gradient steps, `Trainer.online_steps` environment steps:
each member (vmapped seed) acts in its own simulator with its one-step policy and the policy's
sampling noise, appends the transition to its own replay buffer, then takes `utd_ratio`
gradient steps on batches drawn from the offline dataset plus its online transitions
(uniformly over both, or half and half with `balanced_sampling`). Rewards, masks and success
come from the OGBench singletask environment, the same rules its dataset relabelling uses
(reward from the env, mask = 1 - terminated, terminated = success; `SUCCESS_TIMING` applies
through the env's construction), as in FQL's main.py.

The released code's buffer holds at most max(buffer_size = 2M, N + 1) rows and overwrites
the oldest (dataset rows first) once full; `Trainer.buffer_size` (gin BUFFER_SIZE) is that
knob and batches are drawn exactly as from that ring buffer (floq.train.sample_mixed).

Exact resume. The buffer is a device array (members, online_steps, ...) that goes into every
checkpoint (every online transition is kept; eviction is a rule of sampling, a function of
the number written). The simulator's state is not saved: every episode is reset with a seed that is a
function of (member seed, episode number), and its actions are in the buffer, so a resume
re-creates the episode in progress by resetting with the same seed and replaying the stored
actions (checked against the stored observations). The exploration noise of environment step
j is a function of (seed, j). A run killed in the online phase and re-run gives the same CSVs
as an uninterrupted run.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from floq import envs as envs_pool
from floq.evaluate import SEED_STRIDE
from floq.train import init_buffer, make_explorer, make_online_program

ONLINE_SEED_OFFSET = 1_000_000_007  # online episodes never share a reset seed with evaluation episodes
KEYS = ("observations", "actions", "rewards", "masks", "next_observations")


def online_reset_seed(seed: int, episode: int) -> int:
    return ONLINE_SEED_OFFSET + int(seed) * SEED_STRIDE + int(episode)


class OnlinePhase:
    """Simulators, buffers and episode bookkeeping of the online phase, one per member."""

    def __init__(self, run):
        self.run = run
        tr = run.tr
        self.length = tr.online_steps
        self.seeds = [m.seed for m in run.members]
        self._seed_arr = jnp.asarray(self.seeds, jnp.int32)
        ex = {k: np.asarray(v[:1]) for k, v in run.data.items() if k in KEYS}
        self.buffer = init_buffer(len(run.members), self.length, ex)
        self.program = make_online_program(run.algo, run.critic, tr.batch_size, tr.utd_ratio, tr.balanced_sampling,
                                           tr.buffer_size)
        self.act = make_explorer(run.algo, run.act_dim)
        self.envs = None
        self.obs = None
        # Per member: episodes begun (the current one included), env step the current episode
        # began at, online episodes finished and how many of them succeeded.
        self.episode = [0] * len(self.seeds)
        self.ep_start = [0] * len(self.seeds)
        self.finished = [0] * len(self.seeds)
        self.successes = [0] * len(self.seeds)

    # ------------------------------------------------------------------ checkpoint contents
    def meta(self) -> dict:
        return {"episode": list(self.episode), "ep_start": list(self.ep_start), "finished": list(self.finished),
                "successes": list(self.successes)}

    def restore(self, buffer, meta: dict | None):
        self.buffer = buffer
        if meta:
            self.episode = [int(v) for v in meta["episode"]]
            self.ep_start = [int(v) for v in meta["ep_start"]]
            self.finished = [int(v) for v in meta["finished"]]
            self.successes = [int(v) for v in meta["successes"]]
        self.envs = None  # re-created (and the current episodes replayed) when stepping resumes

    # ------------------------------------------------------------------ simulators
    def _start(self, env_steps: int):
        """Make the simulators and bring each to its state after `env_steps` online steps."""
        kwargs = self.run.exp.task.env_kwargs()
        name = self.run.exp.task.dataset_name
        self.envs = [envs_pool.acquire(name, kwargs) for _ in self.seeds]
        self.obs = np.zeros((len(self.seeds), self.run.obs_dim), np.float32)
        host = None
        for m, env in enumerate(self.envs):
            ob, _ = env.reset(seed=online_reset_seed(self.seeds[m], self.episode[m]))
            ob = np.asarray(ob, np.float32)
            if env_steps > self.ep_start[m]:
                if host is None:
                    host = jax.device_get(self.buffer)
                for j in range(self.ep_start[m], env_steps):
                    nxt, *_ = env.step(np.asarray(host["actions"][m, j]))
                    nxt = np.asarray(nxt, np.float32)
                    if not np.allclose(nxt, host["next_observations"][m, j], atol=1e-5):
                        from floq.results import RunError

                        raise RunError(f"resuming the online phase: replaying episode {self.episode[m]} of seed "
                                       f"{self.seeds[m]} did not reproduce the stored observation at env step {j}"
                                       f" (simulator not deterministic on this machine?)")
                    ob = nxt
            self.obs[m] = ob

    def close(self):
        task = self.run.exp.task
        for env in self.envs or ():
            envs_pool.release(task.dataset_name, task.env_kwargs(), env)
        self.envs = None

    # ------------------------------------------------------------------ one environment step
    def step(self, env_steps: int):
        """One environment step of every member and `utd_ratio` gradient steps; returns the
        per-step metrics (members, utd), the members alive after them and the index of the
        gradient step at which a member diverged (utd_ratio when it did not). Device time is added to
        the run's train_s, simulator time to env_s."""
        run = self.run
        if self.envs is None:
            self._start(env_steps)
        t0 = time.time()
        pp = run.algo.policy_params(run.states["params"])
        actions = np.asarray(self.act(pp, jnp.asarray(self.obs), self._seed_arr,
                                      jnp.asarray(env_steps, jnp.int32)))
        t1 = time.time()
        trans = {k: [] for k in KEYS}
        for m, env in enumerate(self.envs):
            a = actions[m]
            nxt, r, term, trunc, info = env.step(a.copy())
            nxt = np.asarray(nxt, np.float32)
            for k, v in zip(KEYS, (self.obs[m], a, r, 1.0 - float(term), nxt)):
                trans[k].append(np.asarray(v, np.float32))
            if term or trunc:
                self.finished[m] += 1
                self.successes[m] += int(bool(info.get("success", 0.0)))
                self.episode[m] += 1
                self.ep_start[m] = env_steps + 1
                nxt, _ = env.reset(seed=online_reset_seed(self.seeds[m], self.episode[m]))
                nxt = np.asarray(nxt, np.float32)
            self.obs[m] = nxt
        t2 = time.time()
        trans = {k: jnp.asarray(np.stack(v)) for k, v in trans.items()}
        run.states, self.buffer, metrics, alive, bad_at = self.program(
            run.states, jnp.asarray(run.alive), self.buffer, run.data, trans, jnp.asarray(env_steps, jnp.int32))
        metrics, alive, bad_at = jax.device_get((metrics, alive, bad_at))
        t3 = time.time()
        run.times["train_s"] += (t1 - t0) + (t3 - t2)
        run.times["env_s"] = run.times.get("env_s", 0.0) + (t2 - t1)
        return {k: np.asarray(v) for k, v in metrics.items()}, np.asarray(alive), np.asarray(bad_at)
