"""The launcher interface: run a list of runs to completion, reporting state changes.

A launcher decides *where* runs train (local worker processes, Slurm jobs, Ray tasks);
the run directories are the same whichever launcher runs them, and every launcher ends
in :func:`floq.launch.runner.execute` on the machine that trains.
"""

from __future__ import annotations

import abc
import signal
import threading
import time
import uuid
from typing import Callable, Mapping, Sequence

from floq.launch import runner as runner_lib
from floq.launch.runner import Outcome, Run

#: ``on_state(run_name, state, info)``; state is ``'running' | 'done' | 'failed' |
#: 'diverged'`` (:attr:`Outcome.state`); info may hold ``reason`` (failed, diverged),
#: ``job_id``, ``host``.
StateCallback = Callable[[str, str, Mapping[str, object]], None]


class LaunchError(ValueError):
    """A launcher that cannot start (a cluster that does not come up, ...): one line that
    says what to do instead. Nothing has been launched when it is raised."""


def _ignore(name: str, state: str, info: Mapping[str, object]) -> None:
    del name, state, info


class Launcher(abc.ABC):
    """Runs runs. Subclasses: ``LocalLauncher``, ``SlurmLauncher``, ``RayLauncher``.

    Args:
      runner: the ``floq run`` command prefix (default ``python -m floq run`` on the
        machine that trains); tests pass a fake trainer.
    """

    name = "base"

    def __init__(self, runner: Sequence[str] | None = None):
        self.runner = tuple(runner) if runner else None

    @abc.abstractmethod
    def launch(
        self, runs: Sequence[Run], state_dir: str, on_state: StateCallback | None = None
    ) -> dict[str, Outcome]:
        """Trains every run (failures never stop the others) and returns ``{name: outcome}``.

        Args:
          runs: the runs to train (each resumes from its run directory's checkpoint).
          state_dir: a folder for bookkeeping files (locks, start markers, job logs).
          on_state: called on each state change, from any thread.
        """

    def describe(self) -> str:
        """One line for the sweep's progress output."""
        return self.name


class Handle(abc.ABC):
    """A submitted run, for launchers that poll (Slurm, Ray)."""

    def __init__(self, run: Run, launch_id: str):
        self.run = run
        self.launch_id = launch_id

    @abc.abstractmethod
    def outcome(self) -> Outcome | None:
        """The outcome once the run has ended, else ``None``. Never blocks for long."""

    def running(self) -> bool:
        """Whether the scheduler says the run is running (the start marker also counts)."""
        return False

    def info(self) -> dict:
        return {}

    def cancel(self) -> None:
        """Stops the run (best effort)."""


class PollingLauncher(Launcher):
    """A launcher that submits everything at once, then polls handles until all end."""

    poll_s = 1.0

    @abc.abstractmethod
    def submit(
        self, runs: Sequence[Run], state_dir: str, launch_ids: Sequence[str]
    ) -> list[Handle]:
        """Submits ``runs`` (in order) and returns one handle each."""

    def close(self) -> None:
        """Releases what ``submit`` acquired."""

    def cancel_all(self, handles: Sequence[Handle]) -> None:
        """Stops the runs of ``handles`` (the driver was interrupted); default: cancel each."""
        for handle in handles:
            handle.cancel()

    def launch(self, runs, state_dir, on_state=None):
        on_state = on_state or _ignore
        if not runs:
            return {}
        runner_lib.reset_stopping()  # (an earlier interrupted launch in this process)
        launch_ids = [uuid.uuid4().hex for _ in runs]
        outcomes: dict[str, Outcome] = {}
        try:
            handles = self.submit(runs, state_dir, launch_ids)
            pending = {h.run.name: h for h in handles}
            started: set[str] = set()
            try:
                while pending:
                    for name, handle in list(pending.items()):
                        outcome = handle.outcome()
                        marker = runner_lib.read_marker(state_dir, name)
                        ours = marker is not None and marker.get("launch_id") == handle.launch_id
                        if outcome is None and name not in started and (ours or handle.running()):
                            started.add(name)
                            extra = {"host": marker.get("host")} if ours else {}
                            on_state(name, "running", {**handle.info(), **extra})
                        if outcome is not None:
                            if name not in started:  # ended between two polls: it ran all the same
                                started.add(name)
                                on_state(name, "running", handle.info())
                            del pending[name]
                            outcomes[name] = outcome
                            info = {**handle.info(), "reason": outcome.reason}
                            on_state(name, outcome.state, info)
                    if pending:
                        time.sleep(self.poll_s)
            except BaseException:
                self.cancel_all(list(pending.values()))
                raise
        finally:
            self.close()
        return outcomes


class StopSignals:
    """SIGTERM, SIGHUP and SIGINT stop a sweep driver the same way: the first one raises
    KeyboardInterrupt in the main thread (the launcher then SIGTERMs its trainers, which
    checkpoint, and the unfinished runs go back to 'pending'); later ones are ignored, so that
    they cannot cut that cleanup short and leave trainers behind. A context manager; outside
    the main thread it does nothing. ``exit_code`` is 128 + the signal's number."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum
            raise KeyboardInterrupt

    @property
    def name(self) -> str:
        return signal.Signals(self.signum or signal.SIGINT).name

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # ignored on purpose (nohup, a background job): leave it so
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}
