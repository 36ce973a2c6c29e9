"""Latent-action autoencoder over frozen feature tokens: RLA (document A) and LAM (document C).

Both learn z = E(s_t, s_{t+h}) and a decoder D(s_t, z) -> ŝ_{t+h}; they differ in what the
encoder reads and how the bottleneck is limited:
  RLA: encoder reads the per-patch residual Δ = s_{t+h} − s_t, no regulariser (K×d queries only);
  LAM: an inverse-dynamics model reads the pair (s_t, s_{t+1}), with a sparse/noisy/VQ bottleneck.
One class covers both so the world model, controller and RL code never care which one made z.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from wm_gym.latent_actions.regularizers import REGULARIZERS, LatentBottleneck
from wm_gym.latent_actions.seq_delta_repa import SeqDeltaRepa
from wm_gym.nn import TokenEmbedding, Transformer, check_shape, group_tokens, grouped_shape, to_floats, ungroup_tokens

ENCODER_INPUTS = ("residual", "pair")


@dataclass
class LatentActionConfig:
    n_tokens: int = 64            # N: feature tokens per frame
    dim: int = 32                 # C: channels per feature token
    n_latents: int = 8            # K: latent-action query tokens (RLA paper: 32)
    latent_dim: int = 16          # d: channels per latent token (RLA paper: 64)
    width: int = 128              # transformer width inside encoder and decoder
    enc_depth: int = 2            # encoder blocks (queries: self-attn + cross-attn over input tokens)
    dec_depth: int = 2            # decoder blocks (s_t tokens: self-attn + cross-attn over z)
    heads: int = 4                # attention heads (width % heads == 0)
    mlp_ratio: float = 4.0        # MLP hidden = mlp_ratio * width
    dec_group: int = 1            # decoder tokens: each dec_group x dec_group block of feature tokens is one
                                  # (2: a quarter of the tokens, ~1/4 of the decoder's cost per imagined step)
    encoder_input: str = "residual"  # "residual" (RLA: s_next − s_t) or "pair" (LAM IDM: [s_t, s_next])
    regularizer: str = "none"     # "none" | "sparse" | "noisy" | "vq"
    l1_weight: float = 1.0        # reconstruction L1 weight
    mse_weight: float = 1.0       # reconstruction MSE weight
    vcm_weight: float = 1.0       # sparse: weight of the variance-covariance-mean term
    energy_l2_weight: float = 0.1  # sparse: λ_l2 of max(√d − ‖z‖², 0)
    energy_l1_weight: float = 0.01  # sparse: λ_l1 of ‖z‖₁
    kl_weight: float = 1e-3       # noisy: β of KL(q(z) || N(0, I)) (summed over d, mean over B, K)
    codebook_size: int = 64       # vq: codebook rows (each of the K tokens picks one)
    commitment_weight: float = 0.25  # vq: commitment loss weight
    repa_weight: float = 0.0      # Seq-Δ-REPA auxiliary loss weight in sequence_loss (0 = off)
    repa_hidden: int = 256        # Seq-Δ-REPA projection head hidden width (0 = linear)

    def __post_init__(self):
        if self.encoder_input not in ENCODER_INPUTS:
            raise ValueError(f"encoder_input must be one of {ENCODER_INPUTS}, got {self.encoder_input!r}")
        if self.regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {self.regularizer!r}")


class LatentActionEncoder(nn.Module):
    """K learned queries cross-attend over per-patch input tokens: [B, N, C_in] -> [B, K, out_dim].

    Queries (rather than pooling) keep the bottleneck size fixed at K×d whatever N is.
    """

    def __init__(self, config: LatentActionConfig, in_dim: int, out_dim: int):
        super().__init__()
        self.embed = TokenEmbedding(in_dim, config.width, config.n_tokens)
        self.queries = nn.Parameter(0.02 * torch.randn(1, config.n_latents, config.width))
        self.transformer = Transformer(config.width, config.enc_depth, config.heads, config.mlp_ratio, context_dim=config.width)
        self.head = nn.Linear(config.width, out_dim)

    def forward(self, x: Tensor) -> Tensor:
        ctx = self.embed(x[:, None])
        return self.head(self.transformer(self.queries.expand(x.shape[0], -1, -1), context=ctx))


class LatentActionDecoder(nn.Module):
    """D(s_t, z): s_t tokens self-attend and cross-attend to z tokens; predicts ŝ = s_t + residual.

    The residual head is zero-initialised, so an untrained decoder is the copy-last baseline. With
    ``dec_group`` g > 1 the transformer runs on g×g blocks of neighbouring tokens (N/g² tokens of g²·C).
    """

    def __init__(self, config: LatentActionConfig):
        super().__init__()
        self.group = config.dec_group
        n_groups, group_dim = grouped_shape(config.n_tokens, config.dim, self.group)
        self.embed = TokenEmbedding(group_dim, config.width, n_groups)
        self.z_embed = TokenEmbedding(config.latent_dim, config.width, config.n_latents)
        self.transformer = Transformer(config.width, config.dec_depth, config.heads, config.mlp_ratio, context_dim=config.width)
        self.head = nn.Linear(config.width, group_dim)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, s_t: Tensor, z: Tensor) -> Tensor:
        h = self.transformer(self.embed(group_tokens(s_t, self.group)[:, None]), context=self.z_embed(z[:, None]))
        return s_t + ungroup_tokens(self.head(h), self.group)


class LatentActionAutoencoder(nn.Module):
    """Encoder + bottleneck + decoder; ``encode``/``decode``/``loss`` are the public API.

    Shapes: s_t, s_next [B, N, C]; z [B, K, d]; s_seq [B, T+1, N, C]. The caller picks the gap h
    (RLA samples it over a range); the model only ever sees the pair (s_t, s_{t+h}).
    """

    def __init__(self, config: LatentActionConfig):
        super().__init__()
        self.config = config
        self.bottleneck = LatentBottleneck(
            config.regularizer, config.latent_dim, vcm_weight=config.vcm_weight, energy_l2_weight=config.energy_l2_weight,
            energy_l1_weight=config.energy_l1_weight, kl_weight=config.kl_weight, codebook_size=config.codebook_size,
            commitment=config.commitment_weight)
        in_dim = config.dim if config.encoder_input == "residual" else 2 * config.dim
        self.encoder = LatentActionEncoder(config, in_dim, self.bottleneck.out_dim)
        self.decoder = LatentActionDecoder(config)
        self.repa = None
        if config.repa_weight > 0:
            self.repa = SeqDeltaRepa(config.n_latents * config.latent_dim, config.dim, config.repa_hidden)

    def _check_pair(self, s_t: Tensor, s_next: Tensor) -> None:
        B = check_shape(s_t, "s_t", B=None, N=self.config.n_tokens, C=self.config.dim)[0]
        check_shape(s_next, "s_next", B=B, N=self.config.n_tokens, C=self.config.dim)

    def _encode(self, s_t: Tensor, s_next: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        x = s_next - s_t if self.config.encoder_input == "residual" else torch.cat([s_t, s_next], dim=-1)
        return self.bottleneck(self.encoder(x))

    def encode(self, s_t: Tensor, s_next: Tensor) -> Tensor:
        """(s_t, s_next) [B, N, C] -> z [B, K, d]; deterministic in eval mode (noisy: mean, vq: code).

        In training mode "noisy" samples and "vq" updates its EMA codebook: call ``.eval()`` for targets.
        """
        self._check_pair(s_t, s_next)
        return self._encode(s_t, s_next)[0]

    def decode(self, s_t: Tensor, z: Tensor) -> Tensor:
        """s_t [B, N, C], z [B, K, d] -> ŝ_next [B, N, C]."""
        B = check_shape(s_t, "s_t", B=None, N=self.config.n_tokens, C=self.config.dim)[0]
        check_shape(z, "z", B=B, K=self.config.n_latents, d=self.config.latent_dim)
        return self.decoder(s_t, z)

    def _pair_loss(self, s_t: Tensor, s_next: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        z, reg, terms = self._encode(s_t, s_next)
        err = self.decoder(s_t, z) - s_next
        l1, mse = err.abs().mean(), err.pow(2).mean()
        loss = self.config.l1_weight * l1 + self.config.mse_weight * mse + reg
        return loss, z, {"recon_l1": l1, "recon_mse": mse, **terms}

    def loss(self, s_t: Tensor, s_next: Tensor) -> tuple[Tensor, dict[str, float]]:
        """Reconstruction (L1 + MSE on features) + regulariser for a pair [B, N, C] -> (loss, metrics)."""
        self._check_pair(s_t, s_next)
        loss, _, terms = self._pair_loss(s_t, s_next)
        return loss, to_floats({"loss": loss, **terms})

    def sequence_loss(self, s_seq: Tensor) -> tuple[Tensor, dict[str, float]]:
        """s_seq [B, T+1, N, C]: pair loss on every consecutive (s_i, s_{i+1}), plus λ·Seq-Δ-REPA on the window.

        A row may end early: frames after its last one are NaN (the window of an episode too short
        for T steps, see ``latent_window_sampler``), so short episodes still train the reconstruction.
        Its pairs stop at its last frame, each real pair weighs the same in the mean, and Seq-Δ-REPA
        integrates z up to that frame. Rows with no padding take exactly the unpadded computation.
        """
        B, T1, _, _ = check_shape(s_seq, "s_seq", B=None, T1=None, N=self.config.n_tokens, C=self.config.dim)
        if T1 < 2:
            raise ValueError(f"s_seq: expected shape [B, T+1, N, C] with T+1 >= 2 frames, got {list(s_seq.shape)}")
        real = torch.isfinite(s_seq).flatten(2).all(-1)  # [B, T+1] frames that are not padding
        if bool(real.all()):
            loss, z, terms = self._pair_loss(s_seq[:, :-1].flatten(0, 1), s_seq[:, 1:].flatten(0, 1))
            z_seq, s_end = z.view(B, T1 - 1, *z.shape[1:]), s_seq[:, -1]
        else:
            frames = real.sum(1)
            if not torch.equal(real, torch.arange(T1, device=real.device) < frames[:, None]) or bool((frames < 2).any()):
                raise ValueError("s_seq: each row needs at least 2 real frames first and NaN only after them "
                                 "(padding ends a row)")
            pair = real[:, 1:]  # [B, T]: pair i is real when its second frame is
            loss, z, terms = self._pair_loss(s_seq[:, :-1][pair], s_seq[:, 1:][pair])
            z_seq = z.new_zeros(B, T1 - 1, *z.shape[1:])
            z_seq[pair] = z  # padding adds nothing to Σ z
            s_end = s_seq[torch.arange(B, device=s_seq.device), frames - 1]
        if self.repa is not None:
            repa = self.repa.loss(z_seq, s_seq[:, 0], s_end)
            loss = loss + self.config.repa_weight * repa
            terms["repa"] = repa
        return loss, to_floats({"loss": loss, **terms})
