"""A native Stable-Baselines3 ``VecEnv`` over the batched imagination env.

SB3 does not take Gymnasium vector envs. This adapter keeps imagination batched (one
world-model call per step for all envs) and speaks SB3's protocol: done = terminated or
truncated, ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]`` per env.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvStepReturn

from wm_gym.imagine.vector_env import WMImagineVectorEnv


class WMImagineSB3VecEnv(VecEnv):
    def __init__(self, env: WMImagineVectorEnv):
        self.env = env
        super().__init__(env.num_envs, env.single_observation_space, env.single_action_space)
        self.render_mode = env.render_mode
        self._seed: int | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        obs, _ = self.env.reset(seed=self._seed)
        self._seed = None  # SB3 semantics: a seed applies to the next reset only
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        obs, reward, terminated, truncated, info = self.env.step(self._actions)
        done = terminated | truncated
        infos: list[dict[str, Any]] = [
            {"is_success": bool(info["is_success"][i]), "TimeLimit.truncated": bool(truncated[i] and not terminated[i])}
            for i in range(self.num_envs)
        ]
        for i in np.flatnonzero(done):
            infos[i]["terminal_observation"] = info["final_obs"][i]
        return obs, reward, done, infos

    def seed(self, seed: int | None = None) -> Sequence[None]:
        self._seed = seed
        return [None] * self.num_envs

    def close(self) -> None:
        pass

    def render(self, mode: str | None = None) -> np.ndarray | None:
        frames = self.env.render()
        return None if frames is None else frames[0]

    def get_images(self) -> Sequence[np.ndarray]:
        return list(self.env.render())

    # SB3's attribute plumbing: the batch is one object, so every "sub-env" is the same env.
    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self.env, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self.env, attr_name, value)

    def env_method(self, method_name: str, *args, indices=None, **kwargs) -> list[Any]:
        return [getattr(self.env, method_name)(*args, **kwargs)] * len(self._get_indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._get_indices(indices))


def make_sb3_vec_env(num_envs: int = 16, seed: int | None = None, **kwargs: Any) -> WMImagineSB3VecEnv:
    """An SB3 VecEnv of ``num_envs`` imagined episodes; kwargs as for ``gym.make("WMImagine-v0")``."""
    vec = WMImagineSB3VecEnv(WMImagineVectorEnv(num_envs=num_envs, **kwargs))
    vec.seed(seed)
    return vec
