"""Linear probe: how much of the true state a feature map exposes linearly."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from torch import Tensor


def linear_probe_r2(
    features: torch.Tensor | np.ndarray,
    targets: torch.Tensor | np.ndarray,
    train_fraction: float = 0.8,
    ridge: float = 1e-3,
    seed: int = 0,
) -> float:
    """Closed-form ridge from features [M, D] (e.g. flattened tokens) to targets [M, k]; held-out R².

    Rows are split at random (``seed``) into train / held-out; features are z-scored with train
    statistics so ``ridge`` is scale free (it is relative to unit feature variance, per sample).
    Solves in whichever of the D×D or n×n Gram forms is smaller, so 100k-dim ViT features are fine.
    Returns R² = 1 − SSE/SST on the held-out rows, averaged over the k target dims.
    Rows that are consecutive frames of one episode are near-duplicates: shuffle by episode first
    if you need a strictly out-of-sample number.
    """
    x = torch.as_tensor(features).double().reshape(len(features), -1).cpu()
    y = torch.as_tensor(targets).double().reshape(len(targets), -1).cpu()
    if len(x) != len(y):
        raise ValueError(f"features and targets differ in length: {len(x)} vs {len(y)}")
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_train = int(round(train_fraction * len(x)))
    if not 2 <= n_train <= len(x) - 2:
        raise ValueError(f"train_fraction={train_fraction} leaves too few train or held-out rows of {len(x)}")
    train, test = perm[:n_train], perm[n_train:]

    mean, std, w, y_mean = fit_ridge(x[train], y[train], ridge)
    pred = ((x[test] - mean) / std) @ w + y_mean

    y_te = y[test]
    sst = ((y_te - y_te.mean(0)) ** 2).sum(0)
    if (sst <= 0).any():
        raise ValueError("a target dim is constant on the held-out rows; R² is undefined for it")
    sse = ((y_te - pred) ** 2).sum(0)
    return float((1 - sse / sst).mean())


def fit_ridge(x: torch.Tensor, y: torch.Tensor, ridge: float = 1e-3) -> tuple[torch.Tensor, ...]:
    """Closed-form ridge from x [M, D] to y [M, k] on z-scored features: (mean [D], std [D], w [D, k], y_mean [k]),
    so that ŷ = ((x − mean) / std) · w + y_mean. ``ridge`` is relative to unit feature variance, per sample; the
    D×D or the M×M Gram form is solved, whichever is smaller. A feature that barely varies in ``x`` is divided by
    a thousandth of the mean spread at least, so that new data, where it may vary, does not blow it up."""
    std = x.std(0)
    mean, std = x.mean(0), std.clamp_min(max(1e-3 * float(std.mean()), 1e-8))  # near-constant features stay small
    x_tr, y_mean = (x - mean) / std, y.mean(0)
    y_tr, n, lam = y - y_mean, len(x), ridge * len(x)
    if x_tr.shape[1] <= n:  # primal: (XᵀX + λI) w = Xᵀy
        w = torch.linalg.solve(x_tr.T @ x_tr + lam * torch.eye(x_tr.shape[1], dtype=x.dtype), x_tr.T @ y_tr)
    else:                   # dual:   w = Xᵀ (XXᵀ + λI)⁻¹ y
        w = x_tr.T @ torch.linalg.solve(x_tr @ x_tr.T + lam * torch.eye(n, dtype=x.dtype), y_tr)
    return mean, std, w, y_mean


class StateProbe(nn.Module):
    """Features [B, N, C] → the sim's state [B, S]: ridge on z-scored flattened features; zeros until :meth:`fit`."""

    def __init__(self, n_tokens: int, dim: int, state_dim: int):
        super().__init__()
        d = n_tokens * dim
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.register_buffer("weight", torch.zeros(d, state_dim))
        self.register_buffer("bias", torch.zeros(state_dim))

    def forward(self, s: Tensor) -> Tensor:
        flat = s.reshape(len(s), -1).float()
        return (flat - self.mean) / self.std @ self.weight + self.bias

    @torch.no_grad()
    def fit(self, features: Tensor, states: Tensor, ridge: float = 1e-3) -> "StateProbe":
        """Fit on features [M, N, C] and their true states [M, S]; returns self."""
        if len(features) != len(states) or states.shape[1:] != self.bias.shape:
            raise ValueError(f"need features [M, N, C] and states [M, {len(self.bias)}] of one length, got "
                             f"{list(features.shape)} and {list(states.shape)}")
        x, y = features.reshape(len(features), -1).double().cpu(), states.double().cpu()
        if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
            raise ValueError("probe features and states must be finite")
        mean, std, w, y_mean = fit_ridge(x, y, ridge)
        for name, value in (("mean", mean), ("std", std), ("weight", w), ("bias", y_mean)):
            getattr(self, name).copy_(value.to(self.bias))
        return self
