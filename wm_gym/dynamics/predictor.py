"""DINO-WM-style baseline: regress the next features from history + action, teacher-forced.

The action-conditioned baseline the latent-action models are compared against, and the model
the train–test-gap fixes of document D (online / adversarial world modelling) were built on.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from wm_gym.nn import TokenEmbedding, Transformer, check_shape, to_floats


@dataclass
class PredictorConfig:
    n_tokens: int = 64            # N: feature tokens per frame
    dim: int = 32                 # C: channels per feature token
    history: int = 1              # H: past feature frames read
    action_dim: int = 10          # A: flat real action chunk
    action_emb_dim: int = 10      # action embedding concatenated to every patch token (DINO-WM: 10)
    proprio_dim: int = 0          # P: proprioception vector size (0 = no proprio input)
    proprio_emb_dim: int = 10     # proprio embedding concatenated to every patch token
    width: int = 128              # ViT width
    depth: int = 4                # ViT blocks (self-attention over all H*N tokens)
    heads: int = 4                # attention heads (width % heads == 0)
    mlp_ratio: float = 4.0        # MLP hidden = mlp_ratio * width
    l1_weight: float = 0.0        # loss = l1_weight·L1 + mse_weight·MSE (DINO-WM: MSE only)
    mse_weight: float = 1.0


class ActionPredictor(nn.Module):
    """Small ViT over history tokens with [action, proprio] embeddings concatenated to every token.

    The last frame's outputs give a residual over it (zero-initialised head: starts as copy-last).
    Shapes: s_hist [B, H, N, C]; a [B, A]; proprio [B, P]; output [B, N, C].
    """

    def __init__(self, config: PredictorConfig):
        super().__init__()
        self.config = config
        self.a_embed = nn.Linear(config.action_dim, config.action_emb_dim)
        self.p_embed = nn.Linear(config.proprio_dim, config.proprio_emb_dim) if config.proprio_dim > 0 else None
        in_dim = config.dim + config.action_emb_dim + (config.proprio_emb_dim if config.proprio_dim > 0 else 0)
        self.embed = TokenEmbedding(in_dim, config.width, config.n_tokens, config.history)
        self.transformer = Transformer(config.width, config.depth, config.heads, config.mlp_ratio)
        self.head = nn.Linear(config.width, config.dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def embed_inputs(self, a: Tensor, proprio: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Action [B, A] (and proprio [B, P]) -> embeddings; exposed so adversarial training can perturb them."""
        c = self.config
        B = check_shape(a, "a", B=None, A=c.action_dim)[0]
        if (proprio is None) != (self.p_embed is None):
            raise ValueError(f"proprio: expected shape [B, P={c.proprio_dim}] iff proprio_dim > 0, got "
                             f"{None if proprio is None else list(proprio.shape)} with proprio_dim={c.proprio_dim}")
        p_emb = None
        if proprio is not None:
            check_shape(proprio, "proprio", B=B, P=c.proprio_dim)
            p_emb = self.p_embed(proprio)
        return self.a_embed(a), p_emb

    def predict(self, s_hist: Tensor, a_emb: Tensor, p_emb: Tensor | None = None) -> Tensor:
        """From embeddings: s_hist [B, H, N, C], a_emb [B, E_a], p_emb [B, E_p] -> s_next [B, N, C]."""
        c = self.config
        B, H, N, _ = check_shape(s_hist, "s_hist", B=None, H=c.history, N=c.n_tokens, C=c.dim)
        check_shape(a_emb, "a_emb", B=B, E=c.action_emb_dim)
        extra = [a_emb] if p_emb is None else [a_emb, p_emb]
        tokens = torch.cat([s_hist] + [e[:, None, None].expand(B, H, N, -1) for e in extra], dim=-1)
        h = self.transformer(self.embed(tokens))
        return s_hist[:, -1] + self.head(h[:, -N:])

    def forward(self, s_hist: Tensor, a: Tensor, proprio: Tensor | None = None) -> Tensor:
        """s_hist [B, H, N, C], a [B, A], proprio [B, P] or None -> s_next [B, N, C]."""
        return self.predict(s_hist, *self.embed_inputs(a, proprio))

    def loss(self, s_hist: Tensor, a: Tensor, s_next: Tensor, proprio: Tensor | None = None
             ) -> tuple[Tensor, dict[str, float]]:
        """Teacher-forced next-feature regression -> (loss, metrics with pred_l1, pred_mse)."""
        pred = self(s_hist, a, proprio)
        check_shape(s_next, "s_next", B=pred.shape[0], N=self.config.n_tokens, C=self.config.dim)
        err = pred - s_next
        l1, mse = err.abs().mean(), err.pow(2).mean()
        loss = self.config.l1_weight * l1 + self.config.mse_weight * mse
        return loss, to_floats({"loss": loss, "pred_l1": l1, "pred_mse": mse})
