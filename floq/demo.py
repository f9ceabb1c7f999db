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


def main() -> int:
    from floq.cli import quiet_warnings

    quiet_warnings()
    from floq.config import REPO_ROOT, ConfigError
    from floq.results import summary_table
    from floq.train import build, run

    os.chdir(REPO_ROOT)
    out = os.environ.get("FLOQ_DEMO_OUT", "runs")
    t0 = time.time()
    try:
        # Generate (or find cached) data first, so its progress bar stands on its own.
        exp = build(RUNS[0][1])
        print(f"== dataset: {exp.task.dataset_name} ({exp.task.generate_episodes} episodes, OGBench's oracle) ==")
        path = exp.task.resolve_path(progress=True)
        print(f"   {path}")
        run_dirs = []
        for label, files in RUNS:
            print(f"\n== training FQL + {label} critic ==")
            run_dirs.append(run(files, out_dir=out))
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
