"""WMImagineVectorEnv: N imagined episodes stepped together by the world model, on torch.

Like Gymnasium's ``CartPoleVectorEnv`` the batch is native: one ``step`` is one batched
world-model call for all rows, with no per-env Python loop. Each row:

* **reset** picks a demo from the bank (its own seeded generator): the episode starts at the
  demo's first frame and the goal is its last frame (RLA-WM's protocol);
* **step** turns the real action chunk into z (controller, or flow sampler), decodes the next
  features, and pays a reward from ``rewards/`` (default: the video-aligned demo reward);
* **terminated** is calibrated success, feature distance to the goal below the model's
  threshold; **truncated** is the horizon.

obs is flat float32 ``[features (N·C), target (N·C)]`` for SB3's ``MlpPolicy``; the target is
the goal (``task="goal"``) or the demo's next frame (``task="demo"``, video following).
Autoreset is SAME_STEP (what SB3 expects): a finished row's last obs is in
``info["final_obs"]`` (valid where ``info["_final_obs"]``) and the row's new start is returned.

Seeding follows ``SyncVectorEnv``: ``reset(seed=s)`` makes row ``i`` replay the episodes of a
single :class:`~wm_gym.imagine.env.WMImagineEnv` seeded with ``s + i``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from torch import Tensor

from wm_gym.data.demo_bank import DemoBank
from wm_gym.envs.action_chunk import chunk_space
from wm_gym.envs.registration import sim_spec
from wm_gym.envs.row_seeds import reseed_rows
from wm_gym.envs.validation import check_action
from wm_gym.imagine.config import ImagineConfig
from wm_gym.rewards import make_reward
from wm_gym.world_model import WorldModel
from wm_gym.zoo import load_model

LATENT_BOUND = 3.0  # latent actions are standardised z, clipped to ±3 std


def load_demo_bank(demos: Any, model: WorldModel) -> DemoBank:
    """``demos``: None (the model's own bank), a DemoBank, a dataset folder, or a list of frame arrays."""
    if demos is None:
        if model.bank is None:
            raise ValueError("this world model has no demo bank; pass demos= (a dataset folder, a DemoBank or a "
                             "list of uint8 [T, H, W, 3] videos), or attach one with `wm-gym calibrate`")
        return model.bank
    if isinstance(demos, DemoBank):
        return demos
    if isinstance(demos, (str, Path)):
        return DemoBank.from_dataset(demos, model.config.frameskip, heldout_fraction=0.0)
    return DemoBank.from_videos(list(demos), frameskip=1)


def policy_observation(history: Tensor, target: Tensor) -> np.ndarray:
    """The policy's input, in imagination and in the real sim: flat float32 [B, (H+1)·N·C].

    ``history`` is the last H feature frames [B, H, N, C] (H = the model's history; a single
    frame [B, N, C] means H = 1) and ``target`` the goal or demo frame [B, N, C]. With H > 1 the
    policy sees motion, e.g. the momentum of PointMaze's ball, which one frame cannot show.
    """
    return policy_observation_tensor(history, target).float().cpu().numpy()


def policy_observation_tensor(history: Tensor, target: Tensor) -> Tensor:
    """:func:`policy_observation` as a tensor on the features' device, differentiable (planners
    push gradients through an agent's value of imagined states)."""
    history = history[:, None] if history.ndim == 3 else history
    return torch.cat([history.flatten(1), target.flatten(1)], dim=1)


def split_observation(model: WorldModel, obs: Tensor) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`policy_observation_tensor` for ``model``: [B, (H+1)·N·C] → (history [B, H, N, C],
    target [B, N, C]); bad shapes raise."""
    n, c, h = model.n_tokens, model.dim, model.config.history
    if obs.ndim != 2 or obs.shape[1:] != ((h + 1) * n * c,):
        raise ValueError(f"obs must be [B, {(h + 1) * n * c}] policy observations ({h} feature frames and the "
                         f"goal's), got {tuple(obs.shape)}")
    return obs[:, : h * n * c].reshape(-1, h, n, c), obs[:, h * n * c:].reshape(-1, n, c)


def push_history(history: Tensor | None, features: Tensor, h: int) -> Tensor:
    """[B, H, N, C] history with ``features`` [B, N, C] appended; None (a new episode) repeats them H times,
    as the imagination env does at reset."""
    if history is None or history.shape[0] != features.shape[0]:
        return features[:, None].expand(-1, h, -1, -1).clone()
    return torch.cat([history[:, 1:], features[:, None]], dim=1)


class WMImagineVectorEnv(VectorEnv):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 5, "autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int = 1, config: ImagineConfig | None = None, render_mode: str | None = "rgb_array",
                 autoreset: bool = True, **kwargs: Any):
        """``config`` (an :class:`ImagineConfig`) or its fields as keyword arguments, e.g. ``model="wall"``."""
        if config is not None and kwargs:
            raise TypeError(f"give either config= or keyword arguments, not both (got {sorted(kwargs)})")
        self.config = config if config is not None else ImagineConfig.from_kwargs(**kwargs)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        config = self.config
        self.model = load_model(config.model, config.device).eval()
        if self.model.look_alignment is not None:
            raise ValueError(f"this model is aligned to read look {self.model.config.look_alignment!r} in the real sim "
                             "(`wm-gym align`); imagination runs on the model it was aligned from, whose demo bank "
                             "shows the look it was trained on")
        self.device = self.model.device
        self.num_envs, self.render_mode, self.autoreset = int(num_envs), render_mode, autoreset
        head = self.model.temporal_distance
        self.reward_fn = make_reward(config.reward, metric=config.metric, scale=config.scale,
                                     distance=head.steps if head is not None else None)
        self.success_metric = config.success_metric or self.model.meta.success_metric
        if self.success_metric == "temporal" and head is None:
            raise ValueError("success_metric 'temporal' needs a temporal-distance head; fit one with `wm-gym train-distance`")
        self.success_threshold = config.success_threshold if config.success_threshold is not None else self.model.meta.success_threshold
        if self.success_threshold is None:
            gym.logger.warn("the world model has no calibrated success threshold: episodes only end at the horizon "
                            "(run `wm-gym calibrate`)")

        # The demo bank, encoded once with the model's own encoder.
        self.bank = load_demo_bank(config.demos, self.model)
        self.split_rows = self.bank.indices(config.split)
        m, t1 = self.bank.frames.shape[:2]
        feats = self.model.encode(torch.from_numpy(self.bank.frames.reshape(m * t1, *self.bank.frames.shape[2:])))
        self.demo_features = feats.reshape(m, t1, self.model.n_tokens, self.model.dim)  # [M, T+1, N, C]
        self.demo_lengths = torch.as_tensor(self.bank.lengths, device=self.device)
        sim = sim_spec(self.model.meta.env_id or self.model.meta.sim) if self.model.meta.sim else None
        default_horizon = sim.max_episode_steps // self.model.config.frameskip if sim else int(self.bank.lengths.max())
        self.horizon = int(config.horizon or default_horizon)

        # Spaces: flat feature history + target; the real action chunk or a standardised latent action.
        n_feat, h = self.model.n_tokens * self.model.dim, self.model.config.history
        self.single_observation_space = spaces.Box(-np.inf, np.inf, ((h + 1) * n_feat,), np.float32)
        if config.actions == "sim":
            low = np.asarray(self.model.meta.action_low or [-1.0] * self.model.config.sim_action_dim, np.float32)
            high = np.asarray(self.model.meta.action_high or [1.0] * self.model.config.sim_action_dim, np.float32)
            self.single_action_space = chunk_space(spaces.Box(low, high, dtype=np.float32), self.model.config.frameskip)
        else:
            self.z_mean, self.z_std = self._latent_stats()
            self.single_action_space = spaces.Box(-LATENT_BOUND, LATENT_BOUND, (self.z_mean.numel(),), np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        # Per-row state (torch, on device).
        n, h = self.num_envs, self.model.config.history
        self.s_hist = torch.zeros(n, h, self.model.n_tokens, self.model.dim, device=self.device)  # [B, H, N, C]
        # [B, T+1, N, C]: each row's demo, padded past its end with its goal (bank demos, custom demos and
        # the growth for long custom demos all pad that way), so it is also the demo-aligned reward's target
        self.demo = torch.zeros(n, t1, self.model.n_tokens, self.model.dim, device=self.device)
        self.demo_len = torch.ones(n, dtype=torch.long, device=self.device)
        self.steps = torch.zeros(n, dtype=torch.long, device=self.device)
        self.demo_index = np.zeros(n, np.int64)
        self._row_rngs: list[np.random.Generator | None] = [None] * n
        self._needs_reset = True

    # ----- Gymnasium API -----------------------------------------------------------------------
    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Start every row. options: ``demo_index`` (int or [B]), or your own ``start_frame`` and
        ``goal_frame`` (uint8 [H, W, 3]), or ``demo_frames`` (uint8 [T+1, H, W, 3]) for all rows."""
        reseed_rows(self._row_rngs, seed)
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) else None)
        rows = torch.arange(self.num_envs, device=self.device)
        self._restart(rows, options or {})
        self._needs_reset = False
        return self._obs(), {}

    def step(self, actions):
        """actions [B, A] → (obs [B, D], reward [B], terminated [B], truncated [B], info)."""
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step()")
        a = self._check_actions(actions)
        s_prev = self.s_hist[:, -1]
        with torch.no_grad():
            s_next = self._imagine(a)
            reward = self.reward_fn(s_prev, s_next, self.demo, self.steps)
            distance = self.model.goal_distance(s_next, self._goal(), self.success_metric)
        self.s_hist = torch.cat([self.s_hist[:, 1:], s_next[:, None]], dim=1)
        self.steps += 1
        success = distance < self.success_threshold if self.success_threshold is not None else torch.zeros_like(distance, dtype=torch.bool)
        terminated, truncated = success, (self.steps >= self.horizon) & ~success
        info = {"is_success": success.cpu().numpy(), "distance": distance.cpu().numpy(),
                "demo_index": self.demo_index.copy(), "step": self.steps.cpu().numpy().copy()}
        obs = self._obs()
        done = (terminated | truncated)
        if self.autoreset and bool(done.any()):
            info["final_obs"], info["_final_obs"] = obs.copy(), done.cpu().numpy()
            self._restart(torch.nonzero(done).flatten(), {})
            obs = self._obs()
        elif not self.autoreset and bool(done.all()):
            self._needs_reset = True
        return obs, reward.float().cpu().numpy(), terminated.cpu().numpy(), truncated.cpu().numpy(), info

    def render(self) -> np.ndarray | None:
        """uint8 [B, H, 2W, 3]: each row's decoded imagined state beside its target."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None")
            return None
        pixels = self.model.decode_pixels(torch.cat([self.s_hist[:, -1], self._target()]))
        now, target = pixels.split(self.num_envs)
        return torch.cat([now, target], dim=2).cpu().numpy()

    # ----- imagination ------------------------------------------------------------------------------
    def _imagine(self, a: Tensor) -> Tensor:
        if self.config.actions == "latent":
            z = (a * self.z_std.flatten() + self.z_mean.flatten()).view(-1, *self.z_mean.shape)
            return self.model.snap(self.model.decode_latent(self.s_hist[:, -1], z))
        mode = self.config.mode
        noise = self._flow_noise() if mode == "flow" and self.model.flow is not None else None
        return self.model.step(self.s_hist, a, mode=mode, flow_steps=self.config.flow_steps, noise=noise)

    def _flow_noise(self) -> Tensor:
        """Per-row flow noise from each row's generator, so rows match single envs exactly."""
        flow = self.model.flow.config
        noise = np.stack([rng.standard_normal((flow.n_latents, flow.latent_dim)) for rng in self._row_rngs])
        return torch.as_tensor(noise, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def _latent_stats(self) -> tuple[Tensor, Tensor]:
        """Mean/std of the bank's latent actions z: latent actions are given in these units."""
        if self.model.latent_model is None:
            raise ValueError("action_space='latent' needs a latent-action model (rla or lam), not latent='action'")
        t = torch.arange(self.demo_features.shape[1] - 1, device=self.device)
        valid = t[None] < self.demo_lengths[:, None]  # [M, T]
        s_t, s_next = self.demo_features[:, :-1][valid], self.demo_features[:, 1:][valid]
        z = self.model.latent_action(s_t, s_next)
        return z.mean(0), z.std(0).clamp_min(1e-6)

    def _check_actions(self, actions) -> Tensor:
        if isinstance(actions, Tensor):
            actions = actions.detach().cpu().numpy()
        checked = check_action(actions, self.single_action_space, batch=self.num_envs)
        return torch.as_tensor(checked, device=self.device)

    # ----- rows --------------------------------------------------------------------------------
    def _restart(self, rows: Tensor, options: dict[str, Any]) -> None:
        """New episodes in ``rows``: a demo from each row's generator (drawn even when overridden)."""
        rows_np = rows.cpu().numpy()
        picks = np.array([self.split_rows[self._row_rngs[i].integers(len(self.split_rows))] for i in rows_np], np.int64)
        if "demo_index" in options:
            picks = np.broadcast_to(np.asarray(options["demo_index"], np.int64), (len(rows_np),)).copy()
            if picks.min() < 0 or picks.max() >= len(self.bank):
                raise ValueError(f"demo_index must be in [0, {len(self.bank)}), got {options['demo_index']}")
        self.demo_index[rows_np] = picks
        demo, length = self.demo_features[picks], self.demo_lengths[picks]
        custom = self._custom_demo(options)
        if custom is not None:
            feats, steps = custom
            demo, length = feats[None].expand(len(rows_np), -1, -1, -1), torch.full_like(length, steps)
        if demo.shape[1] < self.demo.shape[1]:  # the buffer grew for a long custom demo: pad with the goal
            demo = torch.cat([demo, demo[:, -1:].expand(-1, self.demo.shape[1] - demo.shape[1], -1, -1)], dim=1)
        self.demo[rows] = demo
        self.demo_len[rows] = length
        self.s_hist[rows] = demo[:, :1].expand(-1, self.model.config.history, -1, -1)
        self.steps[rows] = 0

    def _custom_demo(self, options: dict[str, Any]) -> tuple[Tensor, int] | None:
        """(features [T+1, N, C], steps) of the user's own demo or (start, goal) pair; None if neither given."""
        if "demo_frames" in options:
            frames = np.asarray(options["demo_frames"])
        elif "start_frame" in options and "goal_frame" in options:
            start, goal = np.asarray(options["start_frame"]), np.asarray(options["goal_frame"])
            if start.shape != goal.shape:
                raise ValueError(f"start_frame and goal_frame must both be uint8 [{self.model.meta.image_size}, "
                                 f"{self.model.meta.image_size}, 3], got {start.shape} and {goal.shape}")
            frames = np.stack([start, goal])
        elif "start_frame" in options or "goal_frame" in options:
            raise ValueError("pass both start_frame and goal_frame")
        else:
            return None
        size = self.model.meta.image_size
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3) or len(frames) < 2:
            raise ValueError(f"demo/start/goal frames must be uint8 [T>=2, {size}, {size}, 3], got {frames.dtype} {frames.shape}")
        extra = len(frames) - self.demo.shape[1]
        if extra > 0:  # a longer demo than the bank's: grow every row, padding with its own goal
            self.demo = torch.cat([self.demo, self.demo[:, -1:].expand(-1, extra, -1, -1)], dim=1)
        pad = self.demo.shape[1] - len(frames)
        frames = np.concatenate([frames, np.repeat(frames[-1:], pad, 0)])
        return self.model.encode(torch.from_numpy(np.ascontiguousarray(frames))), len(frames) - pad - 1

    def _goal(self) -> Tensor:
        """[B, N, C]: each row's goal, the last frame of its demo."""
        return self.demo[torch.arange(self.num_envs, device=self.device), self.demo_len]

    def _target(self) -> Tensor:
        """[B, N, C]: what the policy is shown: the goal, or the demo's next frame."""
        if self.config.task == "goal":
            return self._goal()
        t = torch.minimum(self.steps + 1, self.demo_len)
        return self.demo[torch.arange(self.num_envs, device=self.device), t]

    def _obs(self) -> np.ndarray:
        return policy_observation(self.s_hist, self._target())
