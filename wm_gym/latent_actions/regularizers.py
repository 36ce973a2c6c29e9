"""Bottlenecks that limit what a latent action z can carry, so it cannot leak the future.

Garrido et al. (MISSION.md, document C) compare three: *sparse* (VCM + energy), *noisy*
(β·KL to N(0, I)) and *discrete* (VQ). RLA (document A) uses none: its small K×d query
bottleneck over the residual is the only limit.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

REGULARIZERS = ("none", "sparse", "noisy", "vq")


def vcm_loss(z: Tensor, eps: float = 1e-4) -> Tensor:
    """Variance-Covariance-Mean regulariser (VICReg-style) over samples z [M, D] -> scalar.

    variance: mean_j relu(1 - std_j)   keeps every dimension alive (no collapse to a constant);
    covariance: sum_{i≠j} cov_ij² / D  decorrelates dimensions (no copying one code into many);
    mean: mean_j mean_j²              centres z so the L1 term measures sparsity, not an offset.
    """
    if z.shape[0] < 2:
        return z.new_zeros(())
    zc = z - z.mean(0)
    std = torch.sqrt(zc.var(0) + eps)
    variance = F.relu(1 - std).mean()
    cov = zc.T @ zc / (z.shape[0] - 1)
    off_diag = cov - torch.diag(torch.diagonal(cov))
    covariance = off_diag.pow(2).sum() / z.shape[1]
    mean = z.mean(0).pow(2).mean()
    return variance + covariance + mean


def sparse_energy(z: Tensor, l2_weight: float, l1_weight: float) -> Tensor:
    """λ_l2·max(√D − ‖z‖², 0) + λ_l1·‖z‖₁ per latent vector z [..., D], averaged over the rest.

    L1 pushes z to be sparse; the hinge on the squared norm stops it from reaching sparsity by just
    shrinking every entry (‖z‖² must stay ≥ √D).
    """
    D = z.shape[-1]
    floor = F.relu(math.sqrt(D) - z.pow(2).sum(-1))
    return (l2_weight * floor + l1_weight * z.abs().sum(-1)).mean()


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over the last dim, averaged over the rest."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1).mean()


class VectorQuantizer(nn.Module):
    """VQ with an EMA codebook, dead-code restarts, commitment loss and straight-through gradients.

    Codes are running means of the encoder outputs assigned to them (EMA, VQ-VAE-2), not learned by
    gradient; codes that stop being picked are restarted on random current encoder outputs. Tiny
    encoders at init vary little across samples, and plain gradient-learned codebooks then collapse
    onto one or two codes; the restarts keep the whole codebook in use. On the first training batch
    every code is unused, so the codebook is initialised from data.
    """

    def __init__(self, codebook_size: int, dim: int, commitment: float = 0.25, decay: float = 0.99,
                 dead_fraction: float = 0.03):
        super().__init__()
        self.commitment, self.decay = commitment, decay
        self.dead_fraction = dead_fraction  # restart a code below this fraction of its fair share of picks
        self.register_buffer("codebook", torch.randn(codebook_size, dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))  # slow EMA of picks: code means
        self.register_buffer("ema_sum", torch.zeros(codebook_size, dim))
        self.register_buffer("usage", torch.zeros(codebook_size))  # fast EMA of picks: dead-code detection

    @torch.no_grad()
    def _update(self, flat: Tensor, idx: Tensor) -> None:
        """EMA code means from this batch's assignments; restart dead codes on random batch rows (no host sync)."""
        S = self.codebook.shape[0]
        counts = torch.bincount(idx, minlength=S).to(flat.dtype)
        self.usage.lerp_(counts, 0.1)
        self.ema_count.lerp_(counts, 1 - self.decay)
        self.ema_sum.lerp_(torch.zeros_like(self.ema_sum).index_add_(0, idx, flat), 1 - self.decay)
        used = (self.ema_count > 1e-8)[:, None]
        means = torch.where(used, self.ema_sum / self.ema_count.clamp_min(1e-8)[:, None], self.codebook)
        fair = flat.shape[0] / S
        dead = self.usage < self.dead_fraction * fair
        picks = flat[torch.randint(flat.shape[0], (S,), device=flat.device)]
        self.codebook.copy_(torch.where(dead[:, None], picks, means))
        self.ema_sum.copy_(torch.where(dead[:, None], picks * fair, self.ema_sum))
        self.ema_count.masked_fill_(dead, fair)
        self.usage.masked_fill_(dead, fair)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z [..., D] -> (z_q [..., D] (straight-through), indices [...], commitment loss scalar).

        In training mode every call also updates the codebook (like BatchNorm statistics).
        """
        flat = z.detach().reshape(-1, z.shape[-1]).float()
        with torch.autocast(flat.device.type, enabled=False):  # codebook statistics stay in fp32
            idx = torch.cdist(flat, self.codebook).argmin(1)
            q = self.codebook[idx].view_as(z).to(z.dtype)  # gathered before the update moves the codes
            if self.training:
                self._update(flat, idx)
        loss = self.commitment * F.mse_loss(z, q.detach())
        return z + (q - z).detach(), idx.view(z.shape[:-1]), loss


class LatentBottleneck(nn.Module):
    """Turns the encoder's raw output h [B, K, out_dim] into z [B, K, d] plus its regulariser loss.

    ``out_dim`` is 2d for "noisy" (mean and log-variance), d otherwise. Deterministic in eval mode:
    "noisy" returns the mean; "vq" returns the nearest codebook row.
    """

    # noisy: start from σ ≈ 0.1 rather than 1, else the decoder first sees pure noise and learns slowly
    LOGVAR_OFFSET = -4.0

    def __init__(self, kind: str, latent_dim: int, *, vcm_weight: float = 1.0, energy_l2_weight: float = 0.1,
                 energy_l1_weight: float = 0.01, kl_weight: float = 1e-3, codebook_size: int = 64,
                 commitment: float = 0.25):
        super().__init__()
        if kind not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {kind!r}")
        self.kind = kind
        self.out_dim = 2 * latent_dim if kind == "noisy" else latent_dim
        self.vcm_weight, self.l2_weight, self.l1_weight = vcm_weight, energy_l2_weight, energy_l1_weight
        self.kl_weight = kl_weight
        self.vq = VectorQuantizer(codebook_size, latent_dim, commitment) if kind == "vq" else None

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """h [B, K, out_dim] -> (z [B, K, d], weighted regulariser loss, unweighted terms for logging)."""
        if self.kind == "none":
            return h, h.new_zeros(()), {}
        if self.kind == "sparse":
            vcm = vcm_loss(h.reshape(-1, h.shape[-1]).float())
            energy = sparse_energy(h.float(), self.l2_weight, self.l1_weight)
            return h, self.vcm_weight * vcm + energy, {"vcm": vcm, "energy": energy}
        if self.kind == "noisy":
            mu, logvar = h.chunk(2, dim=-1)
            logvar = (logvar + self.LOGVAR_OFFSET).clamp(-10.0, 10.0)
            z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
            kl = gaussian_kl(mu.float(), logvar.float())
            return z, self.kl_weight * kl, {"kl": kl}
        z, idx, vq = self.vq(h)
        usage = torch.bincount(idx.flatten(), minlength=self.vq.codebook.shape[0]).float()
        p = usage / usage.sum()
        perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
        return z, vq, {"vq": vq, "vq_perplexity": perplexity}
