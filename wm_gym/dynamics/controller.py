"""Controller (MISSION.md document C): real action chunk + past features -> latent action z.

It makes a latent-action world model usable with real actions (CEM, gradient planning, RL).
The same action moves different scenes differently, so z needs the past features too; without
them the controller regresses to the average latent, i.e. "no motion".
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from wm_gym.nn import MLP, TokenEmbedding, Transformer, check_shape, group_tokens, grouped_shape, to_floats


@dataclass
class ControllerConfig:
    n_tokens: int = 64            # N: feature tokens per frame
    dim: int = 32                 # C: channels per feature token
    history: int = 1              # H: past feature frames read
    action_dim: int = 10          # A: flat real action chunk
    n_latents: int = 8            # K: latent-action tokens (must match the autoencoder)
    latent_dim: int = 16          # d: channels per latent token (must match the autoencoder)
    width: int = 128              # transformer width
    depth: int = 2                # blocks: K queries self-attend, cross-attend to history; action via adaLN
    heads: int = 4                # attention heads (width % heads == 0)
    mlp_ratio: float = 4.0        # MLP hidden = mlp_ratio * width
    context_group: int = 1        # read each context_group x context_group block of a frame's feature tokens as
                                  # one token (N/g² tokens of g²·C): the cross-attention's keys cost ~1/g²


class Controller(nn.Module):
    """Deterministic z = f(s_hist, a): K queries attend over history tokens, the action conditions via adaLN-zero.

    Shapes: s_hist [B, H, N, C]; a [B, A]; z [B, K, d]. With ``context_group`` g > 1 the context is each
    frame's g×g token blocks (:func:`wm_gym.nn.group_tokens`), as the latent decoder's ``dec_group``.
    """

    def __init__(self, config: ControllerConfig):
        super().__init__()
        self.config = config
        W = config.width
        n_groups, group_dim = grouped_shape(config.n_tokens, config.dim, config.context_group)
        self.context = TokenEmbedding(group_dim, W, n_groups, config.history)
        self.queries = nn.Parameter(0.02 * torch.randn(1, config.n_latents, W))
        self.a_embed = MLP(config.action_dim, W, W)
        self.transformer = Transformer(W, config.depth, config.heads, config.mlp_ratio, context_dim=W, cond_dim=W)
        self.head = nn.Linear(W, config.latent_dim)

    def forward(self, s_hist: Tensor, a: Tensor) -> Tensor:
        """s_hist [B, H, N, C], a [B, A] -> z [B, K, d]."""
        c = self.config
        B = check_shape(s_hist, "s_hist", B=None, H=c.history, N=c.n_tokens, C=c.dim)[0]
        check_shape(a, "a", B=B, A=c.action_dim)
        q = self.queries.expand(B, -1, -1)
        context = group_tokens(s_hist.flatten(0, 1), c.context_group).unflatten(0, s_hist.shape[:2])
        return self.head(self.transformer(q, context=self.context(context), c=self.a_embed(a)))

    def loss(self, s_hist: Tensor, a: Tensor, z_target: Tensor) -> tuple[Tensor, dict[str, float]]:
        """L2 to the inverse-dynamics latents z_target [B, K, d] (treated as constants) -> (loss, metrics)."""
        z = self(s_hist, a)
        check_shape(z_target, "z_target", B=z.shape[0], K=self.config.n_latents, d=self.config.latent_dim)
        loss = F.mse_loss(z, z_target.detach())
        return loss, to_floats({"loss": loss, "z_mse": loss})
