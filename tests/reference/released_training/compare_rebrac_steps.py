"""Step 3 (floq's environment, repository root): floq's ReBRAC from the released run's initial
parameters and key on the same batches; prints, per metric, the largest relative difference over
the N updates and the final parameters' largest difference.

    python tests/reference/released_training/compare_rebrac_steps.py 2000
"""
import os, sys
import numpy as np, jax, jax.numpy as jnp
sys.path.insert(0, os.getcwd())
sys.path.insert(0, os.path.join(os.getcwd(), "tests", "reference"))
from test_released import to_floq, RULES
from floq.agents.rebrac import ReBRAC
from floq.critics.monolithic import MonolithicCritic
from floq.nets.specs import MLPNet
N = int(sys.argv[1])
R = dict(np.load(f"/tmp/rebrac_cmp/released_{N}.npz"))
d = dict(np.load("/tmp/rebrac_cmp/train.npz")); d.pop("terminals")
n = len(d["observations"]); d["next_actions"] = d["actions"][np.minimum(np.arange(n) + 1, n - 1)]
algo = ReBRAC(alpha_actor=1.0, alpha_critic=0.0, actor_net=MLPNet(width=128, depth=4, layer_norm=False))
critic = MonolithicCritic(net=MLPNet(width=128, depth=4, layer_norm=True), num_ensembles=2, q_agg="min").configure(0.99, -1, 0)
s = algo.init(jax.random.PRNGKey(0), critic, jnp.asarray(d["observations"][:2]), jnp.asarray(d["actions"][:2]))
s = {**s, "params": to_floq(R, "params0", RULES["rebrac"]), "rng": jnp.asarray(R["rng0"])}
data = {k: jnp.asarray(v) for k, v in d.items()}
idx = jnp.asarray(R["idx"])
def body(st, ix):
    b = jax.tree_util.tree_map(lambda x: x[ix], data)
    return algo.update(critic, st, b)
s, m = jax.jit(lambda st: jax.lax.scan(body, st, idx))(s)
m = jax.device_get(m)
full = np.asarray(m["actor/full_update"]) == 1
pairs = [("critic/critic_loss", "critic/loss", None), ("critic/q_mean", "critic/q_mean", None),
         ("actor/total_loss", "actor/loss", full), ("actor/actor_loss", "actor/q_loss", full), ("actor/mse", "actor/mse", full)]
for rk, ok, mask in pairs:
    r = R["metrics/" + rk]; o = np.asarray(m[ok]) if mask is None else np.asarray(m[ok])[mask]
    rel = np.abs(o - r) / np.maximum(np.abs(r), 1e-6)
    print(f"{rk:22s} -> {ok:16s} last-100 mean released {r[-100:].mean():+.6f} floq {o[-100:].mean():+.6f}  max rel diff over {len(r)} steps {rel.max():.2e} (first 100: {rel[:100].max():.2e})")
fin = to_floq(R, "params_final", RULES["rebrac"])
errs = [float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(jax.tree_util.tree_leaves(fin), jax.tree_util.tree_leaves(s["params"]))]
scale = max(float(np.abs(np.asarray(b)).max()) for b in jax.tree_util.tree_leaves(fin))
print("final params max abs diff", max(errs), "largest |param|", scale)
