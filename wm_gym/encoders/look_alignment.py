"""Adapt a world model to a changed look from unlabelled video: align the new look's features to the old.

A conv encoder trained on one look (say, a white floor) gives other features for the same scene in
another look (a blue floor): an agent trained on the old features fails in the new look (Wall:
0.89 → 0.06 success). Retraining on both looks' videos did not help (the look difference dwarfs
the dot's motion in the features). What does help needs no training at all: per token, map the
new look's raw encoder features onto the old look's mean and covariance (CORAL, Sun et al. 2016):

    x ↦ (x − μ_new) · Σ_new^{-1/2} Σ_old^{1/2} + μ_old        (one C×C map per token)

estimated from unlabelled video of each look with the same kind of behaviour (e.g. random-policy
episodes). The static background, which is what a look mostly changes, is absorbed by the means;
the covariances re-scale and re-mix the channels that carry the moving parts.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor


def _matrix_power(cov: Tensor, power: float, ridge: float) -> Tensor:
    """cov^power for a batch of symmetric PSD matrices [..., C, C], with ``ridge`` × mean variance added first."""
    scale = cov.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-12)[..., None, None]
    values, vectors = torch.linalg.eigh(cov + ridge * scale * torch.eye(cov.shape[-1], dtype=cov.dtype))
    return vectors @ torch.diag_embed(values.clamp_min(1e-12) ** power) @ vectors.transpose(-1, -2)


class LookAlignment(nn.Module):
    """Per-token affine map [N, C] → [N, C] of raw encoder features; the identity until :meth:`fit`."""

    def __init__(self, n_tokens: int, dim: int):
        super().__init__()
        self.register_buffer("mean_new", torch.zeros(n_tokens, dim))
        self.register_buffer("matrix", torch.eye(dim).repeat(n_tokens, 1, 1))
        self.register_buffer("mean_old", torch.zeros(n_tokens, dim))

    def forward(self, raw: Tensor) -> Tensor:
        """Raw features of the new look [B, N, C] → as the old look would give them."""
        return torch.einsum("bnc,ncd->bnd", raw.float() - self.mean_new, self.matrix) + self.mean_old

    @torch.no_grad()
    def fit(self, old: Tensor, new: Tensor, ridge: float = 1e-3) -> "LookAlignment":
        """Fit on raw features of the old look [B1, N, C] and of the new look [B2, N, C]. Returns self."""
        if old.dim() != 3 or new.shape[1:] != old.shape[1:] or old.shape[1:] != self.mean_new.shape:
            raise ValueError(f"old and new features must be [B, {self.mean_new.shape[0]}, {self.mean_new.shape[1]}], "
                             f"got {list(old.shape)} and {list(new.shape)}")
        if min(len(old), len(new)) < 2:
            raise ValueError("each look needs at least 2 frames to estimate a covariance")
        if not (torch.isfinite(old).all() and torch.isfinite(new).all()):
            raise ValueError("features must be finite")
        old, new = old.double(), new.double()
        covariance = lambda x: torch.einsum("bnc,bnd->ncd", x - x.mean(0), x - x.mean(0)) / (len(x) - 1)  # noqa: E731
        matrix = _matrix_power(covariance(new), -0.5, ridge) @ _matrix_power(covariance(old), 0.5, ridge)
        self.mean_new.copy_(new.mean(0)), self.matrix.copy_(matrix), self.mean_old.copy_(old.mean(0))
        return self
