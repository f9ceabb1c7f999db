"""Record the released FQL code's own numbers as small fixtures (run by hand, never by the
test suite: pytest does not collect this file, and it imports nothing from floq).

What it does, per algorithm (FQL, ReBRAC, IQL, IFQL, SAC: the five agents the released
repository's agents/ folder has): builds the released agent from its own `get_config()` with
the hidden widths made small (HIDDEN below) and a few settings changed so that every loss
term is exercised (OVERRIDES below), moves its target networks away from the online ones
(so that a test can tell them apart), then runs N_UPDATES updates exactly as the released
main.py calls them (ReBRAC: full_update = (i % actor_freq == 0), i = 1, 2, ...) on fixed,
seeded, random batches of OGBench cube-single shapes (observation 28, action 5), and saves
the inputs (initial parameters, batches, key, configuration) and the outputs (every
metric of every update, the final parameters and key) to tests/reference/<algo>_released.npz.

How to run it (the released code is imported from a scratch folder; none of it is copied
into this repository):

    # 1. the released code at the pinned commit, in a scratch folder
    git clone https://github.com/seohongpark/fql /tmp/fql_src   # or any mirror of it
    git -C /tmp/fql_src archive 719d04417cb0b206deddbc7d761b3e710c3d750c | (mkdir -p /tmp/fql_released && tar -x -C /tmp/fql_released)
    # 2. a scratch environment outside the repository, with the versions floq uses
    python -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install jax==0.10.2 jaxlib==0.10.2 flax==0.12.8 optax==0.2.8 numpy==2.4.6 distrax ml_collections
    # 3. record (from the repository root)
    /tmp/refvenv/bin/python tests/reference/record_released.py --src /tmp/fql_released --commit 719d04417cb0b206deddbc7d761b3e710c3d750c

The released agents' modules need only jax, flax, optax, distrax and ml_collections (not
OGBench or D4RL). The commit is written into every fixture (`meta/commit`) and into
tests/reference/README.md, which also lists the versions used.

The floq critic's fixture (floq_released.npz) comes the same way from github:CMU-AIRe/floq
(its agents/floq.py, FQL's actor with the floq critic), in its own process since both
repositories have top-level `agents` and `utils` packages:

    git -C /tmp/floq_src archive 2e461084757a8753fe5d1b8fb0ccb35c740caa60 | (mkdir -p /tmp/floq_released && tar -x -C /tmp/floq_released)
    /tmp/refvenv/bin/python tests/reference/record_released.py --src /tmp/floq_released --commit 2e461084757a8753fe5d1b8fb0ccb35c740caa60 --only floq
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OBS_DIM, ACT_DIM = 28, 5  # OGBench cube-single-play
BATCH = 64
N_UPDATES = 4  # ReBRAC: i = 1..4 -> critic-only, full, critic-only, full
HIDDEN = (64, 64)
SEED = 0

# Settings changed from the released get_config() (besides the widths), and why:
OVERRIDES = {
    # github:CMU-AIRe/floq's FloQAgent (FQL's actor with the floq critic): flow widths and the
    # distilled critic's made small like the others, K = 4 critic and actor flow steps (powers
    # of two: the released i / K and floq's i * (1 / K) are then the same floats), the reward
    # range its main.py reads from OGBench data (-1, 0)
    "floq": {"actor_flow_steps": 4, "critic_flow_steps": 4, "block_width": HIDDEN[0], "block_depth": len(HIDDEN),
             "r_min": -1.0, "r_max": 0.0},
    # alpha_actor / alpha_critic default to 0 in get_config(); nonzero values exercise both BC terms
    "rebrac": {"alpha_actor": 1.0, "alpha_critic": 0.1},
    # a small flow_steps / num_samples keeps the fixture quick; values are otherwise the defaults
    "fql": {"flow_steps": 4},  # (a power of two, as for floq below)
    "ifql": {"flow_steps": 4, "num_samples": 8},
    "iql": {},
    "sac": {},
}
TARGETS = {"floq": ("floq",), "rebrac": ("critic", "actor"), "fql": ("critic",), "iql": ("critic",), "ifql": ("critic",),
           "sac": ("critic",)}


def flatten(tree, prefix):
    """{'a': {'b': x}} -> {'prefix/a/b': np.asarray(x)}."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}"
        if isinstance(v, dict) or hasattr(v, "items"):
            out.update(flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def make_batches(n, need_next_actions):
    r = np.random.default_rng(1234)
    batches = []
    for _ in range(n):
        b = {
            "observations": r.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
            "actions": r.uniform(-0.99, 0.99, size=(BATCH, ACT_DIM)).astype(np.float32),
            "rewards": (r.integers(0, 2, size=(BATCH,)) - 1).astype(np.float32),  # OGBench: -1 / 0
            "masks": (r.uniform(size=(BATCH,)) > 0.1).astype(np.float32),
            "next_observations": r.normal(size=(BATCH, OBS_DIM)).astype(np.float32),
        }
        if need_next_actions:
            b["next_actions"] = r.uniform(-0.99, 0.99, size=(BATCH, ACT_DIM)).astype(np.float32)
        batches.append(b)
    return batches


def record(name, commit):
    import flax
    import jax
    import jax.numpy as jnp

    agents = importlib.import_module("agents")
    mod = importlib.import_module(f"agents.{name}")
    config = mod.get_config()
    config["actor_hidden_dims"] = HIDDEN
    config["value_hidden_dims"] = HIDDEN
    config["batch_size"] = BATCH
    for k, v in OVERRIDES[name].items():
        config[k] = v

    batches = make_batches(N_UPDATES, name == "rebrac")
    ex = batches[0]
    agent = agents.agents[name].create(SEED, ex["observations"][:1], ex["actions"][:1], config)

    # Targets away from the online networks (the released create() copies them): a fixed,
    # seeded perturbation, recorded as part of the initial parameters.
    params = flax.core.unfreeze(agent.network.params) if hasattr(flax.core, "unfreeze") else dict(agent.network.params)
    params = dict(params)
    for m in TARGETS[name]:
        leaves, treedef = jax.tree_util.tree_flatten(params[f"modules_target_{m}"])
        keys = jax.random.split(jax.random.PRNGKey(77), len(leaves))
        leaves = [x + 0.05 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
        params[f"modules_target_{m}"] = jax.tree_util.tree_unflatten(treedef, leaves)
    network = agent.network.replace(params=params, opt_state=agent.network.tx.init(params))
    agent = agent.replace(network=network)

    out = {"meta/commit": np.asarray(commit), "meta/algorithm": np.asarray(name),
           "meta/config": np.asarray(json.dumps({k: (list(v) if isinstance(v, tuple) else v)
                                                 for k, v in dict(agent.config).items()}, sort_keys=True)),
           "meta/versions": np.asarray(json.dumps({"jax": jax.__version__, "flax": flax.__version__,
                                                   "optax": importlib.import_module("optax").__version__,
                                                   "distrax": importlib.import_module("distrax").__version__,
                                                   "numpy": np.__version__})),
           "meta/n_updates": np.asarray(N_UPDATES),
           "rng0": np.asarray(jax.random.key_data(agent.rng) if jnp.issubdtype(agent.rng.dtype, jax.dtypes.prng_key)
                              else agent.rng)}
    out.update(flatten(agent.network.params, "params0"))
    metrics = []
    for i, b in enumerate(batches, start=1):
        for k, v in b.items():
            out[f"batch{i}/{k}"] = v
        jb = {k: jnp.asarray(v) for k, v in b.items()}
        if name == "rebrac":
            agent, info = agent.update(jb, full_update=(i % config["actor_freq"] == 0))
        else:
            agent, info = agent.update(jb)
        metrics.append({k: float(v) for k, v in jax.device_get(info).items()})
        out[f"rng{i}"] = np.asarray(agent.rng)
    for k in sorted(set().union(*metrics)):  # ReBRAC logs actor metrics on full updates only: NaN elsewhere
        out[f"metrics/{k}"] = np.asarray([m.get(k, np.nan) for m in metrics], np.float64)
    out.update(flatten(agent.network.params, "params_final"))
    path = os.path.join(HERE, f"{name}_released.npz")
    tmp = path + ".tmp.npz"
    np.savez_compressed(tmp, **out)
    os.replace(tmp, path)
    print(f"{name}: {os.path.getsize(path)} bytes, metrics {sorted(set().union(*metrics))}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--src", required=True, help="the released code's folder (holds agents/ and utils/)")
    p.add_argument("--commit", required=True, help="the commit --src was taken from (40 hex digits)")
    p.add_argument("--only", nargs="*", default=[k for k in sorted(OVERRIDES) if k != "floq"],
                   help="agents to record ('floq' needs --src to be github:CMU-AIRe/floq; the others "
                        "github:seohongpark/fql)")
    a = p.parse_args()
    for name in a.only:
        if name not in OVERRIDES:
            sys.exit(f"record_released: unknown agent {name!r}; known: {', '.join(sorted(OVERRIDES))}")
        if not os.path.isfile(os.path.join(a.src, "agents", f"{name}.py")):
            sys.exit(f"record_released: {a.src} has no agents/{name}.py")
    if len(a.commit) != 40:
        sys.exit(f"record_released: --commit must be a full 40-digit hash, got {a.commit!r}")
    sys.path.insert(0, os.path.abspath(a.src))
    for name in a.only:
        record(name, a.commit)


if __name__ == "__main__":
    main()
