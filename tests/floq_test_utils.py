"""Helpers shared by floq's top-level tests (imported by name; not a conftest, so that
conftest.py files in sub-directories cannot shadow it)."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(REPO, ".floq_cache")


def floq_cmd(*args, cwd=REPO, timeout=600, env=None):
    """Run `python -m floq ...`; returns the CompletedProcess."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "floq", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)
