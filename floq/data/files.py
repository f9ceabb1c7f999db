"""Dataset files in OGBench's format: finding, reading and validating them, and the arrays
training keeps. The lowest layer of floq.data: floq.data.sources (the Task) and
floq.data.shards (OGBench's -100m shard folders) both build on it, and it imports neither.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np


class DataError(ValueError):
    """A dataset that cannot be found, read or used, stated in one line naming the file (and
    the array)."""


#: Where generated datasets were cached before the cache followed the XDG convention: still
#: read when a dataset is there (and $FLOQ_DATA_DIR is not set), never written.
LEGACY_DATA_DIR = "~/.floq/data"


def default_data_dir() -> str:
    """Where generated datasets are cached: ``$FLOQ_DATA_DIR``, else ``$FLOQ_CACHE_DIR/data``,
    else ``$XDG_CACHE_HOME/floq/data``, else ``~/.cache/floq/data`` (the folder `make demo` uses)."""
    env = os.environ
    if env.get("FLOQ_DATA_DIR"):
        return os.path.expanduser(env["FLOQ_DATA_DIR"])
    if env.get("FLOQ_CACHE_DIR"):
        return os.path.join(os.path.expanduser(env["FLOQ_CACHE_DIR"]), "data")
    cache = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "floq", "data")


def cached_data_path(name: str) -> str:
    """The path of the cached dataset file `name` (a train file; its -val twin beside it): in
    `default_data_dir()`, or in the legacy ~/.floq/data when only that one holds it (and no
    $FLOQ_DATA_DIR is set); else where it will be written, in `default_data_dir()`."""
    path = os.path.join(default_data_dir(), name)
    if os.environ.get("FLOQ_DATA_DIR") or (os.path.isfile(path) and os.path.isfile(val_path_of(path))):
        return path
    old = os.path.join(os.path.expanduser(LEGACY_DATA_DIR), name)
    if os.path.isfile(old) and os.path.isfile(val_path_of(old)):
        return old
    return path


def _load_npz(path: str):
    """np.load of an OGBench file, with one clear line for a file that is not a .npz archive
    (numpy's own message for a text file is about pickled data)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as e:
        raise DataError(f"dataset file {path} cannot be read: {e.strerror}") from None
    if magic[:2] != b"PK":
        raise DataError(f"dataset file {path} is not a .npz archive (numpy's zip of arrays; this file starts "
                        f"with {magic!r}): regenerate or re-download it")
    return np.load(path)


def check_files(path: str) -> None:
    val = val_path_of(path)
    if not path.endswith(".npz"):
        raise DataError(f"dataset file must be an OGBench .npz file, got {path!r}")
    for p in (path, val):
        if not os.path.isfile(p):
            raise DataError(f"dataset file not found: {p}")
    try:
        with _load_npz(path) as f:
            missing = [k for k in ("observations", "actions", "terminals") if k not in f.files]
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"dataset file {path} is not a readable .npz: {type(e).__name__}: {e}") from None
    if missing:
        raise DataError(f"dataset file {path} lacks {', '.join(missing)} (not in OGBench's format)")


# --------------------------------------------------------------------------------------
# Dataset validation (before anything is written)
# --------------------------------------------------------------------------------------

def val_path_of(path: str) -> str:
    return path[: -len(".npz")] + "-val.npz" if path.endswith(".npz") else path + "-val.npz"


def array_headers(path: str) -> dict[str, tuple]:
    """{array name: shape} from the .npy headers inside an .npz (no array data is read)."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError) as e:
        raise DataError(f"dataset file {path} is not a readable .npz (truncated or corrupt?): "
                        f"{type(e).__name__}: {e}") from None
    shapes = {}
    with zf:
        for name in zf.namelist():
            if not name.endswith(".npy"):
                continue
            key = name[:-4]
            try:
                with zf.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, _ = np.lib.format.read_array_header_1_0(fh)
                    else:
                        shape, _, _ = np.lib.format.read_array_header_2_0(fh)
            except Exception as e:  # noqa: BLE001 - any unreadable member is the same user error
                raise DataError(f"dataset file {path}: array '{key}' cannot be read (truncated or corrupt?): "
                                f"{type(e).__name__}: {e}") from None
            shapes[key] = tuple(shape)
    return shapes


def read_all(path: str, keys) -> dict[str, np.ndarray]:
    """Decompresses the given arrays (detects truncated or overwritten members: zip CRCs)."""
    out = {}
    try:
        with _load_npz(path) as f:
            for k in keys:
                try:
                    out[k] = np.asarray(f[k])
                except Exception as e:  # noqa: BLE001
                    raise DataError(f"dataset file {path}: array '{k}' cannot be read (truncated or corrupt?): "
                                    f"{type(e).__name__}: {e}") from None
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DataError(f"dataset file {path} is not a readable .npz: {type(e).__name__}: {e}") from None
    return out


_SPACE_DIMS: dict = {}


def env_space_dims(dataset_name: str, env_kwargs: dict | None = None) -> tuple[int, int]:
    """(observation width, action width) of the OGBench environment of `dataset_name`, asked
    once per process of an environment from floq.envs. Pass the keyword arguments that the
    run's own users of the environment pass (`Task.env_kwargs`): the environment built here is
    then the one that relabelling and evaluation take next, not one more to build."""
    return _env_widths(dataset_name, env_kwargs)[:2]


def env_qpos_width(dataset_name: str, env_kwargs: dict | None = None) -> int | None:
    """Width of the environment's MuJoCo ``qpos`` (its model's ``nq``): the width of a
    dataset's ``qpos``, from which OGBench relabels singletask rewards. None when the
    environment has no MuJoCo model to ask."""
    return _env_widths(dataset_name, env_kwargs)[2]


def _env_widths(dataset_name: str, env_kwargs: dict | None) -> tuple[int, int, int | None]:
    """(observation, action, qpos) widths, asked once per process of an environment."""
    from floq import envs

    env_kwargs = dict(env_kwargs or {})
    key = envs.pool_key(dataset_name, env_kwargs)
    if key not in _SPACE_DIMS:
        env = envs.acquire(dataset_name, env_kwargs)
        try:
            model = getattr(env.unwrapped, "model", None)
            nq = getattr(model if model is not None else getattr(env.unwrapped, "_model", None), "nq", None)
            _SPACE_DIMS[key] = (int(np.prod(env.observation_space.shape)), int(np.prod(env.action_space.shape)),
                                int(nq) if nq is not None else None)
        finally:
            envs.release(dataset_name, env_kwargs, env)
    return _SPACE_DIMS[key]


def validate_arrays(path: str, shapes: dict[str, tuple], dims: tuple[int, int] | None = None,
                    qpos_width: int | None = None) -> None:
    """Checks the shapes of one OGBench-format file; DataError naming the file and the array.
    ``qpos_width``: the environment's (``env_qpos_width``); OGBench relabels rewards from
    ``qpos`` columns by index, so a narrower one fails deep in numpy ('operands could not be
    broadcast') and a wider one of another environment relabels from the wrong columns."""
    missing = [k for k in ("observations", "actions", "terminals") if k not in shapes]
    if missing:
        raise DataError(f"dataset file {path} lacks {', '.join(missing)} (not in OGBench's format)")
    for key in ("observations", "actions"):
        if len(shapes[key]) != 2:
            raise DataError(f"dataset file {path}: array '{key}' has shape {shapes[key]}, expected (transitions, width)"
                            + (" (1-D: one number per transition)" if len(shapes[key]) == 1 else ""))
    if len(shapes["terminals"]) != 1:
        raise DataError(f"dataset file {path}: array 'terminals' has shape {shapes['terminals']}, "
                        f"expected (transitions,)")
    rows = {k: (v[0] if v else None) for k, v in shapes.items()}
    n = rows["observations"]
    odd = sorted(k for k, r in rows.items() if r != n)
    if odd:
        k = odd[0]
        raise DataError(f"dataset file {path}: array '{k}' has {rows[k]} rows but 'observations' has {n} "
                        f"(arrays must have one row per transition)")
    if n == 0:
        raise DataError(f"dataset file {path}: array 'observations' has no rows")
    if dims is not None:
        obs_dim, act_dim = dims
        if shapes["observations"][1] != obs_dim:
            raise DataError(f"dataset file {path}: array 'observations' is {shapes['observations'][1]} wide, but the "
                            f"environment's observations are {obs_dim} wide (a dataset of another environment?)")
        if shapes["actions"][1] != act_dim:
            raise DataError(f"dataset file {path}: array 'actions' is {shapes['actions'][1]} wide, but the "
                            f"environment's actions are {act_dim} wide (a dataset of another environment?)")
    if qpos_width is not None and "qpos" in shapes:
        shape = shapes["qpos"]
        if len(shape) != 2 or shape[1] != qpos_width:
            found = f"{shape[1]} wide" if len(shape) == 2 else f"of shape {shape}"
            raise DataError(f"dataset file {path}: array 'qpos' is {found}, but the environment's qpos (its MuJoCo "
                            f"model's nq) is {qpos_width} wide (a dataset of another environment?)")


def validate_dataset(path: str, dataset_name: str | None = None, check_env: bool = True,
                     env_kwargs: dict | None = None) -> None:
    """Validates a train file and its -val twin before anything is written: readable, the
    OGBench arrays present, 2-D observations/actions, equal row counts, widths matching the
    environment's spaces, then the values (`validate_values`). Both files are read in full (a
    truncated or overwritten member fails its zip CRC). One DataError line naming the file and
    the array."""
    dims = env_space_dims(dataset_name, env_kwargs) if (check_env and dataset_name) else None
    nq = env_qpos_width(dataset_name, env_kwargs) if (check_env and dataset_name) else None
    for p in (path, val_path_of(path)):
        if not os.path.isfile(p):
            raise DataError(f"dataset file not found: {p}")
        shapes = array_headers(p)
        validate_arrays(p, shapes, dims, nq)
        validate_values(p, list(shapes))


#: How far outside [-1, 1] an action may lie (OGBench's actions are clipped to the box).
ACTION_TOLERANCE = 1e-6


def validate_values(path: str, keys) -> None:
    """The values of one OGBench-format file, array by array: every floating-point array
    finite (observations, actions, qpos, qvel, ...: a NaN would end as a 'diverged' run or as
    rewards relabelled from NaN states), actions inside the action box [-1, 1] (they would be
    clipped silently), terminals 0 or 1 with the last transition terminal (OGBench's loader
    pairs each observation with the next one of its episode: without it next_observations is
    one row short) and at least one transition that is not terminal (something to learn
    from). DataError naming the file, the array and the first offending row."""
    try:
        f = _load_npz(path)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise DataError(f"dataset file {path} is not a readable .npz: {type(e).__name__}: {e}") from None
    with f:
        for key in keys:
            try:
                a = np.asarray(f[key])
            except Exception as e:  # noqa: BLE001
                raise DataError(f"dataset file {path}: array '{key}' cannot be read (truncated or corrupt?): "
                                f"{type(e).__name__}: {e}") from None
            if a.dtype.kind in "fc":
                bad = ~np.isfinite(a)
                if bad.any():
                    at = np.argwhere(bad)[0]
                    raise DataError(f"dataset file {path}: array '{key}' holds {int(bad.sum())} non-finite "
                                    f"value(s), the first {a[tuple(at)]} at row {at[0]}"
                                    + (f", column {at[1]}" if len(at) > 1 else ""))
            if key == "actions" and a.size:
                out = np.abs(a) > 1 + ACTION_TOLERANCE
                if out.any():
                    at = np.argwhere(out)[0]
                    raise DataError(f"dataset file {path}: array 'actions' has {int(out.sum())} value(s) outside "
                                    f"the action box [-1, 1], the first {a[tuple(at)]:g} at row {at[0]} "
                                    f"(they would be clipped silently; rescale the actions)")
            if key == "terminals":
                if not np.isin(a, (0, 1)).all():
                    row = int(np.flatnonzero(~np.isin(a, (0, 1)))[0])
                    raise DataError(f"dataset file {path}: array 'terminals' holds {a[row]} at row {row} "
                                    f"(terminals are 0 or 1)")
                if a.size and a[-1] != 1:
                    raise DataError(f"dataset file {path}: array 'terminals' does not mark the last transition "
                                    f"terminal (every episode ends with terminals = 1; OGBench's loader pairs each "
                                    f"observation with the next one of its episode)")
                if a.size and np.all(a > 0):
                    raise DataError(f"dataset file {path}: array 'terminals' marks every transition terminal "
                                    f"(episodes of length 1: nothing to bootstrap from)")


def finish_arrays(ds: dict, max_transitions: int = 0) -> dict:
    """Keep what training needs; clip actions like FQL (1e-5 inside the box)."""
    out = {
        "observations": np.asarray(ds["observations"], np.float32),
        "actions": np.clip(np.asarray(ds["actions"], np.float32), -1 + 1e-5, 1 - 1e-5),
        "rewards": np.asarray(ds["rewards"], np.float32),
        "masks": np.asarray(ds["masks"], np.float32),
        "next_observations": np.asarray(ds["next_observations"], np.float32),
    }
    if max_transitions:
        out = {k: v[:max_transitions] for k, v in out.items()}
    return out
