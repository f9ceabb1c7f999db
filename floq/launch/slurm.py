"""Slurm launcher (via submitit): one array job over the runs, requeued on preemption.

Each array element runs :class:`RunJob`, a ``submitit.helpers.Checkpointable``: when
Slurm preempts or times out the job, submitit calls ``checkpoint()``, which stops the
``floq run`` child and returns a ``DelayedSubmission`` of a fresh ``RunJob`` for the same
run; the requeued job starts ``floq run`` again on the same run directory and the
trainer resumes from its last checkpoint.

``cluster='local'`` runs the same code path with submitit's local executor (tests, CI).
Importing this module imports submitit (the ``cluster`` extra).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
from typing import Mapping, Sequence

import submitit

from floq.launch import runner as runner_lib
from floq.launch.base import Handle, PollingLauncher
from floq.launch.runner import Outcome, Run


def local_gpus() -> list[str]:
    """The GPU ids of this machine (none on a CPU-only one)."""
    from floq.launch.local import visible_gpus

    return visible_gpus()


class RunFailed(RuntimeError):
    """Raised by a job whose run failed (so that Slurm lists the job as FAILED)."""


class RunJob(submitit.helpers.Checkpointable):
    """The callable one Slurm job executes: train one run (resuming), raise if it fails."""

    def __init__(self, run: Run, runner: Sequence[str] | None, state_dir: str, launch_id: str):
        self.run = run
        self.runner = runner
        self.state_dir = state_dir
        self.launch_id = launch_id

    def __call__(self) -> Outcome:
        outcome = runner_lib.execute(self.run, self.runner, self.state_dir, self.launch_id)
        if not outcome.ok:
            raise RunFailed(outcome.reason)
        return outcome

    def checkpoint(self, *args, **kwargs) -> submitit.helpers.DelayedSubmission:
        """Preempted or timed out: stop the trainer, requeue the same run.

        Runs inside submitit's signal handler, so it only signals the child; the child is
        reaped when the job's main frame unwinds (``execute`` waits for it there). The
        trainer's own checkpoints are the state: nothing else needs saving.
        """
        del args, kwargs
        runner_lib.signal_active(signal.SIGTERM)
        return submitit.helpers.DelayedSubmission(
            RunJob(self.run, self.runner, self.state_dir, self.launch_id)
        )


# Slurm states in which a job is over (sacct names; submitit's local executor says
# FINISHED / INTERRUPTED).
_ACTIVE_STATES = {"RUNNING", "COMPLETING", "CONFIGURING"}


class _JobHandle(Handle):
    def __init__(self, run: Run, launch_id: str, job, state_dir: str):
        super().__init__(run, launch_id)
        self.job = job
        self.state_dir = state_dir

    def running(self) -> bool:
        try:
            return self.job.state in _ACTIVE_STATES
        except Exception:
            return False

    def info(self) -> dict:
        return {"job_id": self.job.job_id}

    def outcome(self) -> Outcome | None:
        if not self.job.done():
            return None
        try:
            result = self.job.result()
        except Exception as e:
            marker = runner_lib.read_marker(self.state_dir, self.run.name) or {}
            if marker.get("launch_id") == self.launch_id and "ok" in marker and not marker["ok"]:
                return Outcome(
                    False,
                    marker.get("reason"),
                    marker.get("returncode"),
                    bool(marker.get("diverged", False)),
                )
            try:
                state = self.job.state
            except Exception:
                state = "UNKNOWN"
            last = runner_lib.last_log_line(self.run.log_path)
            message = next((l.strip() for l in reversed(str(e).splitlines()) if l.strip()), "")
            return Outcome(False, f"job {self.job.job_id} ended {state}: {last or message}"[:400])
        if isinstance(result, Outcome):
            return result
        return Outcome(True)

    def cancel(self) -> None:
        try:
            self.job.cancel(check=False)
        except Exception:
            pass


class SlurmLauncher(PollingLauncher):
    """Submits the runs as one Slurm array job through submitit.

    Args:
      partition: Slurm partition (``--slurm-partition``).
      time_min: wall-clock limit per job in minutes (``--slurm-time``); the job is
        requeued when it runs out and the run resumes (fractions only locally).
      gpus: GPUs per job (``--slurm-gpus``). ``None``: 1 on Slurm; with submitit's local
        executor, 1 when this machine has a GPU (``CUDA_VISIBLE_DEVICES`` or ``nvidia-smi -L``,
        :func:`floq.launch.local.visible_gpus`) and 0 on a CPU-only machine. Locally a request
        is capped at the GPUs this machine has (the local executor would otherwise hand out
        device ids that do not exist), and the jobs get the visible ids, not 0..n-1.
      array_parallelism: at most this many array elements run at once
        (``--slurm-array-parallelism``; ``None``: submitit's default).
      cpus_per_task: CPUs per job (``None``: the cluster's default).
      max_requeue: how many timeouts a job may be requeued after.
      cluster: ``'slurm'``, ``'local'`` (submitit's ``LocalExecutor``: the same jobs as
        processes on this machine; tests) or ``'debug'``; ``None`` picks Slurm and fails with
        one line where there is none.
      extra: more executor parameters (``slurm_mem_gb``, ``slurm_account``, ...).
      runner: the ``floq run`` command prefix.
      folder: where submitit keeps its pickles and job logs (default
        ``<state_dir>/submitit/<job id>``).
      name: the Slurm job name (``floq sweep`` passes the sweep's name).
      signal_delay_s: seconds before the time limit at which the job is signalled to
        checkpoint and requeue (submitit's default: 90 on Slurm, 30 locally).
    """

    name = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        time_min: float = 24 * 60,
        gpus: int | None = None,
        array_parallelism: int | None = None,
        cpus_per_task: int | None = None,
        max_requeue: int = 10,
        cluster: str | None = None,
        extra: Mapping[str, object] | None = None,
        runner: Sequence[str] | None = None,
        folder: str | None = None,
        name: str = "floq",
        signal_delay_s: int | None = None,
    ):
        super().__init__(runner)
        if cluster is None:
            if shutil.which("sbatch") is None:
                raise ValueError(
                    "--launcher slurm: no Slurm here (sbatch is not on PATH); "
                    "use --launcher local or ray"
                )
            cluster = "slurm"
        self.cluster = cluster
        self.partition = partition
        self.time_min = time_min
        self.requested_gpus = gpus
        self.visible_gpus: list[str] | None = None
        if cluster == "slurm":
            self.gpus = 1 if gpus is None else int(gpus)
        else:
            self.visible_gpus = local_gpus()
            have = len(self.visible_gpus)
            self.gpus = min(1, have) if gpus is None else min(int(gpus), have)
        self.array_parallelism = array_parallelism
        self.cpus_per_task = cpus_per_task
        self.max_requeue = max_requeue
        self.extra = dict(extra or {})
        self.folder = folder
        self.job_name = name
        self.signal_delay_s = signal_delay_s
        self.poll_s = 1.0 if cluster != "slurm" else 10.0

    def describe(self):
        gpus = f"gpus={self.gpus}"
        if self.requested_gpus is not None and self.requested_gpus != self.gpus:
            gpus += f" ({self.requested_gpus} requested, {len(self.visible_gpus or [])} on this machine)"
        parts = [f"cluster={self.cluster}", f"time={self.time_min}min", gpus]
        if self.partition:
            parts.append(f"partition={self.partition}")
        if self.array_parallelism:
            parts.append(f"array_parallelism={self.array_parallelism}")
        return f"slurm ({', '.join(parts)})"

    def executor(self, state_dir: str):
        """The submitit executor: ``AutoExecutor`` for Slurm, ``LocalExecutor`` for 'local'."""
        folder = self.folder or os.path.join(state_dir, "submitit", "%j")
        if self.cluster == "local":
            # submitit's local executor: same jobs, pickles and requeue protocol, on this machine
            # (it ignores partitions and array limits; every job starts at once).
            executor = submitit.LocalExecutor(folder=folder, max_num_timeout=self.max_requeue)
            params: dict[str, object] = {"timeout_min": self.time_min, "gpus_per_node": self.gpus}
            ids = self.visible_gpus or []
            if self.gpus and all(i.isdigit() for i in ids):
                params["visible_gpus"] = tuple(int(i) for i in ids)
            if self.signal_delay_s is not None:
                params["signal_delay_s"] = self.signal_delay_s
            params.update(self.extra)
            executor.update_parameters(**params)
            return executor
        executor = submitit.AutoExecutor(
            folder=folder, cluster=self.cluster, slurm_max_num_timeout=self.max_requeue
        )
        params = {
            "name": self.job_name,
            "timeout_min": int(math.ceil(self.time_min)),
            "gpus_per_node": self.gpus,
            "nodes": 1,
            "tasks_per_node": 1,
        }
        if self.cpus_per_task:
            params["cpus_per_task"] = self.cpus_per_task
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.array_parallelism:
            params["slurm_array_parallelism"] = self.array_parallelism
        if self.signal_delay_s is not None:
            params["slurm_signal_delay_s"] = self.signal_delay_s
        params.update(self.extra)
        executor.update_parameters(**params)
        return executor

    def submit(self, runs, state_dir, launch_ids):
        executor = self.executor(state_dir)
        jobs = []
        with executor.batch():  # one array job on Slurm
            for run, launch_id in zip(runs, launch_ids):
                jobs.append(executor.submit(RunJob(run, self.runner, state_dir, launch_id)))
        return [
            _JobHandle(run, launch_id, job, state_dir)
            for run, launch_id, job in zip(runs, launch_ids, jobs)
        ]
