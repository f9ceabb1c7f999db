"""Warnings that say nothing about a run, silenced in one place (the CLI, the demo and the
evaluation workers import this; it imports nothing of floq's)."""

from __future__ import annotations


def quiet_warnings() -> None:
    """Silence third-party warnings that say nothing about a run (no display for GLFW,
    gymnasium's float32 box casts)."""
    import warnings

    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable.*")
    warnings.filterwarnings("ignore", message=".*precision lowered by casting.*")
    warnings.filterwarnings("ignore", module="glfw")
