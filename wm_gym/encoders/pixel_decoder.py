"""A small pixel decoder trained on detached features, so rollouts of any encoder can be watched.

The conv encoder decodes its own tokens; DINOv2 has no decoder. This one maps a token grid
[B, grid², C] back to images, trained by MSE on (φ(frame), frame) pairs with φ frozen. It is
for looking at imagined rollouts only: nothing is trained through it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


@dataclass
class PixelDecoderConfig:
    grid: int = 16           # tokens form a grid × grid patch grid
    dim: int = 384           # channels per token
    image_size: int = 64     # output H = W
    width: int = 64          # channels after the token projection


class PixelDecoder(nn.Module):
    """1×1 projection of the token grid, transposed convs ×2 until ≥ image_size, then a resize."""

    def __init__(self, config: PixelDecoderConfig):
        super().__init__()
        self.config = config
        ups = max(0, math.ceil(math.log2(config.image_size / config.grid)))
        layers: list[nn.Module] = [nn.Conv2d(config.dim, config.width, 1), nn.GELU()]
        width = config.width
        for _ in range(ups):
            layers += [nn.ConvTranspose2d(width, max(16, width // 2), 4, stride=2, padding=1), nn.GELU()]
            width = max(16, width // 2)
        layers.append(nn.Conv2d(width, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [B, grid², C] → float images [B, 3, H, W] in [0, 1]."""
        c = self.config
        if tokens.ndim != 3 or tokens.shape[1:] != (c.grid * c.grid, c.dim):
            raise ValueError(f"tokens must be [B, {c.grid * c.grid}, {c.dim}], got {tuple(tokens.shape)}")
        x = tokens.transpose(1, 2).reshape(-1, c.dim, c.grid, c.grid)
        x = self.net(x)
        if x.shape[-1] != c.image_size:
            x = F.interpolate(x, size=(c.image_size, c.image_size), mode="bilinear", align_corners=False)
        return torch.sigmoid(x)

    @torch.no_grad()
    def to_pixels(self, tokens: Tensor) -> Tensor:
        """tokens [B, N, C] → uint8 images [B, H, W, 3]."""
        return (self(tokens).permute(0, 2, 3, 1) * 255).round().to(torch.uint8)


@torch.enable_grad()  # also when called from evaluation code running under no_grad
def fit_pixel_decoder(features: Tensor, frames: np.ndarray | Tensor, steps: int = 500, batch_size: int = 64,
                      lr: float = 2e-3, seed: int = 0) -> tuple[PixelDecoder, list[float]]:
    """Train a decoder on detached features [M, grid², C] and their uint8 frames [M, H, W, 3]; returns it and its losses."""
    features = features.detach().float()
    frames = torch.as_tensor(np.asarray(frames))
    if frames.dtype != torch.uint8 or frames.ndim != 4 or len(frames) != len(features):
        raise ValueError(f"frames must be uint8 [M={len(features)}, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    grid = math.isqrt(features.shape[1])
    if grid * grid != features.shape[1]:
        raise ValueError(f"the pixel decoder needs a square token grid, got {features.shape[1]} tokens")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    decoder = PixelDecoder(PixelDecoderConfig(grid=grid, dim=features.shape[2], image_size=frames.shape[1]))
    decoder.to(features.device)
    optim = torch.optim.Adam(decoder.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(features), (batch_size,), generator=gen)
        target = frames[idx].to(features.device).permute(0, 3, 1, 2).float() / 255
        loss = F.mse_loss(decoder(features[idx]), target)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        losses.append(float(loss.detach()))
    return decoder.eval().requires_grad_(False), losses
