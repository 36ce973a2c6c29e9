"""The contract every frozen feature encoder φ follows: uint8 frames [B, H, W, 3] → tokens [B, N, C]."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from typing import Any

import torch
from torch import nn


class FrozenEncoder(nn.Module):
    """Base class: shape bookkeeping, input checks, freezing and a weights hash.

    Subclasses set ``config``, ``grid`` (tokens form a ``grid × grid`` patch grid, row-major)
    and ``dim`` (channels per token), and implement ``forward``.
    """

    config: Any
    grid: int
    dim: int

    @property
    def n_tokens(self) -> int:
        return self.grid * self.grid

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def freeze(self) -> "FrozenEncoder":
        """No gradients, eval mode: φ is a fixed feature map for the world model."""
        self.requires_grad_(False)
        return self.eval()

    def frames_to_float(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] (any device) → float [B, 3, H, W] in [0, 1] on the encoder's device."""
        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8:
            raise TypeError(f"frames must be a uint8 torch tensor [B, H, W, 3], got {type(frames).__name__} "
                            f"{getattr(frames, 'dtype', '')}")
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must have shape [B, H, W, 3], got {tuple(frames.shape)}")
        return frames.to(self.device).permute(0, 3, 1, 2).float().div_(255.0)

    def identity_config(self) -> dict:
        """The config fields the identity hashes (subclasses drop fields added later, at their old value)."""
        return asdict(self.config)

    def identity(self) -> str:
        """Stable hash of class, config and every weight: feature caches key on it."""
        h = hashlib.sha256()
        h.update(type(self).__name__.encode())
        h.update(json.dumps(self.identity_config(), sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        return f"{type(self).__name__}-{h.hexdigest()[:16]}"
