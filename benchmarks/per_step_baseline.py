"""The per-step training loop of the published code, for comparison with floq's trainer.

The released floq / FQL code (github:CMU-AIRe/floq, github:seohongpark/fql, main.py) trains
with a Python loop that, every gradient step, samples a batch on the host in NumPy
(`dataset.sample(batch_size)`: `np.random.randint` indices, fancy-indexed arrays) and calls
one jitted `agent.update(batch)`. floq's trainer instead keeps the data on the device and
scans `chunk_size` steps (sampling included) inside one compiled program.

This module reproduces the per-step *loop structure* around floq's own update
(`FQL.update` with any critic), so a comparison isolates the loop: same networks, same
losses, same optimiser, same PRNG stream as `floq.train.make_step`; only where the batch is
sampled (host NumPy vs. inside the program) and how often Python dispatches (every step vs.
every chunk) differ.
"""

from __future__ import annotations

import time

import jax
import numpy as np


def make_update(algorithm, critic, donate: bool = True):
    """Jitted (state, batch) -> (state, metrics) for one seed, one step.

    The PRNG handling mirrors `floq.train.make_step` (split off the data key, which the
    per-step loop does not use, then update with the rest), so given the batch that
    make_step would sample, the new state is the same.
    """

    def update(state, batch):
        rng, _k_data = jax.random.split(state["rng"])
        return algorithm.update(critic, {**state, "rng": rng}, batch)

    return jax.jit(update, donate_argnums=(0,) if donate else ())


class HostSampler:
    """Uniform sampling with replacement on the host, in NumPy (the released code's
    `Dataset.sample`)."""

    def __init__(self, data: dict, seed: int = 0):
        self.data = {k: np.asarray(v) for k, v in data.items()}
        self.size = next(iter(self.data.values())).shape[0]
        self.rng = np.random.default_rng(seed)

    def sample(self, batch_size: int) -> dict:
        idx = self.rng.integers(0, self.size, size=batch_size)
        return {k: v[idx] for k, v in self.data.items()}


def train_steps(update, state, sampler: HostSampler, batch_size: int, steps: int):
    """The published loop: `steps` x (host sample -> one jitted update). Returns the state
    (not synchronised; call jax.block_until_ready on it to wait for the device)."""
    info = None
    for _ in range(steps):
        batch = sampler.sample(batch_size)
        state, info = update(state, batch)
    return state, info


def measure(algorithm, critic, state, host_data: dict, batch_size: int, steps: int, repeats: int = 3,
            warmup_steps: int = 2, seed: int = 0) -> dict:
    """Updates/s of the per-step loop: median over `repeats` runs of `steps` steps, after a
    warm-up that compiles the update (excluded).

    Args:
      state: one seed's training state (no leading seed axis); it is donated.
    """
    update = make_update(algorithm, critic)
    sampler = HostSampler(host_data, seed)
    state, _ = train_steps(update, state, sampler, batch_size, max(1, warmup_steps))
    jax.block_until_ready(state)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        state, _ = train_steps(update, state, sampler, batch_size, steps)
        jax.block_until_ready(state)
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"updates_per_s": steps / med, "seconds": times, "state": state}
