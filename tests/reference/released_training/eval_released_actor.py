"""Evaluate released ReBRAC actors (actor_<step>.npz from train_released_rebrac.py, the released
layout) with floq's own evaluation (EpisodeRunner: seeded resets, deterministic actions) on the
study's task (floq's environment, repository root):

    python tests/reference/released_training/eval_released_actor.py /tmp/rebrac_cmp/run30k 25
"""
import os, sys
sys.path.insert(0, os.getcwd())
# protocol (EpisodeRunner: seeded resets, deterministic actions) on the study's task
import sys, glob, re, numpy as np
from floq.train import build
from floq.evaluate import EpisodeRunner, export_policy, eval_key
exp = build(["results/cpu_algorithms/grid=rebrac-monolithic/config.gin"])
algo, task = exp.algorithm, exp.task
episodes = int(sys.argv[2]) if len(sys.argv) > 2 else 25
for path in sorted(glob.glob(sys.argv[1] + "/actor_*.npz"), key=lambda p: int(re.findall(r"\d+", p)[-1])):
    step = int(re.findall(r"\d+", path)[-1])
    z = np.load(path)
    actor = {"MLP_0": {}, "Dense_0": {}}
    for k in z.files:
        parts = k.split("/")
        if parts[0] == "actor_net":
            actor["MLP_0"].setdefault(parts[1], {})[parts[2]] = z[k]
        elif parts[0] == "mean_net":
            actor["Dense_0"][parts[1]] = z[k]
    pp = algo.policy_params({"actor": actor})
    runner = EpisodeRunner(export_policy(algo, pp, 28, 5, episodes), episodes, task.env_kwargs())
    res = runner.run(pp, eval_key(0, step), task.dataset_name, 0, range(episodes), step)
    runner.close()
    print(f"released ReBRAC actor at step {step}: success {res[:, 0].mean():.3f} over {episodes} episodes "
          f"(mean return {res[:, 1].mean():.1f}, mean length {res[:, 2].mean():.0f})", flush=True)
