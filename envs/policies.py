"""Data-collection policies. Each sim lists its own in ``GoalImageEnv.policies``.

A policy is built as ``Policy(env, rng)`` on the *unwrapped* sim, sees the same ``obs`` and
``info`` an agent sees (``info["state"]``, ``info["goal"]``) and returns one sim action.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np


class Policy(ABC):
    """Base collection policy: ``reset`` at episode start, then call once per sim step."""

    def __init__(self, env: gym.Env, rng: np.random.Generator):
        self.env = env
        self.rng = rng
        self.low = env.action_space.low.astype(np.float64)
        self.high = env.action_space.high.astype(np.float64)

    def reset(self, obs: dict[str, Any], info: dict[str, Any]) -> None:
        pass

    @abstractmethod
    def __call__(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        """One float32 sim action."""


class CorrelatedRandomPolicy(Policy):
    """Temporally correlated uniform-scale noise: a_t = ρ·a_{t-1} + √(1-ρ²)·ε, ε ~ N(0, σ²).

    Persistent directions move a point much further than white noise in the same number of
    steps, so random datasets cover the whole scene (the DINO-WM random datasets do the same).
    """

    rho: float = 0.8
    sigma: float = 0.7

    def reset(self, obs, info):
        self.prev = np.zeros_like(self.low)

    def __call__(self, obs, info):
        scale = (self.high - self.low) / 2
        eps = self.rng.normal(0.0, self.sigma, size=self.low.shape)
        self.prev = self.rho * self.prev + np.sqrt(1 - self.rho**2) * eps
        center = (self.high + self.low) / 2
        return np.clip(center + scale * self.prev, self.low, self.high).astype(np.float32)


def make_policy(env: gym.Env, kind: str, rng: np.random.Generator) -> Policy:
    """Build collection policy ``kind`` ("random", "noisy-expert", ...) for ``env``."""
    sim = env.unwrapped
    choices = getattr(sim, "policies", {})
    if kind not in choices:
        raise ValueError(f"unknown policy {kind!r} for {type(sim).__name__}; expected one of: {', '.join(choices)}")
    return choices[kind](sim, rng)


def run_policy(env: gym.Env, kind: str, seed: int, policy_rng: np.random.Generator, steps: int,
               stop_on_success: bool = True, check_every: int = 1) -> dict[str, Any]:
    """Reset ``env`` with ``seed``, act with policy ``kind`` for up to ``steps`` steps; return the last info
    with ``success_step``, the first step (1-based) that is a multiple of ``check_every`` and a success (None if
    none: an evaluation budget that looks only every k steps), and ``task_return``, the steps' ``task_reward``
    summed, for a sim that reports one (dm_control). The episode stops at that success if ``stop_on_success``.

    Handy for measuring a collection policy (e.g. the noisy expert's success rate).
    """
    obs, info = env.reset(seed=seed)
    policy = make_policy(env, kind, policy_rng)
    policy.reset(obs, info)
    task_return, success_step = 0.0, None
    for step in range(1, steps + 1):
        obs, _, _, truncated, info = env.step(policy(obs, info))
        task_return += info.get("task_reward", 0.0)
        if success_step is None and step % check_every == 0 and info["is_success"]:
            success_step = step
        if (success_step is not None and stop_on_success) or truncated:
            break
    return {**info, "success_step": success_step, **({"task_return": task_return} if "task_reward" in info else {})}
