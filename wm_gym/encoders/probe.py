"""Linear probe: how much of the true state a feature map exposes linearly."""
from __future__ import annotations

import numpy as np
import torch


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

    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    x_tr, x_te = (x[train] - mean) / std, (x[test] - mean) / std
    y_mean = y[train].mean(0)
    y_tr = y[train] - y_mean
    lam = ridge * n_train
    if x_tr.shape[1] <= n_train:  # primal: (XᵀX + λI) w = Xᵀy
        w = torch.linalg.solve(x_tr.T @ x_tr + lam * torch.eye(x_tr.shape[1], dtype=x.dtype), x_tr.T @ y_tr)
    else:                         # dual:   w = Xᵀ (XXᵀ + λI)⁻¹ y
        w = x_tr.T @ torch.linalg.solve(x_tr @ x_tr.T + lam * torch.eye(n_train, dtype=x.dtype), y_tr)
    pred = x_te @ w + y_mean

    y_te = y[test]
    sst = ((y_te - y_te.mean(0)) ** 2).sum(0)
    if (sst <= 0).any():
        raise ValueError("a target dim is constant on the held-out rows; R² is undefined for it")
    sse = ((y_te - pred) ** 2).sum(0)
    return float((1 - sse / sst).mean())
