"""A stand-in for ``python -m floq run``: same command line, no training.

``fake_trainer.py FILE.gin ... --bind 'X = v' ... --run-dir DIR --tag k=v ... [--retry-failed]``

Behaves like the trainer as the launchers see it: resumes (progress kept in
``DIR/progress``), is a no-op on a done run, writes ``run.json`` and an ``eval.csv`` with
one column per tag, prints a progress line per step, and fails with one line on demand.
Like ``floq run`` it diverges on demand (run.json ``diverged``, exit 3) and then refuses the
run (exit 3) until it is given ``--retry-failed``. Each call appends a line to
``DIR/invocations`` (time, ``CUDA_VISIBLE_DEVICES`` and ``retry`` when ``--retry-failed``)
and records in ``DIR/seen_state`` the state ``sweep.json`` gives the run while it trains.

Controlled by the JSON file named in ``$FAKE_TRAINER_CONTROL`` (read at start):
``{"fail": [run names], "diverge": [run names], "steps": 3, "step_s": 0.05}``.
"""

import argparse
import csv
import json
import os
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--bind", action="append", default=[])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--tag", action="append", default=[])
    parser.add_argument("--retry-failed", action="store_true")
    args = parser.parse_args()
    control = {}
    if os.environ.get("FAKE_TRAINER_CONTROL"):
        with open(os.environ["FAKE_TRAINER_CONTROL"]) as f:
            control = json.load(f)
    run_dir = args.run_dir
    name = os.path.basename(run_dir)
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "invocations"), "a") as f:
        retry = " retry" if args.retry_failed else ""
        f.write(f"{time.time()} {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}{retry}\n")
    manifest = os.path.join(run_dir, "run.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            status = json.load(f).get("status")
        if status == "done":
            print("run already done: nothing to do")
            return 0
        if status == "diverged" and not args.retry_failed:
            print(f"floq run: {run_dir} diverged before; re-run with --retry-failed", file=sys.stderr)
            return 3
    summary = os.path.join(os.path.dirname(os.path.abspath(run_dir)), "sweep.json")
    if os.path.exists(summary):  # what the sweep says about this run while it trains
        with open(summary) as f:
            states = {r["name"]: r["state"] for r in json.load(f)["runs"]}
        with open(os.path.join(run_dir, "seen_state"), "w") as f:
            f.write(states.get(name, "?"))
    tags = dict(t.split("=", 1) for t in args.tag)
    bindings = dict((b.split("=", 1)[0].strip(), b.split("=", 1)[1].strip()) for b in args.bind)
    seed = int(bindings.get("SEED", 0))
    with open(manifest, "w") as f:
        json.dump({"run": name, "status": "running", "tags": tags, "seeds": [seed]}, f)
    if name in control.get("diverge", []):
        with open(manifest, "w") as f:
            json.dump({"run": name, "status": "diverged", "step": 2, "tags": tags,
                       "reason": "critic/loss is nan (seed 0)"}, f)
        print("floq run: diverged: critic/loss is nan at step 2 (seed 0)", file=sys.stderr)
        return 3
    if name in control.get("fail", []):
        print("step 1/3 |###       |", flush=True)
        print(f"floq run: error: fake failure of {name}", file=sys.stderr)
        return 1
    progress_path = os.path.join(run_dir, "progress")
    done = int(open(progress_path).read()) if os.path.exists(progress_path) else 0
    steps = int(control.get("steps", 3))
    for step in range(done, steps):
        time.sleep(float(control.get("step_s", 0.05)))
        with open(progress_path, "w") as f:
            f.write(str(step + 1))
        print(f"\rtraining {step + 1}/{steps}", end="", flush=True)
    print()
    with open(os.path.join(run_dir, "eval.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["experiment", "run", "seed", "step", "success", *tags])
        writer.writerow(["fake", name, seed, steps, 0.5, *tags.values()])
    with open(manifest, "w") as f:
        json.dump(
            {
                "run": name,
                "status": "done",
                "tags": tags,
                "seeds": [seed],
                "bindings": args.bind,
                "files": args.files,
            },
            f,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
