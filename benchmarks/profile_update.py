"""Where the time of one training chunk goes: a jax.profiler trace summarised.

    python -m benchmarks.profile_update --config paper --critic floq [--steps 64] [--out DIR]

Compiles the trainer's chunk (`floq.train.make_chunk`, one seed) at a `floq bench`
configuration, runs it once to warm up, then once under `jax.profiler.trace(...,
create_perfetto_trace=True)`. The Perfetto JSON it writes (Chrome trace format) is read back
and summarised: the wall time of the traced call, the time the device was busy (the union of
its kernels' intervals), kernels launched per gradient step, and the kernels grouped into
matrix products (cuBLAS / cuBLASLt / CUTLASS names), fusions and copies, with the top kernels
by total time. On a CPU the XLA CPU client's thunks stand in for kernels. Prints a Markdown
table; with --out, writes it as profile_<config>_<critic>.md there (and keeps the trace).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time

import numpy as np

MATMUL_HINTS = ("gemm", "cublas", "cutlass", "xmma", "nvjet", "matmul", "dot")
COPY_HINTS = ("memcpy", "memset", "copy")


def kind_of(name: str) -> str:
    low = name.lower()
    if any(h in low for h in MATMUL_HINTS):
        return "matmul"
    if any(h in low for h in COPY_HINTS):
        return "copy"
    return "fusion/other"


def union_length(intervals) -> float:
    total, end = 0.0, -np.inf
    for s, e in sorted(intervals):
        if s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def summarise(trace_path: str, steps: int, wall_s: float) -> tuple[str, dict]:
    data = json.load(gzip.open(trace_path))
    events = data["traceEvents"] if isinstance(data, dict) else data
    procs = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    threads = {(e["pid"], e.get("tid")): e["args"]["name"] for e in events
               if e.get("ph") == "M" and e.get("name") == "thread_name"}
    gpu = {p for p, n in procs.items() if "gpu" in n.lower() or "device" in n.lower()}
    if gpu:
        kernels = [e for e in events if e.get("ph") == "X" and e["pid"] in gpu]
        where = ", ".join(sorted(procs[p] for p in gpu))
    else:  # CPU: the XLA client's thunks
        xla = {k for k, n in threads.items() if "xla" in n.lower()}
        kernels = [e for e in events if e.get("ph") == "X" and (e["pid"], e.get("tid")) in xla]
        where = "XLA CPU threads"
    kernels = [e for e in kernels if e.get("dur", 0) > 0]
    if not kernels:
        return f"no device events in {trace_path}", {}
    busy_us = union_length([(e["ts"], e["ts"] + e["dur"]) for e in kernels])
    by_name = collections.defaultdict(lambda: [0.0, 0])
    by_kind = collections.defaultdict(float)
    for e in kernels:
        by_name[e["name"]][0] += e["dur"]
        by_name[e["name"]][1] += 1
        by_kind[kind_of(e["name"])] += e["dur"]
    total = sum(v[0] for v in by_name.values())
    summary = {
        "wall_ms": 1e3 * wall_s, "busy_ms": busy_us / 1e3, "busy_share": busy_us / 1e6 / wall_s,
        "kernels_per_step": len(kernels) / steps, "matmul_share": by_kind["matmul"] / total,
        "us_per_step": 1e6 * wall_s / steps,
    }
    lines = [
        f"- traced: one chunk of {steps} steps, {1e3 * wall_s:.1f} ms wall ({summary['us_per_step']:.0f} us/step); "
        f"events from {where}",
        f"- device busy {busy_us / 1e3:.1f} ms = {summary['busy_share']:.0%} of the wall time; "
        f"{len(kernels) / steps:.0f} kernels per gradient step "
        f"({1e6 * wall_s / max(len(kernels), 1):.1f} us of wall per kernel)",
        "- kernel time by kind: " + ", ".join(f"{k} {v / total:.0%}" for k, v in
                                            sorted(by_kind.items(), key=lambda kv: -kv[1])),
        "",
        "| kernel | kind | calls/step | total ms | share | mean us |",
        "|---|---|---|---|---|---|",
    ]
    for name, (dur, n) in sorted(by_name.items(), key=lambda kv: -kv[1][0])[:15]:
        short = name if len(name) <= 70 else name[:67] + "..."
        lines.append(f"| `{short}` | {kind_of(name)} | {n / steps:.1f} | {dur / 1e3:.2f} | {dur / total:.1%} | "
                     f"{dur / n:.1f} |")
    return "\n".join(lines), summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile_update", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="small", help="a floq bench configuration (tiny, small, paper)")
    p.add_argument("--critic", default="floq", choices=("monolithic", "floq"))
    p.add_argument("--precision", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--steps", type=int, default=64, help="gradient steps in the traced chunk")
    p.add_argument("--rows", type=int, default=100_000, help="synthetic transitions")
    p.add_argument("--out", default=None, help="directory for profile_<config>_<critic>.md and the trace")
    a = p.parse_args(argv)

    import jax

    from benchmarks.bench import SIZES, build, synthetic_data, to_device
    from floq.train import init_states, make_chunk

    if a.config not in SIZES or a.steps < 1:
        print(f"profile_update: --config must be one of {tuple(SIZES)} and --steps >= 1", file=sys.stderr)
        return 2
    size = SIZES[a.config]
    if a.out:
        os.makedirs(a.out, exist_ok=True)
    algo, critic = build(a.critic, size, precision=a.precision)
    data = to_device(synthetic_data(a.rows))
    states = init_states(algo, critic, [0], data["observations"][:2], data["actions"][:2])
    compiled = make_chunk(algo, critic, size.batch, a.steps).lower(states, data).compile()
    states, m = compiled(states, data)  # warm-up
    jax.block_until_ready((states, m))
    trace_dir = os.path.join(a.out, f"trace_{a.config}_{a.critic}") if a.out else tempfile.mkdtemp()
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        t0 = time.perf_counter()
        states, m = compiled(states, data)
        jax.block_until_ready((states, m))
        wall = time.perf_counter() - t0
    found = sorted(glob.glob(os.path.join(trace_dir, "**", "perfetto_trace.json.gz"), recursive=True))
    if not found:
        print(f"profile_update: no perfetto trace under {trace_dir}", file=sys.stderr)
        return 1
    text, _ = summarise(found[-1], a.steps, wall)
    head = (f"## Profile: {a.critic}, {a.config} config ({size.batch} batch, {size.depth}x{size.width}"
            + (f", K {size.K}, R {size.R}" if a.critic == "floq" else "") + f"), {a.precision}, "
            f"{jax.devices()[0].device_kind}, jax {jax.__version__}\n")
    print(head + "\n" + text)
    if a.out:
        with open(os.path.join(a.out, f"profile_{a.config}_{a.critic}_{a.precision}.md"), "w") as f:
            f.write(head + "\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
