"""The `floq` command: parses arguments and dispatches; the logic lives in modules."""

from __future__ import annotations

import argparse
import os
import sys


def _run(argv) -> int:
    p = argparse.ArgumentParser(prog="floq run", description="Train and evaluate one run from gin files.")
    p.add_argument("gin_files", nargs="+", help="gin files; later files override earlier ones")
    p.add_argument("--bind", action="append", default=[], metavar="'Name.param = value'",
                   help="gin binding applied after the files (repeatable)")
    p.add_argument("--out", default=None, help="results root (default: Trainer.out_dir, 'runs')")
    p.add_argument("--run-dir", default=None, help="exact run directory (resumes if it holds a checkpoint)")
    p.add_argument("--tag", action="append", default=[], metavar="key=value",
                   help="extra result column (repeatable); sweeps pass their swept values here")
    a = p.parse_args(argv)
    tags = {}
    for t in a.tag:
        if "=" not in t:
            print(f"floq run: --tag needs key=value, got {t!r}", file=sys.stderr)
            return 2
        k, v = t.split("=", 1)
        tags[k.strip()] = v.strip()
    from floq.config import ConfigError
    from floq.results import summary_table
    from floq.train import run

    try:
        run_dir = run(a.gin_files, a.bind, out_dir=a.out, run_dir=a.run_dir, tags=tags)
    except ConfigError as e:
        print(f"floq run: {e}", file=sys.stderr)
        return 2
    print(f"results: {run_dir}")
    try:
        print(summary_table([run_dir]))
    except (OSError, KeyError, ValueError):
        pass
    return 0


def _data(argv) -> int:
    if not argv or argv[0] != "generate":
        print("usage: floq data generate DATASET --episodes N [--out DIR]", file=sys.stderr)
        return 2
    from floq.data import generate

    try:
        generate.main(argv[1:])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _delegate(module: str, argv) -> int:
    import importlib

    try:
        ret = importlib.import_module(module).main(argv)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return int(ret or 0)


def quiet_warnings() -> None:
    """Silence third-party warnings that say nothing about a run (no display for GLFW,
    gymnasium's float32 box casts)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable.*")
    warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
    warnings.filterwarnings("ignore", module="glfw")


COMMANDS = {
    "run": _run,
    "data": _data,
    "sweep": lambda argv: _delegate("floq.launch.sweep", argv),
    "analyze": lambda argv: _delegate("analysis.report", argv),
    "bench": lambda argv: _delegate("benchmarks.bench", argv),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: floq {run,sweep,data,analyze,bench} ...\n"
              "  run FILE.gin [...] [--bind 'X = v'] [--out DIR]   train and evaluate one run\n"
              "  sweep FILE.gin [--launcher local|slurm|ray]      run a declared sweep\n"
              "  data generate DATASET --episodes N [--out DIR]   make an OGBench dataset locally\n"
              "  analyze RESULTS_DIR --out REPORT_DIR             figures and tables\n"
              "  bench [--quick]                                  throughput measurements",
              file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    quiet_warnings()
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
