"""Stop signals in the phases of a command that start worker processes but cannot checkpoint
(data generation): the first SIGTERM, SIGHUP or SIGINT raises `Interrupted` in the main thread,
so that the phase's own cleanup runs (worker processes terminated, temporary files removed,
locks released) and the command ends with one line and exit status 128 + the signal's number.

Worker processes of such a phase call `worker_guard(parent_pid)` first: they ignore Ctrl-C and
hang-ups (the parent, which got the same signal, ends them with SIGTERM) and exit on their own
when the parent is gone (a SIGKILL leaves no parent to end them). Standard library only.
"""

from __future__ import annotations

import os
import signal
import threading
import time

STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGHUP", "SIGINT")) if s is not None)


class Interrupted(KeyboardInterrupt):
    """A stop signal ended `phase` (e.g. 'data generation'); its cleanup has run or is running.
    A KeyboardInterrupt, so code that handles Ctrl-C handles it too."""

    def __init__(self, phase: str, signum: int = signal.SIGINT):
        super().__init__(f"interrupted during {phase}")
        self.phase, self.signum = phase, int(signum)

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return str(self.signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def message(self, advice: str = "run it again to restart it") -> str:
        """'interrupted during data generation; run it again to restart it (SIGTERM)'."""
        return f"interrupted during {self.phase}; {advice} ({self.signal_name})"


class phase_signals:
    """Context manager: inside it, the first stop signal raises `Interrupted(phase)` in the main
    thread; later ones are ignored until it exits, so that they cannot cut the cleanup short.
    Signals ignored on purpose (nohup, a background job) stay ignored; outside the main thread
    it does nothing. Nested use keeps the outer handler's phase."""

    def __init__(self, phase: str):
        self.phase = phase
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        del frame
        if self.signum is None:
            self.signum = signum
            raise Interrupted(self.phase, signum)

    def __enter__(self) -> "phase_signals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                old = signal.getsignal(sig)
                if old is signal.SIG_IGN or isinstance(getattr(old, "__self__", None), phase_signals):
                    continue
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}


def worker_guard(parent_pid: int, poll_s: float = 0.5) -> None:
    """First thing in a worker process of an interruptible phase: ignore SIGINT and SIGHUP (a
    terminal's Ctrl-C or hang-up reaches the whole process group; the parent, which gets them
    too, ends its workers with SIGTERM, as multiprocessing's Pool.terminate does, so SIGTERM
    keeps its default action) and exit when the parent is gone."""
    for sig in STOP_SIGNALS:
        if sig == signal.SIGTERM:
            continue
        try:
            signal.signal(sig, signal.SIG_IGN)
        except (OSError, ValueError):  # pragma: no cover - not the main thread
            pass
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def watch():
        while True:
            if os.getppid() != parent_pid:  # reparented: the parent died (SIGKILL, a crash)
                os._exit(1)
            time.sleep(poll_s)

    threading.Thread(target=watch, name="floq-parent-watch", daemon=True).start()


class signals_blocked:
    """Start worker processes inside this: the calling thread blocks the stop signals, so a
    child starts with them blocked (the mask survives fork and exec) until `worker_guard`
    ignores and unblocks them; here the signal stays pending and its handler runs on exit."""

    def __enter__(self):
        self._old = (signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
                     if hasattr(signal, "pthread_sigmask") else None)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._old)
