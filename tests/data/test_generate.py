"""Tests for floq.data.generate (local OGBench dataset generation). Kept short: tiny episodes."""

import os

import numpy as np
import pytest

from floq.data import generate as gen

pytestmark = pytest.mark.filterwarnings('ignore::UserWarning')  # gymnasium Box dtype chatter

CUBE_LEN = 60  # steps per episode in these tests (OGBench uses 1001)
CUBE_EPISODES = 2
CUBE_VAL_EPISODES = 1


def _load_npz(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope='module')
def cube_files(tmp_path_factory):
    out = tmp_path_factory.mktemp('cube')
    return gen.generate(
        'cube-single-play-v0',
        CUBE_EPISODES,
        str(out),
        seed=0,
        workers=1,
        val_episodes=CUBE_VAL_EPISODES,
        progress=False,
        episode_length=CUBE_LEN,
    )


def test_cube_file_format(cube_files):
    train_path, val_path = cube_files
    assert os.path.basename(train_path) == 'cube-single-play-v0.npz'
    assert os.path.basename(val_path) == 'cube-single-play-v0-val.npz'
    assert not [f for f in os.listdir(os.path.dirname(train_path)) if f.endswith('.tmp')]
    for path, n_eps in ((train_path, CUBE_EPISODES), (val_path, CUBE_VAL_EPISODES)):
        d = _load_npz(path)
        assert set(d) == {'observations', 'actions', 'terminals', 'qpos', 'qvel'}
        n = n_eps * CUBE_LEN
        assert d['observations'].shape == (n, 28) and d['observations'].dtype == np.float32
        assert d['actions'].shape == (n, 5) and d['actions'].dtype == np.float32
        assert d['qpos'].shape == (n, 21) and d['qpos'].dtype == np.float32
        assert d['qvel'].shape == (n, 20) and d['qvel'].dtype == np.float32
        assert d['terminals'].shape == (n,) and d['terminals'].dtype == bool
        # terminals mark exactly the last step of each episode
        assert np.flatnonzero(d['terminals']).tolist() == [CUBE_LEN * (i + 1) - 1 for i in range(n_eps)]
        assert np.all(np.abs(d['actions']) <= 1.0)
        assert np.isfinite(d['observations']).all()
    # the plan oracle actually moves the arm (not a constant action stream)
    d = _load_npz(train_path)
    assert d['actions'][:, :3].std() > 0.01


def test_cube_loads_through_ogbench_singletask(cube_files):
    import ogbench

    train_path, _ = cube_files
    env, train, val = ogbench.make_env_and_datasets('cube-single-play-singletask-task1-v0', dataset_path=train_path)
    # regular (non-compact) dataset: the last step of each episode has no next observation
    assert len(train['observations']) == CUBE_EPISODES * (CUBE_LEN - 1)
    assert len(val['observations']) == CUBE_VAL_EPISODES * (CUBE_LEN - 1)
    for ds in (train, val):
        assert {'rewards', 'masks', 'next_observations'} <= set(ds)
        assert set(np.unique(ds['rewards'])) <= {-1.0, 0.0}
        assert set(np.unique(ds['masks'])) <= {0.0, 1.0}
        assert np.all(np.abs(ds['actions']) <= 1.0)
        assert ds['observations'].shape[1] == env.observation_space.shape[0]
    env.close()


@pytest.mark.subprocess  # two generator worker processes: the processes are what is proved
def test_deterministic_and_worker_invariant(cube_files, tmp_path):
    # Same seed with 2 worker processes -> byte-identical arrays to the 1-worker run.
    train_path, val_path = cube_files
    t2, v2 = gen.generate(
        'cube-single-play-singletask-task1-v0',  # singletask name reduces to the base dataset
        CUBE_EPISODES,
        str(tmp_path),
        seed=0,
        workers=2,
        val_episodes=CUBE_VAL_EPISODES,
        progress=False,
        episode_length=CUBE_LEN,
    )
    assert os.path.basename(t2) == 'cube-single-play-v0.npz'
    for a, b in ((train_path, t2), (val_path, v2)):
        da, db = _load_npz(a), _load_npz(b)
        assert set(da) == set(db)
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=k)


def test_seed_changes_data(cube_files, tmp_path):
    t, _ = gen.generate(
        'cube-single-play-v0', 1, str(tmp_path), seed=1, val_episodes=1, progress=False, episode_length=CUBE_LEN
    )
    a = _load_npz(cube_files[0])['observations'][:CUBE_LEN]
    b = _load_npz(t)['observations']
    assert a.shape == b.shape and not np.array_equal(a, b)


@pytest.mark.parametrize(
    'name,singletask,n_buttons',
    [
        ('puzzle-3x3-noisy-v0', 'puzzle-3x3-noisy-singletask-task1-v0', 9),
        ('scene-play-v0', 'scene-play-singletask-task1-v0', 2),
    ],
)
def test_button_states(tmp_path, name, singletask, n_buttons):
    import ogbench

    length = 40
    train_path, val_path = gen.generate(name, 1, str(tmp_path), val_episodes=1, progress=False, episode_length=length)
    d = _load_npz(train_path)
    assert d['button_states'].shape == (length, n_buttons)
    assert d['button_states'].dtype == np.int64
    assert set(np.unique(d['button_states'])) <= {0, 1}
    # relabelling the puzzle/scene singletask rewards reads button_states
    _, train, _ = ogbench.make_env_and_datasets(singletask, dataset_path=train_path)
    assert len(train['rewards']) == length - 1
    assert train['rewards'].max() <= 0.0


def test_locomotion_requires_standin(tmp_path):
    with pytest.raises(ValueError, match='standin'):
        gen.generate('antmaze-large-navigate-v0', 1, str(tmp_path), progress=False)
    with pytest.raises(ValueError, match='standin'):
        gen.generate('antmaze-large-navigate-singletask-task1-v0', 1, str(tmp_path), progress=False)
    assert os.listdir(tmp_path) == []


def test_locomotion_standin_loads(tmp_path):
    import ogbench

    length = 30
    train_path, val_path = gen.generate(
        'antmaze-large-navigate-v0', 2, str(tmp_path), val_episodes=1, progress=False, standin=True,
        episode_length=length,
    )
    assert os.path.basename(train_path) == 'antmaze-large-navigate-standin-v0.npz'
    assert os.path.basename(val_path) == 'antmaze-large-navigate-standin-v0-val.npz'
    d = _load_npz(train_path)
    assert set(d) == {'observations', 'actions', 'terminals', 'qpos', 'qvel'}
    assert d['actions'].shape == (2 * length, 8) and np.all(np.abs(d['actions']) <= 1.0)
    assert d['qpos'].shape == (2 * length, 15) and d['qvel'].shape == (2 * length, 14)
    env, train, val = ogbench.make_env_and_datasets(
        'antmaze-large-navigate-singletask-task1-v0', dataset_path=train_path
    )
    assert len(train['observations']) == 2 * (length - 1) and len(val['observations']) == length - 1
    assert set(np.unique(train['rewards'])) <= {-1.0, 0.0}
    env.close()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='unknown dataset'):
        gen.generate('cube-sextuple-play-v0', 1, str(tmp_path))
    with pytest.raises(ValueError, match='episodes'):
        gen.generate('cube-single-play-v0', 0, str(tmp_path))
    with pytest.raises(ValueError, match='workers'):
        gen.generate('cube-single-play-v0', 1, str(tmp_path), workers=0)
    assert os.listdir(tmp_path) == []


def test_catalogue():
    assert {'cube-single-play-v0', 'cube-double-noisy-v0', 'scene-play-v0', 'puzzle-4x4-play-v0'} <= gen.KNOWN_MANIPULATION
    assert {'antmaze-large-navigate-v0', 'humanoidmaze-medium-navigate-v0', 'antsoccer-arena-navigate-v0'} <= gen.LOCOMOTION
    assert not gen.KNOWN_MANIPULATION & gen.LOCOMOTION
    assert gen.base_dataset_name('puzzle-4x4-play-singletask-task3-v0') == 'puzzle-4x4-play-v0'
    assert gen.resolve('cube-triple-noisy-v0').p_random_action == 0.1
    assert gen.resolve('puzzle-3x3-noisy-v0').p_random_action == 0.2
    assert gen.resolve('cube-triple-play-v0').official_episodes == 3000


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv('FLOQ_DATA_DIR', str(tmp_path))
    assert gen.default_data_dir() == str(tmp_path)
    monkeypatch.delenv('FLOQ_DATA_DIR')
    monkeypatch.delenv('FLOQ_CACHE_DIR', raising=False)
    monkeypatch.delenv('XDG_CACHE_HOME', raising=False)
    assert gen.default_data_dir() == os.path.expanduser('~/.cache/floq/data')  # the README's, make demo's
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
    assert gen.default_data_dir() == str(tmp_path / 'xdg' / 'floq' / 'data')
    monkeypatch.setenv('FLOQ_CACHE_DIR', str(tmp_path / 'fc'))
    assert gen.default_data_dir() == str(tmp_path / 'fc' / 'data')  # as the Makefile derives it


def test_a_dataset_in_the_old_cache_is_still_read(monkeypatch, tmp_path):
    """A dataset generated before the cache moved (~/.floq/data) is used, not made again; a new
    one goes to the new folder; $FLOQ_DATA_DIR, when set, is the only place."""
    from floq.data.sources import Task, generated_path

    for var in ('FLOQ_DATA_DIR', 'FLOQ_CACHE_DIR', 'XDG_CACHE_HOME'):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    task = Task(env='cube-single-play', source='generate', generate_episodes=7)
    new = tmp_path / '.cache' / 'floq' / 'data' / 'cube-single-play-v0-e7-s0.npz'
    assert generated_path(task) == str(new)
    old = tmp_path / '.floq' / 'data' / 'cube-single-play-v0-e7-s0.npz'
    old.parent.mkdir(parents=True)
    old.write_bytes(b'x')
    assert generated_path(task) == str(new)  # no val twin: not a cached dataset
    (old.parent / 'cube-single-play-v0-e7-s0-val.npz').write_bytes(b'x')
    assert generated_path(task) == str(old)
    monkeypatch.setenv('FLOQ_DATA_DIR', str(tmp_path / 'mine'))
    assert generated_path(task) == str(tmp_path / 'mine' / 'cube-single-play-v0-e7-s0.npz')


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    path = str(tmp_path / 'x.npz')

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, 'savez_compressed', boom)
    with pytest.raises(KeyboardInterrupt):
        gen._write_npz_atomic(path, {'a': np.zeros(3)})
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    'argv,needle',
    [
        (['cube-sextuple-play-v0', '--episodes', '3'], 'unknown dataset'),
        (['cube-single-play-v0', '--episodes', '0'], 'episodes'),
        (['cube-single-play-v0', '--episodes', '-2'], 'episodes'),
        (['cube-single-play-v0', '--episodes', 'many'], 'episodes'),
        (['antmaze-large-navigate-v0', '--episodes', '3'], 'standin'),
        ([], 'dataset'),
    ],
)
def test_cli_bad_input(argv, needle, capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        gen.main(argv + ['--out', str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and needle in err, err
    assert os.listdir(tmp_path) == []


def test_cli_generates(tmp_path, capsys):
    rc = gen.main(
        ['antsoccer-arena-navigate-v0', '--episodes', '1', '--out', str(tmp_path), '--standin',
         '--episode-length', '10', '--no-progress']
    )
    assert rc == 0
    train_path, val_path = capsys.readouterr().out.split()
    assert os.path.basename(train_path) == 'antsoccer-arena-navigate-standin-v0.npz'
    assert os.path.exists(train_path) and os.path.exists(val_path)
    assert len(_load_npz(val_path)['terminals']) == 10



ENSURE = """
import sys
from floq.data.sources import Task, ensure_generated
task = Task(env="cube-single-play", source="generate", generate_episodes=1, episode_length=int(sys.argv[1]))
print(ensure_generated(task, progress=False))
"""



@pytest.mark.subprocess  # two trainer processes and a lock: the processes are what is proved
def test_concurrent_generation_of_one_dataset(tmp_path):
    """Two trainers asking for the same generated dataset at once (a sweep's two workers): one
    generates under an exclusive lock in a private folder, the other waits for it, then finds
    the file (both once wrote the same temporary files; one failed with FileNotFoundError).
    Here the test holds the lock: a trainer must wait, then finish once it is released."""
    import fcntl
    import subprocess
    import sys
    import time

    from floq.data.sources import Task, generated_path

    env = {**os.environ, "FLOQ_DATA_DIR": str(tmp_path)}
    task_path = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLOQ_DATA_DIR", str(tmp_path))
        task_path = generated_path(Task(env="cube-single-play", source="generate", generate_episodes=1,
                                        episode_length=CUBE_LEN))
    with open(task_path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        errs = [tmp_path / f"err{i}.txt" for i in range(2)]
        procs = [subprocess.Popen([sys.executable, "-c", ENSURE, str(CUBE_LEN)], env=env, stdout=subprocess.PIPE,
                                  stderr=open(e, "w"), text=True) for e in errs]
        deadline = time.time() + 120
        while time.time() < deadline and not all("waiting for another process" in e.read_text() for e in errs):
            assert [p.poll() for p in procs] == [None, None], "a trainer generated without taking the lock"
            time.sleep(0.1)
        assert all("waiting for another process" in e.read_text() for e in errs)
        assert not os.path.exists(task_path)
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e.read_text()[-500:] for e in errs]
    assert {o[0].strip().splitlines()[-1] for o in outs} == {task_path}
    assert os.path.isfile(task_path) and os.path.isfile(task_path.replace(".npz", "-val.npz"))
    leftovers = [n for n in os.listdir(tmp_path) if n.startswith(".generating-") or n == "cube-single-play-v0.npz"
                 or n.startswith("cube-single-play-v0-val")]
    assert leftovers == []
