"""The trainer's split program (floq.train.make_program(split=True), the default on a GPU): full
chunks with no per-step lax.cond, plus the conditional program for the remainders. It gives the
one-program trainer's numbers: the same states (to the bit on this machine), alive flags and
bad_at for any sequence of call lengths (so a resume, which regroups the steps into calls,
continues the same states), per-step metrics equal within rounding (1 ulp of actor/mse: XLA
fuses that reduction differently outside the conditional), and a run's rows and checkpoint."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from floq_test_utils import FULL

from floq.agents.fql import FQL
from floq.critics.flow import FloqCritic
from floq.nets.specs import MLPNet
from floq.train import SplitProgram, init_states, make_program


def _data(n=256, o=4, a=2, seed=0):
    rng = np.random.default_rng(seed)
    return {"observations": jnp.asarray(rng.standard_normal((n, o)), jnp.float32),
            "actions": jnp.asarray(rng.uniform(-1, 1, (n, a)), jnp.float32),
            "rewards": -jnp.asarray(rng.random(n) > 0.2, jnp.float32),
            "masks": jnp.asarray(rng.random(n) > 0.05, jnp.float32),
            "next_observations": jnp.asarray(rng.standard_normal((n, o)), jnp.float32)}


def _leaves_equal(a, b, rtol=1e-6, atol=1e-7):
    """Equal within rounding (printed: the largest difference; 0 for states on this machine)."""
    worst = 0.0
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.floating):
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)
            worst = max(worst, float(np.max(np.abs(x.astype(np.float64) - y), initial=0.0)))
        else:
            np.testing.assert_array_equal(x, y)
    return worst


@pytest.mark.slow  # compiles trainer steps: seconds of CPU each
# two vmapped seeds in make test; a lone seed too in make test-full (FLOQ_FULL_TESTS=1)
@pytest.mark.parametrize("seeds", [[0], [0, 1]] if FULL else [[0, 1]], ids=["one", "two"] if FULL else ["two"])
def test_split_program_gives_the_one_program_numbers_for_any_call_lengths(seeds):
    data = _data()
    critic = FloqCritic(field_net=MLPNet(16, 2), distill_net=MLPNet(16, 2), flow_steps=2, noise_samples=2,
                        num_bins=11).configure(0.99, -1.0, 0.0)
    algo = FQL(alpha=10.0, actor_net=MLPNet(16, 2, layer_norm=False), flow_steps=2)
    chunk = 5
    one = make_program(algo, critic, 16, chunk, split=False)
    split = make_program(algo, critic, 16, chunk, split=True)
    assert isinstance(split, SplitProgram) and not isinstance(one, SplitProgram)
    ex_o, ex_a = data["observations"][:2], data["actions"][:2]
    alive = jnp.ones(len(seeds), bool)
    s1 = init_states(algo, critic, seeds, ex_o, ex_a)
    s2 = init_states(algo, critic, seeds, ex_o, ex_a)
    compiled = split.lower(s2, alive, data, jnp.asarray(1, jnp.int32)).compile()  # as floq.loop compiles it
    for n in (1, 5, 3, 5, 2):  # remainders and full chunks, as the loop's time budget makes them
        n = jnp.asarray(n, jnp.int32)
        s1, m1, a1, b1 = one(s1, alive, data, n)
        s2, m2, a2, b2 = compiled(s2, alive, data, n)
        _leaves_equal((m1, a1, b1), (m2, a2, b2))
        print(f"n={int(n)}: max |state diff| {_leaves_equal(s1, s2):.3g}")
    # the steps regrouped (as a resume regroups them): 16 steps as 5 + 5 + 5 + 1, the same state
    s3 = init_states(algo, critic, seeds, ex_o, ex_a)
    for n in (5, 5, 5, 1):
        s3, _, _, _ = split(s3, alive, data, jnp.asarray(n, jnp.int32))
    _leaves_equal(s1, s3)


@pytest.mark.slow
def test_a_run_with_the_split_program_has_the_one_program_rows_and_checkpoint(tmp_path, smoke_dataset, monkeypatch):
    """A floq smoke run (100 steps, chunks of 50; the first call is one step: a remainder) with
    the split program and with the one program: the same train.csv and eval.csv rows (numbers
    within rounding) and the same final checkpoint."""
    import csv
    import functools

    import orbax.checkpoint as ocp

    import floq.loop
    from floq_test_utils import floq_main
    from test_golden import BASE, CLOCK

    out = {}
    for split in (False, True):
        monkeypatch.setattr(floq.loop, "make_program", functools.partial(make_program, split=split))
        run_dir = tmp_path / f"split{int(split)}" / "floq"
        res = floq_main("run", BASE[0], "gin/critics/floq.gin", *BASE[1:], "--run-dir", str(run_dir))
        assert res.returncode == 0, res.stderr[-2000:]
        rows = {name: list(csv.DictReader(open(run_dir / name, newline=""))) for name in ("train.csv", "eval.csv")}
        ck = run_dir / "checkpoints" / "step_100"
        out[split] = (rows, ocp.PyTreeCheckpointer().restore(str(ck)))
    (rows0, ck0), (rows1, ck1) = out[False], out[True]
    for name in rows0:
        assert len(rows0[name]) == len(rows1[name]) > 0
        for r0, r1 in zip(rows0[name], rows1[name]):
            assert r0.keys() == r1.keys()
            for k in r0:
                if k in CLOCK or k == "run":
                    continue
                try:
                    a, b = float(r0[k]), float(r1[k])
                except ValueError:
                    assert r0[k] == r1[k], (name, k)
                    continue
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7, err_msg=f"{name} {k}")
    print(f"max |checkpoint diff|: {_leaves_equal(ck0, ck1):.3g}")
