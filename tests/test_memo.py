"""floq.memo: programs are shared only between equal configurations, keyed strictly."""

from __future__ import annotations

import dataclasses

import numpy as np

from floq.agents.fql import FQL
from floq.critics.flow import FloqCritic
from floq.critics.monolithic import MonolithicCritic
from floq.memo import config_key, memoized
from floq.nets.specs import MLPNet
from floq.train import make_program


@dataclasses.dataclass(frozen=True)
class A:
    x: object = 0.0


@dataclasses.dataclass(frozen=True)
class B:
    x: object = 0.0


def test_keys_tell_apart_what_a_traced_program_tells_apart():
    assert config_key(A(0.0)) == config_key(A(0.0))
    assert config_key(A(0.0)) != config_key(A(-0.0))  # equal under ==, not in a program
    assert config_key(A(1)) != config_key(A(1.0))
    assert config_key(A(True)) != config_key(A(1))
    assert config_key(A()) != config_key(B())  # same fields, another class
    assert config_key(A(np.float32(1))) != config_key(A(np.float64(1)))
    assert config_key(A([1, 2])) != config_key(A((1, 2)))
    assert config_key({"a": A(), "b": 3}) == config_key({"b": 3, "a": A()})
    for unplain in (A(lambda: 0), A(np.zeros(3)), object(), {1: 2}):
        assert config_key(unplain) is None


def test_memoized_shares_results_for_equal_configurations_only():
    calls = []

    @memoized
    def build(cfg, n):
        calls.append((cfg, n))
        return object()

    a = build(A(0.5), 3)
    assert build(A(0.5), 3) is a and build(A(0.5), n=3) is not a  # keyword vs positional: another key
    assert build(A(0.25), 3) is not a and build(A(0.5), 4) is not a
    fn = A(lambda: 0)
    assert build(fn, 3) is not build(fn, 3)  # not plain configuration: never cached
    assert len(calls) == 6


def test_make_program_is_one_object_per_configuration():
    base = FloqCritic(field_net=MLPNet(16, 2), distill_net=MLPNet(16, 2), flow_steps=2)
    critic = base.configure(0.99, -1.0, 0.0)
    algo = FQL(alpha=10.0, actor_net=MLPNet(16, 2, layer_norm=False), flow_steps=3)
    p = make_program(algo, critic, 32, 10)
    assert make_program(FQL(alpha=10.0, actor_net=MLPNet(16, 2, layer_norm=False), flow_steps=3),
                        base.configure(0.99, -1.0, 0.0), 32, 10) is p
    assert make_program(algo, base.configure(0.99, -2.0, 0.0), 32, 10) is not p  # another reward range
    assert make_program(algo, critic, 32, 11) is not p
    assert make_program(dataclasses.replace(algo, alpha=3.0), critic, 32, 10) is not p
    mono = MonolithicCritic(net=MLPNet(16, 2)).configure(0.99, -1.0, 0.0)
    assert make_program(algo, mono, 32, 10) is not p
