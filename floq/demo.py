"""`make demo`: generate the demo dataset, train FQL with a monolithic and a floq critic on
it, evaluate both in the simulator, write the analysis report, print what was measured."""

from __future__ import annotations

import os
import sys
import time

RUNS = (
    ("monolithic", ["gin/experiments/quickstart.gin"]),
    ("floq", ["gin/experiments/quickstart_floq.gin"]),
)


ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def child_env(environ) -> dict:
    """A training process's environment: one XLA thread, the user's own XLA_FLAGS kept (e.g.
    ``--xla_cpu_max_isa=AVX``, which times the demo as a CPU without AVX2 runs it)."""
    flags = " ".join(x for x in (environ.get("XLA_FLAGS", "").strip(), ONE_THREAD) if x)
    return dict(environ, XLA_FLAGS=flags, OMP_NUM_THREADS="1")


def train_in_parallel(runs, out: str) -> list[str]:
    """Train the runs at the same time, one process per core with one XLA thread each (on 2
    cores this is ~1.6x faster than one run after the other with two threads each); each run
    evaluates in its own process, synchronously. Output goes to <run>.log beside the runs."""
    import subprocess

    from floq.config import ConfigError

    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    procs = []
    os.makedirs(out, exist_ok=True)
    for i, (label, files) in enumerate(runs):
        env = child_env(os.environ)
        log_path = os.path.join(out, f"demo_{label}.log")
        core = cores[i % len(cores)]

        def pin(core=core):
            if hasattr(os, "sched_setaffinity") and len(cores) >= len(runs):
                os.sched_setaffinity(0, {core})

        log = open(log_path, "w")
        cmd = [sys.executable, "-m", "floq", "run", *files, "--out", out, "--bind", "Trainer.eval_workers=0",
               "--bind", "Trainer.progress=False"]
        print(f"== training FQL + {label} critic (log: {log_path}) ==")
        procs.append((label, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=pin),
                      log, log_path))
    run_dirs = []
    for label, p, log, log_path in procs:
        rc = p.wait()
        log.close()
        if rc != 0:
            raise ConfigError(f"the {label} run failed (exit {rc}); see {log_path}")
        last = [ln for ln in open(log_path).read().splitlines() if ln.startswith("results: ")]
        run_dirs.append(last[-1][len("results: "):])
        print(f"   {label}: done ({run_dirs[-1]})")
    return run_dirs


def main() -> int:
    from floq.quiet import quiet_warnings

    quiet_warnings()
    from floq.config import REPO_ROOT, ConfigError
    from floq.status import summary_table
    from floq.train import build

    os.chdir(REPO_ROOT)
    out = os.environ.get("FLOQ_DEMO_OUT", "runs")
    t0 = time.time()
    try:
        # Generate (or find cached) data first, so its progress bar stands on its own.
        exp = build(RUNS[0][1])
        print(f"== dataset: {exp.task.dataset_name} ({exp.task.generate_episodes} episodes, OGBench's oracle) ==")
        path = exp.task.resolve_path(progress=True)
        print(f"   {path}")
        run_dirs = train_in_parallel(RUNS, out)
    except ConfigError as e:
        print(f"floq demo: {e}", file=sys.stderr)
        return 2
    report = None
    try:
        from analysis.report import build_report

        report = build_report(os.path.join(out, "quickstart"), os.path.join("reports", "quickstart"))
    except Exception as e:  # noqa: BLE001 - the runs above are the demo; the report is a bonus
        print(f"(report not written: {type(e).__name__}: {e})", file=sys.stderr)
    print("\n== what was measured ==")
    print(summary_table(run_dirs))
    print(f"\nrun directories: {', '.join(run_dirs)}")
    if report:
        print(f"report: {report}")
    print(f"demo wall time: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
