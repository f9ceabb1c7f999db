"""Checkpoints that survive crashes, full disks and corrupt files.

Layout (docs/CONTRACTS.md): ``RUN/checkpoints/step_N/`` is an orbax ``PyTreeCheckpointer``
directory; ``RUN/checkpoints/step_N.json`` is its sidecar: the caller's metadata (step, wall
time, committed CSV row counts, config hash, ...) plus the size and sha256 of every file of
``step_N/`` and a sha256 of the sidecar itself.

Order of a save: orbax writes ``step_N.floq-new/`` (orbax itself commits through a temp dir
and a rename), floq hashes its files, swaps it in as ``step_N/``, then writes the sidecar
atomically. A sidecar therefore only ever names a complete checkpoint whose bytes it has
hashed. At least two checkpoints are kept, so when the newest one is unusable (a truncated or
overwritten data file, deleted or garbled orbax metadata, a garbled sidecar, a save killed
half-way) `restore_latest` warns in one line and falls back to the one before.

A full disk while saving raises ``results.RunError('disk full while writing <path>: ...')``
after removing what the failed save wrote; the previous checkpoints are left as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys

from floq import results

#: Suffix of the directory a save writes before it is swapped in.
NEW_SUFFIX = ".floq-new"
#: Sidecar keys floq adds to the caller's metadata.
FILES_KEY = "checkpoint_files"
SELF_KEY = "sidecar_sha256"
_STEP_DIR = re.compile(r"^step_(\d+)$")
_STEP_JSON = re.compile(r"^step_(\d+)\.json$")
_CHUNK = 1 << 20


def _warn(message: str) -> None:
    print(f"floq: warning: {message}", file=sys.stderr, flush=True)


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(_CHUNK)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def tree_checksums(root: str) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file under ``root`` (sorted paths)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            out[rel] = [os.path.getsize(path), file_sha256(path)]
    return out


def _self_digest(sidecar: dict) -> str:
    body = {k: v for k, v in sidecar.items() if k != SELF_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _disk_full_in(e: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT OSError behind `e` (orbax and tensorstore wrap them), if any."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if results.is_disk_full(e):
            return e
        if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
            import errno

            return OSError(errno.ENOSPC, "No space left on device")
        e = e.__cause__ or e.__context__
    return None


def clean_temp(run_dir: str) -> list[str]:
    """Removes what killed writes left in a run directory: `results.atomic_open` temp files
    (``.tmp_*``) in RUN/ and RUN/checkpoints/, orbax's ``*.orbax-checkpoint-tmp*`` dirs, floq's
    unfinished ``step_N.floq-new`` dirs and checkpoint dirs whose sidecar was never written.
    Call it only while holding the run's `results.RunLock`. Returns the removed paths."""
    removed = []
    for d in (run_dir, os.path.join(run_dir, "checkpoints")):
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            orphan = (d != run_dir and _STEP_DIR.match(name) and os.path.isdir(path)
                      and not os.path.exists(path + ".json"))
            if not (name.startswith(results.TEMP_PREFIX) or ".orbax-checkpoint-tmp" in name
                    or name.endswith(NEW_SUFFIX) or orphan):
                continue
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
                removed.append(path)
            except OSError:
                pass
    return removed


class Checkpoints:
    """orbax checkpoints of one run with checksummed sidecars (see the module docstring).

    Args:
      run_dir: the run directory (checkpoints go to ``run_dir/checkpoints``).
      keep: how many checkpoints to keep (at least 2, so that one can fall back).
    """

    def __init__(self, run_dir: str, keep: int = 2):
        if int(keep) < 2:
            raise ValueError(f"Checkpoints keep at least 2 checkpoints (to fall back to), got keep={keep}")
        self.dir = os.path.join(os.path.abspath(run_dir), "checkpoints")
        self.keep = int(keep)
        self._ckptr_ = None

    @property
    def _ckptr(self):
        if self._ckptr_ is None:
            import orbax.checkpoint as ocp

            self._ckptr_ = ocp.PyTreeCheckpointer()
        return self._ckptr_

    def path(self, step: int) -> str:
        return os.path.join(self.dir, f"step_{int(step)}")

    def sidecar_path(self, step: int) -> str:
        return self.path(step) + ".json"

    def steps(self) -> list[int]:
        """Steps that have both a checkpoint directory and a sidecar (not yet verified)."""
        try:
            names = set(os.listdir(self.dir))
        except OSError:
            return []
        out = []
        for name in names:
            m = _STEP_JSON.match(name)
            if m and f"step_{m.group(1)}" in names and os.path.isdir(os.path.join(self.dir, f"step_{m.group(1)}")):
                out.append(int(m.group(1)))
        return sorted(out)

    # ----------------------------------------------------------------------------------
    # Saving

    def save(self, step: int, state, meta: dict) -> None:
        """Saves `state` (a pytree of arrays) as step `step` with metadata `meta` (JSON-able),
        then prunes to the newest `keep` checkpoints. Raises RunError on a full disk, with the
        previous checkpoints intact."""
        import jax

        step = int(step)
        final, sidecar = self.path(step), self.sidecar_path(step)
        new = final + NEW_SUFFIX
        try:
            os.makedirs(self.dir, exist_ok=True)
            if os.path.exists(new):
                shutil.rmtree(new)
            self._ckptr.save(new, jax.device_get(state))
            files = tree_checksums(new)
            # Swap in: the old sidecar goes first, so no sidecar ever names a half-swapped dir.
            if os.path.exists(sidecar):
                os.unlink(sidecar)
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(new, final)
            body = {**dict(meta), FILES_KEY: files}
            body[SELF_KEY] = _self_digest(body)
            results.write_json(sidecar, body)
        except BaseException as e:
            self._discard(step, new, final, sidecar)
            if isinstance(e, results.RunError):
                raise
            full = _disk_full_in(e) if isinstance(e, Exception) else None
            if full is not None:
                raise results.RunError(
                    f"disk full while writing {final}: {full.strerror or full}; "
                    f"the previous checkpoint is intact, free space and re-run to resume") from None
            raise
        self._prune()

    def _discard(self, step, new, final, sidecar) -> None:
        """Removes what a failed save of `step` wrote (never another step's files)."""
        committed = os.path.exists(sidecar) and os.path.isdir(final)
        if committed:
            return
        for p in (new, final):
            shutil.rmtree(p, ignore_errors=True)
        parent = os.path.dirname(new)
        try:
            for name in os.listdir(parent):
                if name.startswith(os.path.basename(new)) and ".orbax-checkpoint-tmp" in name:
                    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
        except OSError:
            pass

    def _prune(self) -> None:
        for old in self.steps()[:-self.keep]:
            try:
                os.unlink(self.sidecar_path(old))  # sidecar first: a half-deleted dir is never named
            except OSError:
                pass
            shutil.rmtree(self.path(old), ignore_errors=True)

    # ----------------------------------------------------------------------------------
    # Verifying and restoring

    def read_sidecar(self, step: int) -> dict:
        """The sidecar's metadata, checked against its own digest (ValueError if it is not)."""
        with open(self.sidecar_path(step)) as f:
            try:
                body = json.load(f)
            except ValueError as e:
                raise ValueError(f"sidecar is not valid JSON ({e})") from None
        if not isinstance(body, dict):
            raise ValueError("sidecar is not a JSON object")
        if SELF_KEY in body and body[SELF_KEY] != _self_digest(body):
            raise ValueError("sidecar does not match its own checksum")
        return body

    def verify(self, step: int) -> str | None:
        """None when step `step` is intact, else why not (one phrase)."""
        try:
            body = self.read_sidecar(step)
        except (OSError, ValueError) as e:
            return f"its sidecar {os.path.basename(self.sidecar_path(step))} is unreadable: {e}"
        root = self.path(step)
        if not os.path.isdir(root):
            return "its directory is missing"
        recorded = body.get(FILES_KEY)
        if recorded is None:  # written before checksums existed: nothing to compare
            return None
        if not isinstance(recorded, dict):
            return "its sidecar has no file list"
        try:
            present = set()
            for dirpath, _, filenames in os.walk(root):
                for name in filenames:
                    present.add(os.path.relpath(os.path.join(dirpath, name), root).replace(os.sep, "/"))
            missing = sorted(set(recorded) - present)
            if missing:
                return f"{missing[0]} is missing"
            for rel in sorted(recorded):
                size, digest = recorded[rel]
                path = os.path.join(root, rel)
                if os.path.getsize(path) != size:
                    return f"{rel} has {os.path.getsize(path)} bytes, {size} were written"
                if file_sha256(path) != digest:
                    return f"{rel} does not match its checksum"
        except (OSError, TypeError, ValueError) as e:
            return f"cannot be read: {type(e).__name__}: {e}"
        return None

    def restore(self, step: int, like):
        """(state, meta) of step `step`, shaped like the pytree `like`, or like `like(meta)`
        when it is a function of the checkpoint's metadata (no verification)."""
        import jax
        import jax.numpy as jnp
        import orbax.checkpoint as ocp

        meta = {k: v for k, v in self.read_sidecar(step).items() if k not in (FILES_KEY, SELF_KEY)}
        host_like = jax.device_get(like(meta) if callable(like) else like)
        restored = self._ckptr.restore(self.path(step), item=host_like,
                                       restore_args=ocp.checkpoint_utils.construct_restore_args(host_like))
        return jax.tree_util.tree_map(jnp.asarray, restored), meta

    def _candidates(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        steps = set()
        for name in names:
            m = _STEP_DIR.match(name) or _STEP_JSON.match(name)
            if m:
                steps.add(int(m.group(1)))
        return sorted(steps)

    def restore_latest(self, like):
        """(state, meta) of the newest intact checkpoint, or None when there is none.

        A checkpoint that fails verification (or orbax's restore) is skipped with a one-line
        warning on stderr naming it and the reason; so is an incomplete one (a save killed
        before its sidecar). None with a warning when checkpoints exist but none is usable;
        None silently when there are none."""
        candidates = self._candidates()
        for i, step in enumerate(reversed(candidates)):
            older = candidates[:len(candidates) - 1 - i]
            then = f"falling back to step_{older[-1]}" if older else "no older checkpoint to fall back to"
            if not (os.path.isdir(self.path(step)) and os.path.exists(self.sidecar_path(step))):
                _warn(f"checkpoint {self.path(step)} is incomplete (a save was interrupted); {then}")
                continue
            reason = self.verify(step)
            if reason is None:
                try:
                    return self.restore(step, like)
                except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                    reason = f"orbax cannot restore it: {type(e).__name__}: {results_one_line(e)}"
            _warn(f"checkpoint {self.path(step)} is unusable ({reason}); {then}")
        if candidates:
            _warn(f"no usable checkpoint in {self.dir}; the run starts from step 0")
        return None


def results_one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] if text else type(e).__name__
