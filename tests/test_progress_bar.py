"""The training progress bar: 'compiling…' until the first step, and compilation counted
neither as a step nor in the rate (and so not in tqdm's ETA)."""

import io

import pytest

from tqdm import tqdm

from floq.loop import _restart_bar


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_compilation_is_not_a_step():
    clock = Clock()
    out = io.StringIO()
    bar = tqdm(total=1000, initial=0, file=out, smoothing=0.1, mininterval=0, miniters=1)
    bar._time = clock  # tqdm reads its clock through this attribute
    bar.start_t = bar.last_print_t = clock()
    bar.set_postfix_str("compiling…")
    assert "compiling…" in out.getvalue()
    clock.t += 120.0  # the first call: 120 s of compilation and one step
    _restart_bar(bar, 1)
    for _ in range(10):  # then 10 steps/s
        clock.t += 1.0
        bar.update(10)
    d = bar.format_dict
    assert d["n"] == 101 and d["rate"] == pytest.approx(10.0, rel=1e-6)
    assert d["elapsed"] == 10.0  # the compiling call is not in the clock
    assert "compiling" not in out.getvalue().split("\r")[-1]
    bar.close()
