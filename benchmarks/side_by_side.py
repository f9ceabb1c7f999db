"""Side by side: the released agent's jitted update and floq's trainer, alternated in one process.

    python -m benchmarks.side_by_side --released /tmp/released_floq --agent floq --config paper \
        --out benchmarks/results --name gpu_<device>_<date>.csv
    python -m benchmarks.side_by_side --released /tmp/released_fql --agent fql ...   (FQL's repository)
    python -m benchmarks.side_by_side --released ... --config tiny --steps 5 --rounds 3   (CPU rehearsal)

The released code (github:CMU-AIRe/floq for floq and its FQL agent, github:seohongpark/fql for
FQL) is imported from the folder given by --released, never copied into this repository; its
extra packages (ml_collections, distrax) come from the environment or --deps (a folder put on
sys.path, e.g. `pip install --target DIR --no-deps ml_collections`). Where distrax is missing, an
empty placeholder module stands in for it: the floq and FQL agents' updates never call it
(it serves the Gaussian actors of the released utils/networks.py).

What is timed, at the same sizes (batch, widths x depths, K, R, actor flow steps, ensembles):
  impl=released  the released loop's way: `agent = agent.update(batch)`, one jitted update per
                 step from Python, on batches already on the device (its best case: the
                 released loop samples on the host), `--steps` updates per timed call;
  impl=floq      floq's trainer program (floq.train.make_program, as `floq run` runs it) for
                 `--steps` steps per call, batches sampled inside the program.
Each round times both, in alternating order; each figure is the median of `--rounds` (>= 3)
rounds, after one untimed warm-up call each (compilation excluded). Rows (benchmark=side_by_side,
impl=released|floq, ratio = floq / released updates/s on the floq row) are appended to the
CSV that `floq bench` and benchmarks/gpu_check.sh write (benchmarks.bench.write_csv columns),
with the process's XLA flags (floq.train.set_xla_flags: the one place they are set).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import os
import sys
import time
import types

import numpy as np


def _placeholder_distrax():
    """An importable stand-in for distrax whose names are empty classes."""
    mod = types.ModuleType("distrax")

    def attr(name):
        if name.startswith("__"):  # module dunders (__file__, __path__, ...) stay absent, as for a
            raise AttributeError(name)  # real module: tools that scan sys.modules read them
        return type(name, (), {})

    mod.__getattr__ = attr  # module-level __getattr__ (PEP 562)
    return mod


def load_released(path: str, agent: str, deps: str | None = None):
    """The released module agents.<agent> from the repository at `path`."""
    if not os.path.isdir(os.path.join(path, "agents")):
        raise SystemExit(f"side_by_side: {path} is not a released repository (no agents/ folder)")
    for p in (deps, path):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    try:
        import distrax  # noqa: F401
    except ImportError:
        sys.modules["distrax"] = _placeholder_distrax()
    try:
        return importlib.import_module(f"agents.{agent}")
    except ImportError as e:
        raise SystemExit(f"side_by_side: cannot import the released agents.{agent} ({e}); "
                         f"install its packages or pass --deps") from None


def released_agent(mod, size, obs, act, seed: int = 0):
    """The released agent at floq's configuration `size` (benchmarks.bench.Size)."""
    cls = [v for v in vars(mod).values()
           if isinstance(v, type) and v.__module__ == mod.__name__ and hasattr(v, "create")][0]
    config = mod.get_config()
    hidden = (size.width,) * size.depth
    overrides = dict(batch_size=size.batch, actor_hidden_dims=hidden, value_hidden_dims=hidden,
                     block_width=size.width, block_depth=size.depth, critic_flow_steps=size.K,
                     noise_samples=size.R, actor_flow_steps=size.actor_flow_steps, flow_steps=size.actor_flow_steps,
                     flow_num_ensembles=size.ensembles, distill_num_ensembles=size.ensembles,
                     value_num_ensembles=size.ensembles, num_qs=size.ensembles, alpha=300.0)
    for k, v in overrides.items():
        if k in config:
            config[k] = v
    config["r_min"], config["r_max"] = -1.0, 0.0  # cube rewards, as benchmarks.bench.build configures floq
    return cls.create(seed, obs, act, config), dict(config)


class ReleasedTimer:
    """`steps` released updates per call, from a pool of device-resident batches."""

    def __init__(self, agent, batches, steps: int):
        import jax

        self.agent, self.batches, self.length = agent, batches, steps
        t0 = time.perf_counter()
        self.agent, info = self.agent.update(batches[0])  # compile
        jax.block_until_ready(info)
        self.compile_s = time.perf_counter() - t0
        self.once()  # warm-up
        self.finite = True

    def once(self):
        import jax

        info = None
        for i in range(self.length):
            self.agent, info = self.agent.update(self.batches[i % len(self.batches)])
        jax.block_until_ready((self.agent, info))
        loss = info.get("critic/critic_loss", info.get("critic/loss"))
        self.finite = loss is None or bool(np.isfinite(float(loss)))


def device_batches(host: dict, batch: int, count: int, seed: int = 0) -> list[dict]:
    import jax.numpy as jnp

    rng = np.random.default_rng(seed)
    n = host["observations"].shape[0]
    out = []
    for _ in range(count):
        idx = rng.integers(0, n, batch)
        out.append({k: jnp.asarray(v[idx]) for k, v in host.items()})
    return out


def run(args) -> list[dict]:
    from floq.train import set_xla_flags

    flags = set_xla_flags()  # before JAX starts its backend
    import jax

    from benchmarks.bench import SIZES, ProgramTimer, build, interleave, synthetic_data
    from floq import results

    size = SIZES[args.config]
    mod = load_released(args.released, args.agent, args.deps)
    host = synthetic_data(args.rows)
    host["next_actions"] = host["actions"][np.minimum(np.arange(args.rows) + 1, args.rows - 1)]
    batches = device_batches(host, size.batch, 16)
    obs, act = batches[0]["observations"], batches[0]["actions"]
    agent, config = released_agent(mod, size, obs, act)
    critic_name = "floq" if args.agent == "floq" else "monolithic"
    algo, critic = build(critic_name, size)
    ours_host = {k: v for k, v in host.items() if k != "next_actions"}
    timers = {"released": ReleasedTimer(agent, batches, args.steps),
              "floq": ProgramTimer(algo, critic, size, ours_host, 1, args.steps)}
    samples = {k: [] for k in timers}
    for r in range(args.rounds):  # alternate the order, so that drift hits both alike
        order = list(timers) if r % 2 == 0 else list(timers)[::-1]
        res = interleave({k: timers[k] for k in order}, 1)
        for k in order:
            samples[k].append(res[k]["wall"][0])
    device, jv = results.device_description(), jax.__version__
    rows = []
    ups = {k: args.steps / float(np.median(v)) for k, v in samples.items()}
    for k, t in timers.items():
        wall = np.asarray(samples[k])
        rows.append({"benchmark": "side_by_side", "impl": k, "critic": critic_name, "config": args.config,
                     "K": size.K if critic_name == "floq" else None, "seeds": 1, "precision": "float32",
                     "updates_per_s": round(ups[k], 2), "best_updates_per_s": round(args.steps / float(wall.min()), 2),
                     "ms_per_update": round(1e3 * float(np.median(wall)) / args.steps, 4), "chunk": args.steps,
                     "ratio": round(ups["floq"] / ups["released"], 3) if k == "floq" else None,
                     "device": device, "jax_version": jv, "xla_flags": flags,
                     "notes": (f"{args.agent}: {'released agent.update per step, device batches' if k == 'released' else 'floq.train.make_program'}"
                               f"; median of {args.rounds} rounds of {args.steps} updates; compile {t.compile_s:.1f} s"
                               f"; finite {t.finite}; released repo {os.path.basename(os.path.abspath(args.released))}")})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--released", required=True, help="folder of the released repository (agents/, utils/)")
    ap.add_argument("--agent", default="floq", choices=("floq", "fql"))
    ap.add_argument("--deps", default=None, help="a folder of the released code's extra packages (put on sys.path)")
    ap.add_argument("--config", default="paper", choices=("paper", "small", "tiny"))
    ap.add_argument("--steps", type=int, default=None, help="updates per timed call (default: paper 500, else 20)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", type=int, default=100_000, help="synthetic transitions")
    ap.add_argument("--out", default=None, help="folder of the CSV to append to (default: print only)")
    ap.add_argument("--name", default=None, help="CSV file name in --out (default side_by_side.csv)")
    args = ap.parse_args(argv)
    if args.rounds < 3:
        print("side_by_side: --rounds must be >= 3 (a median of at least three rounds)", file=sys.stderr)
        return 2
    args.steps = args.steps or (500 if args.config == "paper" else 20)
    rows = run(args)
    from benchmarks.bench import table, write_csv

    print(table(rows, ("benchmark", "impl", "critic", "config", "updates_per_s", "ms_per_update", "ratio", "device",
                       "notes")))
    if args.out:
        path = os.path.join(args.out, args.name or "side_by_side.csv")
        old = list(csv.DictReader(open(path, newline=""))) if os.path.exists(path) else []
        write_csv(old + rows, path)
        print(f"appended {len(rows)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
