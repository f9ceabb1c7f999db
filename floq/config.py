"""Gin plumbing: files + bindings -> operative config, with one-line errors.

Later files and bindings override earlier ones (gin's own parsing order). Include paths
resolve against the current directory and the repository root.

Validation before anything is built (each problem is one `ConfigError` line):
  - gin syntax errors name the file (or the --bind) and the line;
  - a macro that no configurable reads, and that no layer file under gin/ declares, is a
    typo: "unknown macro TRAIN_STPES (did you mean TRAIN_STEPS?)";
  - a value bound to a field of a frozen-dataclass configurable must match the field's
    annotation: "Trainer.train_steps must be an int, got 'abc'" (`check_bindings`;
    `check_fields` checks a constructed instance the same way).
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import importlib
import io
import os
import re
import tokenize
import types
import typing

import gin

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_MODULES = (
    "floq.nets.specs",
    "floq.data.sources",
    "floq.train",
    "floq.launch.spec",
)


class ConfigError(ValueError):
    """A configuration problem, stated in one line."""


#: Packages whose every module is imported by register(): a new critic or algorithm module
#: registers its configurables by existing (docs/ADDING.md).
_PLUGIN_PACKAGES = ("floq.critics", "floq.agents")


def _modules() -> list[str]:
    import pkgutil

    found = []
    for pkg in _PLUGIN_PACKAGES:
        path = os.path.join(REPO_ROOT, *pkg.split("."))
        found += [f"{pkg}.{m.name}" for m in pkgutil.iter_modules([path]) if not m.name.startswith("_")]
    return [_MODULES[0], *sorted(found), *_MODULES[1:]]


def register() -> None:
    """Import every module that defines gin configurables."""
    for m in _modules():
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


#: The base layer: the run protocol and the macros every layer reads. parse() reads it once,
#: before every other file, whatever the order of files; a later `include 'gin/defaults.gin'`
#: (or the file given again) is skipped, so no layer can silently re-set an experiment's
#: budget, sizes or data source by re-reading it (algorithm files are overlays: docs/ADDING.md).
DEFAULTS_FILE = os.path.join(REPO_ROOT, "gin", "defaults.gin")


def _is_defaults(path: str) -> bool:
    for cand in (path, os.path.join(os.getcwd(), path), os.path.join(REPO_ROOT, path)):
        if os.path.isfile(cand):
            return os.path.realpath(cand) == os.path.realpath(DEFAULTS_FILE)
    return False


@contextlib.contextmanager
def _defaults_once():
    """gin's include statements, with gin/defaults.gin read only the first time."""
    original = gin.config.parse_config_file
    seen = []

    def parse_config_file(config_file, skip_unknown=False, *args, **kwargs):
        if _is_defaults(config_file):
            if seen:
                return []
            seen.append(config_file)
        return original(config_file, skip_unknown, *args, **kwargs)

    gin.config.parse_config_file = parse_config_file
    try:
        yield
    finally:
        gin.config.parse_config_file = original


def parse(gin_files, bindings=(), finalize: bool = False, check: bool = True) -> None:
    """Clear gin and parse files then bindings; raise ConfigError on any problem.

    With `check` (the default) the parsed config is also validated: unknown macros
    (`check_macros`) and values that do not match a dataclass field's type (`check_bindings`).
    """
    # Register first: importing a module for the first time may call configurables (default
    # field values such as MLPNet()), which gin records in the operative config; clearing
    # afterwards keeps such phantom entries out of every run's config.gin.
    register()
    gin.clear_config()
    for p in (os.getcwd(), REPO_ROOT):
        if p not in gin.config._LOCATION_PREFIXES:  # (gin appends duplicates otherwise)
            gin.add_config_file_search_path(p)
    files = [resolve_file(f) for f in gin_files]
    files = [f for f in files if not _is_defaults(f)]  # read once, first (below)
    bindings = list(bindings)
    try:
        with _defaults_once():
            gin.parse_config_files_and_bindings([DEFAULTS_FILE, *files], bindings, skip_unknown=False,
                                                finalize_config=finalize)
    except ConfigError:
        raise
    except SyntaxError as e:
        raise ConfigError(syntax_error_line(e, bindings)) from None
    except tokenize.TokenError:
        raise ConfigError(locate_token_error(files, bindings)) from None
    except Exception as e:  # noqa: BLE001 - gin raises many types; the user needs one line
        raise ConfigError(f"bad gin config: {one_line(e)}") from None
    if check:
        check_layers(files)
        check_macros(bindings)
        check_recipe()
        check_bindings()


# --------------------------------------------------------------------------------------
# Layers: one algorithm, one recipe
# --------------------------------------------------------------------------------------

_INCLUDE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""", re.M)


def _layer_of(path: str) -> str | None:
    """'algorithms' / 'recipes' for a file of those folders of gin/, else None."""
    rel = os.path.relpath(os.path.abspath(path), os.path.join(REPO_ROOT, "gin"))
    head = rel.split(os.sep)[0]
    return head if head in ("algorithms", "recipes") and not rel.startswith("..") else None


def _includes(path: str, seen=None) -> list[str]:
    """The files `path` includes, recursively (resolved as gin resolves them), `path` first."""
    seen = set() if seen is None else seen
    path = os.path.abspath(path)
    if path in seen:
        return []
    seen.add(path)
    out = [path]
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return out
    for inc in _INCLUDE.findall(text):
        for cand in (inc, os.path.join(REPO_ROOT, inc), os.path.join(os.path.dirname(path), inc)):
            if os.path.isfile(cand):
                out += _includes(cand, seen)
                break
    return out


def _sets_recipe_macros(path: str) -> bool:
    """A recipe of tuned values: it (or a recipe it includes) binds a RECIPE_* macro."""
    for f in _includes(path):
        try:
            with open(f) as fh:
                if re.search(r"^\s*RECIPE_\w+\s*=", fh.read(), re.M):
                    return True
        except OSError:
            pass
    return False


def check_layers(files) -> None:
    """Two algorithm files, or two recipes of tuned values, given in one run (a copy-paste slip:
    later files win, so the run would silently train the last one): ConfigError. An algorithm
    file given after an experiment that includes one is the documented swap, and a recipe of
    other settings (released_budget.gin: a training budget) may join a recipe of tuned values."""
    def rel(f):
        r = os.path.relpath(f, REPO_ROOT)
        return f if r.startswith("..") else r

    given = [os.path.abspath(f) for f in files]
    algos = list(dict.fromkeys(f for f in given if _layer_of(f) == "algorithms"))
    if len(algos) > 1:
        raise ConfigError(f"two algorithms given: {', '.join(rel(f) for f in algos)}; a run trains one algorithm "
                          f"(an algorithm file after an experiment replaces the experiment's): give one")
    recipes = list(dict.fromkeys(f for f in given if _layer_of(f) == "recipes" and _sets_recipe_macros(f)))
    if len(recipes) > 1:
        raise ConfigError(f"two recipes given: {', '.join(rel(f) for f in recipes)}; a run takes one paper's tuned "
                          f"values: give one")


@functools.lru_cache(maxsize=None)
def _recipe_macros_cached(stamp) -> frozenset:
    mine, others = set(), set()
    for path, _ in stamp:
        try:
            with open(path) as f:
                names = re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=", f.read(), re.M)
        except OSError:
            continue
        (mine if _layer_of(path) == "recipes" else others).update(names)
    return frozenset(mine - others)


def recipe_macros() -> frozenset:
    """The macros only the recipes under gin/recipes/ define (RECIPE_ALPHA, REBRAC_ALPHA_ACTOR,
    IQL_ALPHA, ...; not ACTOR_WIDTH, which gin/defaults.gin defines too)."""
    stamp = []
    for d, _, fs in os.walk(os.path.join(REPO_ROOT, "gin")):
        if os.path.relpath(d, REPO_ROOT).startswith(os.path.join("gin", "experiments")):
            continue
        for f in fs:
            if f.endswith(".gin"):
                try:
                    stamp.append((os.path.join(d, f), os.stat(os.path.join(d, f)).st_mtime_ns))
                except OSError:
                    pass
    return _recipe_macros_cached(tuple(sorted(stamp)))


def check_recipe(config=None) -> None:
    """A macro that a recipe defines (an algorithm's tuned value such as REBRAC_ALPHA_ACTOR) is
    read but no file defines it: the experiment names no recipe. ConfigError 'no recipe: ...'
    (the same words as for RECIPE_ALPHA), not 'undefined macro'."""
    config = gin.config._CONFIG if config is None else config
    if any(selector.split(".")[-1] == "Sweep" or selector.startswith("Sweep") for _, selector in config):
        return  # a sweep file: its grids name the recipes (each run's build says 'no recipe')
    defined, read = macros_read(config)
    missing = sorted((read - defined) & recipe_macros())
    if missing:
        raise ConfigError(f"no recipe: {missing[0]} is undefined; name whose tuned per-environment values "
                          f"this experiment uses by including a recipe, e.g. gin/recipes/fql_paper.gin or "
                          f"gin/recipes/floq_paper.gin (see gin/defaults.gin)")


# --------------------------------------------------------------------------------------
# Syntax errors: name the file (or binding) and the line
# --------------------------------------------------------------------------------------

def syntax_error_line(e: SyntaxError, bindings=()) -> str:
    """'gin syntax error in FILE line N: MESSAGE: <the line>' (or 'in --bind '...'')."""
    loc = e.args[1] if len(e.args) > 1 else None
    filename = getattr(loc, "filename", None) or e.filename
    line = getattr(loc, "line_num", None) or e.lineno
    text = (getattr(loc, "line_content", None) or e.text or "").strip()
    msg = (e.args[0] if e.args and isinstance(e.args[0], str) else e.msg) or "invalid syntax"
    if filename:
        where = f"{filename} line {line}"
    else:
        where = f"--bind {text!r}" if text else "a --bind"
        binding = next((b for b in bindings if b.strip() and b.strip() in text or text in b), None)
        if binding is not None:
            where = f"--bind {binding.strip()!r}"
    out = f"gin syntax error in {where}: {msg.rstrip('.')}"
    if filename and text:
        out += f": {text}"
    return re.sub(r"\s+", " ", out)


_INCLUDE = re.compile(r"^\s*include\s+['\"]([^'\"]+)['\"]", re.M)


def _include_path(name: str, including: str) -> str | None:
    for cand in (name, os.path.join(os.getcwd(), name), os.path.join(REPO_ROOT, name),
                 os.path.join(os.path.dirname(including), name)):
        if os.path.isfile(cand):
            return cand
    return None


def _unclosed(text: str) -> int | None:
    """The line of the bracket left open when `text` fails to tokenize (None: it tokenizes)."""
    stack = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(text).readline):
            if tok.type == tokenize.OP and tok.string in "([{":
                stack.append(tok.start[0])
            elif tok.type == tokenize.OP and tok.string in ")]}" and stack:
                stack.pop()
    except tokenize.TokenError as e:
        return stack[0] if stack else e.args[1][0]
    return None


def locate_token_error(files, bindings) -> str:
    """Which file (through includes) or binding does not tokenize, and where."""
    seen = set()

    def walk(path):
        if path in seen:
            return None
        seen.add(path)
        try:
            text = open(path).read()
        except OSError:
            return None
        for m in _INCLUDE.finditer(text):
            inc = _include_path(m.group(1), path)
            found = walk(inc) if inc else None
            if found:
                return found
        line = _unclosed(text)
        return (path, line) if line is not None else None

    for f in files:
        found = walk(f)
        if found:
            path, line = found
            content = text_line(path, line)
            return f"gin syntax error in {path} line {line}: a bracket or quote is never closed: {content}"
    for b in bindings:
        if _unclosed(b) is not None:
            return f"gin syntax error in --bind {b.strip()!r}: a bracket or quote is never closed"
    return "gin syntax error: a bracket or quote is never closed"


def text_line(path: str, line: int) -> str:
    try:
        with open(path) as f:
            return f.read().splitlines()[line - 1].strip()
    except (OSError, IndexError):
        return ""


# --------------------------------------------------------------------------------------
# Macros that nothing reads
# --------------------------------------------------------------------------------------

_MACRO_DEF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=", re.M)
#: Layer directories whose macros form floq's vocabulary (experiments only override them).
LAYER_DIRS = ("gin/defaults.gin", "gin/algorithms", "gin/critics", "gin/tasks", "gin/recipes")


@functools.lru_cache(maxsize=None)
def _layer_macros_cached(stamp) -> frozenset:
    names = set()
    for rel in LAYER_DIRS:
        root = os.path.join(REPO_ROOT, rel)
        paths = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root)
                                                     for f in fs if f.endswith(".gin")]
        for path in paths:
            try:
                names.update(_MACRO_DEF.findall(open(path).read()))
            except OSError:
                pass
    return frozenset(names)


def layer_macros() -> frozenset:
    """Macros declared by the layer files (gin/defaults.gin, algorithms, critics, tasks, recipes)."""
    stamp = []
    for rel in LAYER_DIRS:
        root = os.path.join(REPO_ROOT, rel)
        for d, _, fs in (os.walk(root) if os.path.isdir(root) else [(os.path.dirname(root), [], [os.path.basename(root)])]):
            for f in fs:
                try:
                    stamp.append((f, os.stat(os.path.join(d, f)).st_mtime_ns))
                except OSError:
                    pass
    return _layer_macros_cached(tuple(sorted(stamp)))


def _macro_refs(value, out: set) -> set:
    """Names of the macros referenced anywhere inside a bound value."""
    if isinstance(value, gin.config.ConfigurableReference):
        if value.config_key[1] == "gin.macro":
            out.add(value.config_key[0])
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _macro_refs(v, out)
    elif isinstance(value, dict):
        for k, v in value.items():
            _macro_refs(k, out)
            _macro_refs(v, out)
    return out


def macros_read(config=None) -> tuple[set, set]:
    """(defined macros, macros some configurable reads, directly or through other macros)."""
    config = gin.config._CONFIG if config is None else config
    defined, feeds, read = set(), {}, set()
    for (scope, selector), params in config.items():
        if selector == "gin.macro":
            defined.add(scope)
            feeds[scope] = _macro_refs(params.get("value"), set())
        else:
            for v in params.values():
                _macro_refs(v, read)
    frontier = list(read)
    while frontier:
        for m in feeds.get(frontier.pop(), ()):
            if m not in read:
                read.add(m)
                frontier.append(m)
    return defined, read


def closest(name: str, known) -> str | None:
    """The known name closest to `name` (difflib; case-insensitive), or None."""
    known = sorted(set(known))
    by_upper = {k.upper(): k for k in known}
    match = difflib.get_close_matches(name.upper(), list(by_upper), n=1, cutoff=0.6)
    return by_upper[match[0]] if match else None


def unknown_macro_error(name: str, known) -> "ConfigError":
    guess = closest(name, [k for k in known if k != name])
    return ConfigError(f"unknown macro {name}" + (f" (did you mean {guess}?)" if guess else
                                                   " (no configurable reads it)"))


def check_macros(bindings=(), config=None) -> None:
    """ConfigError for the first macro that no configurable reads and no layer file declares
    (a --bind's macro first): 'unknown macro TRAIN_STPES (did you mean TRAIN_STEPS?)'."""
    defined, read = macros_read(config)
    known = read | (layer_macros() & defined)
    unknown = defined - known
    if not unknown:
        return
    ordered = []
    for b in bindings:
        key = b.split("=", 1)[0].strip().lstrip("%") if "=" in b else ""
        if key in unknown and key not in ordered:
            ordered.append(key)
    ordered += sorted(unknown - set(ordered))
    raise unknown_macro_error(ordered[0], read | layer_macros())


# --------------------------------------------------------------------------------------
# Field types of frozen-dataclass configurables
# --------------------------------------------------------------------------------------

_ARTICLE = {"int": "an int", "float": "a float", "bool": "a bool", "str": "a string", "tuple": "a tuple",
            "list": "a list", "dict": "a dict"}


def _describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        text = " or ".join(_describe(a) for a in args)
        return text + (" or None" if len(args) < len(typing.get_args(tp)) else "")
    base = origin or tp
    name = getattr(base, "__name__", str(base))
    return _ARTICLE.get(name, f"a {name}")


def _type_ok(value, tp) -> bool | None:
    """Whether `value` fits annotation `tp` (None: cannot tell, e.g. a spec object)."""
    import numbers

    if tp is typing.Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        answers = [_type_ok(value, a) for a in typing.get_args(tp)]
        if any(a is True for a in answers):
            return True
        return None if any(a is None for a in answers) else False
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool) or (hasattr(value, "dtype") and getattr(value, "dtype", None) == bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    base = origin or tp
    if base in (tuple, list, typing.Sequence) or base is getattr(__import__("collections.abc").abc, "Sequence"):
        if not isinstance(value, (tuple, list)):
            return False
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) == 1 or (origin is tuple and len(typing.get_args(tp)) == 2 and typing.get_args(tp)[1] is Ellipsis):
            return all(_type_ok(v, args[0]) is not False for v in value)
        return True
    if base is dict:
        return isinstance(value, dict)
    return None


@functools.lru_cache(maxsize=None)
def _hints(cls) -> dict:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an unresolvable annotation is simply not checked
        return {}


def field_error(cls_name: str, field: str, tp, value) -> "ConfigError":
    return ConfigError(f"{cls_name}.{field} must be {_describe(tp)}, got {value!r}")


#: Knobs that must not be negative, as ``Class.field`` (FQL checks its own alpha): a negative
#: BC weight rewards leaving the data, a negative AWR inverse temperature weights the worst
#: actions most. (`Class.field`: (bound, strict))
BOUNDS = {
    "ReBRAC.alpha_actor": (0.0, False), "ReBRAC.alpha_critic": (0.0, False),
    "IQL.alpha": (0.0, False), "IQL.adv_clip": (0.0, True),
    "FQL.grad_clip": (0.0, True), "IQL.grad_clip": (0.0, True), "IFQL.grad_clip": (0.0, True),
}


def _non_finite(value) -> bool:
    import math
    import numbers

    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return not math.isfinite(float(value))
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def check_value(cls, field: str, value) -> None:
    """ConfigError when `value` does not fit the annotation of `cls.field`, is not finite
    (gin reads 1e999 as inf) or crosses a bound of `BOUNDS`."""
    tp = _hints(cls).get(field)
    if tp is None or isinstance(value, gin.config.ConfigurableReference):
        return
    if _type_ok(value, tp) is False:
        raise field_error(cls.__name__, field, tp, value)
    if _non_finite(value):
        raise ConfigError(f"{cls.__name__}.{field} must be a finite number, got {value!r}")
    bound = BOUNDS.get(f"{cls.__name__}.{field}")
    if bound is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, strict = bound
        if value < lo or (strict and value == lo):
            raise ConfigError(f"{cls.__name__}.{field} must be {'>' if strict else '>='} {lo:g}, got {value!r}")


def check_fields(instance) -> None:
    """Validates every field of a (frozen) dataclass instance against its annotation:
    int fields refuse bools, floats (100.5) and strings; float fields take ints too; str,
    bool, tuple/list (element types when annotated) and Optional are checked; other types are
    left alone. Raises ConfigError naming `Class.field`. Call it first in __post_init__."""
    cls = type(instance)
    for f in dataclasses.fields(instance):
        check_value(cls, f.name, getattr(instance, f.name))


def _resolve_macros(value, config, depth: int = 0):
    if isinstance(value, gin.config.ConfigurableReference) and value.config_key[1] == "gin.macro" and depth < 32:
        params = config.get((value.config_key[0], "gin.macro"))
        if params is not None and "value" in params:
            return _resolve_macros(params["value"], config, depth + 1)
    return value


def check_bindings(config=None) -> None:
    """Before anything is built: every value bound (directly or through macros) to a field of
    a dataclass configurable must fit the field's annotation. ConfigError naming the field."""
    config = gin.config._CONFIG if config is None else config
    for (scope, selector), params in config.items():
        if selector == "gin.macro":
            continue
        try:
            configurable = gin.config._REGISTRY.get_match(selector)
        except Exception:  # noqa: BLE001
            configurable = None
        cls = getattr(configurable, "wrapped", None)
        if cls is None or not dataclasses.is_dataclass(cls):
            continue
        fields = {f.name for f in dataclasses.fields(cls)}
        for name, value in params.items():
            if name in fields:
                check_value(cls, name, _resolve_macros(value, config))


def binding_tag(binding: str) -> tuple[str, str] | None:
    """'CRITIC_FLOW_STEPS = 4' -> ('critic_flow_steps', '4'); 'FQL.alpha=3' -> ('alpha', '3')."""
    if "=" not in binding:
        return None
    key, value = binding.split("=", 1)
    key = key.strip().split("/")[-1].split(".")[-1].lower()
    value = value.strip().strip("'\"")
    return key, value
