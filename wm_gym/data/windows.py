"""Training windows for a world model: short frame sequences cut from loaded episodes.

A window is ``history + horizon`` frames taken ``frameskip`` sim steps apart (DINO-WM uses
frameskip 5), and between each pair of consecutive window frames the ``frameskip`` sim
actions that led from one to the other, concatenated into one agent action of size
``frameskip * A``: the same action unit as ``envs/action_chunk.py`` uses in the real sim,
so a model trained on these windows can be driven by the ``ActionChunk`` wrapper's actions.

Splits are by episode (:func:`split_episodes`) so that no validation frame was ever seen in
training, not even from a neighbouring window of the same episode.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import EpisodeData


def split_episodes(n_episodes: int, val_fraction: float = 0.1, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministically split episode indices into (train, val), both sorted int64 arrays.

    ``round(n_episodes * val_fraction)`` episodes go to validation (at least one when
    ``val_fraction > 0``), chosen by a permutation seeded with ``seed``; training keeps at
    least one episode. The two sets never overlap and together cover ``range(n_episodes)``.
    """
    if not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
        raise ValueError(f"n_episodes must be a positive integer, got {n_episodes!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    n_val = int(round(n_episodes * val_fraction))
    if val_fraction > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n_episodes - 1)
    perm = np.random.default_rng(seed).permutation(n_episodes)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)


class WindowDataset(Dataset):
    """Every window of ``history + horizon`` frames (``frameskip`` steps apart) in some episodes.

    Item ``i`` is a dict (L = history + horizon):

    * ``frames``  uint8 [L, H, W, 3]: kept uint8; the model normalises
    * ``actions`` float32 [L - 1, frameskip * A]: row k = the sim actions between window
      frames k and k + 1, concatenated in time order. **Absent** when the dataset has no
      actions (ingested video): check ``dataset.has_actions``. NaN in episodes without labels
      (video ingested with a labels file): pass ``episodes=np.flatnonzero(data.labelled)``
    * ``proprio`` float32 [L, P] and ``states`` float32 [L, S] (P, S = 0 for video)
    * ``episode`` and ``start`` (int64 scalars): which episode, and the sim step of frame 0

    Windows start every ``stride`` sim steps; window frame k is the episode's frame at sim step
    ``start + k * frameskip``. A dataset that keeps every j-th frame (``data.frame_stride``) has
    windows only at stored frames (every lcm(stride, j) sim steps): the same windows as the full
    collection at those frames.
    """

    def __init__(
        self,
        data: EpisodeData,
        history: int = 3,
        horizon: int = 1,
        frameskip: int = 5,
        episodes: Sequence[int] | np.ndarray | None = None,
        stride: int = 1,
    ):
        for label, value, minimum in (("history", history, 1), ("horizon", horizon, 0), ("frameskip", frameskip, 1), ("stride", stride, 1)):
            if not isinstance(value, (int, np.integer)) or value < minimum:
                raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
        self.data = data
        self.history, self.horizon, self.frameskip, self.stride = int(history), int(horizon), int(frameskip), int(stride)
        self.window = self.history + self.horizon
        self.span = (self.window - 1) * self.frameskip  # sim steps from the first to the last frame
        self.frame_step = data.frame_step(self.frameskip)  # stored frames per model step
        step = math.lcm(self.stride, data.frame_stride)  # starts fall on stored frames
        eps = np.arange(len(data)) if episodes is None else np.asarray(episodes, np.int64).reshape(-1)
        if eps.size and (eps.min() < 0 or eps.max() >= len(data)):
            raise ValueError(f"episode indices must be in [0, {len(data)}), got {eps.min()}..{eps.max()}")
        if eps.size == 0:
            raise ValueError("no episodes selected: pass at least one episode index (or episodes=None for all)")
        self.episodes = eps
        lengths = data.lengths
        index = [np.stack([np.full(n, e), np.arange(n) * step], 1)
                 for e in eps for n in [max(0, (int(lengths[e]) - self.span) // step + 1)] if n]
        if not index:
            longest = int(lengths[eps].max())
            raise ValueError(
                f"no window fits: a window of {self.window} frames {self.frameskip} sim steps apart spans "
                f"{self.span} steps, but the longest of the {eps.size} selected episodes has {longest} steps; "
                "use shorter history/horizon/frameskip or longer episodes"
            )
        self.index = np.concatenate(index).astype(np.int64)  # [N, 2]: (episode, start step)

    @property
    def has_actions(self) -> bool:
        return self.data.has_actions

    @property
    def action_dim(self) -> int:
        """Size of one window action: ``frameskip * A`` (0 without actions)."""
        return self.frameskip * self.data.action_dim

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        e, s = (int(v) for v in self.index[i])
        idx = s // self.data.frame_stride + self.frame_step * np.arange(self.window)
        d = self.data
        item = {
            "frames": torch.from_numpy(np.ascontiguousarray(d.frames[e][idx])),
            "proprio": torch.from_numpy(d.proprio[e][idx].astype(np.float32)),
            "states": torch.from_numpy(d.states[e][idx].astype(np.float32)),
            "episode": torch.tensor(e, dtype=torch.int64),
            "start": torch.tensor(s, dtype=torch.int64),
        }
        if d.actions is not None:
            acts = d.actions[e][s:s + self.span]  # [span, A], row t moves frame s+t to s+t+1
            item["actions"] = torch.from_numpy(acts.reshape(self.window - 1, self.frameskip * acts.shape[1]).astype(np.float32))
        return item
