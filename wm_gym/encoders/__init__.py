"""Frozen feature encoders φ: uint8 frames [B, H, W, 3] → patch tokens [B, N, C].

``conv`` (default) is trained on the dataset's own frames; ``dinov2-vits14`` is the DINO-WM
backbone and needs the official weights file.
"""
from __future__ import annotations

from pathlib import Path

from .base import FrozenEncoder
from .cache import cached_features, encode_frames
from .conv import ConvEncoder, ConvEncoderConfig
from .dinov2 import DinoV2Encoder
from .probe import linear_probe_r2

ENCODERS = ("conv", "dinov2-vits14")


def build_encoder(name: str, weights: str | Path | None = None, allow_random_weights: bool = False,
                  **kwargs) -> FrozenEncoder:
    """A frozen encoder by name, loaded from ``weights``.

    ``conv``: ``weights`` is a file written by ``ConvEncoder.save``; without it, ``kwargs`` are
    ``ConvEncoderConfig`` fields of a random init (only with ``allow_random_weights=True``;
    to get a useful one, train it with ``wm_gym.train.encoder.train_conv_encoder``).
    ``dinov2-vits14``: ``kwargs`` go to ``DinoV2Encoder`` (e.g. ``image_size``).
    """
    if name == "conv":
        if weights is not None:
            return ConvEncoder.load(weights)
        if not allow_random_weights:
            raise ValueError("build_encoder('conv') needs weights= (a ConvEncoder.save file); train one with "
                             "train_conv_encoder(frames), or pass allow_random_weights=True")
        return ConvEncoder(ConvEncoderConfig(**kwargs)).freeze()
    if name == "dinov2-vits14":
        return DinoV2Encoder(weights, allow_random_weights=allow_random_weights, **kwargs)
    raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")


__all__ = ["ENCODERS", "FrozenEncoder", "ConvEncoder", "ConvEncoderConfig", "DinoV2Encoder", "build_encoder",
           "encode_frames", "cached_features", "linear_probe_r2"]
