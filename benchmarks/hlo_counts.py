"""Kernels and dtypes of floq's update, read from its HLO (a code property: any backend).

    python -m benchmarks.hlo_counts                     tiny configuration, f32 and bf16
    python -m benchmarks.hlo_counts --config paper      the paper configuration (lowering only
                                                        for the dtype census; --no-compile skips
                                                        the optimised counts)

For each precision it prints, for one trainer step (`floq.train.make_step`, FQL + floq):

  pre-optimisation HLO (`jax.jit(step).lower(...).as_text(dialect='hlo')`): instructions,
    converts (f32 -> bf16, bf16 -> f32), and the f32 tensors of activation size (rows x width)
    inside the loops (the K-step critic integration and the actor's flow), the bf16 guard of
    tests/test_precision.py;
  optimised HLO of the compiled step (this backend's): kernels = the instructions a thunk
    runs (fusions, custom calls, dots, copies, ...: everything but parameters, constants,
    tuples, get-tuple-element and bitcasts) in the entry computation and in each while body,
    with the loop's trip count, and kernels per update = outer + sum(trip x body);
  and the same for the trainer's chunk program (`floq.train.make_program`: 'program' with its
    per-step lax.cond, 'program_full' the split form's full chunk without it).

Counts on the CPU are the CPU compiler's fusions, not a GPU's: they compare variants of the
code with each other (one loop vs two, flattened Adam, ...), not with a GPU profile.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

#: Instructions that are not kernels (no thunk runs them, or they alias a buffer).
NOT_KERNELS = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all", "opt-barrier"}
_REF = re.compile(r"\b(?:calls|to_apply|body|condition|true_computation|false_computation)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"branch_computations=\{([^}]*)\}")
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")


def computations(text: str) -> tuple[dict, str]:
    """HLO module text -> ({computation name: [instruction lines]}, entry name)."""
    comps, entry, name = {}, None, None
    for line in text.splitlines():
        if name is None:
            m = _HEADER.match(line)
            if m and not line.startswith("HloModule"):
                name = m.group(1)
                comps[name] = []
                if line.startswith("ENTRY"):
                    entry = name
        elif line.startswith("}"):
            name = None
        elif line.strip():
            comps[name].append(line.strip())
    return comps, entry


def instruction(line: str):
    """'ROOT %x = f32[2,3]{1,0} add(...), ...' -> (name, type, opcode) or None."""
    m = re.match(r"(?:ROOT )?%?([\w.\-]+) = ", line)
    if not m:
        return None
    rest = line[m.end():]
    if rest.startswith("("):  # a tuple type: up to its matching parenthesis
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                break
        typ, rest = rest[:i + 1], rest[i + 1:].lstrip()
    else:
        typ, _, rest = rest.partition(" ")
    op = re.match(r"([a-z][\w\-]*)\(", rest)
    return m.group(1), typ, op.group(1) if op else "?"


def references(lines) -> list[str]:
    out = []
    for line in lines:
        out += _REF.findall(line)
        for group in _BRANCHES.findall(line):
            out += [s.strip().lstrip("%") for s in group.split(",") if s.strip()]
    return out


def reachable(comps: dict, roots) -> set:
    seen, todo = set(), list(roots)
    while todo:
        c = todo.pop()
        if c in seen or c not in comps:
            continue
        seen.add(c)
        todo += references(comps[c])
    return seen


def while_loops(comps: dict) -> list[dict]:
    """Every while instruction: {computation, body, condition, trip (known trip count or None)}."""
    out = []
    for c, lines in comps.items():
        for line in lines:
            ins = instruction(line)
            if ins and ins[2] == "while":
                body = re.search(r"body=%?([\w.\-]+)", line).group(1)
                cond = re.search(r"condition=%?([\w.\-]+)", line).group(1)
                trip = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
                out.append({"computation": c, "body": body, "condition": cond,
                            "trip": int(trip.group(1)) if trip else None})
    return out


def shape_of(typ: str):
    """'f32[2,3]{1,0}' -> ('f32', (2, 3)); tuples and tokens -> None."""
    m = re.match(r"(\w+)\[([\d,]*)\]", typ)
    if not m or typ.startswith("("):
        return None
    return m.group(1), tuple(int(d) for d in m.group(2).split(",") if d)


def loop_computations(comps: dict) -> set:
    """Computations run inside some while loop (its bodies and what they call)."""
    return reachable(comps, [w["body"] for w in while_loops(comps)])


def f32_activations(text: str, width: int, min_rows: int, loops_only: bool = True) -> list[tuple]:
    """f32 tensors of activation size that the code computes, in pre-optimisation HLO: rank >= 2,
    last dim `width`, at least `min_rows` rows (product of the other dims); inside loops only
    by default. Parameters and loop-carried values (the f32 weights) are not computed there
    and do not count. Returns [(computation, instruction, opcode, dims)]."""
    comps, _ = computations(text)
    where = loop_computations(comps) if loops_only else set(comps)
    out = []
    for c in sorted(where):
        for line in comps[c]:
            ins = instruction(line)
            if not ins or ins[2] in ("parameter", "get-tuple-element", "tuple"):
                continue
            sh = shape_of(ins[1])
            if sh and sh[0] == "f32" and len(sh[1]) >= 2 and sh[1][-1] == width:
                rows = 1
                for d in sh[1][:-1]:
                    rows *= d
                if rows >= min_rows:
                    out.append((c, ins[0], ins[2], sh[1]))
    return out


def converts(text: str) -> dict:
    """Counts of convert instructions by (from, to) element type, pre-optimisation HLO."""
    comps, _ = computations(text)
    types = {}
    for lines in comps.values():
        for line in lines:
            ins = instruction(line)
            if ins:
                types[ins[0]] = ins[1]
    out: dict = {}
    for lines in comps.values():
        for line in lines:
            ins = instruction(line)
            if ins and ins[2] == "convert":
                arg = re.search(r"convert\(%?([\w.\-]+)\)", line)
                src = shape_of(types.get(arg.group(1), "")) if arg else None
                dst = shape_of(ins[1])
                key = f"{src[0] if src else '?'}->{dst[0] if dst else '?'}"
                out[key] = out.get(key, 0) + 1
    return out


def kernels(comps: dict, name: str) -> int:
    """Kernel-like instructions of one (non-fused) computation."""
    n = 0
    for line in comps.get(name, []):
        ins = instruction(line)
        if ins and ins[2] not in NOT_KERNELS:
            n += 1
    return n


def kernel_counts(optimized: str) -> dict:
    """Optimised HLO -> {'outer': kernels outside loops, 'loops': [(trip, body kernels)],
    'per_update': outer + sum(trip x body) (an unknown trip count counts once)}.
    A while / conditional / call counts as one kernel where it stands; a loop's body adds its
    own kernels per trip; branches of a conditional count their larger branch."""
    comps, entry = computations(optimized)
    loops = while_loops(comps)
    body_of = {w["body"]: w for w in loops}

    def total(c, seen=()):
        n = kernels(comps, c)
        for line in comps.get(c, []):
            ins = instruction(line)
            if not ins:
                continue
            if ins[2] == "while":
                w = next(x for x in loops if x["body"] == re.search(r"body=%?([\w.\-]+)", line).group(1))
                n += (w["trip"] or 1) * (total(w["body"]) + kernels(comps, w["condition"]))
            elif ins[2] == "conditional":
                branches = [s.strip().lstrip("%") for g in _BRANCHES.findall(line) for s in g.split(",")]
                tf = re.findall(r"(?:true|false)_computation=%?([\w.\-]+)", line)
                n += max((total(b) for b in branches + tf), default=0)
            elif ins[2] == "call":
                callee = re.search(r"to_apply=%?([\w.\-]+)", line)
                if callee:
                    n += total(callee.group(1))
        return n

    return {"outer": kernels(comps, entry), "loops": [(w["trip"], kernels(comps, w["body"])) for w in loops
                                                     if w["body"] in body_of],
            "per_update": total(entry), "computations": len(comps)}


# --------------------------------------------------------------------------------------

def tiny_setup(precision: str = "float32", width: int = 24, config: str = "tiny"):
    """(algorithm, critic, state, data, batch) of the counts: FQL + floq at the tiny
    configuration (batch 8, widths `width` x 2, K 2, R 2, actor flow 2) or the paper's."""
    import jax
    import numpy as np

    from benchmarks.bench import SIZES, build, synthetic_data, to_device
    from floq.train import init_states

    size = SIZES[config]
    if config == "tiny":
        size = type(size)(**{**size.__dict__, "width": width, "depth": 2})
    algo, critic = build("floq", size, precision=precision)
    data = to_device(synthetic_data(256))
    states = init_states(algo, critic, [0], data["observations"][:2], data["actions"][:2])
    state = jax.tree_util.tree_map(lambda x: x[0], states)
    return algo, critic, state, data, size, np.asarray


def step_lowered(algo, critic, state, data, batch: int):
    import jax

    from floq.train import make_step

    return jax.jit(make_step(algo, critic, batch)).lower(state, data)


def variant(algo, critic, name: str):
    """(algo, critic) of a named code variant: 'current'; 'two_loops' (target and online
    integrations in separate loops, as before the one-loop change); 'flat_adam' (FQL.flat_adam)."""
    import dataclasses

    if name == "two_loops":
        from floq.critics.base import td_loss

        cls = type("TwoLoopFloqCritic", (type(critic),), {"loss": lambda self, *a: td_loss(self, *a)})
        critic = cls(**{f.name: getattr(critic, f.name) for f in dataclasses.fields(critic)})
    elif name == "flat_adam":
        algo = dataclasses.replace(algo, flat_adam=True)
    elif name != "current":
        raise ValueError(f"unknown variant {name!r}")
    return algo, critic


def report(precision: str, config: str, compile_: bool, chunk: int, name: str = "current") -> dict:
    import jax
    import jax.numpy as jnp

    from floq.train import init_states, make_program

    algo, critic, state, data, size, _ = tiny_setup(precision, config=config)
    algo, critic = variant(algo, critic, name)
    lowered = step_lowered(algo, critic, state, data, size.batch)
    pre = lowered.as_text(dialect="hlo")
    comps, _ = computations(pre)
    rows = size.batch  # the smallest activation: the actor's B rows
    out = {"precision": precision, "config": config, "variant": name, "width": size.width,
           "pre_instructions": sum(len(v) for v in comps.values()),
           "pre_converts": converts(pre),
           "pre_f32_activations_in_loops": len(f32_activations(pre, size.width, rows)),
           "pre_f32_activations_anywhere": len(f32_activations(pre, size.width, rows, loops_only=False))}
    if compile_:
        out["step"] = kernel_counts(lowered.compile().as_text())
        states = init_states(algo, critic, [0], data["observations"][:2], data["actions"][:2])
        prog = make_program(algo, critic, size.batch, chunk)
        low = prog.lower(states, jnp.ones((1,), bool), data, jnp.asarray(chunk, jnp.int32))
        out["program"] = kernel_counts(low.compile().as_text())
        out["program"]["chunk"] = chunk
        # the split form's full chunk (no per-step lax.cond; make_program(split=True), GPU default)
        full = make_program(algo, critic, size.batch, chunk, split=True).full
        low = full.lower(states, jnp.ones((1,), bool), data, jnp.asarray(chunk, jnp.int32))
        out["program_full"] = kernel_counts(low.compile().as_text())
        out["program_full"]["chunk"] = chunk
    del jax
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny", choices=("tiny", "small", "paper"))
    ap.add_argument("--precision", default="float32,bfloat16")
    ap.add_argument("--chunk", type=int, default=4, help="steps of the chunk program counted")
    ap.add_argument("--variants", default="current",
                    help="comma-separated: current, two_loops (before the one-loop change), flat_adam")
    ap.add_argument("--no-compile", action="store_true", help="pre-optimisation counts only")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    res = [report(p, args.config, not args.no_compile, args.chunk, v) for v in args.variants.split(",")
           for p in args.precision.split(",")]
    if args.json:
        print(json.dumps(res, indent=1))
        return 0
    for r in res:
        print(f"[{r['config']} {r['precision']} {r['variant']}] pre-optimisation: {r['pre_instructions']} instructions, "
              f"converts {r['pre_converts']}, f32 tensors of activation size (rows x {r['width']}): "
              f"{r['pre_f32_activations_in_loops']} in loops, {r['pre_f32_activations_anywhere']} anywhere")
        for what in ("step", "program", "program_full"):
            if what in r:
                k = r[what]
                print(f"  optimised {what}{' (chunk %d)' % k['chunk'] if 'chunk' in k else ''}: "
                      f"{k['outer']} kernels outside loops, loops (trip, body kernels) {k['loops']}, "
                      f"{k['per_update']} kernels per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
