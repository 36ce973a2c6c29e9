"""WMImagineEnv: one imagined episode, the plain ``gym.Env`` face of the batched env.

It is :class:`WMImagineVectorEnv` with one row and no autoreset, so the single and the vector
env share every line of imagination code and agree exactly for the same seed.
"""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from wm_gym.envs.validation import check_action
from wm_gym.imagine.vector_env import WMImagineVectorEnv


class WMImagineEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, render_mode: str | None = "rgb_array", **kwargs: Any):
        """kwargs: those of :class:`WMImagineVectorEnv` (model, task, reward, horizon, device, ...)."""
        self.vec = WMImagineVectorEnv(num_envs=1, render_mode=render_mode, autoreset=False, **kwargs)
        self.render_mode = render_mode
        self.observation_space = self.vec.single_observation_space
        self.action_space = self.vec.single_action_space

    @property
    def model(self):
        return self.vec.model

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        obs, _ = self.vec.reset(seed=seed, options=options)
        return obs[0], {"demo_index": int(self.vec.demo_index[0])}

    def step(self, action):
        action = check_action(action, self.action_space)  # here, so errors name the single env's shape
        obs, reward, terminated, truncated, info = self.vec.step(action[None])
        info = {k: (v[0].item() if isinstance(v[0], np.generic) else v[0]) for k, v in info.items()}
        return obs[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), info

    def render(self):
        frames = self.vec.render()
        return None if frames is None else frames[0]
