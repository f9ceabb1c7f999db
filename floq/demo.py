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


def table(run_dirs) -> str:
    """One line per run: success over evaluations, speed, size."""
    import pandas as pd

    from floq import results

    rows = []
    for d in run_dirs:
        ev = pd.read_csv(os.path.join(d, "eval.csv"))
        man = results.read_json(os.path.join(d, "run.json"))
        curve = " -> ".join(f"{s:.0%}@{int(st) // 1000}k" for st, s in ev.groupby("step").success.mean().items())
        rows.append([man["critic"], curve, f"{man.get('updates_per_s', float('nan')):.1f}",
                     f"{man['params']['total']:,}", f"{man['params']['critic_total']:,}",
                     f"{(man.get('flops_per_update') or float('nan')) / 1e9:.2f}", f"{man.get('wall_time_s', 0):.0f}"])
    head = ["critic", f"success ({ev.eval_episodes.iloc[0]} episodes per evaluation)", "updates/s", "params",
            "critic params", "GFLOP/update", "wall s"]
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*head), fmt.format(*["-" * w for w in widths])] + [fmt.format(*r) for r in rows])


def main() -> int:
    from floq.cli import quiet_warnings

    quiet_warnings()
    from floq.config import REPO_ROOT, ConfigError
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
    print(table(run_dirs))
    print(f"\nrun directories: {', '.join(run_dirs)}")
    if report:
        print(f"report: {report}")
    print(f"demo wall time: {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
