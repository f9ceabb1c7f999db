"""Adds up the CPU of a `make test` run by proof, from the files that timeline.py wrote:

    PYTHONPATH=tests/probes FLOQ_TIMELINE_DIR=/tmp/tl PYTEST_ADDOPTS="-p timeline" make test
    python tests/probes/cpu_by_proof.py /tmp/tl

prints a markdown table: each group's tests and CPU-s (the worker's CPU between a test's start
and end, plus that of the child processes it waited for), largest first. A test counts in the
first group whose pattern matches its id."""

from __future__ import annotations

import glob
import os
import re
import sys

GROUPS = [
    ("known answers: flow critics (3000-step trainings)", r"test_known_answers.py::test_critic_reaches_analytic_q\[\w+-floq"),
    ("known answers: monolithic + the rest of the file", r"test_known_answers.py"),
    ("IQN: bandit quantiles and analytic means (trainings)", r"test_iqn.py::test_(bandit|mean)"),
    ("agents: update = reference (losses, gradients, steps, acting)",
     r"agents/test_\w+.py::test_(one_update|reference|update_sequence|act_|init_layout|per_sample|action_reference)"),
    ("agents: short updates with every critic", r"agents/test_\w+.py::test_short|agents/test_sac.py::test_every"),
    ("agents: end-to-end runs", r"agents/test_\w+.py::test_(end_to_end|floq_run_end)"),
    ("agents: the rest", r"agents/"),
    ("critics: flow critic = released update, IQN/embeddings units", r"critics/"),
    ("benchmarks (tiny bench, FLOPs, per-step = scanned)", r"benchmarks/|test_bench_eval"),
    ("kill/resume and stop-signal processes", r"test_seeds_and_resume.py::test_sigkill|test_async_resume|"
     r"test_online.py::test_sigkill|test_shards_run|test_stop_signals|test_loop.py::test_sigterm"),
    ("online phase (module run and its checks)", r"test_online.py"),
    ("launchers (local, submitit, Ray, signals)", r"launch/test_launch|launch/test_sweep_orphans"),
    ("multi-task = lone, vmapped seed = lone", r"test_multitask|test_seeds_and_resume.py::test_vmapped"),
    ("golden digests", r"test_golden"),
    ("evaluators equal, loop", r"test_loop|test_evaluate"),
    ("member divergence", r"test_member_divergence"),
    ("data generation", r"data/test_generate"),
    ("analysis", r"analysis/"),
    ("everything else", r""),
]


def cpu_per_test(folder: str) -> list[tuple[str, float]]:
    """(test id, CPU-s) for every test that started and ended in a worker's file."""
    rows = []
    for path in sorted(glob.glob(os.path.join(folder, "gw*.tsv"))):
        started = {}
        with open(path) as f:
            for line in f:
                fields = line.rstrip("\n").split("\t")
                if len(fields) < 5:  # a file of the old format (no CPU columns)
                    continue
                kind, node, cpu = fields[0], fields[2], float(fields[3]) + float(fields[4])
                if kind == "start":
                    started[node] = cpu
                elif node in started:
                    rows.append((node, cpu - started.pop(node)))
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not os.path.isdir(argv[0]):
        print("usage: python tests/probes/cpu_by_proof.py TIMELINE_DIR", file=sys.stderr)
        return 2
    rows = cpu_per_test(argv[0])
    if not rows:
        print(f"no timeline with CPU columns in {argv[0]}", file=sys.stderr)
        return 2
    sums = {name: [0, 0.0] for name, _ in GROUPS}
    for node, cpu in rows:
        name = next(n for n, pattern in GROUPS if re.search(pattern, node))
        sums[name][0] += 1
        sums[name][1] += cpu
    print("| proof | tests | CPU-s |\n|---|---|---|")
    for name, (n, cpu) in sorted(sums.items(), key=lambda kv: -kv[1][1]):
        print(f"| {name} | {n} | {cpu:.0f} |")
    print(f"| all | {len(rows)} | {sum(c for _, c in rows):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
