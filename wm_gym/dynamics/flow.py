"""RLA-WM dynamics (MISSION.md document A): a flow-matching model of the latent action z.

Regressing next features directly blurs or collapses; sampling z given (history, action) and
decoding it with the latent-action decoder keeps predictions sharp. Rectified flow:
z_τ = (1−τ)·ε + τ·z, the network predicts the velocity z − ε, Euler steps integrate τ: 0 → 1.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from wm_gym.nn import MLP, TokenEmbedding, Transformer, check_shape, timestep_embedding, to_floats

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass
class FlowConfig:
    n_tokens: int = 64            # N: feature tokens per frame
    dim: int = 32                 # C: channels per feature token
    history: int = 1              # H: past feature frames conditioned on
    action_dim: int = 10          # A: flat real action chunk (frameskip × sim action dim)
    n_latents: int = 8            # K: latent-action tokens (must match the autoencoder)
    latent_dim: int = 16          # d: channels per latent token (must match the autoencoder)
    width: int = 128              # transformer width
    depth: int = 4                # transformer blocks (self-attn over z, cross-attn over history, MLP)
    heads: int = 4                # attention heads (width % heads == 0)
    mlp_ratio: float = 4.0        # MLP hidden = mlp_ratio * width
    time_sampling: str = "logit_normal"  # training τ: "uniform" or "logit_normal" (SD3: more mid-τ)
    sample_steps: int = 10        # default Euler steps in sample() (RLA-WM code: 10–50)

    def __post_init__(self):
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {self.time_sampling!r}")


class FlowDynamics(nn.Module):
    """Velocity field v(z_τ, τ | s_hist, a): z tokens attend to history tokens; τ and a enter via adaLN-zero.

    Shapes: z [B, K, d]; s_hist [B, H, N, C]; a [B, A].
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        W = config.width
        self.context = TokenEmbedding(config.dim, W, config.n_tokens, config.history)
        self.z_embed = TokenEmbedding(config.latent_dim, W, config.n_latents)
        self.t_embed = MLP(W, W, W)
        self.a_embed = MLP(config.action_dim, W, W)
        self.transformer = Transformer(W, config.depth, config.heads, config.mlp_ratio, context_dim=W, cond_dim=W)
        self.head = nn.Linear(W, config.latent_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def _check(self, s_hist: Tensor, a: Tensor, z: Tensor | None = None) -> int:
        c = self.config
        B = check_shape(s_hist, "s_hist", B=None, H=c.history, N=c.n_tokens, C=c.dim)[0]
        check_shape(a, "a", B=B, A=c.action_dim)
        if z is not None:
            check_shape(z, "z", B=B, K=c.n_latents, d=c.latent_dim)
        return B

    def _velocity(self, z_tau: Tensor, tau: Tensor, ctx: Tensor, a_emb: Tensor) -> Tensor:
        """z_τ [B, K, d], τ [B], ctx [B, H*N, W], a_emb [B, W] -> velocity [B, K, d]."""
        cond = a_emb + self.t_embed(timestep_embedding(1000 * tau, self.config.width).to(a_emb.dtype))
        return self.head(self.transformer(self.z_embed(z_tau[:, None]), context=ctx, c=cond))

    def velocity(self, z_tau: Tensor, tau: Tensor, s_hist: Tensor, a: Tensor) -> Tensor:
        """Predicted velocity for z_τ [B, K, d] at flow time τ [B] in [0, 1] -> [B, K, d]."""
        B = self._check(s_hist, a, z_tau)
        check_shape(tau, "tau", B=B)
        return self._velocity(z_tau, tau, self.context(s_hist), self.a_embed(a))

    def _sample_tau(self, B: int, like: Tensor) -> Tensor:
        if self.config.time_sampling == "uniform":
            return torch.rand(B, device=like.device, dtype=like.dtype)
        return torch.sigmoid(torch.randn(B, device=like.device, dtype=like.dtype))

    def loss(self, z: Tensor, s_hist: Tensor, a: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Flow-matching MSE between predicted and true velocity z − ε -> (loss, metrics)."""
        B = self._check(s_hist, a, z)
        eps = torch.randn_like(z)
        tau = self._sample_tau(B, z)
        z_tau = (1 - tau)[:, None, None] * eps + tau[:, None, None] * z
        loss = F.mse_loss(self._velocity(z_tau, tau, self.context(s_hist), self.a_embed(a)), z - eps)
        return loss, to_floats({"loss": loss, "flow_mse": loss})

    def sample(self, s_hist: Tensor, a: Tensor, steps: int | None = None, noise: Tensor | None = None,
               generator: torch.Generator | None = None) -> Tensor:
        """Euler-integrate τ: 0 -> 1 from ``noise`` [B, K, d] (default: N(0, I)) -> z [B, K, d].

        ``noise=zeros`` is the deterministic "mean" mode. No ``no_grad`` inside: gradients flow to
        ``a`` (gradient-based planning); wrap the call in ``torch.no_grad()`` for pure rollouts.
        """
        B = self._check(s_hist, a)
        c = self.config
        steps = c.sample_steps if steps is None else steps
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if noise is None:
            noise = torch.randn(B, c.n_latents, c.latent_dim, generator=generator, device=s_hist.device,
                                dtype=s_hist.dtype)
        check_shape(noise, "noise", B=B, K=c.n_latents, d=c.latent_dim)
        ctx, a_emb = self.context(s_hist), self.a_embed(a)
        z = noise
        for i in range(steps):
            tau = torch.full((B,), i / steps, device=z.device, dtype=z.dtype)
            z = z + self._velocity(z, tau, ctx, a_emb) / steps
        return z
