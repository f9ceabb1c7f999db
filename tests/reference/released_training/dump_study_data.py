"""Step 1 (floq's environment, from the repository root): the study's exact training arrays
(results/cpu_algorithms/grid=rebrac-monolithic: the generated 100-episode cube-single-play file,
OGBench's task-1 relabelling, floq's action clipping) to /tmp/rebrac_cmp/train.npz, with
`terminals` (episode ends, which the released Dataset needs) recovered from the transitions.

    python tests/reference/released_training/dump_study_data.py
"""
import os, sys
sys.path.insert(0, os.getcwd())
import numpy as np, gin
from floq.train import build
exp = build(["results/cpu_algorithms/grid=rebrac-monolithic/config.gin"])
print(exp.task.dataset_name, exp.task.resolve_path(progress=False))
train, val = exp.task.load(progress=False)
o, no = train["observations"], train["next_observations"]
train["terminals"] = np.ones(len(o), np.float32)
train["terminals"][:-1] = (np.abs(no[:-1] - o[1:]).max(axis=1) > 0).astype(np.float32)
os.makedirs("/tmp/rebrac_cmp", exist_ok=True)
np.savez("/tmp/rebrac_cmp/train.npz", **train)
print({k: v.shape for k, v in train.items()}, "rewards", np.unique(train["rewards"], return_counts=True), "masks mean", train["masks"].mean())
