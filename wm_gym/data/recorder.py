"""Record every simulator step of an episode, so policy rollouts become dataset episodes.

Wrap the *unwrapped* sim (below :class:`~wm_gym.envs.action_chunk.ActionChunk`), so each of
the ``frameskip`` sim steps inside an agent step is kept, exactly as ``wm-gym collect``
stores them. The online loop uses it to turn executed plans into training data.
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np

from .dataset import Episode


class EpisodeRecorder(gym.Wrapper):
    def __init__(self, env: gym.Env):
        super().__init__(env)
        self._steps: dict[str, list] = {}
        self._seed: int | None = None

    def reset(self, *, seed: int | None = None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        self._seed = seed
        self._steps = {"frames": [obs["pixels"]], "proprio": [obs["proprio"]], "states": [info["state"]],
                       "success": [info["is_success"]], "actions": [], "rewards": []}
        return obs, info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        for key, value in (("frames", obs["pixels"]), ("proprio", obs["proprio"]), ("states", info["state"]),
                           ("success", info["is_success"]), ("actions", action), ("rewards", reward)):
            self._steps[key].append(value)
        return obs, reward, terminated, truncated, info

    def episode(self) -> Episode:
        """Everything since the last reset as an :class:`Episode` (copies)."""
        if not self._steps:
            raise RuntimeError("reset the recorder before asking for its episode")
        s, sim = self._steps, self.env.unwrapped
        a_dim = sim.action_space.shape[0]
        return Episode(
            frames=np.stack(s["frames"]).astype(np.uint8), proprio=np.stack(s["proprio"]).astype(np.float32),
            states=np.stack(s["states"]).astype(np.float64), success=np.asarray(s["success"], bool),
            actions=np.asarray(s["actions"], np.float32).reshape(-1, a_dim), rewards=np.asarray(s["rewards"], np.float32),
            goal=np.asarray(sim.goal, np.float64).copy(), goal_pixels=np.asarray(sim.goal_pixels, np.uint8).copy(),
            seed=self._seed,
        )
