"""Local generation of OGBench datasets, written in OGBench's own ``.npz`` format.

OGBench's dataset server is unreachable from some machines. The manipulation datasets
(``cube-*``, ``scene-*``, ``puzzle-*``) only need the scripted oracles that ship inside the
``ogbench`` package, so they can be regenerated locally. This module follows the published
procedure of OGBench's ``data_gen_scripts/generate_manipspace.py`` and the per-dataset flags in
``data_gen_scripts/commands.sh`` (https://github.com/seohongpark/ogbench, Park et al., 2024,
"OGBench: Benchmarking Offline Goal-Conditioned RL"); the code here is an independent
re-implementation, not a copy.

Procedure (as in OGBench):

* env: ``gymnasium.make(<env>, terminate_at_goal=False, mode='data_collection',
  max_episode_steps=1001)``; every episode has exactly ``max_episode_steps`` transitions.
* ``*-play``: open-loop plan oracles (``ogbench.manipspace.oracles.plan``) with
  ``noise=0.1, noise_smoothing=0.5``; no random actions.
* ``*-noisy``: closed-loop Markov oracles (``ogbench.manipspace.oracles.markov``) with
  ``min_norm=0.4``; per episode a noise scale ``xi ~ U(0, 0.1)`` and Gaussian action noise with
  std ``xi * [1, 1, 1, 3, 10]``; with probability ``p_random_action`` (0.1 for cube/scene, 0.2
  for puzzle) a uniformly random action replaces the oracle's.
* cube stacking probability per episode: single 0, double U(0, .25), triple U(.05, .35),
  quadruple U(.1, .5); scene uses 0.5 (the env default of the script).
* scene: cube oracle with ``max_step=100`` in noisy mode (``CubeMarkovOracle.reset`` resets it to
  200 anyway, in OGBench too: we use OGBench's own classes); episodes failing the health check
  (the cube leaves the visible area without being in the drawer) are re-collected.
* puzzle: button oracles with ``gripper_always_closed=True``.
* the validation file holds ``episodes // 10`` further episodes (here at least 1); the train file
  holds exactly ``episodes`` episodes, so ``episodes=1000`` gives the official 1M-transition size.
* keys/dtypes: ``observations, actions, qpos, qvel`` float32, ``terminals`` bool (1 at the last
  step of each episode), ``button_states`` int64 (scene, puzzle); stored with
  ``np.savez_compressed``. ``ogbench.utils.load_dataset`` casts terminals to float32 on load.

Deviations from OGBench's script (deliberate):

* Seeding. OGBench's script never seeds (its ``--seed`` flag is unused). Here every episode
  reseeds numpy's global RNG (used by the oracles), the env's ``np_random`` and its action space
  from ``SeedSequence([seed, split, episode, attempt])``. Hence the output is a deterministic
  function of ``(dataset, episodes, seed, episode_length)`` and identical for any ``workers``;
  the first ``n`` train episodes do not depend on how many episodes are asked for.
* Train and validation episodes come from separate seed streams.
* Random actions (``p_random_action``) are drawn as ``U[-1, 1]^5`` from the seeded numpy RNG:
  OGBench uses ``env.action_space.sample()``, but manipspace envs return a new, unseeded ``Box``
  on every ``action_space`` access, so that call cannot be made reproducible. Same distribution.
* Before every episode the env's per-sub-task target fields (``_target_button``,
  ``_target_drawer_pos``, ...) are reset to a fixed snapshot. OGBench's loop passes the oracle the
  step ``info`` from before ``set_new_target`` on the first step of each new sub-task, so in a
  sequential run one action per sub-task switch can see a target left over from an earlier
  episode; the snapshot makes that value fixed instead of history-dependent (scene only in
  practice; affects at most one action per switch).
* Files are written atomically (temp file in the same directory, then ``os.replace``).

So a locally generated file is a draw from the same distribution as the official file, not the
same bytes.

Locomotion (``antmaze-*``, ``humanoidmaze-*``, ``antsoccer-*``) datasets need OGBench's trained
expert policies, which are not shipped; ``generate`` refuses them unless ``standin=True``, in which
case it writes STAND-IN data: smoothed Gaussian-noise actions executed in the real env, in the same
file format (named ``<env>-<type>-standin-v0.npz``). Stand-in data is for tests and exercising
code paths only -- never report results trained on it.
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import re
import sys
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = [
    'KNOWN_MANIPULATION',
    'LOCOMOTION',
    'DatasetSpec',
    'default_data_dir',
    'generate',
    'main',
    'resolve',
]

# --------------------------------------------------------------------------------------------
# Dataset catalogue (values from OGBench's data_gen_scripts/commands.sh).
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """How to produce one dataset."""

    name: str  # base dataset name, e.g. 'cube-single-play-v0'
    env_name: str  # gymnasium id, e.g. 'cube-single-v0'
    family: str  # 'cube' | 'scene' | 'puzzle' | 'antmaze' | 'humanoidmaze' | 'antsoccer'
    dataset_type: str  # 'play' | 'noisy' | 'navigate' | 'stitch' | 'explore'
    episode_length: int  # OGBench's max_episode_steps
    official_episodes: int  # OGBench's num_episodes (train episodes)
    p_random_action: float = 0.0
    noise: float = 0.1
    noise_smoothing: float = 0.5
    min_norm: float = 0.4

    @property
    def is_locomotion(self) -> bool:
        return self.family in ('antmaze', 'humanoidmaze', 'antsoccer')


def _manipulation_specs() -> dict[str, DatasetSpec]:
    sizes = {
        ('cube', 'single'): 1000,
        ('cube', 'double'): 1000,
        ('cube', 'triple'): 3000,
        ('cube', 'quadruple'): 5000,
        ('scene', None): 1000,
        ('puzzle', '3x3'): 1000,
        ('puzzle', '4x4'): 1000,
        ('puzzle', '4x5'): 3000,
        ('puzzle', '4x6'): 5000,
    }
    p_random_noisy = {'cube': 0.1, 'scene': 0.1, 'puzzle': 0.2}
    specs = {}
    for (family, variant), n in sizes.items():
        env_stem = family if variant is None else f'{family}-{variant}'
        for dtype in ('play', 'noisy'):
            name = f'{env_stem}-{dtype}-v0'
            specs[name] = DatasetSpec(
                name=name,
                env_name=f'{env_stem}-v0',
                family=family,
                dataset_type=dtype,
                episode_length=1001,
                official_episodes=n,
                p_random_action=p_random_noisy[family] if dtype == 'noisy' else 0.0,
            )
    return specs


def _locomotion_specs() -> dict[str, DatasetSpec]:
    # (env stem, dataset type) -> (num_episodes, max_episode_steps)
    table = {
        ('antmaze-medium', 'navigate'): (1000, 1001),
        ('antmaze-large', 'navigate'): (1000, 1001),
        ('antmaze-giant', 'navigate'): (500, 2001),
        ('antmaze-teleport', 'navigate'): (1000, 1001),
        ('antmaze-medium', 'stitch'): (5000, 201),
        ('antmaze-large', 'stitch'): (5000, 201),
        ('antmaze-giant', 'stitch'): (5000, 201),
        ('antmaze-teleport', 'stitch'): (5000, 201),
        ('antmaze-medium', 'explore'): (10000, 501),
        ('antmaze-large', 'explore'): (10000, 501),
        ('antmaze-teleport', 'explore'): (10000, 501),
        ('humanoidmaze-medium', 'navigate'): (1000, 2001),
        ('humanoidmaze-large', 'navigate'): (1000, 2001),
        ('humanoidmaze-giant', 'navigate'): (1000, 4001),
        ('humanoidmaze-medium', 'stitch'): (5000, 401),
        ('humanoidmaze-large', 'stitch'): (5000, 401),
        ('humanoidmaze-giant', 'stitch'): (10000, 401),
        ('antsoccer-arena', 'navigate'): (1000, 1001),
        ('antsoccer-medium', 'navigate'): (4000, 1001),
        ('antsoccer-arena', 'stitch'): (5000, 201),
        ('antsoccer-medium', 'stitch'): (8000, 501),
    }
    specs = {}
    for (stem, dtype), (n, length) in table.items():
        name = f'{stem}-{dtype}-v0'
        specs[name] = DatasetSpec(
            name=name,
            env_name=f'{stem}-v0',
            family=stem.split('-')[0],
            dataset_type=dtype,
            episode_length=length,
            official_episodes=n,
        )
    return specs


_MANIP_SPECS = _manipulation_specs()
_LOCO_SPECS = _locomotion_specs()

#: OGBench manipulation datasets that can be generated exactly as OGBench does.
KNOWN_MANIPULATION = frozenset(_MANIP_SPECS)
#: OGBench locomotion datasets: need expert policies that are not shipped (stand-in only).
LOCOMOTION = frozenset(_LOCO_SPECS)

_STANDIN_NOTE = 'stand-in data: random actions, for tests/code paths only'


def default_data_dir() -> str:
    """``$FLOQ_DATA_DIR`` if set, else the user cache (``floq.data.files.default_data_dir``)."""
    from floq.data.files import default_data_dir as data_dir

    return data_dir()


def base_dataset_name(dataset_name: str) -> str:
    """Strip ``singletask``/``taskN``/``oraclerep``/``standin`` from an OGBench dataset name.

    ``cube-single-play-singletask-task1-v0`` -> ``cube-single-play-v0``.
    """
    parts = dataset_name.strip().split('-')
    keep = [p for p in parts if p not in ('singletask', 'oraclerep', 'standin') and not re.fullmatch(r'task\d+', p)]
    return '-'.join(keep)


def resolve(dataset_name: str, standin: bool = False) -> DatasetSpec:
    """Map a (possibly singletask) OGBench dataset name to its spec; ``ValueError`` if unusable."""
    if not isinstance(dataset_name, str) or not dataset_name:
        raise ValueError(f'dataset name must be a non-empty string, got {dataset_name!r}')
    base = base_dataset_name(dataset_name)
    if base in _MANIP_SPECS:
        return _MANIP_SPECS[base]
    if base in _LOCO_SPECS:
        if not standin:
            raise ValueError(
                f'{base}: locomotion datasets need OGBench\'s expert policies, which are not shipped, '
                f'so they cannot be generated locally; pass standin=True (CLI: --standin) for '
                f'random-action stand-in data usable only for tests/code paths'
            )
        return _LOCO_SPECS[base]
    if base.startswith('visual-'):
        raise ValueError(f'{dataset_name}: visual datasets need rendering and are not supported')
    known = ', '.join(sorted(KNOWN_MANIPULATION))
    raise ValueError(f'unknown dataset {dataset_name!r}; can generate: {known} (and, with standin, locomotion)')


def output_name(spec: DatasetSpec, standin: bool) -> str:
    """File stem of the train file: the dataset name, with ``-standin`` before ``-v0`` for stand-ins."""
    if spec.is_locomotion and standin:
        return spec.name[: -len('-v0')] + '-standin-v0'
    return spec.name


# --------------------------------------------------------------------------------------------
# Episode collection (runs in the calling process or in worker processes).
# --------------------------------------------------------------------------------------------

_SPLIT_IDS = {'train': 0, 'val': 1}
_MAX_ATTEMPTS = 1000  # scene health-check retries per episode


def _episode_seeds(seed: int, split: str, episode: int, attempt: int) -> np.ndarray:
    """Four independent 32-bit seeds for one attempt at one episode."""
    return np.random.SeedSequence([seed, _SPLIT_IDS[split], episode, attempt]).generate_state(4)


@dataclass(frozen=True)
class _Job:
    spec: DatasetSpec
    seed: int
    episode_length: int
    standin: bool


class _Collector:
    """Owns one environment (+ oracles) and produces episodes on demand."""

    def __init__(self, job: _Job):
        import gymnasium

        import ogbench  # noqa: F401  (registers the envs)

        self.job = job
        spec = job.spec
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            if spec.is_locomotion:
                self.env = gymnasium.make(
                    spec.env_name, terminate_at_goal=False, max_episode_steps=job.episode_length
                )
            else:
                self.env = gymnasium.make(
                    spec.env_name,
                    terminate_at_goal=False,
                    mode='data_collection',
                    max_episode_steps=job.episode_length,
                )
        self.has_button_states = hasattr(self.env.unwrapped, '_cur_button_states')
        self.agents = None if spec.is_locomotion else self._make_oracles()
        self._carry = self._snapshot_carry() if not spec.is_locomotion else None
        if spec.is_locomotion:
            maze_map = self.env.unwrapped.maze_map
            self.free_cells = [tuple(int(x) for x in ij) for ij in np.argwhere(maze_map == 0)]

    # Target fields that manipspace's ``set_new_target`` only rewrites for the sub-task it picks.
    # OGBench's loop hands an oracle the step ``info`` from *before* ``set_new_target`` on the
    # first step of a new sub-task, so stale values of these fields (possibly left over from the
    # previous episode) reach one action. To make each episode a pure function of its seed (and
    # thus independent of how episodes are spread over workers) they are reset to a fixed
    # snapshot before every episode.
    _CARRY_ATTRS = (
        '_target_task',
        '_target_block',
        '_target_button',
        '_target_button_states',
        '_target_drawer_pos',
        '_target_window_pos',
    )
    _CARRY_SITES = ('_drawer_target_site_id', '_window_target_site_id')

    def _snapshot_carry(self) -> dict:
        u = self.env.unwrapped
        saved = np.random.get_state()
        try:
            np.random.seed(0)
            self.env.reset(seed=0)
        finally:
            np.random.set_state(saved)
        attrs = {k: copy.deepcopy(getattr(u, k)) for k in self._CARRY_ATTRS if hasattr(u, k)}
        sites = {k: u._model.site_pos[getattr(u, k)].copy() for k in self._CARRY_SITES if hasattr(u, k)}
        return {'attrs': attrs, 'sites': sites}

    def _restore_carry(self) -> None:
        u = self.env.unwrapped
        for k, v in self._carry['attrs'].items():
            setattr(u, k, copy.deepcopy(v))
        for k, v in self._carry['sites'].items():
            u._model.site_pos[getattr(u, k)] = v

    def _make_oracles(self) -> dict:
        spec, env = self.job.spec, self.env
        if spec.dataset_type == 'noisy':
            from ogbench.manipspace.oracles.markov.button_markov import ButtonMarkovOracle
            from ogbench.manipspace.oracles.markov.cube_markov import CubeMarkovOracle
            from ogbench.manipspace.oracles.markov.drawer_markov import DrawerMarkovOracle
            from ogbench.manipspace.oracles.markov.window_markov import WindowMarkovOracle

            kw = dict(env=env, min_norm=spec.min_norm)
            if spec.family == 'cube':
                return {'cube': CubeMarkovOracle(**kw)}
            if spec.family == 'scene':
                return {
                    'cube': CubeMarkovOracle(**kw, max_step=100),
                    'button': ButtonMarkovOracle(**kw),
                    'drawer': DrawerMarkovOracle(**kw),
                    'window': WindowMarkovOracle(**kw),
                }
            return {'button': ButtonMarkovOracle(**kw, gripper_always_closed=True)}
        from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
        from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
        from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
        from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

        kw = dict(env=env, noise=spec.noise, noise_smoothing=spec.noise_smoothing)
        if spec.family == 'cube':
            return {'cube': CubePlanOracle(**kw)}
        if spec.family == 'scene':
            return {
                'cube': CubePlanOracle(**kw),
                'button': ButtonPlanOracle(**kw),
                'drawer': DrawerPlanOracle(**kw),
                'window': WindowPlanOracle(**kw),
            }
        return {'button': ButtonPlanOracle(**kw, gripper_always_closed=True)}

    def episode(self, split: str, index: int) -> dict[str, np.ndarray]:
        """Collect episode ``index`` of ``split``; a pure function of (job, split, index)."""
        saved = np.random.get_state()  # the oracles draw from numpy's global RNG
        try:
            for attempt in range(_MAX_ATTEMPTS):
                seeds = _episode_seeds(self.job.seed, split, index, attempt)
                np.random.seed(int(seeds[0]))
                if self.job.spec.is_locomotion:
                    # locomaze resets take random stabilising steps with action_space.sample().
                    # (manipspace's action_space is a new Box per access, so seeding it is moot.)
                    self.env.action_space.seed(int(seeds[2]))
                if self.job.spec.is_locomotion:
                    ep = self._standin_episode(seeds)
                else:
                    ep = self._manip_episode(seeds)
                if ep is not None:
                    return ep
            raise RuntimeError(f'{self.job.spec.name}: no healthy episode in {_MAX_ATTEMPTS} attempts')
        finally:
            np.random.set_state(saved)

    def _p_stack(self) -> float:
        env_name = self.job.spec.env_name
        if 'single' in env_name:
            return 0.0
        if 'double' in env_name:
            return np.random.uniform(0.0, 0.25)
        if 'triple' in env_name:
            return np.random.uniform(0.05, 0.35)
        if 'quadruple' in env_name:
            return np.random.uniform(0.1, 0.5)
        return 0.5

    def _manip_episode(self, seeds) -> dict[str, np.ndarray] | None:
        spec, env = self.job.spec, self.env
        noisy = spec.dataset_type == 'noisy'
        self._restore_carry()
        ob, info = env.reset(seed=int(seeds[1]))
        p_stack = self._p_stack()
        xi = np.random.uniform(0, spec.noise) if noisy else 0.0
        agent = self.agents[info['privileged/target_task']]
        agent.reset(ob, info)

        obs, acts, qpos, qvel, buttons = [], [], [], [], []
        done = False
        while not done:
            if spec.p_random_action > 0 and np.random.rand() < spec.p_random_action:
                # OGBench calls env.action_space.sample(), but manipspace builds a fresh, unseeded
                # Box on every access; draw the same U[-1, 1]^5 from the seeded RNG instead.
                action = np.random.uniform(-1.0, 1.0, size=5)
            else:
                action = np.asarray(agent.select_action(ob, info), dtype=np.float64)
                if noisy:
                    action = action + np.random.normal(0, [xi, xi, xi, 3 * xi, 10 * xi], action.shape)
            action = np.clip(action, -1, 1)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = bool(terminated or truncated)
            if agent.done:
                # Current sub-task finished: the env samples a new target, an oracle takes over.
                agent_ob, agent_info = env.unwrapped.set_new_target(p_stack=p_stack)
                agent = self.agents[agent_info['privileged/target_task']]
                agent.reset(agent_ob, agent_info)
            obs.append(ob)
            acts.append(action)
            qpos.append(info['prev_qpos'])
            qvel.append(info['prev_qvel'])
            if self.has_button_states:
                buttons.append(info['prev_button_states'])
            ob = next_ob

        qpos = np.asarray(qpos, dtype=np.float32)
        if spec.family == 'scene' and not _scene_healthy(qpos):
            return None
        return self._pack(obs, acts, qpos, qvel, buttons)

    def _standin_episode(self, seeds) -> dict[str, np.ndarray]:
        spec, env = self.job.spec, self.env
        cells = self.free_cells
        picks = np.random.choice(len(cells), 3, replace=False)
        if spec.family == 'antsoccer':
            task_info = dict(agent_init_ij=cells[picks[0]], ball_init_ij=cells[picks[1]], goal_ij=cells[picks[2]])
        else:
            task_info = dict(init_ij=cells[picks[0]], goal_ij=cells[picks[2]])
        ob, info = env.reset(seed=int(seeds[1]), options=dict(task_info=task_info))
        rng = np.random.default_rng(int(seeds[3]))
        dim = env.action_space.shape[0]
        alpha, sigma = 0.9, 0.6  # AR(1) noise: temporally smooth random actions
        a = rng.normal(0.0, sigma, dim)
        obs, acts, qpos, qvel = [], [], [], []
        done = False
        while not done:
            a = alpha * a + np.sqrt(1 - alpha**2) * rng.normal(0.0, sigma, dim)
            action = np.clip(a, -1, 1)
            next_ob, _, terminated, truncated, info = env.step(action)
            done = bool(terminated or truncated)
            obs.append(ob)
            acts.append(action)
            qpos.append(info['prev_qpos'])
            qvel.append(info['prev_qvel'])
            ob = next_ob
        return self._pack(obs, acts, np.asarray(qpos, dtype=np.float32), qvel, [])

    def _pack(self, obs, acts, qpos, qvel, buttons) -> dict[str, np.ndarray]:
        n = len(obs)
        ep = {
            'observations': np.asarray(obs, dtype=np.float32),
            'actions': np.asarray(acts, dtype=np.float32),
            'terminals': np.zeros(n, dtype=bool),
            'qpos': np.asarray(qpos, dtype=np.float32),
            'qvel': np.asarray(qvel, dtype=np.float32),
        }
        ep['terminals'][-1] = True
        if self.has_button_states:
            ep['button_states'] = np.asarray(buttons, dtype=np.int64)
        return ep


def _scene_healthy(qpos: np.ndarray) -> bool:
    """OGBench's scene check: the cube stays visible unless it is inside the drawer."""
    xyz = qpos[:, 14:17]
    if (xyz[:, 1] >= 0.29).any():  # too far right
        return False
    left_outside_drawer = (xyz[:, 1] <= -0.3) & ((xyz[:, 2] < 0.06) | (xyz[:, 2] > 0.08))
    return not left_outside_drawer.any()


# Worker-process state (spawned workers build one collector each).
_WORKER: _Collector | None = None


def _worker_init(job: _Job, parent_pid: int | None = None) -> None:
    global _WORKER
    if parent_pid is not None:  # stop signals are the parent's to handle; end with the parent
        from floq.interrupts import worker_guard

        worker_guard(parent_pid)
    _WORKER = _Collector(job)


def _worker_episode(task: tuple[str, int]) -> dict[str, np.ndarray]:
    return _WORKER.episode(*task)


# --------------------------------------------------------------------------------------------
# Writing.
# --------------------------------------------------------------------------------------------


class _Buffer:
    """Preallocated per-split arrays (all episodes have the same length)."""

    def __init__(self, n_episodes: int, length: int):
        self.n_episodes, self.length, self.arrays, self.count = n_episodes, length, None, 0

    def add(self, ep: dict[str, np.ndarray]) -> None:
        n = len(ep['terminals'])
        if n != self.length:
            raise RuntimeError(f'episode has {n} steps, expected {self.length}')
        if self.arrays is None:
            total = self.n_episodes * self.length
            self.arrays = {k: np.empty((total,) + v.shape[1:], dtype=v.dtype) for k, v in ep.items()}
        lo = self.count * self.length
        for k, v in ep.items():
            self.arrays[k][lo : lo + n] = v
        self.count += 1


def _write_npz_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write ``path`` so that it either appears complete or not at all."""
    from floq.results import atomic_open

    with atomic_open(path, 'wb') as f:
        np.savez_compressed(f, **arrays)


# --------------------------------------------------------------------------------------------
# Public API.
# --------------------------------------------------------------------------------------------


def generate(
    dataset_name: str,
    episodes: int,
    out_dir: str,
    seed: int = 0,
    workers: int = 1,
    val_episodes: int | None = None,
    progress: bool = True,
    standin: bool = False,
    episode_length: int | None = None,
) -> tuple[str, str]:
    """Generate an OGBench dataset locally; return ``(train_path, val_path)``.

    Args:
        dataset_name: OGBench dataset name (``cube-single-play-v0``, ``puzzle-4x4-noisy-v0``, ...);
            singletask/oraclerep names are reduced to their base dataset.
        episodes: number of train episodes (OGBench uses 1000 for 1M transitions).
        out_dir: directory for ``<name>.npz`` and ``<name>-val.npz`` (created if needed).
        seed: base seed; output is a deterministic function of the arguments except
            ``workers``/``progress``.
        workers: processes to spread episodes over ('spawn' context).
        val_episodes: episodes in the val file; default ``max(1, episodes // 10)``.
        progress: show a tqdm bar over episodes.
        standin: allow locomotion datasets, filled with random-action stand-in data (file name
            contains ``standin``; for tests/code paths only).
        episode_length: override OGBench's ``max_episode_steps`` (1001 for manipulation).

    Raises:
        ValueError: unknown name, locomotion without ``standin``, or bad counts.
    """
    spec = resolve(dataset_name, standin=standin)
    for label, value, lo in (('episodes', episodes, 1), ('workers', workers, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
            raise ValueError(f'{label} must be an integer >= {lo}, got {value!r}')
    if val_episodes is None:
        val_episodes = max(1, int(episodes) // 10)
    if isinstance(val_episodes, bool) or not isinstance(val_episodes, (int, np.integer)) or val_episodes < 1:
        raise ValueError(f'val_episodes must be an integer >= 1, got {val_episodes!r}')
    length = spec.episode_length if episode_length is None else episode_length
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 2:
        raise ValueError(f'episode_length must be an integer >= 2, got {episode_length!r}')
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f'seed must be a non-negative integer, got {seed!r}')

    out_dir = os.path.expanduser(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    stem = output_name(spec, standin)
    train_path = os.path.join(out_dir, f'{stem}.npz')
    val_path = os.path.join(out_dir, f'{stem}-val.npz')

    job = _Job(spec=spec, seed=int(seed), episode_length=int(length), standin=bool(standin))
    tasks = [('train', i) for i in range(int(episodes))] + [('val', i) for i in range(int(val_episodes))]
    buffers = {'train': _Buffer(int(episodes), int(length)), 'val': _Buffer(int(val_episodes), int(length))}
    workers = min(int(workers), len(tasks))

    from tqdm import tqdm

    desc = f'{stem} ({_STANDIN_NOTE})' if spec.is_locomotion else stem
    with tqdm(total=len(tasks), desc=desc, unit='ep', disable=not progress, dynamic_ncols=True) as bar:
        if workers == 1:
            collector = _Collector(job)
            for split, i in tasks:
                buffers[split].add(collector.episode(split, i))
                bar.update(1)
        else:
            from floq.interrupts import signals_blocked

            ctx = mp.get_context('spawn')
            # The workers start with the stop signals blocked, then ignore them and watch this
            # process: a stop signal here leaves the `with` (Pool.terminate ends the workers), and
            # a SIGKILL here leaves workers that exit by themselves.
            with signals_blocked():
                pool = ctx.Pool(workers, initializer=_worker_init, initargs=(job, os.getpid()))
            with pool:
                for (split, _), ep in zip(tasks, pool.imap(_worker_episode, tasks, chunksize=1)):
                    buffers[split].add(ep)
                    bar.update(1)

    # Val first: a train file on disk implies its val file is complete too.
    _write_npz_atomic(val_path, buffers['val'].arrays)
    _write_npz_atomic(train_path, buffers['train'].arrays)
    return train_path, val_path


# --------------------------------------------------------------------------------------------
# CLI: floq data generate DATASET --episodes N [--out DIR] [--seed S] [--workers W] ...
# --------------------------------------------------------------------------------------------


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of usage + message
        self.exit(2, f'{self.prog}: error: {message}\n')


def _build_parser() -> argparse.ArgumentParser:
    p = _OneLineParser(
        prog='floq data generate',
        description='Generate an OGBench dataset locally (OGBench file format). Manipulation '
        'datasets follow OGBench\'s scripted-oracle procedure; locomotion only as --standin.',
    )
    p.add_argument('dataset', help='OGBench dataset name, e.g. cube-single-play-v0')
    p.add_argument('--episodes', type=int, default=None,
                   help='train episodes (default: OGBench\'s count for the dataset, e.g. 1000)')
    from floq.results import path_arg

    p.add_argument('--out', default=None, type=path_arg,
                   help='output directory (default: $FLOQ_DATA_DIR, else ~/.cache/floq/data)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--workers', type=int, default=1, help='worker processes')
    p.add_argument('--val-episodes', type=int, default=None, help='val episodes (default: max(1, episodes // 10))')
    p.add_argument('--standin', action='store_true',
                   help='locomotion only: write random-action stand-in data (tests/code paths only)')
    p.add_argument('--episode-length', type=int, default=None, help='override max episode steps')
    p.add_argument('--no-progress', action='store_true', help='hide the progress bar')
    return p


def main(argv: list[str] | None = None) -> int:
    """CLI entry (``floq data generate ...``; ``argv`` = the arguments after ``generate``).

    Prints the train and val paths on success and returns 0; on bad input prints one line to
    stderr and exits with status 2. Uses 'spawn' worker processes, so a script calling this must
    guard its entry point with ``if __name__ == '__main__'``.
    """
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        spec = resolve(args.dataset, standin=args.standin)
        episodes = spec.official_episodes if args.episodes is None else args.episodes
        if episodes <= 0:
            raise ValueError(f'--episodes must be positive, got {episodes}')
        if args.workers <= 0:
            raise ValueError(f'--workers must be positive, got {args.workers}')
        if args.val_episodes is not None and args.val_episodes <= 0:
            raise ValueError(f'--val-episodes must be positive, got {args.val_episodes}')
        if args.episode_length is not None and args.episode_length < 2:
            raise ValueError(f'--episode-length must be >= 2, got {args.episode_length}')
        if args.seed < 0:
            raise ValueError(f'--seed must be non-negative, got {args.seed}')
    except ValueError as e:
        print(f'{parser.prog}: error: {e}', file=sys.stderr)
        sys.exit(2)
    out = args.out if args.out is not None else default_data_dir()
    from floq.config import ConfigError
    from floq.results import RunError, ensure_writable_dir

    try:
        ensure_writable_dir(out, '--out')  # a file or a read-only place: one line, nothing generated
    except ConfigError as e:
        print(f'{parser.prog}: error: {e}', file=sys.stderr)
        sys.exit(2)
    if spec.is_locomotion:
        print(f'WARNING: {spec.name}: writing {_STANDIN_NOTE}', file=sys.stderr)
    from floq.interrupts import Interrupted, phase_signals

    try:
        with phase_signals('data generation'):
            train_path, val_path = generate(
                args.dataset,
                episodes,
                out,
                seed=args.seed,
                workers=args.workers,
                val_episodes=args.val_episodes,
                progress=not args.no_progress,
                standin=args.standin,
                episode_length=args.episode_length,
            )
    except Interrupted as e:  # the workers are ended and nothing was written
        print(f'{parser.prog}: {e.message()}', file=sys.stderr)
        sys.exit(e.exit_code)
    except (RunError, OSError) as e:  # a full disk, a vanished folder: one line (nothing is left behind)
        msg = str(e) if isinstance(e, RunError) else f'{type(e).__name__}: {e.strerror or e}'
        print(f'{parser.prog}: error: {msg}', file=sys.stderr)
        sys.exit(1)
    print(train_path)
    print(val_path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
