"""`make demo` trains each arm in a process with one XLA thread; the user's own XLA_FLAGS (an
instruction-set cap, a dump folder) reach that process instead of being replaced."""

from __future__ import annotations

from floq.demo import ONE_THREAD, child_env


def test_the_users_xla_flags_are_kept_beside_one_thread():
    env = child_env({"XLA_FLAGS": "--xla_cpu_max_isa=AVX", "PATH": "/bin"})
    assert env["XLA_FLAGS"] == f"--xla_cpu_max_isa=AVX {ONE_THREAD}"
    assert env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "/bin"


def test_without_user_flags_only_one_thread_is_asked():
    assert child_env({})["XLA_FLAGS"] == ONE_THREAD
    assert child_env({"XLA_FLAGS": "  "})["XLA_FLAGS"] == ONE_THREAD
