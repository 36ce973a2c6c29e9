"""Random training windows over encoded episodes, gathered with one indexing op per batch.

Episodes are stored back to back: ``features[F, N, C]`` for all frames and ``actions[F, k·a]``, the
k sim actions from each frame to the next (k = the dataset's frame stride, 1 when every frame is
kept). With fs = frames per model step (frameskip / k), a window starting at frame t is
    history  s[t-(H-1)·fs], …, s[t]          → s_hist  [B, H, N, C]
    actions  a[t : t+fs], …  (concatenated)   → actions [B, horizon, frameskip·a]
    targets  s[t+fs], …, s[t+horizon·fs]      → targets [B, horizon, N, C]
so one model step covers ``frameskip`` sim steps, as in the real sim's action chunks. With
``latent_z`` set (a frozen latent encoder's action at every window start), batches also carry
    z        latent_z[t]                        → z       [B, k, d]
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class FeatureWindows:
    features: Tensor            # [F, N, C] all frames of all episodes, back to back
    frame_offsets: np.ndarray   # [E] index of each episode's first frame in ``features``
    lengths: np.ndarray         # [E] frames per episode (sim steps / frame stride + 1)
    actions: Tensor | None      # [F, k·a] the k sim actions from each frame to the next (last frame of an episode: unused)
    history: int = 1
    frame_step: int = 5         # frames per model step: frameskip / frame stride
    latent_z: Tensor | None = None  # [F, k, d] z of (s_t, s_{t+fs}) at window starts t (train/world_model.py)

    @classmethod
    def from_episodes(cls, features: Tensor, lengths: list[int] | np.ndarray, actions: list[np.ndarray] | None,
                      history: int = 1, frameskip: int = 5, frame_stride: int = 1) -> "FeatureWindows":
        """Build from per-episode frame counts and per-episode action arrays [T_e, a], one row per sim step
        (T_e = (length − 1) · frame_stride)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if features.shape[0] != lengths.sum():
            raise ValueError(f"features hold {features.shape[0]} frames but the episodes have {lengths.sum()}")
        if frameskip % frame_stride:
            raise ValueError(f"the episodes keep every {frame_stride}th frame, which a model stepping {frameskip} sim "
                             "steps at a time cannot use (frameskip must be a multiple of it)")
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        flat = None
        if actions is not None:
            a_dim = actions[0].shape[-1] * frame_stride
            padded = [np.concatenate([a.reshape(-1, a_dim), np.zeros((1, a_dim), a.dtype)]) for a in actions]  # per frame
            flat = torch.as_tensor(np.concatenate(padded), dtype=torch.float32)
        return cls(features, offsets, lengths, flat, history, frameskip // frame_stride)

    @classmethod
    def from_data(cls, features: Tensor, data, history: int = 1, frameskip: int = 5) -> "FeatureWindows":
        """From a loaded dataset (``wm_gym.data.load_episodes``) and its encoded frames, in order."""
        return cls.from_episodes(features, [len(f) for f in data.frames], data.actions if data.has_actions else None,
                                 history, frameskip, data.frame_stride)

    def frame_rows(self, episodes: np.ndarray | list[int]) -> np.ndarray:
        """Global indices of every frame of these episodes."""
        return np.concatenate([np.arange(self.frame_offsets[e], self.frame_offsets[e] + self.lengths[e])
                               for e in episodes])

    def episode_of(self, frames: np.ndarray) -> np.ndarray:
        """Episode index of each global frame index."""
        return np.searchsorted(self.frame_offsets, frames, side="right") - 1

    def starts(self, episodes: np.ndarray | list[int], horizon: int = 1) -> np.ndarray:
        """Global frame indices t where a window with ``horizon`` steps fits, for these episodes."""
        fs, first = self.frame_step, (self.history - 1) * self.frame_step
        out = [self.frame_offsets[e] + np.arange(first, self.lengths[e] - horizon * fs) for e in episodes]
        starts = np.concatenate(out) if out else np.zeros(0, np.int64)
        if len(starts) == 0:
            need = first + horizon * fs + 1
            raise ValueError(f"no window fits: history {self.history} and horizon {horizon}, {fs} frames a step, need "
                             f"episodes of at least {need} frames; the longest has {self.lengths.max()}")
        return starts

    def gather(self, t: Tensor, horizon: int = 1, with_actions: bool = True) -> dict[str, Tensor]:
        """Windows at global start frames ``t`` [B]: s_hist, targets and (if present) actions."""
        fs = self.frame_step
        hist_idx = t[:, None] + fs * torch.arange(-(self.history - 1), 1)          # [B, H]
        tgt_idx = t[:, None] + fs * torch.arange(1, horizon + 1)                    # [B, horizon]
        batch = {"s_hist": self.features[hist_idx].float(), "targets": self.features[tgt_idx].float()}
        if self.latent_z is not None:
            batch["z"] = self.latent_z[t.to(self.latent_z.device)]
        if with_actions:
            if self.actions is None:
                raise ValueError("this dataset has no actions (actionless video); this stage needs action labels")
            act_idx = t[:, None, None] + fs * torch.arange(horizon)[None, :, None] + torch.arange(fs)  # [B, hz, fs]
            batch["actions"] = self.actions[act_idx].flatten(2)                        # [B, horizon, frameskip·a]
        return batch

    def sampler(self, episodes: np.ndarray | list[int], batch_size: int, horizon: int = 1, with_actions: bool = True,
                device: torch.device | str = "cpu"):
        """A ``sample(generator) -> batch`` function for the training loop."""
        starts = torch.as_tensor(self.starts(episodes, horizon))

        def sample(gen: torch.Generator) -> dict[str, Tensor]:
            t = starts[torch.randint(len(starts), (batch_size,), generator=gen)]
            return {k: v.to(device, non_blocking=True) for k, v in self.gather(t, horizon, with_actions).items()}

        return sample
