"""Opt-in experiment trackers beside the CSV files: Weights & Biases and TensorBoard.

``train.csv`` and ``eval.csv`` are always written and are the record of a run; a tracker
only mirrors the same rows for live dashboards. Trackers are chosen with the gin binding
``Trainer.loggers = ('wandb', 'tensorboard')`` (``floq run --logger wandb``).

The loop hands every tracker the rows it appends to the CSV files::

    loggers = make_loggers(names, run_dir=run_dir, manifest=manifest, config_str=config_str)
    for lg in loggers: lg.log('train', rows)   # the rows appended to train.csv
    for lg in loggers: lg.log('eval', rows)    # the rows appended to eval.csv
    for lg in loggers: lg.close()

Metric names (the same in both trackers)::

    <kind>/seed<S>/<column>            e.g. train/seed0/critic/loss, eval/seed1/success
    <kind>/<task>/seed<S>/<column>     once rows of more than one task have been seen

The x axis is the row's ``step`` (gradient steps). Only numeric columns are logged; the
columns that identify a row or are constant over a run (experiment, run, env, dataset,
seed, step, eval_episodes, the run's tags, ...) are not. NaN and inf are logged as they are
(a diverging loss should show).

A missing package is a :class:`~floq.config.ConfigError` raised by :func:`make_loggers`
(or :func:`check_loggers`), before training starts. After that a tracker's failure never
stops the run: the first error is printed once to stderr and that tracker is switched off
for the rest of the run; the CSV files are unaffected.
"""

from __future__ import annotations

import netrc
import os
import secrets
import string
import sys
from typing import Iterable, Mapping, Sequence
from urllib.parse import urlparse

from floq.config import ConfigError

KNOWN = ("wandb", "tensorboard")
# How each tracker's package is installed (the pyproject extras of the same names).
INSTALL = {"wandb": ("wandb", "wandb"), "tensorboard": ("tensorboardX", "tensorboard")}
WANDB_ID_FILE = "wandb_id.txt"
TENSORBOARD_DIR = "tensorboard"

# Columns that identify a row or are constant over a run: never logged as metrics.
IDENTITY_COLUMNS = frozenset({
    "experiment", "run", "env", "task", "dataset", "algorithm", "critic", "seed", "step",
    "eval_episodes", "train_steps", "ogbench_version", "success_timing", "task_id",
})


def normalize(names) -> tuple[str, ...]:
    """``'wandb'``, ``['wandb', 'tensorboard']``, ``None`` -> a tuple of known names, in order,
    without repeats ('csv' is accepted and dropped: the CSV files are always written)."""
    if names is None:
        return ()
    if isinstance(names, str):
        names = [names]
    out: list[str] = []
    for n in names:
        key = str(n).strip().lower()
        if key in ("", "csv", "none"):
            continue
        if key == "tb":
            key = "tensorboard"
        if key not in KNOWN:
            raise ConfigError(f"unknown logger {n!r}; choose from {', '.join(KNOWN)}")
        if key not in out:
            out.append(key)
    return tuple(out)


def check_loggers(names) -> tuple[str, ...]:
    """Validate logger names and that their packages import; ConfigError (one line) if not."""
    names = normalize(names)
    for n in names:
        module, extra = INSTALL[n]
        try:
            __import__(module)
        except ImportError:
            raise ConfigError(f"--logger {n} needs the {module} package: pip install -e '.[{extra}]'") from None
    return names


def make_loggers(names, run_dir: str, manifest: Mapping | None = None, config_str: str = "",
                 resume_step: int | None = None) -> list:
    """The trackers named in ``names``, each started for ``run_dir``.

    ``resume_step``: the checkpoint step a resumed run continues from (default: the
    manifest's ``step``); TensorBoard then drops the earlier attempt's events after it.
    Raises ConfigError for an unknown name or a missing package. A tracker that fails to
    start for another reason (no network, a bad key) is left out with one warning line.
    """
    names = check_loggers(names)
    manifest = dict(manifest or {})
    if resume_step is not None:
        manifest["step"] = int(resume_step)
    out = []
    for n in names:
        cls = {"wandb": WandbLogger, "tensorboard": TensorBoardLogger}[n]
        try:
            out.append(_Guarded(cls(run_dir, manifest, config_str)))
        except Exception as e:  # noqa: BLE001 - a tracker must not stop the run
            _warn(n, "could not start", e)
    return out


# -- shared row handling ---------------------------------------------------------------------


def _number(v):
    """A float for ints, floats and numpy scalars; None for anything else (strings, bools)."""
    if hasattr(v, "item") and getattr(v, "ndim", None) == 0:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


class _Keys:
    """Turns CSV rows into (step, {metric name: value}) groups, by the naming rule above."""

    def __init__(self, manifest: Mapping):
        skip = set(IDENTITY_COLUMNS)
        skip.update(str(k) for k in (manifest.get("tags") or {}))
        skip.update(str(k) for k in (manifest.get("describe") or {}))
        self.skip = skip
        tasks = manifest.get("tasks")
        self.tasks: set[str] = {str(t) for t in tasks} if isinstance(tasks, (list, tuple)) else set()

    def multi_task(self) -> bool:
        return len(self.tasks) > 1

    def groups(self, kind: str, rows: Iterable[Mapping]) -> list[tuple[int, dict[str, float]]]:
        rows = list(rows)
        self.tasks.update(str(r["task"]) for r in rows if r.get("task") not in (None, ""))
        multi = self.multi_task()
        by_step: dict[int, dict[str, float]] = {}
        for r in rows:
            try:
                step = int(float(r["step"]))
            except (KeyError, TypeError, ValueError):
                continue
            seed = r.get("seed")
            prefix = f"{kind}/"
            if multi and r.get("task") not in (None, ""):
                prefix += f"{r['task']}/"
            if seed not in (None, ""):
                prefix += f"seed{int(float(seed))}/"
            metrics = by_step.setdefault(step, {})
            for k, v in r.items():
                if k in self.skip:
                    continue
                x = _number(v)
                if x is not None:
                    metrics[prefix + k] = x
        return sorted((s, m) for s, m in by_step.items() if m)


def _warn(name: str, what: str, e: BaseException) -> None:
    msg = " ".join(str(e).split()) or type(e).__name__
    print(f"floq: warning: the {name} logger {what} ({type(e).__name__}: {msg[:300]}); "
          f"it is off for this run (train.csv and eval.csv are complete)", file=sys.stderr, flush=True)


class _Guarded:
    """Wraps a tracker: the first exception is printed once and the tracker is switched off."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.failed = False

    def log(self, kind: str, rows: Sequence[Mapping]) -> None:
        if self.failed:
            return
        try:
            self.inner.log(kind, rows)
        except Exception as e:  # noqa: BLE001
            self.failed = True
            _warn(self.name, "failed", e)

    def close(self) -> None:
        if self.failed:
            return
        self.failed = True  # close once
        try:
            self.inner.close()
        except Exception as e:  # noqa: BLE001
            _warn(self.name, "failed to close", e)

    def __getattr__(self, item):
        return getattr(self.inner, item)


def parse_operative_config(config_str: str) -> dict[str, str]:
    """gin's operative config text -> {'Trainer.train_steps': '1000000', ...} (values as gin
    writes them; continuation lines of long values are joined)."""
    out: dict[str, str] = {}
    key = None
    for line in (config_str or "").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            key = None if not line.strip() else key
            continue
        if not line[0].isspace() and " = " in line:
            key, value = line.split(" = ", 1)
            key = key.strip()
            out[key] = value.strip()
        elif key is not None:
            out[key] += " " + line.strip()
    return out


# -- Weights & Biases ------------------------------------------------------------------------


def wandb_has_credentials(env: Mapping[str, str] | None = None) -> bool:
    """True when W&B could log in without asking: WANDB_API_KEY (or an identity token file)
    is set, or the netrc file holds an entry for the W&B host (what ``wandb login`` writes)."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY") or env.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    if env.get("NETRC"):
        paths = [env["NETRC"]]
    else:
        paths = [os.path.expanduser("~/.netrc"), os.path.expanduser("~/_netrc")]
    for p in paths:
        try:
            auth = netrc.netrc(p).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            continue
        if auth and auth[2]:
            return True
    return False


def wandb_mode(env: Mapping[str, str] | None = None) -> str:
    """WANDB_MODE when set (online, offline, disabled, ...), else online with credentials and
    offline without (sync later with ``wandb sync RUN/wandb/offline-run-*``)."""
    env = os.environ if env is None else env
    mode = (env.get("WANDB_MODE") or "").strip().lower()
    if mode:
        return {"dryrun": "offline", "run": "online"}.get(mode, mode)
    return "online" if wandb_has_credentials(env) else "offline"


def wandb_run_id(run_dir: str) -> str:
    """The W&B run id of this run directory: read from RUN/wandb_id.txt, or made and stored
    there (atomically) on the first start, so that a resumed run continues the same W&B run."""
    from floq.results import atomic_write

    path = os.path.join(run_dir, WANDB_ID_FILE)
    try:
        with open(path) as f:
            rid = f.read().strip()
        if rid:
            return rid
    except OSError:
        pass
    alphabet = string.ascii_lowercase + string.digits
    rid = "".join(secrets.choice(alphabet) for _ in range(8))
    atomic_write(path, rid + "\n")
    return rid


class WandbLogger:
    """One W&B run per floq run directory.

    project: ``WANDB_PROJECT`` or 'floq'; group: the manifest's experiment; name: the run's
    name; config: the manifest plus the operative gin config (``gin``: one entry per
    binding, ``gin_config``: the whole text). Files go to ``RUN/wandb/``. Metrics are
    plotted against a ``step`` metric (gradient steps), not W&B's own counter, so the rows
    re-logged after a resume (the steps after the last checkpoint are trained again) are
    accepted; they appear twice in W&B, while the CSV files keep only the resumed ones.
    """

    name = "wandb"

    def __init__(self, run_dir: str, manifest: Mapping, config_str: str = ""):
        import wandb

        self.keys = _Keys(manifest)
        os.makedirs(run_dir, exist_ok=True)
        self.run_id = wandb_run_id(run_dir)
        self.mode = wandb_mode()
        config = {k: v for k, v in manifest.items()}
        config["gin"] = parse_operative_config(config_str)
        config["gin_config"] = config_str
        tags = [str(manifest[k]) for k in ("algorithm", "critic", "env") if manifest.get(k)]
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "floq",
            group=str(manifest.get("experiment") or "default"),
            name=str(manifest.get("run") or os.path.basename(os.path.abspath(run_dir))),
            id=self.run_id,
            resume="allow",
            dir=run_dir,
            mode=self.mode,
            config=config,
            tags=tags or None,
            settings=wandb.Settings(console="off"),
        )
        self.run.define_metric("step")
        for kind in ("train", "eval"):
            self.run.define_metric(f"{kind}/*", step_metric="step")

    def log(self, kind: str, rows: Sequence[Mapping]) -> None:
        for step, metrics in self.keys.groups(kind, rows):
            self.run.log({"step": step, **metrics})

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() can return before wandb's service has written the last records of the
        # offline run file; tearing the service down waits for it (one floq run per process).
        teardown = getattr(wandb, "teardown", None)
        if teardown is not None:
            teardown()


# -- TensorBoard -----------------------------------------------------------------------------


class TensorBoardLogger:
    """Scalars to event files in ``RUN/tensorboard/`` with tensorboardX (numpy + protobuf
    only: no TensorFlow or PyTorch), ``global_step`` = gradient steps.

    On a resumed run (``resume_step``, else the manifest's ``step``, > 0) the writer is opened with
    ``purge_step=step``: TensorBoard then drops the events of earlier files at or after that
    step, i.e. those of the steps trained again after the last checkpoint.

    HParams: a new run also writes TensorBoard's HParams session (``hparams_of``: the swept
    tags, algorithm, critic, environment, task and the critic's numeric settings; metrics:
    each seed's ``eval/.../success``), so that runs of a sweep opened together compare in the
    HParams tab; ``close`` marks the session ended.
    """

    name = "tensorboard"

    def __init__(self, run_dir: str, manifest: Mapping, config_str: str = ""):
        from tensorboardX import SummaryWriter

        self.keys = _Keys(manifest)
        self.logdir = os.path.join(run_dir, TENSORBOARD_DIR)
        os.makedirs(self.logdir, exist_ok=True)
        try:
            resume_step = int(manifest.get("step") or 0)
        except (TypeError, ValueError):
            resume_step = 0
        # The file name holds the start time in seconds: a suffix keeps a restart within the
        # same second from overwriting the previous file.
        suffix = f".{os.getpid()}.{secrets.token_hex(2)}"
        self.writer = SummaryWriter(logdir=self.logdir, purge_step=resume_step or None, flush_secs=30,
                                    filename_suffix=suffix)
        if config_str and not resume_step:
            # gin's text in TensorBoard's TEXT tab (markdown: indent to keep it verbatim).
            self.writer.add_text("config/gin", "\n".join("    " + ln for ln in config_str.splitlines()), 0)
        self.hparams = None
        if not resume_step:
            from tensorboardX.summary import hparams

            hp, metrics = hparams_of(manifest)
            exp, ssi, sei = hparams(hp, {m: None for m in metrics})
            for summary in (exp, ssi):
                self.writer.file_writer.add_summary(summary)
            self.hparams = sei

    def log(self, kind: str, rows: Sequence[Mapping]) -> None:
        for step, metrics in self.keys.groups(kind, rows):
            for tag, value in metrics.items():
                self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        if self.hparams is not None:
            self.writer.file_writer.add_summary(self.hparams)
        self.writer.close()


def hparams_of(manifest: Mapping) -> tuple[dict, list[str]]:
    """TensorBoard HParams of a run: ``({name: value}, [metric tags])``. Values are the run's
    tags (swept values), algorithm, critic, env, task and the numeric/string entries of the
    critic's ``describe``; the metrics are the success tags the eval rows are logged under
    (``eval/seed<S>/success``, with the task when the run trains several)."""
    hp: dict = {}
    for key in ("algorithm", "critic", "env", "task"):
        if manifest.get(key) not in (None, ""):
            hp[key] = str(manifest[key])
    for source in (manifest.get("describe") or {}, manifest.get("tags") or {}):
        for k, v in source.items():
            x = _number(v)
            if x is None and isinstance(v, str):  # tags are recorded as text: '4' is K = 4
                try:
                    x = float(v)
                except ValueError:
                    x = None
            if x is not None:
                hp[str(k)] = x
            elif isinstance(v, (str, bool)):
                hp[str(k)] = v
    seeds = manifest.get("seeds") or [0]
    tasks = manifest.get("tasks") if isinstance(manifest.get("tasks"), (list, tuple)) else []
    if len(tasks) > 1:
        metrics = [f"eval/{t}/seed{int(s)}/success" for t in tasks for s in seeds]
    else:
        metrics = [f"eval/seed{int(s)}/success" for s in seeds]
    return hp, metrics
