"""Optional (the scratch environment of record_released.py): the released ReBRAC (github:seohongpark/fql agents/rebrac.py, imported from --src) trained on
given arrays exactly as its main.py does (Dataset with return_next_actions, uniform sampling,
full_update = i % actor_freq == 0), saving the actor parameters and training metrics.

    nice -n 19 /tmp/refvenv/bin/python tests/reference/released_training/train_released_rebrac.py --src /tmp/fql_released \
        --data /tmp/rebrac_cmp/train.npz --out /tmp/rebrac_cmp/run30k --steps 30000 --save_every 5000
"""
import argparse, json, os, sys, time
import numpy as np
p = argparse.ArgumentParser()
p.add_argument("--src", required=True); p.add_argument("--data", required=True); p.add_argument("--out", required=True)
p.add_argument("--steps", type=int, default=30000); p.add_argument("--seed", type=int, default=0)
p.add_argument("--width", type=int, default=128); p.add_argument("--depth", type=int, default=4)
p.add_argument("--alpha_actor", type=float, default=1.0); p.add_argument("--alpha_critic", type=float, default=0.0)
p.add_argument("--save_every", type=int, default=10000); p.add_argument("--log_every", type=int, default=1000)
a = p.parse_args()
sys.path.insert(0, a.src)
import jax, flax
from agents.rebrac import ReBRACAgent, get_config
from utils.datasets import Dataset
np.random.seed(a.seed)
d = dict(np.load(a.data))
ds = Dataset.create(**d); ds.return_next_actions = True
cfg = get_config()
cfg["actor_hidden_dims"] = (a.width,) * a.depth; cfg["value_hidden_dims"] = (a.width,) * a.depth
cfg["alpha_actor"] = a.alpha_actor; cfg["alpha_critic"] = a.alpha_critic
ex = ds.sample(1)
agent = ReBRACAgent.create(a.seed, ex["observations"], ex["actions"], cfg)
os.makedirs(a.out, exist_ok=True)
acc, t0 = {}, time.time()
for i in range(1, a.steps + 1):
    batch = ds.sample(cfg["batch_size"])
    agent, info = agent.update(batch, full_update=(i % cfg["actor_freq"] == 0))
    for k, v in info.items():
        acc.setdefault(k, []).append(v)
    if i % a.log_every == 0:
        row = {k: float(np.mean(jax.device_get(v))) for k, v in acc.items()}
        row.update(step=i, sec=round(time.time() - t0, 1)); acc = {}
        print(json.dumps({k: row[k] for k in ("step", "sec", "critic/q_mean", "critic/critic_loss", "actor/mse", "actor/actor_loss", "actor/bc_loss") if k in row}), flush=True)
        with open(os.path.join(a.out, "train.jsonl"), "a") as f:
            f.write(json.dumps(row) + "\n")
    if i % a.save_every == 0:
        flat = {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(x)
                for path, x in jax.tree_util.tree_flatten_with_path(jax.device_get(agent.network.params["modules_actor"]))[0]}
        np.savez(os.path.join(a.out, f"actor_{i}.npz"), **flat)
