"""``wm-gym align``: a world model that reads a changed look, from unlabelled video of both looks.

The aligned model is the same model with a :class:`~wm_gym.encoders.look_alignment.LookAlignment` in
front of its feature normalisation, so every consumer that encodes real frames (``evaluate``,
``plan``, ``WMReal-v0``, grounding) sees the new look as the old one. Agents and groundings trained on
the original model run on it unchanged. Imagination refuses it: its demo bank shows the old look.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_gym.data.dataset import load_episodes
from wm_gym.encoders.look_alignment import LookAlignment
from wm_gym.world_model import WorldModel


@torch.no_grad()
def raw_features(model: WorldModel, data_dir: str | Path, max_episodes: int | None, batch: int = 512) -> torch.Tensor:
    """The encoder's raw features [F, N, C] of every frame of the first ``max_episodes`` episodes."""
    data = load_episodes(data_dir, mmap=True)
    if len(data) == 0:
        raise ValueError(f"{data_dir} has no episodes")
    frames = np.concatenate([np.asarray(f) for f in data.frames[:max_episodes]])
    if frames.shape[1:3] != (model.meta.image_size, model.meta.image_size):
        raise ValueError(f"{data_dir} has {frames.shape[1]}×{frames.shape[2]} frames; the model reads "
                         f"{model.meta.image_size}×{model.meta.image_size}")
    chunks = [model.encoder(torch.from_numpy(frames[i:i + batch]).to(model.device)).float().cpu()
              for i in range(0, len(frames), batch)]
    return torch.cat(chunks)


def align_model(model: WorldModel, old_data: str | Path, new_data: str | Path, look: str,
                max_episodes: int | None = 100, ridge: float = 1e-3) -> tuple[WorldModel, dict[str, Any]]:
    """A copy of ``model`` that reads look ``look``: its features of ``new_data``'s frames (that look) are mapped
    onto its features of ``old_data``'s (the look it was trained on). Both datasets need no labels; they should
    show the same kind of behaviour (e.g. random-policy episodes of each look)."""
    if model.look_alignment is not None:
        raise ValueError(f"this model is already aligned to look {model.config.look_alignment!r}; align the "
                         "original model instead")
    old, new = raw_features(model, old_data, max_episodes), raw_features(model, new_data, max_episodes)
    aligned = copy.deepcopy(model)
    aligned.config.look_alignment = look
    aligned.look_alignment = LookAlignment(model.n_tokens, model.dim).fit(old, new, ridge).to(model.device)
    with torch.no_grad():
        before = float(((new.mean(0) - old.mean(0)) ** 2).mean())
        after = float(((aligned.look_alignment(new).mean(0) - old.mean(0)) ** 2).mean())
    report = {"look": look, "old_frames": len(old), "new_frames": len(new), "ridge": ridge,
              "mean_gap_before": before, "mean_gap_after": after}
    aligned.meta.train_info = {**aligned.meta.train_info, "look_alignment": report}
    return aligned, report
