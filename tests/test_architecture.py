"""Guards of the layout docs/ARCHITECTURE.md describes: floq/'s import graph has no cycle (a
function-level import counts: it is a dependency all the same), the analysis never imports
jax, no source module grows past ~800 lines without a stated reason, and every committed run
directory still builds from its own config.gin to the config_hash its run.json records."""

from __future__ import annotations

import ast
import glob
import json
import os
import subprocess
import sys

import pytest

from floq_test_utils import REPO

# Modules allowed past the line limit, and why.
LONG_MODULES = {
    "floq/loop.py": "the Run: phases, hooks, checkpoints, signals and evaluation in one state machine whose "
                    "exact-resume invariants are easier to check in one file",
    "analysis/report.py": "the report page in reading order (headline, sections, captions); to split by section",
    "analysis/load.py": "CSV and run.json reading with every scoring rule (done-only, divergence, pooling "
                        "refusals) in one place, so no rule is applied twice or missed",
    "analysis/stats.py": "the estimators (IQM, bootstrap CIs, probability of improvement) beside their "
                         "rliable-equivalence notes",
}
MAX_LINES = 800


def import_graph(root: str, package: str = "floq") -> dict[str, set[str]]:
    """{module: modules of `package` it imports anywhere (module level or inside functions)}."""
    mods = {}
    for d, _, files in os.walk(os.path.join(root, package)):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                mods[name[:-9] if name.endswith(".__init__") else name] = path
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        is_pkg = path.endswith("__init__.py")
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = m.split(".") if is_pkg else m.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[m].update(n for n in names if n in mods and n != m)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    color, stack = {}, []

    def visit(v):
        color[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if color.get(w) == 1:
                return stack[stack.index(w):] + [w]
            if w not in color:
                found = visit(w)
                if found:
                    return found
        color[v] = 2
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in color:
            found = visit(v)
            if found:
                return found
    return None


def test_floq_import_graph_is_acyclic():
    cycle = find_cycle(import_graph(REPO))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle(tmp_path):
    pkg = tmp_path / "floq"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from floq.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from floq import c  # a function-level import counts\n")
    (pkg / "c.py").write_text("import floq.a\n")
    assert find_cycle(import_graph(str(tmp_path))) == ["floq.a", "floq.sub.b", "floq.c", "floq.a"]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(import_graph(str(tmp_path))) is None


@pytest.mark.subprocess
def test_importing_the_analysis_does_not_import_jax():
    code = ("import sys, analysis, analysis.load, analysis.report, analysis.stats, analysis.plots; "
            "print('jax' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "False"


def test_no_source_module_is_over_the_line_limit():
    long = {}
    for path in glob.glob(os.path.join(REPO, "floq", "**", "*.py"), recursive=True) + \
            glob.glob(os.path.join(REPO, "analysis", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, REPO)
        n = sum(1 for _ in open(path))
        if n > MAX_LINES and rel not in LONG_MODULES:
            long[rel] = n
    assert not long, f"modules over {MAX_LINES} lines (split them, or name them in LONG_MODULES with why): {long}"
    for rel in LONG_MODULES:
        assert os.path.exists(os.path.join(REPO, rel)), f"LONG_MODULES names a module that is gone: {rel}"


def _committed_manifests() -> list[str]:
    """results/*/*/run.json as committed (git ls-files): a study training in this working tree
    is not committed yet. Without git (a source tarball): every one on disk."""
    try:
        out = subprocess.run(["git", "ls-files", "results/*/*/run.json"], cwd=REPO, capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0:
            return sorted(os.path.join(REPO, p) for p in out.stdout.split())
    except (OSError, subprocess.SubprocessError):
        pass
    return sorted(glob.glob(os.path.join(REPO, "results", "*", "*", "run.json")))


COMMITTED = _committed_manifests()


@pytest.mark.parametrize("manifest", COMMITTED, ids=lambda p: os.path.relpath(os.path.dirname(p), REPO))
def test_every_committed_run_builds_from_its_config_to_its_hash(manifest):
    from floq.loop import spec_hash
    from floq.train import build

    run_dir = os.path.dirname(manifest)
    meta = json.load(open(manifest))
    exp = build([os.path.join(run_dir, "config.gin")])
    assert spec_hash(exp) == meta["config_hash"]
    assert meta["status"] == "done"


def test_there_are_committed_runs_to_check():
    assert len(COMMITTED) >= 5
