"""Temporal distance: how many model steps separate a state from a goal, learned from episodes.

Why: a feature distance saturates once start and goal no longer overlap (on Wall a dot 20 px
from its goal looks as far as one 40 px away), so a reward built on it is flat far from the
goal, and it points straight through walls. A goal-conditioned value learned by TD over the
dataset's episodes stitches them into shortest paths, through doors and around the U.

The value is HILP's form, V(s, g) = -‖φ(s) - φ(g)‖, trained by expectile TD with a reward of
-1 per model step and discount γ, so that V ≈ -(1 - γᵏ)/(1 - γ) for a goal k steps away.
:meth:`TemporalDistance.steps` inverts that into k: an interpretable distance in model steps,
0 at the goal. It serves as a reward (progress in steps, ``reward="temporal"``), as a success
test (``metric="temporal"``, calibrated like the feature distance) and as a planner's cost-to-go.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class TemporalDistanceConfig:
    embed_dim: int = 64       # width of the head's embedding φ(s)
    hidden: int = 512
    gamma: float = 0.95       # discount per model step; distances resolve up to a few times 1/(1-γ) steps
    expectile: float = 0.9    # > 0.5 is optimistic: shortest paths from random (suboptimal) episodes
    p_future: float = 0.7     # goals from the same episode's future (geometric offset); else any frame
    steps: int = 10_000
    batch_size: int = 256
    lr: float = 3e-4
    ema: float = 0.005        # target network's Polyak rate
    feature_noise: float = 0.0  # std of Gaussian noise on training states: robustness to imagined features
    imagined_fraction: float = 0.5  # states replaced by the model's open-loop prediction of them, so the head reads
                                    # imagined states like real ones (under the recorded actions; on video with no
                                    # labels, through the latent actions of its real frames)
    imagined_episodes: int | None = None  # roll out only this many evenly spaced episodes per dataset for the
                                          # imagined states (None: all); each rollout costs a model step per frame
    precision: str = "auto"   # training autocast: auto (bf16 on CUDA and CPUs with bf16 units) | bf16 | fp32
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.gamma < 1:
            raise ValueError(f"gamma must be in (0, 1), got {self.gamma}")
        if not 0 < self.expectile < 1:
            raise ValueError(f"expectile must be in (0, 1), got {self.expectile}")
        if self.imagined_episodes is not None and self.imagined_episodes < 1:
            raise ValueError(f"imagined_episodes must be None or >= 1, got {self.imagined_episodes}")
        for name in ("p_future", "imagined_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


class TemporalDistance(nn.Module):
    def __init__(self, n_tokens: int, dim: int, config: TemporalDistanceConfig | None = None):
        super().__init__()
        self.config = config or TemporalDistanceConfig()
        h = self.config.hidden
        self.phi = nn.Sequential(
            nn.Flatten(1), nn.Linear(n_tokens * dim, h), nn.LayerNorm(h), nn.GELU(),
            nn.Linear(h, h), nn.LayerNorm(h), nn.GELU(), nn.Linear(h, self.config.embed_dim))

    def value(self, s: Tensor, g: Tensor) -> Tensor:
        """V(s, g) = -‖φ(s) - φ(g)‖ [B] for features [B, N, C] (g may be [N, C] for one goal)."""
        if g.dim() == s.dim() - 1:
            g = g[None].expand_as(s)
        diff = self.phi(s) - self.phi(g)
        return -torch.sqrt(diff.pow(2).sum(-1) + 1e-6) + 1e-3  # smooth at 0; V(g, g) = 0 exactly

    def steps(self, s: Tensor, g: Tensor) -> Tensor:
        """Model steps from s to g [B], inverting V = -(1 - γᵏ)/(1 - γ); 0 at the goal."""
        gamma = self.config.gamma
        scaled = (1 + (1 - gamma) * self.value(s, g)).clamp(1e-6, 1.0)  # = γᵏ
        return torch.log(scaled) / math.log(gamma)

    @property
    def max_steps(self) -> float:
        """The largest distance :meth:`steps` can return."""
        return math.log(1e-6) / math.log(self.config.gamma)
