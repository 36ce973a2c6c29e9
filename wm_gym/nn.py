"""Shared transformer pieces: attention, MLP, (adaLN-zero) block, token embedding, shape checks.

Every model in wm_gym (latent-action autoencoder, flow dynamics, controller, predictor) is a
small stack of these, so there is one implementation to test, to fix and to speed up.
Everything is device-agnostic and autocast-safe (no ``.cuda()``, no dtype pinning).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


def check_shape(x: Tensor, name: str, /, **dims: int | None) -> torch.Size:
    """Raise ValueError unless ``x`` has exactly the named dims (None = any size); return x.shape.

    Called at public API boundaries so a wrong layout fails early with the expected shape spelled
    out: ``check_shape(s, "s_t", B=None, N=64, C=32)`` -> "s_t: expected shape [B, N=64, C=32], got [2, 64]".
    """
    want = ", ".join(k if v is None else f"{k}={v}" for k, v in dims.items())
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: expected a tensor of shape [{want}], got {type(x).__name__}")
    if x.dim() != len(dims) or any(v is not None and s != v for s, v in zip(x.shape, dims.values())):
        raise ValueError(f"{name}: expected shape [{want}], got {list(x.shape)}")
    return x.shape


def to_floats(terms: dict[str, Tensor]) -> dict[str, float]:
    """Scalar tensors -> detached Python floats for logging, with a single device sync."""
    values = torch.stack([v.detach().float().reshape(()) for v in terms.values()]).tolist()
    return dict(zip(terms.keys(), values))


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding t [B] -> [B, dim] (DiT). Frequencies suit t in ~[0, 1000]: scale τ∈[0,1] up."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN: x [B, T, D] scaled and shifted per sample by shift, scale [B, D]."""
    return x * (1 + scale[:, None]) + shift[:, None]


class MLP(nn.Module):
    """``layers`` Linear layers with GELU between: [..., in_dim] -> [..., out_dim] (layers=1: one Linear)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int | None = None, layers: int = 2):
        super().__init__()
        if layers < 1:
            raise ValueError(f"MLP needs layers >= 1, got {layers}")
        sizes = [in_dim] + [hidden] * (layers - 1) + [out_dim or in_dim]
        mods: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            mods += [nn.Linear(a, b)] + ([nn.GELU()] if i < layers - 1 else [])
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Attention(nn.Module):
    """Multi-head attention via SDPA: self-attention when ``context`` is None, else cross-attention."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} must be divisible by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """x [B, T, D], context [B, S, Dc] (or None) -> [B, T, D]."""
        B, T, D = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(B, T, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU bf16 attention's backward is ~9x slower than fp32 (254 vs 29 ms measured on the latent
            # stage), so under CPU autocast attention runs in fp32 and the Linear layers stay bf16.
            with torch.autocast("cpu", enabled=False):
                y = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        else:
            y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention to a context, MLP.

    With ``cond_dim`` each sublayer is adaLN-zero modulated by a vector c [B, cond_dim] (DiT):
    the LayerNorms lose their affine params, c gives a shift/scale/gate per sublayer, and that
    map is zero-initialised so the block starts as the identity - stable for strong conditioning.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0,
                 context_dim: int | None = None, cond_dim: int | None = None):
        super().__init__()
        self.attn = Attention(dim, heads)
        self.cross = Attention(dim, heads, context_dim) if context_dim is not None else None
        self.mlp = MLP(dim, int(mlp_ratio * dim), dim)
        n_sub = 2 + (self.cross is not None)
        self.norms = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=cond_dim is None) for _ in range(n_sub))
        self.ada = None
        if cond_dim is not None:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 3 * n_sub * dim))
            nn.init.zeros_(self.ada[-1].weight)
            nn.init.zeros_(self.ada[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None, c: Tensor | None = None) -> Tensor:
        """x [B, T, D], context [B, S, Dc], c [B, cond_dim] -> [B, T, D]."""
        sublayers = [lambda h: self.attn(h)]
        if self.cross is not None:
            sublayers.append(lambda h: self.cross(h, context))
        sublayers.append(self.mlp)
        mods = self.ada(c).chunk(3 * len(sublayers), dim=-1) if self.ada is not None else None
        for i, (norm, layer) in enumerate(zip(self.norms, sublayers)):
            h = norm(x)
            if mods is None:
                x = x + layer(h)
            else:
                shift, scale, gate = mods[3 * i: 3 * i + 3]
                x = x + gate[:, None] * layer(modulate(h, shift, scale))
        return x


class Transformer(nn.Module):
    """A stack of Blocks and a final LayerNorm (adaLN-modulated, zero-init, when conditioned).

    [B, T, D] -> [B, T, D]; ``context`` [B, S, context_dim] is LayerNorm-ed once and shared by all
    blocks' cross-attention; ``c`` [B, cond_dim] conditions every block.
    """

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0,
                 context_dim: int | None = None, cond_dim: int | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, context_dim, cond_dim) for _ in range(depth))
        self.context_norm = nn.LayerNorm(context_dim) if context_dim is not None else None
        self.norm = nn.LayerNorm(dim, elementwise_affine=cond_dim is None)
        self.ada = None
        if cond_dim is not None:
            self.ada = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, 2 * dim))
            nn.init.zeros_(self.ada[-1].weight)
            nn.init.zeros_(self.ada[-1].bias)

    def forward(self, x: Tensor, context: Tensor | None = None, c: Tensor | None = None) -> Tensor:
        if self.context_norm is not None:
            context = self.context_norm(context)
        for block in self.blocks:
            x = block(x, context, c)
        x = self.norm(x)
        if self.ada is not None:
            shift, scale = self.ada(c).chunk(2, dim=-1)
            x = modulate(x, shift, scale)
        return x


def grouped_shape(n_tokens: int, dim: int, group: int) -> tuple[int, int]:
    """(tokens, channels) of :func:`group_tokens`' output for N = ``n_tokens`` tokens of ``dim`` channels; raises
    unless the tokens form a square grid whose side ``group`` divides (models call it when they are built); any
    N for ``group`` 1, which leaves the tokens as they are."""
    if group == 1:
        return n_tokens, dim
    side = math.isqrt(n_tokens)
    if group < 1 or side * side != n_tokens or side % group:
        raise ValueError(f"cannot group {n_tokens} tokens in {group}x{group} blocks: needs a square grid whose side "
                         f"{group} divides")
    return n_tokens // group**2, dim * group**2


def group_tokens(x: Tensor, group: int) -> Tensor:
    """Row-major grid tokens [B, N, C] -> [B, N / group², group² · C]: each group × group block of neighbours becomes
    one token, so a transformer over them costs ~1/group² as much (the latent decoder's and controller's cheap mode)."""
    if group == 1:
        return x
    B, N, C = x.shape
    grouped_shape(N, C, group)
    k = math.isqrt(N) // group
    return x.reshape(B, k, group, k, group, C).permute(0, 1, 3, 2, 4, 5).reshape(B, k * k, group * group * C)


def ungroup_tokens(x: Tensor, group: int) -> Tensor:
    """The inverse of :func:`group_tokens`: [B, N / group², group² · C] -> row-major [B, N, C]."""
    if group == 1:
        return x
    B, M, GC = x.shape
    k, C = math.isqrt(M), GC // (group * group)
    return x.reshape(B, k, k, group, group, C).permute(0, 1, 3, 2, 4, 5).reshape(B, M * group * group, C)


class TokenEmbedding(nn.Module):
    """Frozen feature tokens -> model width, plus learned patch-position and frame embeddings.

    [B, H, N, C] -> [B, H*N, W]; token h*N + n is patch n of frame h (oldest frame first).
    """

    def __init__(self, in_dim: int, width: int, n_tokens: int, frames: int = 1):
        super().__init__()
        self.proj = nn.Linear(in_dim, width)
        self.pos = nn.Parameter(0.02 * torch.randn(1, 1, n_tokens, width))
        self.frame = nn.Parameter(0.02 * torch.randn(1, frames, 1, width))

    def forward(self, x: Tensor) -> Tensor:
        return (self.proj(x) + self.pos + self.frame).flatten(1, 2)
