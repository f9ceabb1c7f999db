"""Adam over one flattened parameter vector (floq.agents.base.flattened, FQL's optimiser): the
same state layout as leaf-by-leaf Adam and the same numbers."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from floq.agents.base import flattened


def _tree(seed):
    ks = jax.random.split(jax.random.PRNGKey(seed), 4)
    return {"a": {"kernel": jax.random.normal(ks[0], (5, 7)), "bias": jax.random.normal(ks[1], (7,))},
            "b": [jax.random.normal(ks[2], (3,)), jax.random.normal(ks[3], (2, 2, 3))]}


def test_flattened_adam_has_the_tree_state_and_the_leafwise_numbers():
    params = _tree(0)
    pairs = [(optax.adam(3e-4), flattened(optax.adam(3e-4))),
             (optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)),
              optax.chain(optax.clip_by_global_norm(1.0), flattened(optax.adam(1e-2))))]
    for inner, flat in pairs:
        s_ref, s_flat = inner.init(params), flat.init(params)
        assert jax.tree_util.tree_structure(s_ref) == jax.tree_util.tree_structure(s_flat)
        p_ref = p_flat = params

        @jax.jit
        def step(p_ref, s_ref, p_flat, s_flat, g):
            u, s_ref = inner.update(g, s_ref, p_ref)
            v, s_flat = flat.update(g, s_flat, p_flat)
            return optax.apply_updates(p_ref, u), s_ref, optax.apply_updates(p_flat, v), s_flat

        for i in range(5):
            g = _tree(10 + i)
            p_ref, s_ref, p_flat, s_flat = step(p_ref, s_ref, p_flat, s_flat, g)
        for a, b in zip(jax.tree_util.tree_leaves((p_ref, s_ref)), jax.tree_util.tree_leaves((p_flat, s_flat))):
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


@pytest.mark.slow  # compiles trainer steps: seconds of CPU each
def test_fql_updates_with_flattened_adam_equal_leafwise_adam():
    """Three FQL + floq updates from one state with FQL.flat_adam (flattened Adam) and with
    leaf-by-leaf Adam (the default): the same metrics, and the same state within rounding
    (max |diff| printed: 1.2e-7 on this machine, one ulp of the O(1) parameters)."""
    from floq.agents.fql import FQL
    from floq.critics.flow import FloqCritic
    from floq.nets.specs import MLPNet
    from floq.train import init_states, make_step

    critic = FloqCritic(field_net=MLPNet(16, 2), distill_net=MLPNet(16, 2), flow_steps=2, noise_samples=2,
                        num_bins=11).configure(0.99, -1.0, 0.0)
    leafwise = FQL(alpha=10.0, actor_net=MLPNet(16, 2, layer_norm=False), flow_steps=2)
    algo = dataclasses.replace(leafwise, flat_adam=True)
    rng = np.random.default_rng(0)
    data = {"observations": jnp.asarray(rng.standard_normal((64, 3)), jnp.float32),
            "actions": jnp.asarray(rng.uniform(-1, 1, (64, 2)), jnp.float32),
            "rewards": -jnp.asarray(rng.random(64) > 0.3, jnp.float32),
            "masks": jnp.asarray(rng.random(64) > 0.1, jnp.float32),
            "next_observations": jnp.asarray(rng.standard_normal((64, 3)), jnp.float32)}
    state0 = jax.tree_util.tree_map(lambda x: x[0], init_states(algo, critic, [0], data["observations"][:2],
                                                                data["actions"][:2]))

    def run(a):
        step = make_step(a, critic, 8)
        return jax.jit(lambda s: jax.lax.scan(lambda c, _: step(c, data), s, None, length=3))(state0)

    (s1, m1), (s2, m2) = run(algo), run(leafwise)
    assert jax.tree_util.tree_structure(s1) == jax.tree_util.tree_structure(s2)
    for k in m1:
        np.testing.assert_allclose(np.asarray(m1[k]), np.asarray(m2[k]), rtol=1e-5, atol=1e-6, err_msg=k)
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
               for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)))
    print(f"max |state flattened Adam - leafwise Adam| after 3 updates: {diff:.3g}")
    assert diff <= 1e-5
