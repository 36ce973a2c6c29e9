"""Train the in-domain conv encoder (:mod:`wm_gym.encoders.conv`) on a dataset's frames.

The objective is a foreground-weighted reconstruction: pixels that differ from the dataset's
static background count ``fg_weight + 1`` times, so a few-pixel agent outweighs the scene. It runs
in the shared :class:`~wm_gym.train.loop.Trainer`, as a stage of ``wm-gym train`` or on its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wm_gym.device import resolve_device
from wm_gym.encoders.conv import ConvEncoder, ConvEncoderConfig, background_frame
from wm_gym.train.loop import StageConfig, Trainer


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


def _frame_sampler(frames: torch.Tensor, batch_size: int, device: torch.device):
    def sample(gen: torch.Generator) -> torch.Tensor:
        return frames[torch.randint(len(frames), (batch_size,), generator=gen)].to(device)
    return sample


def conv_encoder_objective(model: "ConvEncoder", frames: torch.Tensor, batch_size: int, fg_weight: float = 100.0):
    """(loss_fn, sample_fn) for the shared training loop; also stores the background in ``model``.

    frames: uint8 [M, H, W, 3] (any device; batches move to the model's device).
    """
    data = _as_uint8_tensor(frames)
    background = background_frame(data).to(model.device)
    model.background.copy_(background.permute(2, 0, 1))

    def loss(batch: torch.Tensor):
        recon = model.decode(model(batch), clamp=False)
        return reconstruction_loss(recon, batch.float() / 255.0, background, fg_weight), {}

    return loss, _frame_sampler(data, batch_size, model.device)


def reprojector_objective(model: "ConvEncoder", frames: torch.Tensor, batch_size: int, fg_weight: float = 100.0):
    """(loss_fn, sample_fn) that fit ``model.reprojector`` to decode the trained, frozen encoder's tokens, with
    the encoder's own foreground-weighted loss. The encoder must be trained first (its background is set)."""
    if model.reprojector is None:
        raise ValueError("this encoder has no reprojector to fit (ConvEncoderConfig.reprojector is None)")
    data = _as_uint8_tensor(frames)
    background = model.background.permute(1, 2, 0)

    def loss(batch: torch.Tensor):
        with torch.no_grad():
            tokens = model(batch)
        recon = model.reprojection_decode(tokens, clamp=False).permute(0, 2, 3, 1)
        return reconstruction_loss(recon, batch.float() / 255.0, background, fg_weight), {}

    return loss, _frame_sampler(data, batch_size, model.device)


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
    ``log_dir`` writes TensorBoard scalars under ``losses/encoder/``. The reprojector, if the config has
    one, is left at its init: :func:`fit_reprojector` fits it to the trained encoder.
    """
    device = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvEncoder(config or ConvEncoderConfig()).to(device)
    loss, sample = conv_encoder_objective(model, frames, batch_size, fg_weight)
    _run_stage("encoder", model, model, loss, sample, steps, batch_size, lr, seed, progress, log_dir)
    return model.freeze()


def fit_reprojector(encoder: ConvEncoder, frames: np.ndarray | torch.Tensor, steps: int = 800, batch_size: int = 32,
                    lr: float = 2e-3, seed: int = 0, progress: bool = True, log_dir: str | Path | None = None,
                    fg_weight: float = 100.0) -> ConvEncoder:
    """Fit ``encoder.reprojector`` on uint8 frames [M, H, W, 3] with the rest of the encoder frozen (its tokens
    do not change); returns the encoder, frozen. TensorBoard scalars go under ``losses/reprojector/``."""
    loss, sample = reprojector_objective(encoder, frames, batch_size, fg_weight)
    encoder.reprojector.requires_grad_(True)
    _run_stage("reprojector", encoder, encoder.reprojector, loss, sample, steps, batch_size, lr, seed, progress, log_dir)
    return encoder.freeze()


def _run_stage(name: str, encoder: ConvEncoder, trainable: torch.nn.Module, loss, sample, steps: int, batch_size: int,
               lr: float, seed: int, progress: bool, log_dir: str | Path | None) -> None:
    trainer = Trainer(modules={"encoder": encoder}, checkpoint=None, device=encoder.device, seed=seed,
                      log_dir=Path(log_dir) if log_dir is not None else None, progress=progress)
    stage = StageConfig(name, steps, lr=lr, batch_size=batch_size, warmup=max(1, min(100, steps // 10)),
                        grad_clip=0.0, log_every=10)
    trainer.run(stage, trainable, loss, sample)
    trainer.close()
