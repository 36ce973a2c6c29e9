"""The contract every wm-gym simulator follows: pixels + proprio obs, a goal state and its image.

Subclasses only describe their physics (the ``_`` hooks below). Resetting, goal rendering,
action checks and success reporting live here once, so all sims behave the same way:

* obs is ``{"pixels": uint8 [H, W, 3], "proprio": float32 [P]}``;
* ``reset()`` samples a start and a goal state (the DINO-WM protocol of each sim), renders
  the goal to ``goal_pixels`` and never draws a goal marker into the observation;
* ``info`` carries ``state`` (true low-dimensional state), ``goal`` and ``is_success``;
* ``reset(options={"start_state": s, "goal_state": g})`` places hand-built states.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .validation import check_action


class GoalImageEnv(gym.Env, ABC):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    #: How many proprio numbers and state numbers this sim reports; set by subclasses.
    proprio_dim: int = 0
    state_dim: int = 0
    #: Data-collection policies by name, e.g. {"random": ..., "noisy-expert": ...}; see policies.py.
    policies: dict = {}
    #: While True, ``step`` returns ``obs["pixels"] = None`` and renders nothing: collection that stores
    #: every k-th frame (``wm-gym collect --frame-stride``) sets it for the steps in between.
    skip_pixels: bool = False

    def __init__(self, action_low, action_high, image_size: int = 64, render_mode: str | None = "rgb_array"):
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        self.render_mode = render_mode
        self.image_size = int(image_size)
        self.action_space = spaces.Box(np.asarray(action_low, np.float32), np.asarray(action_high, np.float32), dtype=np.float32)
        self.observation_space = spaces.Dict(
            pixels=spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8),
            proprio=spaces.Box(-np.inf, np.inf, (self.proprio_dim,), np.float32),
        )
        self.goal: np.ndarray = np.zeros(self.state_dim)
        self.goal_pixels: np.ndarray = np.zeros((self.image_size, self.image_size, 3), np.uint8)

    # ----- hooks each sim implements -------------------------------------------------------
    @abstractmethod
    def _sample_start_goal(self) -> tuple[np.ndarray, np.ndarray]:
        """Draw (start_state, goal_state) with ``self.np_random``."""

    @abstractmethod
    def _set_state(self, state: np.ndarray) -> None:
        """Place the simulation exactly in ``state`` (the layout of ``info["state"]``)."""

    @abstractmethod
    def _get_state(self) -> np.ndarray:
        """float64 [state_dim], the true low-dimensional state."""

    @abstractmethod
    def _get_proprio(self) -> np.ndarray:
        """float32 [proprio_dim], what the agent senses about itself."""

    @abstractmethod
    def _render_pixels(self) -> np.ndarray:
        """uint8 [image_size, image_size, 3] of the current state, with no goal marker."""

    @abstractmethod
    def _apply_action(self, action: np.ndarray) -> None:
        """Advance the simulation by one step; ``action`` is already checked and clipped."""

    @abstractmethod
    def _is_success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """The DINO-WM success criterion of this sim."""

    def is_success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        """The sim's own success test for any (state, goal) pair, e.g. to calibrate feature thresholds."""
        return bool(self._is_success(np.asarray(state, np.float64), np.asarray(goal, np.float64)))

    def goal_from_state(self, state: np.ndarray) -> np.ndarray:
        """The goal that asks for ``state``: what success against another state of an episode compares to
        (calibration labels pairs of frames this way). Most sims' goals are states; dm_control overrides it."""
        return np.asarray(state, np.float64)

    def _extra_info(self) -> dict[str, Any]:
        """Sim-specific extras for ``info`` (e.g. PushT coverage)."""
        return {}

    # ----- the shared Gymnasium API ---------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        start, goal = options.get("start_state"), options.get("goal_state")
        if start is None or goal is None:  # sampling can be costly (PushT rolls out 25 steps)
            sampled_start, sampled_goal = self._sample_start_goal()
            start = sampled_start if start is None else start
            goal = sampled_goal if goal is None else goal
        start, goal = np.asarray(start, np.float64), np.asarray(goal, np.float64)
        for name, value in (("start_state", start), ("goal_state", goal)):
            if value.shape != (self.state_dim,) or not np.all(np.isfinite(value)):
                raise ValueError(f"{name} must be a finite array of shape ({self.state_dim},), got {value.shape}")
        self.goal = np.array(goal, dtype=np.float64)
        self._set_state(self.goal)
        self.goal_pixels = self._render_pixels()
        self._set_state(start)
        return self._obs(), self._info()

    def step(self, action):
        self._apply_action(check_action(action, self.action_space))
        info = self._info()
        terminated = bool(info["is_success"])
        return self._obs(), float(terminated), terminated, False, info

    def render(self):
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None")
            return None
        return self._render_pixels()

    def _obs(self) -> dict[str, np.ndarray]:
        pixels = None if self.skip_pixels else self._render_pixels()
        return {"pixels": pixels, "proprio": np.asarray(self._get_proprio(), np.float32)}

    def _info(self) -> dict[str, Any]:
        state = np.asarray(self._get_state(), np.float64)
        return {"state": state, "goal": self.goal.copy(), "is_success": bool(self._is_success(state, self.goal)), **self._extra_info()}
