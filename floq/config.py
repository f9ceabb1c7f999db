"""Gin plumbing: files + bindings -> operative config, with one-line errors.

Later files and bindings override earlier ones (gin's own parsing order). Include paths
resolve against the current directory and the repository root.
"""

from __future__ import annotations

import importlib
import os
import re

import gin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MODULES = (
    "floq.nets.specs",
    "floq.critics.monolithic",
    "floq.critics.flow",
    "floq.critics.iqn",
    "floq.agents.fql",
    "floq.data.sources",
    "floq.train",
    "floq.launch.spec",
)


class ConfigError(ValueError):
    """A configuration problem, stated in one line."""


def register() -> None:
    """Import every module that defines gin configurables."""
    for m in _MODULES:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            if e.name != m:  # a real missing dependency, not an optional module of ours
                raise


def one_line(e: BaseException) -> str:
    msg = str(e).strip()
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    if not lines:
        return type(e).__name__
    head = lines[0]
    where = next((ln for ln in lines[1:] if ln.startswith("In ")), "")
    out = f"{head} ({where.rstrip(':')})" if where else head
    return re.sub(r"\s+", " ", out)


def resolve_file(path: str) -> str:
    for cand in (path, os.path.join(REPO_ROOT, path)):
        if os.path.isfile(cand):
            return cand
    raise ConfigError(f"gin file not found: {path}")


def parse(gin_files, bindings=(), finalize: bool = False) -> None:
    """Clear gin and parse files then bindings; raise ConfigError on any problem."""
    gin.clear_config()
    register()
    for p in (os.getcwd(), REPO_ROOT):
        gin.add_config_file_search_path(p)
    files = [resolve_file(f) for f in gin_files]
    try:
        gin.parse_config_files_and_bindings(files, list(bindings), skip_unknown=False, finalize_config=finalize)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - gin raises many types; the user needs one line
        raise ConfigError(f"bad gin config: {one_line(e)}") from None


def binding_tag(binding: str) -> tuple[str, str] | None:
    """'CRITIC_FLOW_STEPS = 4' -> ('critic_flow_steps', '4'); 'FQL.alpha=3' -> ('alpha', '3')."""
    if "=" not in binding:
        return None
    key, value = binding.split("=", 1)
    key = key.strip().split("/")[-1].split(".")[-1].lower()
    value = value.strip().strip("'\"")
    return key, value
