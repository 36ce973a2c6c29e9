"""A real sim seen through the world model's encoder: the imagination env's twin, ``wm_gym/WMReal-v0``.

Its observation is the same flat ``[φ(frame history), φ(goal image)]`` vector the imagination
env produces and its action the same chunk, so one SB3 policy runs in either:

    agent = PPO("MlpPolicy", gym.make("WMImagine-v0", model="wall"))            # train in imagination
    evaluate_policy(agent, gym.make("wm_gym/WMReal-v0", model="wall"))         # SB3's own evaluation, real sim

Also used to time SB3 in the real sim against imagination (``wm-gym bench``).
"""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from wm_gym.data.collect import make_sim
from wm_gym.envs.action_chunk import ActionChunk
from wm_gym.envs.registration import sim_spec
from wm_gym.imagine.vector_env import policy_observation, push_history
from wm_gym.world_model import WorldModel


class FeatureObservation(gym.ObservationWrapper):
    def __init__(self, env: gym.Env, model: WorldModel):
        super().__init__(env)
        self.model = model
        n = model.n_tokens * model.dim
        self.observation_space = spaces.Box(-np.inf, np.inf, ((model.config.history + 1) * n,), np.float32)
        self._goal: torch.Tensor | None = None
        self._history: torch.Tensor | None = None

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self._goal = self._encode(self.env.unwrapped.goal_pixels)
        self._history = None
        return self.observation(obs), info

    def observation(self, obs) -> np.ndarray:
        self._history = push_history(self._history, self._encode(obs["pixels"]), self.model.config.history)
        return policy_observation(self._history, self._goal)[0]

    @torch.no_grad()
    def _encode(self, frame: np.ndarray) -> torch.Tensor:
        return self.model.encode(torch.from_numpy(np.ascontiguousarray(frame))[None])


def make_real_env(model: "str | WorldModel" = "wall", env: str | None = None, device: str = "auto") -> gym.Env:
    """``gym.make("wm_gym/WMReal-v0", model=...)``: a zoo name, a model file or a loaded :class:`WorldModel`."""
    from wm_gym.zoo import load_model

    return make_feature_sim(load_model(model, device), env)


def make_feature_sim(model: WorldModel, env: str | None = None) -> gym.Env:
    """The model's real sim with action chunks, φ observations and its episode length in agent steps."""
    spec = sim_spec(env or model.meta.env_id or model.meta.sim)  # the model's own version of its sim
    chunked = ActionChunk(make_sim(spec.env_id, model.meta.image_size).unwrapped, model.config.frameskip)
    limited = gym.wrappers.TimeLimit(chunked, spec.max_episode_steps // model.config.frameskip)
    return FeatureObservation(limited, model)
