"""The one algorithm interface the trainer, evaluation, the online phase, FLOP counting and
the sweep's cost estimates rely on. Nothing outside floq/agents/ knows an algorithm's
parameter names.

An algorithm is a frozen (hashable) dataclass of static configuration (gin builds it from
gin/algorithms/<name>.gin) plus pure functions over pytrees. It is paired with any critic
of floq.critics.base's interface, which it receives as an argument:

  name                                  result column `algorithm`
  batch_keys                            the batch arrays update() reads (the trainer's
                                        datasets carry them; e.g. ReBRAC adds 'next_actions')
  init(rng, critic, obs, act) -> state  {'params': {..., 'critic': {'online', 'target'}},
                                        'opt': ..., 'rng': key, 'step': int32}; obs (B, O) and
                                        act (B, A) are examples
  update(critic, state, batch) -> (state, metrics)
                                        one gradient step; the algorithm chooses the next
                                        actions and forms the TD target
                                        r + gamma * mask * (critic.next_values + bonus), or its
                                        own (IQL: r + gamma * mask * V(s')), and fits the
                                        critic with critic.fit
  policy_params(params) -> pytree       the part of the parameters evaluation ships to its
                                        workers (everything act() reads)
  act(policy_params, obs, noise, explore=False) -> actions
                                        deterministic given noise: obs (W, O), noise
                                        (W, *noise_shape(A)) standard normal; explore=True is
                                        the online phase's exploration (e.g. ReBRAC's noisy
                                        actions), False evaluation
  noise_shape(action_dim) (optional)    the per-row noise act() reads; default (A,)
  param_counts(critic, params) -> dict  parameter counts by part, 'critic_total' and 'total'
  describe() -> dict                    knobs recorded as result columns
  check_critic(critic) (optional)       raise ValueError (one line) when this algorithm needs
                                        a quantity the critic cannot give
  bind_critic(critic) (optional)        -> a copy of the algorithm that holds the configured
                                        critic, for an act() that scores actions with it
                                        (IFQL: best of N samples); the trainer calls it once
                                        before it builds its programs (floq/loop.py)

Exactness contract: with the monolithic critic, one update from the same parameters, batch
and key gives the reference implementation's losses and gradients (tests/agents/).
"""

from __future__ import annotations

#: What every algorithm's batch holds (floq.train.sample_batch).
BASE_BATCH_KEYS = ("observations", "actions", "rewards", "masks", "next_observations")

#: Metrics an algorithm computes on some updates only, as (name prefix, indicator metric):
#: when an update's metrics hold the indicator (1 where the group was computed, 0 where it was
#: not, and the group's metrics 0 there), the group's metrics are averaged over the updates
#: whose indicator is 1 (NaN for a window with none: train.csv leaves that cell empty, "not
#: computed", which readers do not take for a diverged loss), the indicator over all updates
#: (the fraction of updates that computed the group). ReBRAC's actor updates every actor_freq-th
#: step: its actor/* metrics are the means over actor updates, not diluted by the zeros of
#: critic-only steps.
PARTIAL_METRICS = (("actor/", "actor/full_update"),)


def partial_metrics(names) -> set:
    """The metric names among `names` that PARTIAL_METRICS averages over some updates only."""
    names = set(names)
    return {k for prefix, indicator in PARTIAL_METRICS if indicator in names
            for k in names if k.startswith(prefix) and k != indicator}


def window_means(values: dict) -> dict:
    """Per-member means of per-step metrics: {name: (members, steps)} -> {name: (members,)}
    in float64, PARTIAL_METRICS averaged over the steps that computed them."""
    import numpy as np

    out = {k: np.asarray(v).astype(np.float64).mean(axis=1) for k, v in values.items()}
    for prefix, indicator in PARTIAL_METRICS:
        if indicator not in values:
            continue
        mask = np.asarray(values[indicator]).astype(np.float64)
        count = mask.sum(axis=1)
        for k, v in values.items():
            if k in partial_metrics(values) and k.startswith(prefix):
                total = (np.asarray(v).astype(np.float64) * mask).sum(axis=1)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[k] = np.where(count > 0, total / np.where(count > 0, count, 1.0), np.nan)
    return out


def gradient_step(tx, loss_fn, trainable, opt_state):
    """One optimiser step on `trainable`: (loss_fn(trainable) -> (loss, info)) ->
    (new trainable, new optimiser state, info with 'grad/norm' (global L2 norm)). The step every
    algorithm takes over all its trainable parameters (one optax transformation, as FQL)."""
    import jax
    import optax

    grads, info = jax.grad(loss_fn, has_aux=True)(trainable)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    info["grad/norm"] = optax.tree.norm(grads)
    return trainable, opt_state, info


def flattened(inner):
    """`inner` (an elementwise optax transformation, e.g. Adam) applied to ONE vector of all
    parameters instead of leaf by leaf: its update is a handful of large fused operations
    instead of a few per leaf (~60 leaves for FQL + floq). The state is `inner`'s state over
    the parameter tree, as without the wrapper (checkpoints and resumes are unchanged); the
    vectors are concatenated and split inside the update. For an elementwise `inner` the
    numbers are the leaf-by-leaf ones (tests/agents/test_flat_adam.py). Unlike
    optax.flatten, which keeps the state flat, the layout of the state stays the tree's."""
    import jax
    import optax
    from jax.flatten_util import ravel_pytree

    def update(grads, state, params=None):
        treedef = jax.tree_util.tree_structure(grads)
        like = lambda x: jax.tree_util.tree_structure(x) == treedef  # noqa: E731 - a tree shaped like the params
        nodes, outer = jax.tree_util.tree_flatten(state, is_leaf=like)
        marks = [like(n) for n in nodes]
        flat_g, unravel = ravel_pytree(grads)
        flat_state = outer.unflatten([ravel_pytree(n)[0] if m else n for n, m in zip(nodes, marks)])
        flat_p = None if params is None else ravel_pytree(params)[0]
        flat_u, new_flat_state = inner.update(flat_g, flat_state, flat_p)
        new_nodes = outer.flatten_up_to(new_flat_state)
        new_state = outer.unflatten([unravel(n) if m else n for n, m in zip(new_nodes, marks)])
        return unravel(flat_u), new_state

    return optax.GradientTransformation(inner.init, update)


def noise_shape(algorithm, action_dim: int) -> tuple:
    """The per-row shape of the standard-normal noise `algorithm.act` reads."""
    fn = getattr(algorithm, "noise_shape", None)
    return tuple(fn(action_dim)) if fn is not None else (action_dim,)


def batch_keys(algorithm) -> tuple:
    return tuple(getattr(algorithm, "batch_keys", BASE_BATCH_KEYS))


def check_pair(algorithm, critic) -> None:
    """The algorithm's one-line refusal of a critic it cannot use (ValueError), if any."""
    fn = getattr(algorithm, "check_critic", None)
    if fn is not None:
        fn(critic)
