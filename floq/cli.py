"""The `floq` command: parses arguments and dispatches; the logic lives in modules.

Exit codes of ``floq run``: 0 done, 1 the run failed (``floq.results.RunError`` or an
unexpected exception), 2 bad input (``floq.config.ConfigError``, bad arguments), 3 the run
diverged (``floq.results.RunDiverged``), 130 interrupted, and whatever status the trainer
exits with itself (143: preempted, checkpoint saved). Errors are one line on stderr;
``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from floq.columns import EVAL_COLUMNS

USAGE = """usage: floq {run,status,sweep,data,analyze,eval,bench} ... | floq --version

  run FILE.gin [...] [--bind 'X = v'] [--out DIR]    train and evaluate one run
      [--logger wandb|tensorboard] [--debug]          (trackers beside the CSV files)
  run RUN_DIR | RUN_DIR/config.gin                   that run again (resume, or "already done")
  status DIR [DIR ...]                               runs under DIR: status, progress, ETA
  sweep FILE.gin [--launcher local|slurm|ray]        run a declared sweep
      [--retry-failed] [--dry-run] [--force]          (--retry-failed: failed and diverged runs too)
  data generate DATASET --episodes N [--out DIR]     make an OGBench dataset locally
  analyze RESULTS_DIR --out REPORT_DIR               figures and tables
  eval RUN_DIR [--step N] [--episodes N]             evaluate a checkpoint again
      [--video out.mp4]                               (and render an episode)
  bench [--quick]                                    throughput measurements

'floq COMMAND --help' describes a command's options."""

EXIT_FAILED, EXIT_CONFIG, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


def _one_line(e: BaseException, limit: int = 4000) -> str:
    lines = [" ".join(ln.split()) for ln in str(e).splitlines() if ln.strip()]
    msg = lines[0] if lines else ""
    return msg[:limit]


def _logger_binding(names) -> str:
    names = list(dict.fromkeys(names))
    return "Trainer.loggers = (" + "".join(f"'{n}', " for n in names).rstrip(" ") + ")"


#: Names a --tag may not take: eval.csv's standard columns and the run.json fields the
#: analysis reads beside them (a tag 'status=done' would otherwise override run.json's status).
RESERVED_TAGS = frozenset(EVAL_COLUMNS) | {"status", "status_reason", "status_step", "config_hash", "seedless_config_hash"}


def rerun_target(gin_files, bind, tag, run_dir, out):
    """What ``floq run`` trains when given a run directory or its ``config.gin``.

    Returns ``(gin_files, run_dir, tags)``: a run directory among ``gin_files`` becomes its
    ``config.gin``; when that is the only file and no ``--bind``, ``--tag`` or ``--run-dir``
    is given, the run is the same run: its own directory (or, with ``--out``, the directory
    of that name under ``OUT/<experiment>/``) and run.json's tags, so a done run says it is
    done and an unfinished one resumes. With more files, bindings or tags it is a new run
    built from that config (``run_dir`` and ``tags`` are then ``None``). Raises ConfigError
    (via floq.results) for a directory that is not a run directory.
    """
    from floq import results

    files, found = [], []
    for path in gin_files:
        target = results.run_dir_of(path)
        if target is None:
            files.append(path)
            continue
        config = os.path.join(target[0], results.CONFIG_NAME)
        if not os.path.isfile(config):
            from floq.config import ConfigError

            raise ConfigError(f"{target[0]} holds no {results.CONFIG_NAME} yet (it is written after the "
                              f"first training step): run it with its own files and --run-dir {target[0]}")
        files.append(config)
        found.append(target)
    if len(gin_files) != 1 or not found or bind or tag or run_dir is not None:
        return files, run_dir, None
    old_dir, manifest = found[0]
    if out is not None:
        experiment = str(manifest.get("experiment") or os.path.basename(os.path.dirname(old_dir)))
        old_dir = results.safe_run_dir(out, experiment, os.path.basename(old_dir))
    tags = manifest.get("tags")
    return files, old_dir, dict(tags) if isinstance(tags, dict) else {}


def _run(argv) -> int:
    p = argparse.ArgumentParser(
        prog="floq run", description="Train and evaluate one run from gin files.",
        epilog="A run directory, or the config.gin in one, given alone is that run again: the same run "
               "directory and tags (a done run says so; an unfinished one resumes).")
    p.add_argument("gin_files", nargs="+",
                   help="gin files; later files override earlier ones (or a run directory, or its config.gin)")
    p.add_argument("--bind", action="append", default=[], metavar="'Name.param = value'",
                   help="gin binding applied after the files (repeatable)")
    from floq.results import path_arg

    p.add_argument("--out", default=None, type=path_arg, help="results root (default: Trainer.out_dir, 'runs')")
    p.add_argument("--run-dir", default=None, type=path_arg,
                   help="exact run directory (resumes if it holds a checkpoint)")
    p.add_argument("--tag", action="append", default=[], metavar="key=value",
                   help="extra result column (repeatable); sweeps pass their swept values here")
    p.add_argument("--logger", action="append", default=[], choices=("wandb", "tensorboard"),
                   help="also send the logged rows to Weights & Biases or TensorBoard (repeatable; "
                        "the binding Trainer.loggers = (...), applied after --bind); the CSV files are "
                        "always written")
    p.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    p.add_argument("--force", action="store_true",
                   help="when the run directory holds a run with a different config, move that run aside "
                        "(to RUN.replaced-<time>; nothing is deleted) and start this one there")
    p.add_argument("--retry-failed", action="store_true",
                   help="train a run that diverged again, from its last good checkpoint")
    a = p.parse_args(argv)
    tags = {}
    for t in a.tag:
        if "=" not in t:
            p.error(f"--tag needs key=value, got {t!r}")
        k, v = t.split("=", 1)
        k = k.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", k):
            p.error(f"--tag needs a column name before '=' (letters, digits, _ . / -), got {t!r}")
        if k in RESERVED_TAGS:
            p.error(f"--tag {k}=... would shadow floq's own '{k}' column; choose another name")
        tags[k] = v.strip()
    bindings = list(a.bind)
    if a.run_dir is not None and os.path.exists(a.run_dir) and not os.path.isdir(a.run_dir):
        print(f"floq run: error: --run-dir {a.run_dir} is a file, not a directory", file=sys.stderr)
        return EXIT_CONFIG

    from floq.config import ConfigError

    try:
        if a.logger:
            from floq.loggers import check_loggers

            check_loggers(a.logger)  # a missing package is one line, before anything loads
            bindings.append(_logger_binding(a.logger))
        gin_files, run_dir, same_tags = rerun_target(a.gin_files, a.bind, a.tag, a.run_dir, a.out)
        if same_tags is not None:
            tags = same_tags
        from floq.loop import run

        run_dir = run(gin_files, bindings, out_dir=a.out, run_dir=run_dir, tags=tags, force=a.force,
                      retry_failed=a.retry_failed)
    except ConfigError as e:
        if a.debug:
            traceback.print_exc()
        print(f"floq run: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt as e:
        from floq.interrupts import Interrupted

        if isinstance(e, Interrupted):  # a phase before training (data generation): cleaned up
            print(f"floq run: {e.message()}", file=sys.stderr)
            return e.exit_code
        print("floq run: interrupted (run it again to resume from the last checkpoint)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - the user gets one line; --debug gives the traceback
        if a.debug:
            traceback.print_exc()
        from floq import results

        msg = _one_line(e)
        if isinstance(e, results.RunDiverged):
            print(f"floq run: {msg if 'diverged' in msg.lower() else 'diverged: ' + msg}", file=sys.stderr)
            return EXIT_DIVERGED
        if isinstance(e, results.RunError):
            print(f"floq run: error: {msg}", file=sys.stderr)
            return EXIT_FAILED
        hint = "" if a.debug else " (re-run with --debug for the traceback)"
        what = f"{type(e).__name__}: {msg}" if msg else type(e).__name__
        print(f"floq run: error: {what}{hint}", file=sys.stderr)
        return EXIT_FAILED
    print(f"results: {run_dir}")
    try:
        from floq.status import summary_table

        print(summary_table([run_dir]))
    except Exception:  # noqa: BLE001 - the run is done; the table is a convenience
        if a.debug:
            traceback.print_exc()
    return 0


def _data(argv) -> int:
    if not argv or argv[0] != "generate":
        print("usage: floq data generate DATASET --episodes N [--out DIR]", file=sys.stderr)
        return 2
    from floq.data import generate

    try:
        generate.main(argv[1:])
    except SystemExit as e:
        return _exit_code(e)
    return 0


def _exit_code(e: SystemExit) -> int:
    if e.code is None:
        return 0
    if isinstance(e.code, int):
        return e.code
    print(e.code, file=sys.stderr)
    return 1


def _delegate(module: str, argv) -> int:
    import importlib

    try:
        ret = importlib.import_module(module).main(argv)
    except SystemExit as e:
        return _exit_code(e)
    return int(ret or 0)


def _out_arg(argv) -> str | None:
    """The value of --out in an argument list (either '--out DIR' or '--out=DIR')."""
    for i, a in enumerate(argv):
        if a == "--out" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--out="):
            return a.split("=", 1)[1]
    return None


def report_summary(report_dir: str) -> list[str]:
    """What `floq analyze` prints after the report's path: the report's headline (its
    '**Answer.**' paragraphs, one per protocol group) and its leaderboard tables (per
    environment), as plain text."""
    import glob

    def plain(text: str) -> str:
        return re.sub(r"\*\*([^*]+)\*\*", r"\1", text).strip()

    lines = []
    try:
        with open(os.path.join(report_dir, "index.md"), encoding="utf-8") as f:
            index = f.read().splitlines()
    except OSError:
        return lines
    lines += [plain(ln) for ln in index if ln.startswith("**Answer.**")]
    for path in sorted(glob.glob(os.path.join(report_dir, "leaderboard_env*.md"))):
        try:
            with open(path, encoding="utf-8") as f:
                rows = [ln for ln in f.read().splitlines() if ln.startswith("|")]
        except OSError:
            continue
        rows = [[plain(c) for c in r.strip().strip("|").split("|")] for r in rows
                if not re.fullmatch(r"\|[\s:|-]+\|?", r.strip())]
        if not rows:
            continue
        widths = [max(len(r[i]) if i < len(r) else 0 for r in rows) for i in range(len(rows[0]))]
        lines.append("")
        lines.append(f"leaderboard ({os.path.basename(path)}):")
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def _analyze(argv) -> int:
    code = _delegate("analysis.report", argv)
    out = _out_arg(argv)
    if code == 0 and out:
        for line in report_summary(out):
            print(line)
    return code


def version_string() -> str:
    """'floq 0.1.0 (git 43d4eec... (dirty))': the installed package version and the commit."""
    from importlib import metadata

    try:
        version = metadata.version("floq")
    except metadata.PackageNotFoundError:
        from floq import __version__ as version
    from floq.results import git_commit

    return f"floq {version} (git {git_commit()})"


try:
    from floq.quiet import quiet_warnings  # noqa: F401  (also imported from here by older callers)
except ImportError:  # pragma: no cover - a tree without floq.quiet
    def quiet_warnings() -> None:
        """Silence third-party warnings that say nothing about a run."""
        import warnings

        warnings.filterwarnings("ignore", message=".*DISPLAY environment variable.*")
        warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
        warnings.filterwarnings("ignore", module="glfw")


COMMANDS = {
    "run": _run,
    "status": lambda argv: _delegate("floq.status", argv),
    "data": _data,
    "sweep": lambda argv: _delegate("floq.launch.sweep", argv),
    "analyze": _analyze,
    "eval": lambda argv: _delegate("floq.policy", argv),
    "bench": lambda argv: _delegate("benchmarks.bench", argv),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv and argv[0] in ("-V", "--version"):
        print(version_string())
        return 0
    if not argv or argv[0] not in COMMANDS:
        if argv:
            print(f"floq: error: unknown command {argv[0]!r}", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_warnings()
    try:
        return COMMANDS[argv[0]](argv[1:])
    except SystemExit as e:
        return _exit_code(e)


if __name__ == "__main__":
    sys.exit(main())
