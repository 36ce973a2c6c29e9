"""Distances between world-model feature maps [B, N, C] -> [B].

Every reward term in ``functions.py`` is built from one of these, so the shape checks live here once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

METRICS = ("l1", "l2", "cosine")
SQRT_EPS = 1e-12  # sqrt(x + eps): finite gradient at x = 0, at the cost of a 1e-6 floor on l2
COS_EPS = 1e-8


def check_metric(metric: str) -> None:
    """Fail early (at construction time) on a metric name instead of mid-rollout."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid metrics: {', '.join(METRICS)}")


def check_pair(a: Tensor, b: Tensor) -> None:
    """a must be float [B, N, C]; b either [B, N, C] or [N, C] (one target shared by the batch)."""
    if not isinstance(a, Tensor) or not isinstance(b, Tensor):
        raise ValueError("features must be torch tensors")
    if not (a.is_floating_point() and b.is_floating_point()):
        raise ValueError(f"features must be floating point, got {a.dtype} and {b.dtype}")
    if a.dim() != 3:
        raise ValueError(f"features must be [B, N, C], got shape {tuple(a.shape)}")
    if b.dim() not in (2, 3):
        raise ValueError(f"target features must be [B, N, C] or [N, C], got shape {tuple(b.shape)}")
    if b.shape[-2:] != a.shape[-2:] or (b.dim() == 3 and b.shape[0] != a.shape[0]):
        raise ValueError(f"feature shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")


def feature_distance(a: Tensor, b: Tensor, metric: str = "l1") -> Tensor:
    """[B, N, C] x [B, N, C] (or [N, C], broadcast over B) -> [B], the mean over tokens of a per-token distance.

    l1:     d = mean_n mean_c |a_nc - b_nc|
    l2:     d = mean_n sqrt(sum_c (a_nc - b_nc)^2 + 1e-12)   (the 1e-12 keeps the gradient finite at a == b)
    cosine: d = mean_n (1 - cos(a_n, b_n))                   (cos with eps 1e-8; a zero token has cos = 0)
    """
    check_metric(metric)
    check_pair(a, b)
    if metric == "l1":
        per_token = (a - b).abs().mean(-1)
    elif metric == "l2":
        per_token = ((a - b).pow(2).sum(-1) + SQRT_EPS).sqrt()
    else:
        per_token = 1 - F.cosine_similarity(a, b.expand_as(a), dim=-1, eps=COS_EPS)
    return per_token.mean(-1)
