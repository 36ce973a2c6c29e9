"""The network between a policy's input (world-model features) and its action and value heads.

A policy sees H+1 feature frames (its history and the goal), each N tokens × C numbers on the
encoder's token grid: 8,192 numbers on `pointmaze`. ``mlp`` (SB3's default) flattens them, so every
position of the ball is a separate pattern to learn; with a few hundred demos, or 30,720 DAgger
labels, it memorises its states and does not carry to the next ones. ``keypoints`` runs a small
conv over the token grid (the frames as channels: weights shared across positions) and reads each
of its maps as a point, the soft-argmax of the map (Levine et al. 2016, "End-to-end training of deep
visuomotor policies"): where things are, in a few hundred numbers. Measured on `pointmaze`
(docs/results.md, issue 26; 200 episodes under ``dino-wm``): cloning the bank's 400 demos, 0.810
against the MLP's 0.635; distilling the planner by DAgger with labels the state decides, 0.925
against 0.860 (0.920–0.985 over four seeds, 0.958 pooled, once the labels weigh every predicted frame alike).
"""
from __future__ import annotations

import math

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from wm_gym.agents.train_agent import POLICY_NETS


def soft_argmax(logits: torch.Tensor, grid: int) -> torch.Tensor:
    """[B, K, grid·grid] maps (row-major tokens) → [B, K, 2] expected (x, y) under each map's softmax, in [-1, 1]."""
    axis = torch.linspace(-1.0, 1.0, grid, device=logits.device, dtype=logits.dtype)
    weights = logits.softmax(-1).unflatten(-1, (grid, grid))  # [B, K, rows, columns]
    x = (weights.sum(-2) * axis).sum(-1)  # columns
    y = (weights.sum(-1) * axis).sum(-1)  # rows
    return torch.stack([x, y], -1)


class TokenKeypoints(BaseFeaturesExtractor):
    """Policy observation [B, F·N·C] → [B, 3·K]: K points (x, y) and K mean activations of a conv over the grid.

    ``frames`` F (the model's history + the goal), ``tokens`` N (a square grid), ``dim`` C: the world model's."""

    def __init__(self, observation_space: spaces.Box, frames: int, tokens: int, dim: int, channels: int = 64):
        grid = math.isqrt(tokens)
        if grid * grid != tokens:
            raise ValueError(f"keypoints read a square token grid; this world model has {tokens} tokens per frame")
        if observation_space.shape != (frames * tokens * dim,):
            raise ValueError(f"keypoints expected observations of {frames} frames × {tokens} tokens × {dim}, that is "
                             f"({frames * tokens * dim},), got {observation_space.shape}")
        super().__init__(observation_space, features_dim=3 * channels)
        self.frames, self.tokens, self.dim, self.grid = frames, tokens, dim, grid
        self.conv = nn.Sequential(
            nn.Conv2d(frames * dim, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        b = observations.shape[0]
        x = observations.reshape(b, self.frames, self.tokens, self.dim).transpose(2, 3)  # [B, F, C, N]
        maps = self.conv(x.reshape(b, self.frames * self.dim, self.grid, self.grid)).flatten(2)  # [B, K, N]
        return torch.cat([soft_argmax(maps, self.grid).flatten(1), maps.mean(-1)], dim=1)


def network_kwargs(net: str, frames: int, tokens: int, dim: int) -> dict:
    """SB3 ``policy_kwargs`` entries that build the policy net ``net`` for a world model's observations."""
    if net not in POLICY_NETS:
        raise ValueError(f"policy_net must be one of {', '.join(POLICY_NETS)}, got {net!r}")
    if net == "mlp":
        return {}
    return {"features_extractor_class": TokenKeypoints,
            "features_extractor_kwargs": {"frames": frames, "tokens": tokens, "dim": dim}}
