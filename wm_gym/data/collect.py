"""Collect a dataset of full-length sim episodes with a collection policy, resumably.

Why it is built this way:

* Episode ``i`` depends only on ``(seed, i)`` (:func:`episode_seeds`), so the data is the
  same for any number of workers and for a run that was interrupted and resumed.
* Episodes always run the full length (the registered ``max_episode_steps``, or
  ``max_steps``) and ignore success: world-model datasets want whole trajectories; success
  is recorded per step instead.
* Sims with a native vector env (Wall) run a block of episodes as one batch (physics and
  rendering batched, the collection policies per row); the data is the same episode for episode.
* Each finished episode is written at once to ``DIR/.staging/episode_XXXXXX.npz`` (tmp file,
  then ``os.replace``). Re-running the same command after Ctrl-C or a kill skips those
  episodes. At the end the shards are consolidated into the Minari dataset (see dataset.py),
  ``meta.json`` is written last, and the staging folder is removed.
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .dataset import (
    FORMAT_NAME, FORMAT_VERSION, META_DEFAULTS, META_FILE, MINARI_DIR, STAGING_DIR, Episode, is_complete, read_meta,
    write_dataset, write_json_atomic,
)

_PARAMS_FILE = "params.json"
#: The settings that determine the data; a DIR collected with other values is never mixed in.
_PARAM_KEYS = ("format_version", "env_id", "policy", "seed", "image_size", "episode_length", "goal_split", "frame_stride",
               "look", "view")


def episode_seeds(seed: int, index: int) -> tuple[int, np.random.Generator]:
    """The reset seed and the policy RNG of episode ``index``, from ``SeedSequence([seed, index])``.

    Public so that anyone can replay episode ``index`` of a dataset exactly.
    """
    reset_ss, policy_ss = np.random.SeedSequence([int(seed), int(index)]).spawn(2)
    return int(reset_ss.generate_state(1, np.uint32)[0]), np.random.default_rng(policy_ss)


def make_sim(env_id: str, image_size: int = 64, goal_split: str | None = None, look: str | None = None,
             task: bool = False):
    """``gym.make`` one of our sims (importing wm_gym registers them); ``goal_split`` for sims with recorded goal
    sets, ``look`` (a name of its ``SimSpec.looks``) for sims that can be drawn differently, ``task`` for the
    sim's own task episodes (``SimSpec.task_steps``: dm_control's starts and targets)."""
    import gymnasium as gym

    import wm_gym  # noqa: F401  (registers the env ids, also in spawned workers)
    from wm_gym.envs.registration import resolve_env_id, sim_spec

    env_id = resolve_env_id(env_id)  # a short name ("wall") works too
    spec = sim_spec(env_id)
    if look is not None and look not in spec.looks:
        raise ValueError(f"{env_id} has {'the looks ' + ', '.join(spec.looks) if spec.looks else 'no look options'}; "
                         f"got look={look!r}")
    if task and spec.task_steps is None:
        raise ValueError(f"{env_id} has no task episode of its own (the dm_control sims have)")
    options = {**({"goal_split": goal_split} if goal_split else {}), **({"look": look} if look else {}),
               **({"standard_task": True} if task else {})}
    return gym.make(env_id, image_size=image_size, **options)


def rollout(env, policy: str, seed: int, index: int, steps: int, frame_stride: int = 1) -> Episode:
    """Run episode ``index`` for exactly ``steps`` sim steps on the unwrapped sim.

    The unwrapped sim is stepped so that neither success termination nor the TimeLimit
    wrapper can cut the episode short. ``frame_stride`` k renders and keeps only every k-th
    frame (the sim's ``skip_pixels`` in between); the actions are the same as with k = 1.
    """
    from wm_gym.envs.policies import make_policy

    sim = env.unwrapped
    reset_seed, rng = episode_seeds(seed, index)
    obs, info = sim.reset(seed=reset_seed)
    pol = make_policy(env, policy, rng)
    pol.reset(obs, info)
    low, high = sim.action_space.low, sim.action_space.high
    record = StepRecord(obs, info, frame_stride)
    for _ in range(steps):
        action = np.clip(np.asarray(pol(obs, info), np.float32), low, high)
        sim.skip_pixels = not record.keeps_next_frame
        obs, reward, _terminated, _truncated, info = sim.step(action)
        record.add(action, reward, obs, info)
    sim.skip_pixels = False
    arrays = record.stacked(axis=0, action_dim=low.shape[0])
    return Episode(**arrays, goal=np.asarray(sim.goal, np.float64).copy(),
                   goal_pixels=np.asarray(sim.goal_pixels, np.uint8).copy(), seed=reset_seed, frame_stride=frame_stride)


class StepRecord:
    """What a rollout records, for one episode or for a batch of them stepped together: every sim step's
    action, and at every ``frame_stride``-th step (and the reset) the frame, proprio, state and success,
    with the rewards summed over the steps in between."""

    def __init__(self, obs: dict, info: dict, frame_stride: int = 1):
        self.lists = {"frames": [obs["pixels"]], "proprio": [obs["proprio"]], "states": [info["state"]],
                      "success": [info["is_success"]], "actions": [], "rewards": []}
        self.frame_stride, self.steps, self.reward = int(frame_stride), 0, 0.0

    @property
    def keeps_next_frame(self) -> bool:
        """Whether the next step's frame is stored (the sim renders it)."""
        return (self.steps + 1) % self.frame_stride == 0

    def add(self, action, reward, obs: dict, info: dict) -> None:
        keep = self.keeps_next_frame
        self.steps += 1
        self.lists["actions"].append(action)
        self.reward = self.reward + np.asarray(reward, np.float64)
        if keep:
            for name, value in (("rewards", self.reward), ("frames", obs["pixels"]), ("proprio", obs["proprio"]),
                                ("states", info["state"]), ("success", info["is_success"])):
                self.lists[name].append(value)
            self.reward = 0.0

    def stacked(self, axis: int, action_dim: int) -> dict[str, np.ndarray]:
        """Each list stacked along ``axis`` (0: one episode; 1: a batch [N, T, ...]) in the dataset's dtypes."""
        dtypes = {"frames": np.uint8, "proprio": np.float32, "states": np.float64, "success": bool,
                  "actions": np.float32, "rewards": np.float32}
        out = {name: np.stack(values, axis=axis).astype(dtypes[name], copy=False)
               for name, values in self.lists.items() if values}
        out.setdefault("actions", np.zeros((0, action_dim), np.float32))  # a 0-step episode
        out.setdefault("rewards", np.zeros(0, np.float32))
        return out


#: Episodes a native vector env runs together: large enough to amortise numpy's per-call overhead.
VECTOR_BLOCK = 256


def vector_rollouts(env, policy: str, seed: int, indices: list[int], steps: int, frame_stride: int = 1) -> list[Episode]:
    """:func:`rollout` of episodes ``indices`` of sim ``env`` (as :func:`make_sim` makes it), all at once on the
    sim's native vector env (same data).

    Row i is reset with episode i's seed and acts with its own policy object and generator, built on
    ``env`` (bounds, geometry), so each episode equals the single-env rollout of the same index bit for
    bit (tests/test_training_speed.py checks).
    """
    import gymnasium as gym

    from wm_gym.envs.policies import make_policy

    n = len(indices)
    vec = gym.make_vec(env.spec.id, num_envs=n, vectorization_mode="vector_entry_point", max_episode_steps=steps,
                       image_size=env.unwrapped.image_size, terminate_on_success=False,
                       **({"look": env.unwrapped.look} if hasattr(env.unwrapped, "look") else {}))
    seeds, rngs = zip(*(episode_seeds(seed, i) for i in indices))
    obs, info = vec.reset(seed=list(seeds))
    row = lambda tree, i: {k: None if v is None else v[i] for k, v in tree.items()}  # noqa: E731  (skipped pixels)
    policies = [make_policy(env, policy, rng) for rng in rngs]
    for i, pol in enumerate(policies):
        pol.reset(row(obs, i), row(info, i))
    low, high = env.unwrapped.action_space.low, env.unwrapped.action_space.high
    goal, goal_pixels = np.asarray(vec.unwrapped.goal, np.float64).copy(), np.asarray(vec.unwrapped.goal_pixels).copy()
    record = StepRecord(obs, info, frame_stride)
    for _ in range(steps):
        action = np.stack([np.clip(np.asarray(p(row(obs, i), row(info, i)), np.float32), low, high)
                           for i, p in enumerate(policies)])
        vec.unwrapped.skip_pixels = not record.keeps_next_frame
        obs, reward, _terminated, _truncated, info = vec.step(action)
        record.add(action, reward, obs, info)
    vec.close()
    arrays = record.stacked(axis=1, action_dim=low.shape[0])  # [N, T, ...]
    return [Episode(**{name: a[i] for name, a in arrays.items()}, goal=goal[i], goal_pixels=goal_pixels[i],
                    seed=seeds[i], frame_stride=frame_stride) for i in range(n)]


def _shard_path(staging: Path, index: int) -> Path:
    return staging / f"episode_{index:06d}.npz"


def _finished(staging: Path, episodes: int) -> set[int]:
    """Indices < ``episodes`` whose shard is on disk and readable (a damaged one is deleted)."""
    import zipfile

    done = set()
    for i in range(episodes):
        p = _shard_path(staging, i)
        if not p.exists():
            continue
        try:
            with zipfile.ZipFile(p) as z:
                if "frames.npy" in z.namelist():
                    done.add(i)
                    continue
        except (zipfile.BadZipFile, OSError):
            pass
        p.unlink(missing_ok=True)  # recollect it
    return done


# ----- worker processes ----------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _worker_init(params: dict, staging: str, vector: bool) -> None:
    _WORKER.update(env=make_sim(params["env_id"], params["image_size"], params["goal_split"], params["look"]), params=params,
                   staging=Path(staging), vector=vector, parent=os.getppid())


def _worker_run(block: list[int]) -> int:
    w = _WORKER
    if os.getppid() != w["parent"]:  # the collector was killed: stop instead of writing into a resumed run
        raise SystemExit(1)
    collect_block(w["env"], w["params"], block, w["staging"], w["vector"])
    return len(block)


def collect_block(env, params: dict, block: list[int], staging: Path, vector: bool) -> None:
    """Run episodes ``block`` (on the native vector env, or one by one on ``env``) and write their shards."""
    p = params
    episodes = (vector_rollouts(env, p["policy"], p["seed"], block, p["episode_length"], p["frame_stride"])
                if vector else (rollout(env, p["policy"], p["seed"], i, p["episode_length"], p["frame_stride"])
                                for i in block))
    for i, episode in zip(block, episodes):
        episode.save_npz(_shard_path(staging, i))


# ----- the public entry point ----------------------------------------------------------------
def collect_dataset(
    env: str,
    episodes: int,
    out: str | Path,
    policy: str = "random",
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
    image_size: int = 64,
    max_steps: int | None = None,
    goal_split: str | None = None,
    frame_stride: int = 1,
    look: str | None = None,
) -> Path:
    """Collect ``episodes`` episodes of sim ``env`` ("wall", i.e. "wm_gym/Wall-v1", or any registered id) into ``out``.

    Sims whose starts and goals come from recorded trajectories (PushT-v1) reset from their
    ``goal_split`` (default "train"), so evaluation's held-out "eval" trajectories stay unseen;
    other sims take no ``goal_split``. ``frame_stride`` k renders and stores only every k-th frame
    (the only ones a model of frameskip k reads; dataset.py's docstring has the format); the
    episode length must be a multiple of k. ``look`` draws the scene another way (a name of the sim's
    ``SimSpec.looks``; the physics is the same): video of a changed look, to test or adapt a model on.

    Resumable and idempotent: re-running after an interrupt continues where it stopped;
    re-running on a finished ``out`` with the same settings returns at once; other settings
    (env, policy, seed, image size, episode length, episode count) raise ValueError rather
    than mix data. ``workers > 1`` runs episodes in that many spawned processes, each with
    its own env. Returns ``out`` as a Path; read it with :func:`load_episodes`.
    """
    from wm_gym.envs.policies import make_policy
    from wm_gym.envs.registration import resolve_env_id, sim_name, sim_spec

    env_id = resolve_env_id(env)  # ValueError for unknown names
    name = sim_name(env_id)
    for label, value, minimum in (("episodes", episodes, 1), ("workers", workers, 1), ("image_size", image_size, 8),
                                  ("frame_stride", frame_stride, 1)):
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if max_steps is not None and (not isinstance(max_steps, (int, np.integer)) or max_steps < 1):
        raise ValueError(f"max_steps must be a positive integer or None, got {max_steps!r}")
    steps = int(max_steps) if max_steps is not None else sim_spec(env_id).max_episode_steps
    if not sim_spec(env_id).goal_splits and goal_split is not None:
        raise ValueError(f"{env_id} draws fresh goals every reset and has no goal splits; drop goal_split={goal_split!r}")
    if sim_spec(env_id).goal_splits:
        goal_split = goal_split or "train"
    if steps % frame_stride:
        raise ValueError(f"frame_stride {frame_stride} must divide the episode length ({steps} steps)")
    params = {"format_version": FORMAT_VERSION, "env_id": env_id, "policy": policy, "seed": int(seed),
              "image_size": int(image_size), "episode_length": steps, "goal_split": goal_split,
              "frame_stride": int(frame_stride), "look": None if look in (None, "default") else look,
              "view": sim_spec(env_id).view}

    root = Path(out)
    if is_complete(root):
        meta = read_meta(root)
        wanted = dict(params, episodes=int(episodes))
        diff = {k: (meta.get(k, META_DEFAULTS.get(k)), v) for k, v in wanted.items()
                if meta.get(k, META_DEFAULTS.get(k)) != v}
        if diff:
            raise ValueError(f"{root} already holds a dataset collected with other settings "
                             f"({_describe(diff)}); use another output directory or delete it")
        return root
    staging = open_staging(root, params, _PARAM_KEYS, "collection")

    sim_env = make_sim(env_id, image_size, goal_split, look)
    try:
        make_policy(sim_env, policy, np.random.default_rng(0))  # unknown policy -> ValueError before any file
        staging.mkdir(parents=True, exist_ok=True)
        write_json_atomic(staging / _PARAMS_FILE, params)
        done = _finished(staging, episodes)
        todo = [i for i in range(episodes) if i not in done]
        _run(sim_env, params, todo, staging, workers, progress, episodes, len(done), name)

        sim = sim_env.unwrapped
        meta = {
            "format": FORMAT_NAME, **params, "source": "sim", "sim": name, "episodes": int(episodes),
            "action_low": sim.action_space.low.tolist(), "action_high": sim.action_space.high.tolist(),
            "action_dim": int(sim.action_space.shape[0]), "has_actions": True, "has_goals": True,
            "proprio_dim": int(sim.observation_space["proprio"].shape[0]), "state_dim": int(sim.state_dim),
            "frames_per_episode": steps // frame_stride + 1,
        }
        shards = (Episode.load_npz(_shard_path(staging, i)) for i in range(episodes))
        write_dataset(root, shards, meta, sim.observation_space, sim.action_space, env_spec=sim_env.spec,
                      dataset_id=f"wm_gym/{name}-{policy}-v0", progress=progress)
    finally:
        sim_env.close()
    shutil.rmtree(staging, ignore_errors=True)
    return root


def _run(env, params: dict, todo: list[int], staging: Path, workers: int, progress: bool,
         total: int, initial: int, name: str) -> None:
    """Run the missing episodes in blocks (of up to VECTOR_BLOCK on a native vector env, else of one), in-process
    or spread over ``workers`` spawned processes."""
    from tqdm.auto import tqdm

    from wm_gym.envs.registration import sim_spec

    vector = bool(sim_spec(params["env_id"]).vector_entry_point) and params["episode_length"] > 0
    size = min(VECTOR_BLOCK, -(-len(todo) // workers)) if vector else 1  # every worker gets a share
    blocks = [todo[k:k + size] for k in range(0, len(todo), size)]
    with tqdm(total=total, initial=initial, desc=f"collect {name}", unit="ep", disable=not progress) as bar:
        if workers == 1 or len(blocks) <= 1:
            for block in blocks:
                collect_block(env, params, block, staging, vector)
                bar.update(len(block))
            return
        ctx = mp.get_context("spawn")
        with ctx.Pool(min(workers, len(blocks)), initializer=_worker_init, initargs=(params, str(staging), vector)) as pool:
            for done in pool.imap_unordered(_worker_run, blocks):
                bar.update(done)


def open_staging(root: Path, params: dict, keys: tuple[str, ...], what: str) -> Path:
    """The staging folder of ``root``, after checking ``root`` can take this run: new, empty, or an unfinished
    run (a ``what``: collection, ingestion) whose ``keys`` of ``params`` match, so resuming never mixes data."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"output path {root} exists and is not a directory")
    staging = root / STAGING_DIR
    if root.exists() and not staging.exists() and any(p.name != MINARI_DIR for p in root.iterdir()):
        raise ValueError(f"output directory {root} is not empty and holds no wm-gym dataset; choose an empty or new directory")
    if (staging / _PARAMS_FILE).exists():
        try:
            old = json.loads((staging / _PARAMS_FILE).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"corrupt {staging / _PARAMS_FILE}: {e}; delete {staging} to start over") from e
        diff = {k: (old.get(k, META_DEFAULTS.get(k)), params[k]) for k in keys
                if old.get(k, META_DEFAULTS.get(k)) != params[k]}
        if diff:
            raise ValueError(f"{root} holds an unfinished {what} with other settings ({_describe(diff)}); "
                             f"re-run with the same settings to resume, or delete {staging}")
    return staging


def _describe(diff: dict) -> str:
    return ", ".join(f"{k}: existing {old!r} vs requested {new!r}" for k, (old, new) in diff.items())
