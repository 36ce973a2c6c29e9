"""Throughput measurements. Ratios (imagination vs real sim) are only meaningful inside one run.

A "pixel step" is one ``env.step`` that returns a freshly rendered 64x64 observation, which
is what an agent acting from images pays per step in the real sim.
"""
from __future__ import annotations

import time

import gymnasium as gym
import numpy as np

from wm_gym.envs import SIMS, resolve_env_id


def sim_steps_per_s(name: str, steps: int = 300, seed: int = 0) -> float:
    """Pixel steps per second of one real sim under uniformly random actions (resets excluded)."""
    env = gym.make(resolve_env_id(name))
    env.action_space.seed(seed)
    env.reset(seed=seed)
    elapsed, done_steps = 0.0, 0
    try:
        while done_steps < steps:
            action = env.action_space.sample()
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            elapsed += time.perf_counter() - start
            done_steps += 1
            if terminated or truncated:
                env.reset()
    finally:
        env.close()
    return done_steps / elapsed


def bench_sims(names: list[str] | None = None, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """``{sim name: pixel steps/s}`` for every sim (or the ones named)."""
    return {name: round(sim_steps_per_s(name, steps, seed), 1) for name in (names or list(SIMS))}


def wall_vector_steps_per_s(num_envs: int = 256, steps: int = 50, seed: int = 0) -> float:
    """Pixel steps per second of the natively batched Wall sim (all rows counted)."""
    envs = gym.make_vec(SIMS["wall"].env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    envs.action_space.seed(seed)
    envs.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return float(np.round(num_envs * steps / elapsed, 1))


def imagine_steps_per_s(model, num_envs: int = 256, steps: int = 30, device: str = "cpu", seed: int = 0,
                        warmup: int = 3) -> float:
    """Imagined env steps per second (all rows counted) of the batched imagination env.

    One imagined step is one agent step: an action chunk of ``frameskip`` sim steps, the
    world-model prediction, the reward and the observation.
    """
    from wm_gym.imagine import WMImagineVectorEnv

    envs = WMImagineVectorEnv(num_envs=num_envs, model=model, device=device, render_mode=None)
    envs.action_space.seed(seed)
    envs.reset(seed=seed)
    for _ in range(warmup):  # allocations, oneDNN primitive caches, CUDA kernels
        envs.step(envs.action_space.sample())
    _sync(envs.device)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    _sync(envs.device)
    return float(np.round(num_envs * steps / (time.perf_counter() - start), 1))


def feature_sim_steps_per_s(model, steps: int = 60, seed: int = 0) -> float:
    """Agent steps per second in the model's real sim: chunk of sim steps, render, and φ encode."""
    from wm_gym.imagine.real_sim import make_feature_sim

    env = make_feature_sim(model)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return float(np.round(steps / elapsed, 1))


def ppo_steps_per_s(model, where: str, num_envs: int = 16, steps: int = 2048, seed: int = 0) -> float:
    """SB3 PPO end-to-end (rollouts + updates) steps/s, in imagination or in the real sim."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from wm_gym.imagine import make_sb3_vec_env
    from wm_gym.imagine.real_sim import make_feature_sim

    if where == "imagine":
        env = make_sb3_vec_env(num_envs=num_envs, seed=seed, model=model, device=str(model.device), render_mode=None)
    elif where == "sim":
        env = DummyVecEnv([lambda: make_feature_sim(model)] * num_envs)
    else:
        raise ValueError(f"where must be 'imagine' or 'sim', got {where!r}")
    agent = PPO("MlpPolicy", env, n_steps=max(steps // num_envs // 2, 8), batch_size=256, n_epochs=2, seed=seed,
                device="cpu", verbose=0)
    start = time.perf_counter()
    agent.learn(steps)
    elapsed = time.perf_counter() - start
    env.close()
    return float(np.round(agent.num_timesteps / elapsed, 1))


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()
