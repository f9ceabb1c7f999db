"""Paired comparisons: each method against the baseline that differs from it in one field.

``--baseline critic=monolithic`` (any ``FIELD=VALUE`` of the run records) pairs every
method whose ``FIELD`` is not ``VALUE`` with the one method whose ``FIELD`` is ``VALUE`` and
that shares every other identifying field: the same algorithm, the same tags (a swept width,
a batch size), the same recorded configuration outside ``FIELD``'s own settings (a floq
critic's ``critic.*`` keys may differ from a monolithic critic's; ``algorithm.alpha_actor``
may not), and, where several candidates remain, the same protocol (train_steps, evaluation
schedule, ...). The grid's name (the ``grid`` tag) is a name, not a setting: two grids of
one algorithm and critic that differ in a setting are told apart by that setting.

A layout of several algorithms x several critics that includes the monolithic critic is
paired by ``critic=monolithic`` by default (``default_spec``): the question it answers is
"which critic, inside each algorithm".

``pair_methods`` returns the pairs, the methods left without a baseline (with why) and the
pairs whose baseline ran under another protocol (``Pairing.elsewhere``: the report says which
protocol field differs); ``estimates`` computes, per pair, the difference of mean final
success and P(X > baseline) with rliable's stratified-bootstrap CIs (``stats``), and
``answer_lines`` writes the report's answer, one line per pair.

Reads frames only (never floq's objects, never jax).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from analysis import stats
from analysis.load import (PROTOCOL_FIELDS, TASK_TAGS, AnalysisError, natural_key, tag_columns,
                           to_score_dict)

__all__ = ["NAME_TAGS", "Pairing", "parse_spec", "default_spec", "pair_methods", "estimates",
           "answer_lines", "protocol_key", "split_lines"]

#: Tags that name a grid or a run rather than state a setting (never compared).
NAME_TAGS = ("grid",)
# Settings that belong to the protocol: compared through the protocol groups, not here.
_PROTOCOL_KEYS = set(PROTOCOL_FIELDS) | {"train_steps", "eval_interval", "eval_episodes",
                                         "success_timing", "online_steps"}


@dataclass
class Pairing:
    """Who is compared with whom under ``field=value``.

    Attributes:
        field, value: the baseline's field and value (``critic``, ``monolithic``).
        pairs: ``{method: its baseline method}`` (same protocol group).
        baselines: the methods whose ``field`` is ``value``.
        unpaired: ``{method: why it has no baseline}``.
        elsewhere: ``{method: (baseline, {protocol field: (method's value, baseline's)})}``:
            the only candidates ran under another protocol.
        default: True when chosen by ``default_spec`` (no ``--baseline`` given).
    """

    field: str
    value: str
    pairs: dict = field(default_factory=dict)
    baselines: list = field(default_factory=list)
    unpaired: dict = field(default_factory=dict)
    elsewhere: dict = field(default_factory=dict)
    default: bool = False

    @property
    def spec(self) -> str:
        return f"{self.field}={self.value}"


def parse_spec(text: str, final: pd.DataFrame) -> tuple[str, str]:
    """``FIELD=VALUE`` -> ``(field, value)``; one-line AnalysisError when FIELD is no column of
    the scored runs or no run has VALUE there."""
    key, sep, value = str(text).partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key or not value or "=" in value:
        raise AnalysisError(f"--baseline takes a method label or FIELD=VALUE (e.g. "
                            f"critic=monolithic); got {text!r}")
    if key not in final.columns or key in TASK_TAGS:
        known = ["algorithm", "critic"] + [c for c in tag_columns(final)
                                          if c not in TASK_TAGS and c not in NAME_TAGS]
        raise AnalysisError(f"--baseline {text}: no scored run has a field {key!r} to pair on "
                            f"(fields: {', '.join(dict.fromkeys(known))})")
    if not _matches(final[key], value).any():
        have = sorted({_norm(v) for v in final[key].dropna()}, key=natural_key)
        raise AnalysisError(f"--baseline {text}: no scored run has {key}={value} "
                            f"({key} values: {', '.join(have)})")
    return key, value


def default_spec(final: pd.DataFrame) -> tuple[str, str] | None:
    """``("critic", "monolithic")`` for a layout of several algorithms and several critics
    that includes the monolithic critic; None otherwise."""
    if final.empty or final["algorithm"].nunique() < 2 or final["critic"].nunique() < 2:
        return None
    if not (final["critic"].astype(str) == "monolithic").any():
        return None
    return "critic", "monolithic"


# --------------------------------------------------------------------------- identities
def _norm(v) -> str:
    """A value as comparable text: 1, 1.0 and '1' are one value."""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "nan"
    return str(int(f)) if f.is_integer() else repr(f)


def _matches(col: pd.Series, value: str) -> pd.Series:
    return col.map(lambda v: not _missing(v) and _norm(v) == _norm(value))


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA


def _loads(text) -> dict:
    if not isinstance(text, str) or not text:
        return {}
    try:
        d = json.loads(text)
    except ValueError:
        return {}
    return d if isinstance(d, dict) else {}


def _constant(dicts: list[dict]) -> dict:
    """The keys whose value is the same in every dict that has them."""
    out: dict = {}
    bad: set = set()
    for d in dicts:
        for k, v in d.items():
            if k in bad:
                continue
            if k in out and _norm(out[k]) != _norm(v):
                bad.add(k)
                del out[k]
            elif k not in out:
                out[k] = v
    return out


def protocol_key(rows: pd.DataFrame) -> tuple:
    """The protocol a method's runs follow (as ``tables.split_by_protocol`` groups them)."""
    from analysis.tables import _fmt
    fields = [f for f in PROTOCOL_FIELDS if f in rows.columns]
    return tuple((f, _fmt(rows[f].dropna().iloc[0]) if rows[f].notna().any() else "unknown")
                 for f in fields)


@dataclass
class _Identity:
    columns: dict      # identifying column -> normalised value (absent: not recorded)
    swept: set         # the columns whose value is the run's own tag (not read from run.json)
    recorded: dict | None  # run.json config_fields common to its runs (None: not all have it)
    derived: dict      # run.json settings (protocol, describe, tags) common to its runs
    protocol: tuple
    tasks: frozenset


def _identities(final: pd.DataFrame) -> dict[str, _Identity]:
    cols = ["algorithm", "critic"] + [c for c in tag_columns(final)
                                      if c not in TASK_TAGS and c not in NAME_TAGS
                                      and c not in _PROTOCOL_KEYS]
    out = {}
    for method, g in final.groupby("method", sort=False):
        runs = g.drop_duplicates("run_id")
        derived = _constant([_loads(x) for x in runs.get("config_derived", pd.Series(dtype=object))])
        rec = runs.get("config_fields")
        recorded = (_constant([_loads(x) for x in rec])
                    if rec is not None and len(rec) and rec.notna().all() else None)
        named = [json.loads(x) for x in runs.get("tag_names", pd.Series(dtype=object))
                 if isinstance(x, str)]
        axes = set().union(*map(set, named)) if named else None  # None: no run.json says
        values, swept = {}, set()
        for c in cols:
            vals = {_norm(v) for v in g[c] if not _missing(v)}
            if vals and (axes is None or c in axes):
                swept.add(c)
            elif c in derived and not _missing(derived[c]):
                vals = {_norm(derived[c])}
            if vals:
                values[c] = "|".join(sorted(vals))
        out[str(method)] = _Identity(values, swept, recorded, derived, protocol_key(g),
                                     frozenset(g["task_key"]))
    return out


def _owned(key: str, fld: str, recorded: bool) -> bool:
    """Whether a configuration key is one of ``fld``'s own settings (allowed to differ):
    ``critic.net.width`` for ``critic``; ``critic_depth`` (run.json describe) for ``critic``;
    ``critic.net.width`` for a ``critic_width`` tag."""
    if key == fld or key.startswith(fld + ".") or key.startswith(fld + "_"):
        return True
    if key.endswith("_" + fld):  # a tag that restates it (experiment_critic=floq_k4_FloqCritic)
        return True
    if key.endswith("." + fld):
        return True
    head, _, rest = fld.partition("_")
    if recorded and rest and (key == head or key.startswith(head + ".")):
        return key.endswith("." + rest)
    return False


def _not_applicable(v) -> bool:
    return _missing(v) or str(v).strip().lower() in ("n/a", "na", "none", "")


def _last(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _determined(ids: dict, fld: str, values: Sequence[str]) -> set:
    """Settings that each of ``values`` of ``fld`` fixes in these runs: every method with that
    value has the same value there (an algorithm file's own knobs: its learning rate, its
    Q aggregation). Critic settings aside (``critic*`` keys, except the Q aggregation), so a
    critic's K or width is never taken for an algorithm's own setting."""
    keys: dict = {}
    for ident in ids.values():
        own = ident.columns.get(fld)
        if own not in values:
            continue
        conf = {**{("c", k): v for k, v in ident.columns.items() if k not in ident.swept},
                **{("d", k): _norm(v) for k, v in ident.derived.items()},
                **{("r", k): _norm(v) for k, v in (ident.recorded or {}).items()}}
        for k, v in conf.items():
            keys.setdefault(k, {}).setdefault(own, set()).add(v)
    return {k for (_, k), per in keys.items()
            if all(len(v) == 1 for v in per.values())
            and (not k.startswith("critic") or _last(k) == "q_agg")}


def _differences(a: _Identity, b: _Identity, fld: str, own: set = frozenset()) -> list[str]:
    """The settings (outside ``fld``'s own and the protocol's, and those in ``own``) in
    which a and b differ."""
    # a swept value both record (a width axis over both critics) must match; a value read
    # from run.json may differ where it is the field's own setting (floq's critic depth)
    diff = [c for c in set(a.columns) & set(b.columns) - set(own)
            if c != fld and not c.endswith("_" + fld) and a.columns[c] != b.columns[c]
            and not (_owned(c, fld, False) and not (c in a.swept and c in b.swept))]
    if a.recorded is not None and b.recorded is not None:
        conf, recorded = (a.recorded, b.recorded), True
    else:
        conf, recorded = (a.derived, b.derived), False
    for k in set(conf[0]) & set(conf[1]):
        if (k in own or _owned(k, fld, recorded) or _last(k) in _PROTOCOL_KEYS or k in NAME_TAGS
                or k in TASK_TAGS or k in ("algorithm", "critic")):
            continue
        if _not_applicable(conf[0][k]) or _not_applicable(conf[1][k]):
            continue  # a setting one side does not have (time_embedding 'n/a' without a flow)
        if _norm(conf[0][k]) != _norm(conf[1][k]):
            diff.append(k)
    return sorted(set(diff))


def pair_methods(final: pd.DataFrame, fld: str, value: str, default: bool = False) -> Pairing:
    """Pair each method whose ``fld`` is not ``value`` with its baseline (see the module
    docstring). ``final``: the scored runs (``stats.final_scores`` rows with ``method``)."""
    ids = _identities(final)
    is_base = {str(m): bool(_matches(g[fld], value).all()) if fld in g else False
               for m, g in final.groupby("method", sort=False)}
    bases = sorted([m for m, b in is_base.items() if b], key=natural_key)
    out = Pairing(fld, str(value), baselines=bases, default=default)
    for m in sorted(ids, key=natural_key):
        if is_base[m]:
            continue
        me = ids[m]
        # an algorithm's own knobs (set by its gin file) differ between algorithms by design
        owns = {b: (_determined(ids, fld, [me.columns.get(fld), ids[b].columns.get(fld)])
                    if fld == "algorithm" else set()) for b in bases}
        fits = [b for b in bases
                if not _differences(me, ids[b], fld, owns[b]) and me.tasks & ids[b].tasks]
        same = [b for b in fits if ids[b].protocol == me.protocol]
        if len(same) == 1:
            out.pairs[m] = same[0]
        elif len(same) > 1:
            out.unpaired[m] = (f"several {out.spec} runs match it ({'; '.join(same)}): "
                               "--filter one out")
        elif len(fits) == 1:
            b = fits[0]
            pa, pb = dict(me.protocol), dict(ids[b].protocol)
            out.elsewhere[m] = (b, {f: (pa.get(f, "unknown"), pb.get(f, "unknown"))
                                    for f in sorted(set(pa) | set(pb))
                                    if pa.get(f, "unknown") != pb.get(f, "unknown")})
        elif fits:
            out.unpaired[m] = (f"its {out.spec} candidates ({'; '.join(fits)}) ran under "
                               "other protocols")
        else:
            near = [b for b in bases if me.columns.get("algorithm") == ids[b].columns.get("algorithm")]
            why = ""
            if near:
                d = _differences(me, ids[near[0]], fld, owns[near[0]])
                why = f"; {near[0]} differs in {', '.join(d[:3])}" if d else ""
            out.unpaired[m] = f"no {out.spec} run shares its other settings{why}"
    return out


# --------------------------------------------------------------------------- estimates
def _short(method: str, algorithm: str | None) -> str:
    prefix = f"{algorithm} + "
    return method[len(prefix):] if algorithm and method.startswith(prefix) else method


def estimates(final: pd.DataFrame, pairing: Pairing, reps: int = 2000, seed: int = 0,
              confidence: float = 0.95) -> pd.DataFrame:
    """One row per pair of ``pairing`` whose two methods are both in ``final``: ``method,
    baseline, algorithm, critic, context, x_name, y_name, n_tasks, n_seeds, mean_x, mean_y,
    point, lo, hi`` (difference of mean final success, fractions; CI from independent
    stratified bootstraps, ``stats.difference_estimate``), ``poi, poi_lo, poi_hi``
    (``stats.poi_estimates``) and ``all_zero`` (both score 0 on every run seed)."""
    cols = ["method", "baseline", "algorithm", "critic", "context", "x_name", "y_name",
            "n_tasks", "n_seeds", "mean_x", "mean_y", "point", "lo", "hi", "poi", "poi_lo",
            "poi_hi", "all_zero"]
    rows = []
    present = set(final["method"].astype(str))
    for m, b in pairing.pairs.items():
        if m not in present or b not in present:
            continue
        sub = final[final["method"].isin([m, b])]
        tasks = sorted(set(sub.loc[sub["method"] == m, "task_key"])
                       & set(sub.loc[sub["method"] == b, "task_key"]), key=natural_key)
        sub = sub[sub["task_key"].isin(tasks)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing seeds are reported once by the report
            scores, _ = to_score_dict(sub, tasks=tasks, methods=[m, b])
        d, lo, hi = stats.difference_estimate(scores[m], scores[b], reps=reps,
                                              confidence=confidence, seed=seed,
                                              key=f"{m}\x00{b}")
        poi = stats.poi_estimates(scores, pairs=[(m, b)], reps=reps, confidence=confidence,
                                  seed=seed).iloc[0]
        row = sub[sub["method"] == m].iloc[0]
        algo, critic = str(row["algorithm"]), str(row["critic"])
        if pairing.field == "algorithm":
            context, strip = f"with the {critic} critic", None
        else:
            context, strip = f"inside {algo}", algo
        rows.append(dict(method=m, baseline=b, algorithm=algo, critic=critic, context=context,
                         x_name=_short(m, strip), y_name=_short(b, strip), n_tasks=len(tasks),
                         n_seeds=f"{len(scores[m])}/{len(scores[b])}",
                         mean_x=float(stats.aggregate_mean(scores[m])),
                         mean_y=float(stats.aggregate_mean(scores[b])),
                         point=d, lo=lo, hi=hi, poi=float(poi["point"]),
                         poi_lo=float(poi["lo"]), poi_hi=float(poi["hi"]),
                         all_zero=bool((sub["score"].astype(float) == 0).all())))
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        order = sorted(range(len(out)), key=lambda i: (natural_key(out["algorithm"].iloc[i]),
                                                       natural_key(out["method"].iloc[i])))
        out = out.iloc[order].reset_index(drop=True)
    return out


#: How the answer names an algorithm (its papers' spelling); others as recorded.
ALGORITHM_NAMES = {"fql": "FQL", "iql": "IQL", "ifql": "IFQL", "rebrac": "ReBRAC",
                   "rlpd": "RLPD", "sac": "SAC"}


def _points(x: float) -> str:
    text = f"{100 * x:+.1f}"
    return ("+0.0" if text == "-0.0" else text).replace("-", "−")


def verdict(r) -> str:
    """What a pair's interval says, in words."""
    if r["all_zero"]:
        return "nothing learned: both score 0% on every run seed, so they are not compared"
    if pd.isna(r["lo"]):
        return "one seed: no interval, not evidence either way"
    if r["lo"] > 0:
        return "the interval lies above 0"
    if r["hi"] < 0:
        return "the interval lies below 0"
    return "the interval includes 0: these runs do not separate them"


def answer_lines(est: pd.DataFrame, pairing: Pairing, methods: Sequence[str] = ()) -> list[str]:
    """The answer: a heading sentence, one list line per pair, one line for the methods
    without a baseline (among ``methods``, the group's) and one per pair split by protocol."""
    methods = set(methods) if len(methods) else set(est["method"])
    how = ("the default for an algorithm × critic layout; --baseline FIELD=VALUE picks "
           "another" if pairing.default else "--baseline")
    what = (f"Within each algorithm, each critic against the {pairing.value} critic"
            if pairing.field == "critic" else
            f"Within each critic, each algorithm against {pairing.value}"
            if pairing.field == "algorithm" else
            f"Each method against its {pairing.spec} counterpart")
    same = "critic" if pairing.field == "algorithm" else "algorithm"
    lines = [f"**Answer.** {what} (paired by {pairing.spec}: same {same}, tasks, budget, "
             f"protocol and other settings; {how}): difference of mean final success in "
             "points and P(X > baseline), 95% stratified-bootstrap CIs.", ""]
    for _, r in est.iterrows():
        name = ALGORITHM_NAMES.get(str(r["algorithm"]).lower(), r["algorithm"])
        where = f"Inside **{name}**" if r["context"].startswith("inside") else \
            (r["context"][0].upper() + r["context"][1:] if r["context"] else "Paired")
        if r["all_zero"]:
            lines.append(f"- {where}: {r['x_name']} and {r['y_name']}: {verdict(r)}.")
            continue
        ci = "" if pd.isna(r["lo"]) else f" [{_points(r['lo'])}, {_points(r['hi'])}]"
        pci = "" if pd.isna(r["poi_lo"]) else f" [{r['poi_lo']:.2f}, {r['poi_hi']:.2f}]"
        lines.append(f"- {where}, {r['x_name']} − {r['y_name']} = **{_points(r['point'])}"
                     f"{ci} points**, P({r['x_name']} > {r['y_name']}) = {r['poi']:.2f}{pci} "
                     f"({100 * r['mean_x']:.1f}% vs {100 * r['mean_y']:.1f}%, "
                     f"{r['n_tasks']} task(s) × {r['n_seeds']} seeds): {verdict(r)}.")
    lone = {m: why for m, why in pairing.unpaired.items() if m in methods}
    if lone:
        lines.append("- No paired baseline (not compared across algorithms or settings): "
                     + "; ".join(f"{m} ({why})" for m, why in sorted(lone.items())) + ".")
    if len(est) and est["n_seeds"].map(lambda s: min(int(v) for v in str(s).split("/")) < 5).any():
        lines.append("- With fewer than 5 seeds per task the intervals are rough.")
    return lines + [""]


def split_lines(pairing: Pairing | None, groups: list[tuple[dict, pd.DataFrame]],
                rerun: dict | None = None) -> list[str]:
    """One line per two protocol groups that separate pairs: which field differs (values),
    the pairs it separates and what to do (re-run the side whose protocol lacks a field the
    other records, else the baselines; ``rerun``: ``{method: command}``)."""
    if pairing is None or len(groups) < 2 or not pairing.elsewhere:
        return []
    where = {}
    for i, (_, sub) in enumerate(groups, 1):
        for m in sub["method"].astype(str).unique():
            where[m] = i
    split: dict = {}
    for m, (b, diff) in sorted(pairing.elsewhere.items()):
        if m in where and b in where:
            what = ", ".join(f"{f} ({va} vs {vb})" for f, (va, vb) in diff.items())
            split.setdefault((where[m], where[b], what), []).append(
                (m, b, _older_side(m, b, diff)))
    out = []
    for (gm, gb, what), pairs in sorted(split.items()):
        sides = list(dict.fromkeys(side for _, _, side in pairs))
        cmds = list(dict.fromkeys(c for c in ((rerun or {}).get(x) for x in sides) if c))
        todo = f"re-run {', '.join(sides)} under the other's protocol" + (
            f" ({'; '.join(f'`{c}`' for c in cmds)})" if cmds else "")
        shown = "; ".join(f"{m} vs {b}" for m, b, _ in pairs)
        out += [f"> **Not compared across protocol groups {gm} and {gb}, which differ in "
                f"{what}:** {shown}. Numbers from different protocols are never mixed; to "
                f"compare them, {todo}.", ""]
    return out


def _older_side(m: str, b: str, diff: dict) -> str:
    """The side to re-run: the one whose protocol lacks a field the other records (an older
    run), else the baseline."""
    for _, (va, vb) in diff.items():
        if va == "unknown" and vb != "unknown":
            return m
        if vb == "unknown" and va != "unknown":
            return b
    return b
