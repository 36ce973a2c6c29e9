"""In-domain conv encoder: a small autoencoder trained on a dataset's own frames.

Simulator frames are simple (a fixed scene, a small agent), so a few minutes of self-supervised
training on the dataset gives features that keep the agent, which a generic ImageNet backbone
at 64 px may blur away. Two choices make a 3-px dot survive (with plain MSE it is < 1 % of the
pixels, and the cheapest solution is to paint the background and drop it):

* the dataset's median frame (its static background) is a buffer: the encoder sees
  frame − background and the decoder only adds what differs, so no capacity goes to the scene;
* the loss weights each pixel's squared error up where the frame differs from that background,
  so the few pixels that carry the state dominate the loss.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from wm_gym.io import atomic_torch_save

from .base import FrozenEncoder


@dataclass
class ConvEncoderConfig:
    image_size: int = 64  # input frames are image_size × image_size
    grid: int = 8         # tokens form a grid × grid patch grid; image_size / grid must be a power of 2
    dim: int = 32         # channels per token
    width: int = 32       # channels of the first conv; doubles per downsampling, capped at 2 × width
    decoder: str = "conv"  # "conv": transposed-conv pyramid; "patch": per-token MLP to the patch's pixels
    reprojector: str | None = None  # "patch": a second, token-resolution decoder that only re-projection uses,
                                    # fitted after the encoder with the encoder frozen; None: re-project via `decoder`


DECODERS = ("conv", "patch")


class ConvEncoder(FrozenEncoder):
    """Strided convs → [B, grid², dim] tokens; transposed convs decode them back to pixels.

    ``decoder="patch"`` swaps the transposed convs for a 3×3 conv over the token grid and a
    per-token MLP to the patch's pixels (pixel shuffle). Its layers all run at token resolution,
    so decode + re-encode, the re-projection every imagined step pays, costs a small part of the
    pyramid's on a CPU (most of that went to the 32- and 64-px transposed convs). The encoder
    stays a pyramid: its overlapping strided convs give features that vary smoothly with the
    agent's position, which policies cloned on a few hundred demos need (a non-overlapping patch
    encoder gave 0.84 real Wall success against the pyramid's 1.00).
    """

    def __init__(self, config: ConvEncoderConfig | None = None):
        super().__init__()
        self.config = config = config or ConvEncoderConfig()
        self.grid, self.dim = config.grid, config.dim
        if config.decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {config.decoder!r}")
        n_down = math.log2(config.image_size / config.grid)
        if n_down < 1 or not n_down.is_integer():
            raise ValueError(f"image_size / grid must be a power of 2 ≥ 2, got {config.image_size} / {config.grid}")
        self.encoder, self.decoder = _conv_pyramid(config, int(n_down))
        if config.decoder == "patch":
            self.decoder = _patch_decoder(config)
        if config.reprojector not in (None, "patch"):
            raise ValueError(f"reprojector must be None or 'patch', got {config.reprojector!r}")
        self.reprojector = _patch_decoder(config) if config.reprojector == "patch" else None
        # The dataset's static background [3, H, W] in [0, 1] (set by wm_gym.train.encoder). The encoder
        # sees frame − background and the decoder adds it back, so both spend capacity only on what moves.
        self.register_buffer("background", torch.full((3, config.image_size, config.image_size), 0.5))

    def identity_config(self) -> dict:
        """Files from before ``decoder`` existed hash without it: leaving it out keeps their identity valid."""
        config = asdict(self.config)
        if config["decoder"] == "conv":
            del config["decoder"]
        if config["reprojector"] is None:
            del config["reprojector"]
        return config

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, 3] → tokens [B, grid², dim] (row-major patch order)."""
        return self.encode_images(self.frames_to_float(frames))

    def encode_images(self, x: torch.Tensor) -> torch.Tensor:
        """Float images [B, 3, H, W] in [0, 1] → tokens; differentiable (re-encoding decoded predictions)."""
        if x.shape[-2:] != (self.config.image_size, self.config.image_size):
            raise ValueError(f"ConvEncoder expects {self.config.image_size}×{self.config.image_size} frames, "
                             f"got {x.shape[-2]}×{x.shape[-1]}")
        return self.encoder(x - self.background).flatten(2).transpose(1, 2)

    def decode(self, tokens: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Tokens [B, grid², dim] → float images [B, H, W, 3] in [0, 1] (for looking at predictions).

        ``clamp=False`` is the raw output the training loss sees: clamping (or a sigmoid) there
        lets a saturated decoder stop learning, which we saw collapse small models to black frames.
        """
        images = self._decode_with(self.decoder, tokens).permute(0, 2, 3, 1)
        return images.clamp(0, 1) if clamp else images

    def reprojection_decode(self, tokens: torch.Tensor, clamp: bool = True) -> torch.Tensor:
        """Tokens [B, grid², dim] → float images [B, 3, H, W] through the re-projection decoder (the reprojector
        when there is one, else the decoder); channels first, as :meth:`encode_images` reads them."""
        images = self._decode_with(self._reprojection_decoder, tokens)
        return images.clamp(0, 1) if clamp else images

    def reproject(self, tokens: torch.Tensor) -> torch.Tensor:
        """φ(decode(tokens)), differentiable: the nearest encodable frame's tokens (:meth:`WorldModel.snap`).

        The same as ``encode_images(reprojection_decode(tokens))`` without the background round trip: the
        encoder reads frame − background, and clamping the frame to [0, 1] is clamping the decoder's output
        to [−background, 1 − background], done in place. Every imagined step pays this, and on a CPU each
        full-resolution temporary of a batch costs more than the arithmetic (fp32: 21 ms against 32 at 256).
        """
        x = self._reprojection_decoder(self._token_grid(tokens)).clamp_(-self.background, 1 - self.background)
        return self.encoder(x).flatten(2).transpose(1, 2)

    @property
    def _reprojection_decoder(self) -> nn.Module:
        return self.reprojector if self.reprojector is not None else self.decoder

    def _decode_with(self, decoder: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        return decoder(self._token_grid(tokens)) + self.background

    def _token_grid(self, tokens: torch.Tensor) -> torch.Tensor:
        """[B, grid², dim] → [B, dim, grid, grid]."""
        return tokens.transpose(1, 2).reshape(tokens.shape[0], self.dim, self.grid, self.grid)

    def save(self, path: str | Path) -> None:
        """Written atomically (temp file + rename): an interrupted save leaves the old file or none."""
        atomic_torch_save({"config": asdict(self.config), "state_dict": self.state_dict()}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "ConvEncoder":
        """A frozen encoder from ``save``'s file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no conv encoder weights at {path}; "
                                    "train one with wm_gym.train.encoder.train_conv_encoder(...).save(path)")
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = cls(ConvEncoderConfig(**ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        return model.freeze()


def _conv_pyramid(config: ConvEncoderConfig, n_down: int) -> tuple[nn.Sequential, nn.Sequential]:
    """Stride-2 convs down to the token grid and transposed convs back up (64 → 32 → 16 → 8 px by default)."""
    # Channels after each stride-2 conv; doubling, capped at 2 × width.
    widths = [min(config.width * 2**i, 2 * config.width) for i in range(n_down)]
    enc: list[nn.Module] = []
    for c_in, c_out in zip([3] + widths[:-1], widths):
        enc += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.GELU()]
    enc += [nn.Conv2d(widths[-1], widths[-1], 3, padding=1), nn.GELU(), nn.Conv2d(widths[-1], config.dim, 1)]
    ups = widths[::-1] + [max(1, config.width // 2)]  # mirror, ending on a thin full-resolution layer
    dec: list[nn.Module] = [nn.Conv2d(config.dim, ups[0], 3, padding=1), nn.GELU()]
    for c_in, c_out in zip(ups[:-1], ups[1:]):
        dec += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.GELU()]
    dec += [nn.Conv2d(ups[-1], 3, 3, padding=1)]
    return nn.Sequential(*enc), nn.Sequential(*dec)


def _patch_decoder(config: ConvEncoderConfig) -> nn.Sequential:
    """3×3 context over the token grid, then a per-token MLP (1×1 convs, 4 × width wide) to p×p×3 pixels."""
    p, w = config.image_size // config.grid, 4 * config.width
    return nn.Sequential(nn.Conv2d(config.dim, w, 3, padding=1), nn.GELU(), nn.Conv2d(w, w, 1), nn.GELU(),
                         nn.Conv2d(w, 3 * p * p, 1), nn.PixelShuffle(p))


# ----- the scene's background (the encoder's input offset) ------------------------------------

def background_frame(frames: torch.Tensor, max_frames: int = 512) -> torch.Tensor:
    """Per-pixel median of up to ``max_frames`` evenly spaced frames: uint8 [M, H, W, 3] → float [H, W, 3] in [0, 1].

    The median ignores a moving agent that covers any pixel in fewer than half of the frames.
    """
    step = math.ceil(len(frames) / max_frames)
    return frames[::step].median(dim=0).values.float() / 255.0
