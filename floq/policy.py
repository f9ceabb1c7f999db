"""A trained policy outside the runner: load a run directory's checkpoint, act on observations,
evaluate it again (``floq eval``), record a video.

    from floq.policy import load_policy
    policy = load_policy("runs/smoke/monolithic_cube-single-play_task1_seed=0")   # latest checkpoint
    action = policy(obs)             # obs (obs_dim,) -> (act_dim,), or (batch, obs_dim) -> (batch, act_dim)

`load_policy(run_dir, step=None, seed=None, noise="sample", rng=0)` returns a `Policy`: a
callable of observations (numpy in, numpy out) with `.step`, `.seed`, `.obs_dim`, `.act_dim`
and `.run_dir`. The policy is the one evaluation runs (`algorithm.act` on the checkpoint's
policy parameters); FQL's one-step policy and the other stochastic actors read standard-normal
noise: `noise="sample"` draws it from a numpy generator seeded by `rng` (as evaluation samples
it), `noise="zero"` passes zeros (a deterministic policy: the noise's mean). `seed` picks the
member of a run that trained several seeds in one program (default: its first).

The run is rebuilt from its own config.gin exactly as a resume rebuilds it (its dataset is read
for the widths and reward range), so a checkpoint restores into the very state it was saved
from; nothing in the run directory is written.
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np


@dataclasses.dataclass
class Loaded:
    """A run rebuilt from its config.gin with the policy parameters of one checkpoint."""

    run: object            # floq.loop.Run (set up, nothing written)
    step: int
    policy_params: object  # stacked over the run's members (leading axis)

    def member(self, seed: int | None = None):
        """(Member, its policy parameters) of `seed` (None: the first member)."""
        import jax

        members = self.run.members
        if seed is None:
            m = members[0]
        else:
            found = [m for m in members if m.seed == int(seed)]
            if not found:
                from floq.config import ConfigError

                raise ConfigError(f"{self.run.run_dir} trained seeds {[m.seed for m in members]}, not {seed}")
            m = found[0]
        return m, jax.tree_util.tree_map(lambda x: np.asarray(x[m.index]), self.policy_params)


def load(run_dir: str, step: int | None = None) -> Loaded:
    """The run in `run_dir` rebuilt from its config.gin, and the policy parameters of its
    checkpoint at `step` (None: the latest intact one). ConfigError (one line) for a folder that
    is not a run directory, or a step without a checkpoint (the message lists those there)."""
    import jax

    from floq import results
    from floq.checkpoints import Checkpoints
    from floq.config import ConfigError
    from floq.loop import Run

    run_dir = os.path.abspath(run_dir)
    config = os.path.join(run_dir, results.CONFIG_NAME)
    if not os.path.isfile(config):
        raise ConfigError(f"{run_dir} is not a run directory with a checkpoint (no {results.CONFIG_NAME})")
    ckpts = Checkpoints(run_dir)
    steps = ckpts.steps()
    if not steps:
        raise ConfigError(f"{run_dir} holds no checkpoint yet")
    if step is None:
        usable = [s for s in reversed(steps) if ckpts.verify(s) is None]
        if not usable:
            raise ConfigError(f"{run_dir}: no checkpoint passes its checksums ({', '.join(map(str, steps))})")
        step = usable[0]
    elif step not in steps:
        raise ConfigError(f"{run_dir} has no checkpoint at step {step}; its checkpoints: "
                          f"{', '.join(map(str, steps))}")
    else:
        bad = ckpts.verify(step)
        if bad:
            raise ConfigError(f"{run_dir}: the checkpoint at step {step} fails its checks ({bad})")
    run = Run([config], run_dir=run_dir)
    run.setup()  # the same state shapes the checkpoint was saved from; writes nothing

    def like(meta):  # as Run.resume restores: a stop signal's checkpoint holds older policies too
        tree = run._saved_tree()
        pending = meta.get("pending_policies") or []
        if not pending:
            return tree
        pp = jax.device_get(run.algo.policy_params(run.states["params"]))
        return {"run": tree, "pending_policies": {f"step_{int(s)}": pp for s in pending}}

    tree, meta = ckpts.restore(step, like)
    if meta.get("pending_policies"):
        tree = tree["run"]
    states = tree["train"] if run.online is not None else tree
    if meta.get("config_hash") != run.config_hash:
        raise ConfigError(f"{run_dir}: the checkpoint at step {step} is of another configuration than its config.gin")
    return Loaded(run, int(step), jax.device_get(run.algo.policy_params(states["params"])))


class Policy:
    """Observations -> actions of one trained member (see the module docstring)."""

    def __init__(self, loaded: Loaded, seed: int | None = None, noise: str = "sample", rng: int = 0):
        import jax

        from floq.agents.base import noise_shape

        if noise not in ("sample", "zero"):
            raise ValueError(f"noise must be 'sample' or 'zero', got {noise!r}")
        self.member, params = loaded.member(seed)
        run = loaded.run
        self.run_dir, self.step, self.seed = run.run_dir, loaded.step, self.member.seed
        self.obs_dim, self.act_dim = run.obs_dim, run.act_dim
        self.dataset = self.member.dataset
        self.env_kwargs = run.exp.task.env_kwargs()
        self._params = jax.device_put(params)
        self._shape = noise_shape(run.algo, run.act_dim)
        self._noise, self._rng = noise, np.random.default_rng(rng)
        self._act = jax.jit(lambda p, o, n: run.algo.act(p, o, n))

    def __call__(self, obs) -> np.ndarray:
        obs = np.asarray(obs, np.float32)
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        if batch.ndim != 2 or batch.shape[1] != self.obs_dim:
            raise ValueError(f"observations must be ({self.obs_dim},) or (batch, {self.obs_dim}), got {obs.shape}")
        shape = (batch.shape[0], *self._shape)
        noise = (self._rng.standard_normal(shape).astype(np.float32) if self._noise == "sample"
                 else np.zeros(shape, np.float32))
        actions = np.asarray(self._act(self._params, batch, noise))
        return actions[0] if single else actions


def load_policy(run_dir: str, step: int | None = None, seed: int | None = None, noise: str = "sample",
                rng: int = 0) -> Policy:
    """The trained policy of `run_dir` as a function of observations (see the module docstring)."""
    return Policy(load(run_dir, step), seed=seed, noise=noise, rng=rng)


def evaluate(loaded: Loaded, episodes: int | None = None, width: int | None = None) -> list[dict]:
    """Evaluate every member of the checkpoint again, in this process, as training evaluates:
    the same episode seeds (`reset_seed(seed, episode, step)`) and action noise (`eval_key`), so
    with the run's own episode count the numbers equal eval.csv's at that step. One dict per
    member: seed, dataset, step, episodes, success, return, episode_length."""
    import jax

    from floq.evaluate import EpisodeRunner, eval_key, export_policy

    run = loaded.run
    episodes = int(episodes or run.tr.eval_episodes)
    width = int(width or run.tr.eval_envs_per_worker)
    out = []
    runner = None
    try:
        for m in run.members:
            params = jax.tree_util.tree_map(lambda x, i=m.index: np.asarray(x[i]), loaded.policy_params)
            if runner is None:
                pb = export_policy(run.algo, params, run.obs_dim, run.act_dim, width)
                runner = EpisodeRunner(pb, width, run.exp.task.env_kwargs())
            res = np.concatenate([runner.run(params, eval_key(m.seed, loaded.step), m.dataset, m.seed,
                                             range(lo, min(lo + width, episodes)), loaded.step)
                                  for lo in range(0, episodes, width)])
            out.append({"seed": m.seed, "dataset": m.dataset, "step": loaded.step, "episodes": episodes,
                        "success": float(res[:, 0].mean()), "return": float(res[:, 1].mean()),
                        "episode_length": float(res[:, 2].mean())})
    finally:
        if runner is not None:
            runner.close()
    return out


def record_video(policy: Policy, path: str, episode: int = 0, fps: int = 30) -> str | None:
    """Render one evaluation episode of `policy` (the episode `episode` of its evaluation at its
    step: the same start state) into `path` (.mp4 through imageio-ffmpeg, or .gif). Returns None
    when written, else one line saying why it could not be (no OpenGL for MuJoCo here, no video
    writer): the caller prints it; nothing is written then. Headless, MuJoCo needs MUJOCO_GL=egl
    (or osmesa) set before it is first imported (`floq eval --video` sets egl)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".mp4", ".gif"):
        return f"--video {path}: give a .mp4 or .gif file"
    if ext == ".mp4":
        try:
            import imageio.v2 as imageio  # noqa: F401
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            return (f"cannot write {path}: .mp4 needs the imageio and imageio-ffmpeg packages "
                    f"(pip install imageio imageio-ffmpeg), or give --video {os.path.splitext(path)[0]}.gif")
    from floq.evaluate import reset_seed

    import warnings

    try:
        import ogbench

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # gymnasium's note on render modes
            env = ogbench.make_env_and_datasets(policy.dataset, env_only=True, render_mode="rgb_array",
                                                **policy.env_kwargs)
        obs, _ = env.reset(seed=reset_seed(policy.seed, episode, policy.step))
        frames = [np.asarray(env.render())]
    except Exception as e:  # noqa: BLE001 - no OpenGL context (EGL/OSMesa) is the usual reason
        return (f"cannot render MuJoCo here ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                f"set MUJOCO_GL=egl (a GPU driver) or MUJOCO_GL=osmesa (software) where that library exists")
    done = False
    while not done:
        obs, _, term, trunc, _ = env.step(policy(np.asarray(obs, np.float32)))
        frames.append(np.asarray(env.render()))
        done = term or trunc
    env.close()
    from floq.results import atomic_open

    if ext == ".gif":
        from PIL import Image

        images = [Image.fromarray(f) for f in frames]
        with atomic_open(path, "wb") as f:
            images[0].save(f, format="GIF", save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    else:
        import imageio.v2 as imageio

        tmp = path + ".partial.mp4"
        imageio.mimwrite(tmp, frames, fps=fps)
        os.replace(tmp, path)
    return None


def main(argv=None) -> int:
    """``floq eval RUN_DIR [--step N] [--episodes N] [--video out.mp4]``."""
    import argparse

    from floq.config import ConfigError

    p = argparse.ArgumentParser(prog="floq eval", description="Evaluate a run directory's checkpoint again "
                                "(the same episodes as training's evaluation at that step), optionally with a video.")
    p.add_argument("run_dir", help="a run directory (holding config.gin and checkpoints/)")
    p.add_argument("--step", type=int, default=None, help="the checkpoint's step (default: the latest)")
    p.add_argument("--episodes", type=int, default=None, help="episodes per seed (default: the run's EVAL_EPISODES)")
    p.add_argument("--video", default=None, metavar="OUT.mp4",
                   help="also render the first episode of the first seed into this file (.mp4 or .gif)")
    a = p.parse_args(argv)
    if a.video and not os.environ.get("MUJOCO_GL") and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "egl"  # headless rendering; read when MuJoCo is first imported
    if a.episodes is not None and a.episodes < 1:
        p.error(f"--episodes must be >= 1, got {a.episodes}")
    if not os.path.isdir(a.run_dir):
        print(f"floq eval: error: no such run directory: {a.run_dir}", file=sys.stderr)
        return 2
    try:
        loaded = load(a.run_dir, a.step)
    except (ConfigError, ValueError) as e:
        print(f"floq eval: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(f"evaluating {loaded.run.run_name} at step {loaded.step} "
          f"({a.episodes or loaded.run.tr.eval_episodes} episodes per seed)...", file=sys.stderr, flush=True)
    rows = evaluate(loaded, a.episodes)
    for r in rows:
        print(f"seed {r['seed']} {r['dataset']} step {r['step']}: success {r['success']:.1%} over {r['episodes']} "
              f"episodes, return {r['return']:.2f}, length {r['episode_length']:.0f}")
    if len(rows) > 1:
        print(f"mean over {len(rows)} seeds: success {np.mean([r['success'] for r in rows]):.1%}")
    if a.video:
        policy = Policy(loaded)
        why = record_video(policy, a.video)
        print(f"floq eval: no video: {why}" if why else f"video: {a.video}", file=sys.stderr if why else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
