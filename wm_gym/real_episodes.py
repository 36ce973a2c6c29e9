"""Run any policy in the REAL simulator, through the world model's eyes (evaluation and online data).

Each step: the sim renders → the world model's frozen encoder φ gives features → the policy
sees ``[features, goal features]`` (exactly the imagination env's observation) → its action
chunk runs ``frameskip`` real sim steps. Success is the sim's own criterion, never the
world model's. ``policy`` is anything with SB3's ``predict(obs, deterministic=...)``: an SB3
agent trained in imagination, or a planner from :mod:`wm_gym.agents.planners`.

Episodes run in lockstep batches (one φ call and one ``predict`` per step for the batch), so
planners that batch across episodes get all of them at once. With ``record``, every sim step
of every finished episode is handed over as a dataset :class:`~wm_gym.data.dataset.Episode`
the moment it ends (the online loop saves each one atomically).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from wm_gym.data.collect import make_sim
from wm_gym.data.dataset import Episode
from wm_gym.data.recorder import EpisodeRecorder
from wm_gym.envs.action_chunk import ActionChunk
from wm_gym.envs.registration import SIMS, resolve_env_id, sim_name
from wm_gym.imagine.vector_env import policy_observation, push_history
from wm_gym.media import side_by_side, write_mp4
from wm_gym.world_model import WorldModel


def evaluate_policy(policy, model: WorldModel, env: str | None = None, episodes: int = 50, seed: int = 1000,
                    max_steps: int | None = None, batch: int = 50, deterministic: bool = True,
                    video_dir: str | Path | None = None, video_episodes: int = 4,
                    record: Callable[[int, Episode], None] | None = None, skip: set[int] | frozenset = frozenset(),
                    ) -> dict[str, Any]:
    """Success rate of ``policy`` over ``episodes`` real episodes seeded ``seed + i``.

    ``max_steps`` is in agent steps (action chunks); default: the sim's episode length / frameskip.
    An episode stops at the sim's success. ``record(i, episode)`` receives episode i's every sim
    step as soon as it ends; indices in ``skip`` are not run (already recorded: resuming).
    """
    env_id = resolve_env_id(env or model.meta.sim or "")
    if model.meta.env_id and env_id != model.meta.env_id:
        raise ValueError(f"the world model was trained on {model.meta.env_id!r}, not {env_id!r}")
    if episodes < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError(f"episodes and max_steps must be >= 1, got {episodes} and {max_steps}")
    fs = model.config.frameskip
    max_steps = int(max_steps if max_steps is not None else SIMS[sim_name(env_id)].max_episode_steps // fs)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    todo = [i for i in range(episodes) if i not in skip]
    for first in range(0, len(todo), batch):
        idx = todo[first:first + batch]
        on_end = None if record is None else (lambda j, ep, idx=idx: record(idx[j], ep))
        results += _run_batch(policy, model, env_id, [seed + i for i in idx], max_steps, deterministic,
                              video_dir, max(0, min(len(idx), video_episodes - first)) if video_dir else 0, on_end)
    seconds = time.perf_counter() - started
    success = np.array([r["success"] for r in results], float)
    lengths = np.array([r["length"] for r in results], float)
    return {"success_rate": float(success.mean()) if len(results) else float("nan"), "episodes": len(results),
            "mean_episode_length": float(lengths.mean()) if len(results) else float("nan"), "max_steps": max_steps,
            "env": env_id, "seed": seed, "seconds": round(seconds, 1), "per_episode": results}


def _run_batch(policy, model, env_id, seeds, max_steps, deterministic, video_dir, n_videos, on_end=None
               ) -> list[dict[str, Any]]:
    def sim():
        raw = make_sim(env_id, model.meta.image_size).unwrapped
        return ActionChunk(EpisodeRecorder(raw) if on_end else raw, model.config.frameskip)

    envs = [sim() for _ in seeds]
    try:
        pixels, goals = [], []
        for env, s in zip(envs, seeds):
            obs, _ = env.reset(seed=s)
            pixels.append(obs["pixels"]), goals.append(env.unwrapped.goal_pixels)
        goal_feats = _encode(model, np.stack(goals))
        active = np.ones(len(envs), bool)
        success, length = np.zeros(len(envs), bool), np.zeros(len(envs), int)
        # planners say what they expect to see next: videos then show real | planned (decoded) | goal
        planned = n_videos > 0 and hasattr(policy, "expected") and hasattr(model.encoder, "decode")
        frames = [[side_by_side(*([p, p] if planned else [p]), g)] for p, g in zip(pixels[:n_videos], goals[:n_videos])]
        if hasattr(policy, "reset"):  # planners keep warm starts per episode
            policy.reset()
        history = None  # [B, H, N, C]: the policy sees the model's history of frames, as in imagination
        for _ in range(max_steps):
            history = push_history(history, _encode(model, np.stack(pixels)), model.config.history)
            obs = policy_observation(history, goal_feats)
            actions, _ = policy.predict(obs, deterministic=deterministic)
            imagined = model.decode_pixels(policy.expected[:n_videos]).cpu().numpy() if planned else None
            for i in np.flatnonzero(active):
                step_obs, _, terminated, _, info = envs[i].step(actions[i])
                pixels[i] = step_obs["pixels"]
                length[i] += 1
                if i < n_videos:
                    frames[i].append(side_by_side(*([pixels[i], imagined[i]] if planned else [pixels[i]]), goals[i]))
                if info["is_success"] or terminated:
                    success[i], active[i] = True, False
                    if on_end:
                        on_end(i, envs[i].env.episode())
            if not active.any():
                break
        for i in np.flatnonzero(active) if on_end else ():
            on_end(i, envs[i].env.episode())
        for i in range(n_videos):
            write_mp4(Path(video_dir) / f"episode_{seeds[i]}.mp4", np.stack(frames[i]))
        return [{"seed": s, "success": bool(success[i]), "length": int(length[i])} for i, s in enumerate(seeds)]
    finally:
        for env in envs:
            env.close()


@torch.no_grad()
def _encode(model: WorldModel, frames: np.ndarray) -> torch.Tensor:
    return model.encode(torch.from_numpy(np.ascontiguousarray(frames)))
