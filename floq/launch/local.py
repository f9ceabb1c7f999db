"""Local launcher: a pool of worker processes on this machine, one GPU per worker."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import threading
import uuid
from typing import Sequence

from floq.launch import runner as runner_lib
from floq.launch.base import Launcher, _ignore
from floq.launch.runner import Outcome, Run


def visible_gpus() -> list[str]:
    """GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip() and d.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


class LocalLauncher(Launcher):
    """Runs each run as a ``floq run`` child process, ``workers`` at a time.

    With GPUs, worker ``i`` always gets GPU ``gpus[i % len(gpus)]`` through
    ``CUDA_VISIBLE_DEVICES`` (workers sharing a GPU get ``XLA_PYTHON_CLIENT_PREALLOCATE=false``
    so that they do not each reserve most of its memory). Without GPUs,
    ``CUDA_VISIBLE_DEVICES`` is left alone.

    Args:
      workers: how many runs at once (default: one per GPU, or 1 without GPUs).
      gpus: GPU ids to hand out (default: :func:`visible_gpus`).
      runner: the ``floq run`` command prefix.
    """

    name = "local"
    #: Seconds a stopped trainer gets to checkpoint and exit before it is killed.
    stop_grace_s = runner_lib.TERMINATE_GRACE_S

    def __init__(
        self,
        workers: int | None = None,
        gpus: Sequence[str] | None = None,
        runner: Sequence[str] | None = None,
    ):
        super().__init__(runner)
        self.gpus = list(visible_gpus() if gpus is None else gpus)
        if workers is not None and workers < 1:
            raise ValueError(f"--workers must be at least 1, got {workers}")
        self.workers = workers or max(1, len(self.gpus))

    def describe(self):
        gpus = f", GPUs {','.join(self.gpus)}" if self.gpus else ", no GPU"
        return f"local ({self.workers} worker{'s' if self.workers > 1 else ''}{gpus})"

    def worker_env(self, slot: int) -> dict[str, str]:
        """Environment for the child processes of worker ``slot``."""
        if not self.gpus:
            return {}
        gpu = self.gpus[slot % len(self.gpus)]
        env = {"CUDA_VISIBLE_DEVICES": gpu}
        sharing = sum(1 for s in range(self.workers) if self.gpus[s % len(self.gpus)] == gpu)
        if sharing > 1 and "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ:
            env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        return env

    def launch(self, runs, state_dir, on_state=None):
        on_state = on_state or _ignore
        todo: queue.Queue[Run] = queue.Queue()
        for run in runs:
            todo.put(run)
        outcomes: dict[str, Outcome] = {}
        stop = threading.Event()
        runner_lib.reset_stopping()

        def report(name, state, info):
            try:
                on_state(name, state, info)
            except Exception as e:  # noqa: BLE001 - bookkeeping must not kill the worker
                print(f"floq: could not record {name} as {state}: {type(e).__name__}: {e}", file=sys.stderr)

        def work(slot: int) -> None:
            env = self.worker_env(slot)
            while not stop.is_set():
                try:
                    run = todo.get_nowait()
                except queue.Empty:
                    return
                info = {"worker": slot, **({"gpu": env["CUDA_VISIBLE_DEVICES"]} if env else {})}
                if stop.is_set():
                    return
                report(run.name, "running", info)
                try:
                    outcome = runner_lib.execute(run, self.runner, state_dir, uuid.uuid4().hex, env)
                except Exception as e:  # noqa: BLE001 - one broken run never stops the others
                    outcome = Outcome(False, f"launcher error: {type(e).__name__}: {e}")
                if stop.is_set() and not outcome.ok:
                    return  # interrupted: leave it unfinished, not failed
                outcomes[run.name] = outcome
                report(run.name, outcome.state, {**info, "reason": outcome.reason})

        threads = [
            threading.Thread(target=work, args=(slot,), name=f"floq-local-{slot}", daemon=True)
            for slot in range(min(self.workers, len(runs)))
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.5)
        except BaseException:
            stop.set()
            runner_lib.terminate_active(grace_s=self.stop_grace_s)
            for thread in threads:
                thread.join(timeout=self.stop_grace_s + 5.0)
            raise
        return outcomes
