"""The training and evaluation budget of a sweep's runs, as `floq sweep --dry-run` names it.

Budgets differ between the reference code bases (github:CMU-AIRe/floq main.py: 2M offline
steps, evaluation every 20k; github:seohongpark/fql and its paper: 1M steps, evaluation every
100k, the reported number the mean of the evaluations at 800k, 900k and 1M), so every plan
and every table states its own beside them (issue 25 item 9).
"""

from __future__ import annotations

from typing import Sequence

REFERENCE_BUDGETS = ("reference budgets: the released floq code's default is 2M gradient steps, evaluation every "
                     "20k (one line: gin/recipes/released_budget.gin); FQL's protocol is 1M steps, evaluation "
                     "every 100k, score = mean of the last three")


def fmt_steps(x: int) -> str:
    """1_000_000 -> '1M', 20_000 -> '20k', 250 -> '250'."""
    for div, suf in ((1_000_000, "M"), (1_000, "k")):
        if x >= div:
            v = x / div
            return (f"{v:.0f}" if v.is_integer() else f"{v:.2f}".rstrip("0").rstrip(".")) + suf
    return str(x)


def eval_steps(total: int, interval: int, at_start: bool = True) -> list[int]:
    """The (total) steps at which a run evaluates (floq.loop: every `interval`, at the end,
    and at step 0 when `at_start`)."""
    steps = [0] if at_start else []
    if interval > 0:
        steps += list(range(interval, total + 1, interval))
    if not steps or steps[-1] != total:
        steps.append(total)
    return steps


def describe(trainer) -> str:
    """One run's budget in words."""
    tr = trainer
    online = int(getattr(tr, "online_steps", 0) or 0)
    total = tr.train_steps + online
    text = f"{fmt_steps(tr.train_steps)} gradient steps"
    if online:
        text += f" + {fmt_steps(online)} online env steps (UTD {tr.utd_ratio})"
    if tr.eval_interval:
        text += f", evaluation every {fmt_steps(tr.eval_interval)} steps"
    else:
        text += ", evaluation only at the end"
    text += f" over {tr.eval_episodes} episodes"
    last3 = eval_steps(total, tr.eval_interval, getattr(tr, "eval_at_start", True))[-3:]
    text += f"; final score (floq analyze's default, FQL's rule): mean of the evaluations at {', '.join(map(fmt_steps, last3))}"
    return text


def budget_lines(runs: Sequence, build=None, seed_binding_prefix: str | None = None) -> list[str]:
    """Lines naming the budget of `runs` (each with gin_files and bindings), one per distinct
    budget with its run count, then the reference budgets. With `seed_binding_prefix`
    (e.g. 'SEED ='), runs that differ only in that binding are built once (a seed does not
    change the budget): the paper's 750-run sweep builds 250 configurations, not 750."""
    import gin

    from floq.launch.cost import _profile_key

    if build is None:
        from floq.train import build
    groups: dict[tuple, list] = {}  # runs by configuration (the seed set aside when a prefix is given)
    for run in runs:
        key = _profile_key(run, seed_binding_prefix) if seed_binding_prefix else (run.gin_files, tuple(run.bindings))
        groups.setdefault(key, []).append(run)
    counts: dict[str, int] = {}
    unknown = 0
    for group in groups.values():
        run, n = group[0], len(group)
        try:
            exp = build(list(run.gin_files), list(run.bindings))
        except Exception:  # noqa: BLE001 - a run that does not build is reported by the cost lines
            unknown += n
            continue
        text = describe(exp.trainer)
        counts[text] = counts.get(text, 0) + n
    gin.clear_config()
    if not counts:
        return ["budget: unknown (no run builds)", f"  {REFERENCE_BUDGETS}"]
    lines = []
    for text, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        lines.append(f"budget: {text}" + (f" ({n} runs)" if len(counts) > 1 or unknown else ""))
    if unknown:
        lines.append(f"budget: unknown for {unknown} run(s) that do not build")
    lines.append(f"  {REFERENCE_BUDGETS}")
    return lines
