"""Ray launcher: one Ray task per run on a cluster (``ray.init(address=...)``).

Each task runs :func:`floq.launch.runner.execute` (a ``floq run`` child process) with
``num_gpus=1`` when the cluster has GPUs (Ray then sets ``CUDA_VISIBLE_DEVICES``), and
is retried by Ray if its worker or node dies (the trainer resumes). A failing run is
not retried: its outcome says why. Importing this module imports ray (the ``cluster``
extra).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Sequence

import ray

from floq.launch import runner as runner_lib
from floq.launch.base import Handle, LaunchError, PollingLauncher
from floq.launch.runner import Outcome, Run

#: Seconds cancelled tasks get to stop their trainers (which checkpoint) before Ray kills them.
CANCEL_GRACE_S = runner_lib.TERMINATE_GRACE_S + 5.0


def startup_error(e: BaseException, address: str | None) -> LaunchError:
    """One line for a Ray that does not come up, with what to do about it."""
    text = " ".join(str(e).split()) or type(e).__name__
    text = text[:200]
    if address:
        return LaunchError(
            f"cannot connect to the Ray cluster at {address} ({type(e).__name__}: {text}); check that it "
            f"is up with `ray status --address {address}`, or drop --ray-address to start a local instance")
    if "timed out" in text.lower() or isinstance(e, TimeoutError):
        # Ray's waits for a starting node are fixed in the Python start-up path (30 s in
        # ray/_private/node.py) and in the raylet (15 s for the agents' port files,
        # ray-project/ray#65983); RAY_raylet_start_wait_time_s is the start-up wait Ray lets one
        # set, read when the node registers.
        return LaunchError(
            f"Ray could not start a local instance ({text}): start one yourself, with a longer start-up "
            f"wait and a retry if it times out: `RAY_raylet_start_wait_time_s=120 ray start --head`, then "
            f"pass --ray-address=auto (or use --launcher local); see ray-project/ray#65983")
    return LaunchError(
        f"Ray could not start a local instance ({type(e).__name__}: {text}); start a cluster with "
        f"`ray start --head` and pass --ray-address=auto, or use --launcher local")


def _execute_task(run: Run, runner, state_dir: str, launch_id: str) -> Outcome:
    # A graceful ray.cancel interrupts the task with _thread.interrupt_main(), which does
    # nothing where SIGINT is not handled by Python (SIG_IGN: inherited by Ray's workers from a
    # driver started as a background job, where the shell ignores SIGINT). The task must stay
    # interruptible, or its trainer is never asked to checkpoint and outlives the force-kill.
    if threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, signal.SIG_DFL):
        signal.signal(signal.SIGINT, signal.default_int_handler)
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

    def cancel(self, force: bool = True) -> None:
        try:
            ray.cancel(self.ref, force=force)
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
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": path}},
                )
            except Exception as e:  # noqa: BLE001 - ray raises bare Exceptions here
                try:
                    ray.shutdown()
                except Exception:  # noqa: BLE001
                    pass
                raise startup_error(e, self.address or os.environ.get("RAY_ADDRESS")) from None
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

    def cancel_all(self, handles):
        """Cancels gracefully first: Ray interrupts each task, whose `execute` SIGTERMs its
        trainer (which checkpoints); tasks still running after CANCEL_GRACE_S are killed."""
        for handle in handles:
            handle.cancel(force=False)
        refs = [h.ref for h in handles]
        try:
            ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE_S)
        except BaseException:  # noqa: BLE001 - a second interrupt: go straight to force
            pass
        for handle in handles:
            ready, _ = ray.wait([handle.ref], timeout=0)
            if not ready:
                handle.cancel(force=True)

    def close(self):
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
