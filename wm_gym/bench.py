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
