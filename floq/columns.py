"""Result columns and run states: the one declaration that the trainer (floq.loop), sweeps
(floq.launch), `floq status` and the analysis (analysis/load.py) share. Standard library only:
the analysis imports it without jax.
"""

from __future__ import annotations

#: eval.csv's standard columns, in file order (docs/CONTRACTS.md); every other column is a tag
#: (a swept value, or a critic/algorithm knob named by describe()).
EVAL_COLUMNS = ("experiment", "run", "env", "task", "dataset", "algorithm", "critic", "seed", "step", "phase",
                "env_steps", "success", "return", "episode_length", "wall_time", "eval_episodes", "train_steps",
                "ogbench_version", "success_timing")
#: Standard columns that CSVs written before the online phase existed lack (absent: offline, 0).
OPTIONAL_EVAL_COLUMNS = ("phase", "env_steps")

#: run.json `status`: what a run directory is (the analysis scores only 'done').
RUN_STATUSES = ("running", "done", "diverged", "preempted", "failed")
#: sweep.json run states.
SWEEP_STATES = ("pending", "running", "done", "failed", "diverged")
#: Sweep states a run stays in until ``--retry-failed``.
KEPT_STATES = ("failed", "diverged")
