"""One agent action = ``frameskip`` simulator actions, concatenated (DINO-WM's frameskip 5).

Imagination uses the same unit, so an agent trained in a world model acts in the real sim
through this wrapper unchanged.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .validation import check_action


def chunk_space(space: spaces.Box, frameskip: int) -> spaces.Box:
    """The Box of ``frameskip`` concatenated actions of ``space`` (flat, [frameskip * A])."""
    return spaces.Box(np.tile(space.low, frameskip), np.tile(space.high, frameskip), dtype=np.float32)


class ActionChunk(gym.Wrapper):
    """Step the wrapped sim ``frameskip`` times per action; rewards add up, obs/info are the last.

    The chunk stops early if the sim terminates or truncates inside it; ``info["chunk_steps"]``
    says how many sim steps ran.
    """

    def __init__(self, env: gym.Env, frameskip: int = 5):
        super().__init__(env)
        if frameskip < 1:
            raise ValueError(f"frameskip must be >= 1, got {frameskip}")
        self.frameskip = int(frameskip)
        self.sim_action_space = env.action_space
        self.action_space = chunk_space(env.action_space, self.frameskip)

    def step(self, action):
        chunk = check_action(action, self.action_space).reshape(self.frameskip, -1)
        total = 0.0
        for i, sim_action in enumerate(chunk):
            obs, reward, terminated, truncated, info = self.env.step(sim_action)
            total += float(reward)
            if terminated or truncated:
                break
        info = dict(info, chunk_steps=i + 1)
        return obs, total, terminated, truncated, info
