"""benchmarks/hlo_counts.py (reading kernels and dtypes from HLO text) and
benchmarks/side_by_side.py (the released agent vs floq's program, rows in the bench CSV), the
latter against a stand-in 'released repository' written here (the real one is fetched outside
this repository for device runs)."""

from __future__ import annotations

import csv
import textwrap

import jax
import jax.numpy as jnp
import pytest

from benchmarks import hlo_counts


def test_hlo_counts_reads_loops_kernels_and_f32_activations():
    def f(x, w):
        def body(i, z):
            h = jnp.tanh(z @ w)  # f32 (rows, width) inside the loop
            return (h.astype(jnp.bfloat16) @ w.astype(jnp.bfloat16)).astype(jnp.float32)
        return jax.lax.fori_loop(0, 3, body, x)

    x, w = jnp.ones((8, 12)), jnp.ones((12, 12))
    lowered = jax.jit(f).lower(x, w)
    pre = lowered.as_text(dialect="hlo")
    comps, entry = hlo_counts.computations(pre)
    assert entry in comps and len(hlo_counts.while_loops(comps)) == 1
    found = hlo_counts.f32_activations(pre, 12, 8)
    ops = sorted(op for _, _, op, _ in found)
    assert "dot" in ops and "tanh" in ops  # computed f32 activations; the weights (parameters) are not counted
    assert hlo_counts.converts(pre).get("f32->bf16", 0) == 2
    k = hlo_counts.kernel_counts(lowered.compile().as_text())
    (trip, body), = k["loops"]
    assert trip == 3 and body >= 2  # two dots at least; XLA annotates the static trip count
    assert k["per_update"] >= k["outer"] + 3 * body


def _fake_released(root):
    """A repository with the released layout (agents/<name>.py: get_config, an agent class with
    create(seed, obs, act, config) and a jitted update(batch) -> (agent, info))."""
    (root / "agents").mkdir(parents=True)
    (root / "agents" / "__init__.py").write_text("")
    (root / "agents" / "floq.py").write_text(textwrap.dedent('''
        from typing import Any
        import flax
        import jax
        import jax.numpy as jnp

        def get_config():
            return dict(batch_size=256, value_hidden_dims=(512,), critic_flow_steps=8, lr=3e-4)

        class StandInAgent(flax.struct.PyTreeNode):
            w: Any
            config: Any = flax.struct.field(pytree_node=False)

            @classmethod
            def create(cls, seed, obs, act, config):
                k = jax.random.PRNGKey(seed)
                return cls(w=jax.random.normal(k, (obs.shape[-1], config["value_hidden_dims"][0])),
                           config=flax.core.FrozenDict(config))

            @jax.jit
            def update(self, batch):
                loss, g = jax.value_and_grad(lambda w: jnp.mean((batch["observations"] @ w) ** 2))(self.w)
                return self.replace(w=self.w - 1e-3 * g), {"critic/critic_loss": loss}
        '''))
    return root


@pytest.fixture
def forget_released():
    """The released code is imported as the top-level package `agents` from its folder: gone
    again after the test."""
    import sys

    path = list(sys.path)
    yield
    sys.path[:] = path
    for k in [k for k in sys.modules if k == "agents" or k.startswith("agents.")]:
        del sys.modules[k]
    distrax = sys.modules.get("distrax")
    if distrax is not None and getattr(distrax, "__file__", None) is None:  # side_by_side's stand-in
        del sys.modules["distrax"]


@pytest.mark.slow
def test_side_by_side_appends_released_and_floq_rows(tmp_path, forget_released):
    from benchmarks import bench, side_by_side

    repo = _fake_released(tmp_path / "released")
    out = tmp_path / "out"
    out.mkdir()
    bench.write_csv([{"benchmark": "throughput", "critic": "floq", "updates_per_s": 1.0}], str(out / "b.csv"))
    assert side_by_side.main(["--released", str(repo), "--agent", "floq", "--config", "tiny", "--steps", "3",
                              "--rounds", "3", "--rows", "500", "--out", str(out), "--name", "b.csv"]) == 0
    rows = list(csv.DictReader(open(out / "b.csv", newline="")))
    assert [r["benchmark"] for r in rows] == ["throughput", "side_by_side", "side_by_side"]  # appended
    released, ours = rows[1], rows[2]
    assert (released["impl"], ours["impl"]) == ("released", "floq")
    for r in (released, ours):
        assert float(r["updates_per_s"]) > 0 and r["config"] == "tiny" and r["chunk"] == "3"
        assert "median of 3 rounds" in r["notes"] and "finite True" in r["notes"]
    assert float(ours["ratio"]) == pytest.approx(float(ours["updates_per_s"]) / float(released["updates_per_s"]),
                                                 rel=0.01)
    assert side_by_side.main(["--released", str(repo), "--rounds", "2"]) == 2  # a median needs three rounds
    with pytest.raises(SystemExit, match="not a released repository"):
        side_by_side.main(["--released", str(tmp_path), "--config", "tiny", "--rounds", "3"])
