"""DINOv2 ViT-S/14 (no registers), written out so we need neither timm nor torch.hub.

Module and parameter names equal the keys of the official ``dinov2_vits14_pretrain.pth``
(facebookresearch/dinov2), so that file loads strictly. timm's ``vit_small_patch14_dinov2``
uses the same names except that it has no ``mask_token``; it also loads (see ``to_official_keys``).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .base import FrozenEncoder

WEIGHTS_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DinoV2Config:
    image_size: int = 224   # frames are resized to this; a multiple of patch_size
    patch_size: int = 14
    dim: int = 384
    depth: int = 12
    heads: int = 6
    mlp_ratio: float = 4.0
    pretrain_grid: int = 37  # 518 / 14: the grid pos_embed was learned on


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] → [B, T, C]
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual-branch scale (CaiT); DINOv2 trains it from 1e-5."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, c: DinoV2Config):
        super().__init__()
        self.norm1 = nn.LayerNorm(c.dim, eps=1e-6)
        self.attn = Attention(c.dim, c.heads)
        self.ls1 = LayerScale(c.dim)
        self.norm2 = nn.LayerNorm(c.dim, eps=1e-6)
        self.mlp = Mlp(c.dim, int(c.dim * c.mlp_ratio))
        self.ls2 = LayerScale(c.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, c: DinoV2Config):
        super().__init__()
        self.proj = nn.Conv2d(3, c.dim, c.patch_size, stride=c.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, H, W] → [B, (H/p)·(W/p), C]
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2Encoder(FrozenEncoder):
    """Frozen DINOv2 ViT-S/14: uint8 [B, H, W, 3] → final-norm patch tokens [B, (image_size/14)², 384].

    ``weights``: the official ``.pth`` or a timm-style state dict file (``.pth``/``.safetensors``).
    ``None`` is refused unless ``allow_random_weights=True`` (seeded init; for tests only): random
    features silently ruin every downstream number.
    """

    def __init__(self, weights: str | Path | None, image_size: int = 224,
                 allow_random_weights: bool = False, seed: int = 0):
        super().__init__()
        self.config = c = DinoV2Config(image_size=image_size)
        if image_size % c.patch_size:
            raise ValueError(f"image_size must be a multiple of {c.patch_size}, got {image_size}")
        if weights is None and not allow_random_weights:
            raise ValueError("DinoV2Encoder needs weights: pass the path of dinov2_vits14_pretrain.pth "
                             f"({WEIGHTS_URL}) or allow_random_weights=True for tests")
        state_dict = None if weights is None else to_official_keys(read_state_dict(weights), c)  # fail fast
        self.grid, self.dim = image_size // c.patch_size, c.dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + c.pretrain_grid**2, c.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, c.dim))  # unused here; present so official files load strictly
        self.patch_embed = PatchEmbed(c)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.depth))
        self.norm = nn.LayerNorm(c.dim, eps=1e-6)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if state_dict is None:
            self._random_init(seed)
        else:
            self.load_state_dict(state_dict)
        self.freeze()

    def _random_init(self, seed: int) -> None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Conv2d):
                    m.reset_parameters()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Strict load whose error names a few bad keys instead of dumping hundreds (e.g. a ViT-B file)."""
        ours = self.state_dict()
        missing = sorted(set(ours) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(ours))
        reshaped = [f"{k} {tuple(v.shape)} vs ours {tuple(ours[k].shape)}"
                    for k, v in state_dict.items() if k in ours and v.shape != ours[k].shape]
        if strict and (missing or unexpected or reshaped):
            raise ValueError(f"not a DINOv2 ViT-S/14 state dict: {len(missing)} missing keys (e.g. {missing[:4]}), "
                             f"{len(unexpected)} unexpected keys (e.g. {unexpected[:4]}), "
                             f"{len(reshaped)} wrong shapes (e.g. {reshaped[:2]})")
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def interpolated_pos_embed(self) -> torch.Tensor:
        """pos_embed [1, 1 + 37², C] resized bicubically to the input grid: [1, 1 + grid², C]."""
        if self.grid == self.config.pretrain_grid:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        return torch.cat([cls_pos, resize_pos_grid(patch_pos, self.grid)], dim=1)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] → patch tokens [B, grid², 384]."""
        x = self.frames_to_float(frames)
        size = self.config.image_size
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = self.patch_embed((x - self.mean) / self.std)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.interpolated_pos_embed()
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1:]


def resize_pos_grid(patch_pos: torch.Tensor, grid: int) -> torch.Tensor:
    """Patch pos-embeds [1, M², C] → [1, grid², C], bicubic, exactly as the official DINOv2 code.

    Official detail kept for bit-compatibility: it passes scale_factor (grid + 0.1) / M rather than
    the target size, which shifts the sampling points slightly.
    """
    m, c = math.isqrt(patch_pos.shape[1]), patch_pos.shape[2]
    scale = (grid + 0.1) / m
    x = patch_pos.float().reshape(1, m, m, c).permute(0, 3, 1, 2)
    x = F.interpolate(x, scale_factor=(scale, scale), mode="bicubic", antialias=False)
    return x.permute(0, 2, 3, 1).reshape(1, grid * grid, c).to(patch_pos.dtype)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a ``.pth``/``.pt`` or ``.safetensors`` file, with a useful error if it isn't there."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"DINOv2 weights not found at {path}. Download the official ViT-S/14 checkpoint "
                                f"{WEIGHTS_URL} (or timm's vit_small_patch14_dinov2.lvd142m) and pass its path.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def to_official_keys(state_dict: dict, config: DinoV2Config) -> dict[str, torch.Tensor]:
    """Official, timm-style or wrapped checkpoints → our (official) key names.

    Unwraps ``{"model"|"state_dict"|"teacher": ...}``, keeps only ``module.``/``model.``/``backbone.``
    prefixed keys when present (stripping the prefix), un-chunks ``blocks.<chunk>.<i>.``, drops a
    classifier ``head.*``, adds timm's missing ``mask_token`` (zeros: unused for features) and
    resizes a pos_embed trained at another resolution to the 37 × 37 pretraining grid.
    """
    if not isinstance(state_dict, dict):
        raise ValueError(f"expected a state dict (name → tensor), got {type(state_dict).__name__}")
    for wrapper in ("teacher", "model", "state_dict"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
    for prefix in ("module.", "model.", "backbone."):
        if any(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    out = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v
           for k, v in state_dict.items() if not k.startswith("head.")}
    out.setdefault("mask_token", torch.zeros(1, config.dim))
    pos = out.get("pos_embed")
    n_patches = None if pos is None else pos.shape[1] - 1
    if n_patches is not None and n_patches != config.pretrain_grid**2 and math.isqrt(n_patches) ** 2 == n_patches:
        out["pos_embed"] = torch.cat([pos[:, :1], resize_pos_grid(pos[:, 1:], config.pretrain_grid)], dim=1)
    return out
