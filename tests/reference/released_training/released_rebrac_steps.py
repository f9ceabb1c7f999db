"""Step 2 (the scratch environment of record_released.py): the released ReBRAC
(github:seohongpark/fql agents/rebrac.py, imported from SRC) for N updates at the study's settings
(4 x 128, alpha_actor 1, alpha_critic 0, batch 256) on seeded batches of /tmp/rebrac_cmp/train.npz;
saves its initial parameters, key, batch indices, every metric and the final parameters.

    /tmp/refvenv/bin/python tests/reference/released_training/released_rebrac_steps.py /tmp/fql_released 2000
"""
import sys, json, time, numpy as np
src, N = sys.argv[1], int(sys.argv[2])
sys.path.insert(0, src)
import jax, jax.numpy as jnp
from agents.rebrac import ReBRACAgent, get_config
d = dict(np.load("/tmp/rebrac_cmp/train.npz")); d.pop("terminals")
n = len(d["observations"])
d["next_actions"] = d["actions"][np.minimum(np.arange(n) + 1, n - 1)]
idx = np.random.default_rng(0).integers(0, n, size=(N, 256))
cfg = get_config(); cfg["actor_hidden_dims"] = cfg["value_hidden_dims"] = (128,) * 4
cfg["alpha_actor"], cfg["alpha_critic"] = 1.0, 0.0
agent = ReBRACAgent.create(0, d["observations"][:1], d["actions"][:1], cfg)
flat = lambda t, p: {p + "/" + "/".join(str(getattr(k, "key", k)) for k in path): np.asarray(x) for path, x in jax.tree_util.tree_flatten_with_path(jax.device_get(t))[0]}
out = {**flat(agent.network.params, "params0"), "rng0": np.asarray(agent.rng), "idx": idx}
mets, t0 = {}, time.time()
for i in range(1, N + 1):
    b = {k: jnp.asarray(v[idx[i - 1]]) for k, v in d.items()}
    agent, info = agent.update(b, full_update=(i % 2 == 0))
    for k, v in jax.device_get(info).items():
        mets.setdefault(k, []).append(float(v))
    if i % 500 == 0: print(i, round(time.time() - t0), {k: round(float(np.mean(mets[k][-500:])), 4) for k in ("critic/q_mean", "actor/mse")}, flush=True)
for k, v in mets.items():
    out["metrics/" + k] = np.asarray(v)  # ReBRAC actor metrics: full updates only (N/2 values)
out.update(flat(agent.network.params, "params_final"))
np.savez(f"/tmp/rebrac_cmp/released_{N}.npz", **out)
