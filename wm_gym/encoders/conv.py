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

import numpy as np
import torch
from torch import nn

from wm_gym.device import resolve_device
from wm_gym.io import atomic_torch_save

from .base import FrozenEncoder


@dataclass
class ConvEncoderConfig:
    image_size: int = 64  # input frames are image_size × image_size
    grid: int = 8         # tokens form a grid × grid patch grid; image_size / grid must be a power of 2
    dim: int = 32         # channels per token
    width: int = 32       # channels of the first conv; doubles per downsampling, capped at 2 × width
    decoder: str = "conv"  # "conv": transposed-conv pyramid; "patch": per-token MLP to the patch's pixels


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
        # The dataset's static background [3, H, W] in [0, 1] (set by train_conv_encoder). The encoder
        # sees frame − background and the decoder adds it back, so both spend capacity only on what moves.
        self.register_buffer("background", torch.full((3, config.image_size, config.image_size), 0.5))

    def identity_config(self) -> dict:
        """Files from before ``decoder`` existed hash without it: leaving it out keeps their identity valid."""
        config = asdict(self.config)
        if config["decoder"] == "conv":
            del config["decoder"]
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
        z = tokens.transpose(1, 2).reshape(tokens.shape[0], self.dim, self.grid, self.grid)
        images = (self.decoder(z) + self.background).permute(0, 2, 3, 1)
        return images.clamp(0, 1) if clamp else images

    def save(self, path: str | Path) -> None:
        """Written atomically (temp file + rename): an interrupted save leaves the old file or none."""
        atomic_torch_save({"config": asdict(self.config), "state_dict": self.state_dict()}, Path(path))

    @classmethod
    def load(cls, path: str | Path) -> "ConvEncoder":
        """A frozen encoder from ``save``'s file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no conv encoder weights at {path}; "
                                    "train one with train_conv_encoder(...).save(path)")
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


# ----- training objective ------------------------------------------------------------------

def background_frame(frames: torch.Tensor, max_frames: int = 512) -> torch.Tensor:
    """Per-pixel median of up to ``max_frames`` evenly spaced frames: uint8 [M, H, W, 3] → float [H, W, 3] in [0, 1].

    The median ignores a moving agent that covers any pixel in fewer than half of the frames.
    """
    step = math.ceil(len(frames) / max_frames)
    return frames[::step].median(dim=0).values.float() / 255.0


def reconstruction_loss(recon: torch.Tensor, target: torch.Tensor, background: torch.Tensor,
                        fg_weight: float = 100.0, fg_threshold: float = 0.1) -> torch.Tensor:
    """Foreground-weighted MSE; recon, target float [B, H, W, 3] in [0, 1], background [H, W, 3].

    A pixel's weight is ``1 + fg_weight · clamp(max_c |target − background| / fg_threshold, 0, 1)``:
    pixels that differ from the static background by ≥ ``fg_threshold`` count ``fg_weight + 1``
    times, so a few-pixel agent outweighs thousands of background pixels. Weights are normalised
    per batch so the loss scale doesn't depend on how much foreground a batch holds.
    """
    fg = ((target - background).abs().amax(dim=-1, keepdim=True) / fg_threshold).clamp(0, 1)
    weight = 1.0 + fg_weight * fg
    return (weight * (recon - target) ** 2).sum() / (weight.sum() * 3)


def _as_uint8_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    frames = torch.as_tensor(frames)
    if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [M, H, W, 3], got {frames.dtype} {tuple(frames.shape)}")
    return frames


def conv_encoder_objective(model: "ConvEncoder", frames: torch.Tensor, batch_size: int, fg_weight: float = 100.0):
    """(loss_fn, sample_fn) for the shared training loop; also stores the background in ``model``.

    frames: uint8 [M, H, W, 3] (any device; batches move to the model's device).
    """
    data = _as_uint8_tensor(frames)
    background = background_frame(data).to(model.device)
    model.background.copy_(background.permute(2, 0, 1))

    def sample(gen: torch.Generator) -> torch.Tensor:
        return data[torch.randint(len(data), (batch_size,), generator=gen)].to(model.device)

    def loss(batch: torch.Tensor):
        recon = model.decode(model(batch), clamp=False)
        return reconstruction_loss(recon, batch.float() / 255.0, background, fg_weight), {}

    return loss, sample


def train_conv_encoder(
    frames: np.ndarray | torch.Tensor,
    config: ConvEncoderConfig | None = None,
    steps: int = 800,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    device: str | torch.device = "auto",
    progress: bool = True,
    log_dir: str | Path | None = None,
    fg_weight: float = 100.0,
) -> ConvEncoder:
    """Train a ConvEncoder on uint8 frames [M, H, W, 3] with the foreground-weighted loss; returns it frozen.

    Same seed, data and device → same weights (init and batches come from ``seed``).
    ``steps=0`` returns the seeded random init, a baseline for probes.
    ``log_dir`` writes TensorBoard scalars under ``losses/encoder/``.
    """
    from wm_gym.train.loop import StageConfig, Trainer  # the one training loop every stage shares

    device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvEncoder(config or ConvEncoderConfig()).to(device)
    loss, sample = conv_encoder_objective(model, frames, batch_size, fg_weight)
    trainer = Trainer(modules={"encoder": model}, checkpoint=None, device=device, seed=seed,
                      log_dir=Path(log_dir) if log_dir is not None else None, progress=progress)
    stage = StageConfig("encoder", steps, lr=lr, batch_size=batch_size, warmup=max(1, min(100, steps // 10)),
                        grad_clip=0.0, log_every=10)
    trainer.run(stage, model, loss, sample)
    trainer.close()
    return model.freeze()
