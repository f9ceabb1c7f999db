"""Ray launcher: one Ray task per run on a cluster (``ray.init(address=...)``).

Each task runs :func:`floq.launch.runner.execute` (a ``floq run`` child process) with
``num_gpus=1`` when the cluster has GPUs (Ray then sets ``CUDA_VISIBLE_DEVICES``), and
is retried by Ray if its worker or node dies (the trainer resumes). A failing run is
not retried: its outcome says why. Importing this module imports ray (the ``cluster``
extra).
"""

from __future__ import annotations

import os
from typing import Sequence

import ray

from floq.launch import runner as runner_lib
from floq.launch.base import Handle, PollingLauncher
from floq.launch.runner import Outcome, Run


def _execute_task(run: Run, runner, state_dir: str, launch_id: str) -> Outcome:
    return runner_lib.execute(run, runner, state_dir, launch_id)


class _TaskHandle(Handle):
    def __init__(self, run: Run, launch_id: str, ref):
        super().__init__(run, launch_id)
        self.ref = ref

    def outcome(self) -> Outcome | None:
        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            return ray.get(self.ref)
        except Exception as e:
            message = next((l.strip() for l in reversed(str(e).splitlines()) if l.strip()), "")
            last = runner_lib.last_log_line(self.run.log_path)
            return Outcome(False, f"ray task failed ({type(e).__name__}): {last or message}"[:400])

    def info(self) -> dict:
        return {"task_id": self.ref.task_id().hex()}

    def cancel(self) -> None:
        try:
            ray.cancel(self.ref, force=True)
        except Exception:
            pass


class RayLauncher(PollingLauncher):
    """Submits one Ray task per run.

    Args:
      address: the cluster (``ray.init(address=...)``; ``None``: ``RAY_ADDRESS`` or a
        new local instance). If Ray is already initialised in this process, that
        instance is used and left running.
      gpus_per_run: GPUs per task (default: 1 if the cluster has GPUs, else 0).
      cpus_per_run: CPUs per task.
      max_retries: retries after a worker or node dies.
      runner: the ``floq run`` command prefix.
    """

    name = "ray"
    poll_s = 0.5

    def __init__(
        self,
        address: str | None = None,
        gpus_per_run: float | None = None,
        cpus_per_run: float = 1,
        max_retries: int = 3,
        runner: Sequence[str] | None = None,
    ):
        super().__init__(runner)
        self.address = address
        self.gpus_per_run = gpus_per_run
        self.cpus_per_run = cpus_per_run
        self.max_retries = max_retries
        self._owns_ray = False

    def describe(self):
        return f"ray (address={self.address or 'auto'})"

    def submit(self, runs, state_dir, launch_ids):
        if not ray.is_initialized():
            path = os.pathsep.join(
                p for p in (runner_lib.package_root(), os.environ.get("PYTHONPATH")) if p
            )
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                runtime_env={"env_vars": {"PYTHONPATH": path}},
            )
            self._owns_ray = True
        gpus = self.gpus_per_run
        if gpus is None:
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        task = ray.remote(_execute_task)
        handles = []
        for run, launch_id in zip(runs, launch_ids):
            ref = task.options(
                num_cpus=self.cpus_per_run,
                num_gpus=gpus,
                max_retries=self.max_retries,
                retry_exceptions=False,
                name=f"floq:{run.name}",
            ).remote(run, self.runner, state_dir, launch_id)
            handles.append(_TaskHandle(run, launch_id, ref))
        return handles

    def close(self):
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
