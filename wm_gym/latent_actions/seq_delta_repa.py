"""Seq-Δ-REPA (Olaf-World, MISSION.md document B): orient latent actions across clips.

Per-clip latent actions drift in meaning ("right" = camera pan here, object move there). Aligning
the *integrated* latent action over a window with the frozen-encoder feature change it caused
ties z to a shared, clip-independent direction in feature space.
"""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from wm_gym.nn import MLP, check_shape


class SeqDeltaRepa(nn.Module):
    """Projection head P with loss 1 − cos(P(Σ_t z_t), SG(mean_n(s_end − s_start))), batch-averaged.

    ``hidden=0`` makes P a single Linear layer (handy for hand-checked tests).
    """

    def __init__(self, z_numel: int, feat_dim: int, hidden: int = 256):
        super().__init__()
        self.z_numel, self.feat_dim = z_numel, feat_dim
        self.proj = MLP(z_numel, hidden, feat_dim, layers=2 if hidden > 0 else 1)

    def loss(self, z_seq: Tensor, s_start: Tensor, s_end: Tensor) -> Tensor:
        """z_seq [B, T, K, d] (K·d = z_numel), s_start/s_end [B, N, C] (C = feat_dim) -> scalar.

        The feature target is detached (stop-gradient): the frozen features are the anchor, only
        the latent actions and P move.
        """
        B, T, K, d = check_shape(z_seq, "z_seq", B=None, T=None, K=None, d=None)
        if K * d != self.z_numel:
            raise ValueError(f"z_seq: expected shape [B, T, K, d] with K*d={self.z_numel}, got {list(z_seq.shape)}")
        _, N, _ = check_shape(s_start, "s_start", B=B, N=None, C=self.feat_dim)
        check_shape(s_end, "s_end", B=B, N=N, C=self.feat_dim)
        pred = self.proj(z_seq.sum(1).flatten(1))
        target = (s_end - s_start).mean(1).detach()
        return (1 - F.cosine_similarity(pred, F.normalize(target, dim=-1), dim=-1)).mean()
