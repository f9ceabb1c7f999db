"""floq: a benchmark suite for value-based offline RL critics."""

__version__ = "0.1.0"
