"""Writing what people look at: mp4 rollouts (imageio) and side-by-side frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 4, upscale: int = 4) -> str:
    """uint8 frames [T, H, W, 3] → an H.264 mp4, enlarged ``upscale``× (nearest) so 64-px frames are visible."""
    import imageio.v3 as iio

    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    big = frames.repeat(upscale, axis=1).repeat(upscale, axis=2)
    iio.imwrite(path, big, fps=fps, codec="libx264", macro_block_size=1)
    return str(path)


def side_by_side(*panels: np.ndarray, gap: int = 2) -> np.ndarray:
    """Concatenate same-height uint8 images [..., H, W_i, 3] left to right with a white gap."""
    pad = np.full((*panels[0].shape[:-2], gap, 3), 255, np.uint8)
    out = [panels[0]]
    for p in panels[1:]:
        out += [pad, p]
    return np.concatenate(out, axis=-2)


def write_filmstrip(path: str | Path, frames: np.ndarray, rows: int = 6, upscale: int = 2, gap: int = 2) -> str:
    """uint8 frames [T, H, W, 3] → one PNG with ``rows`` of them, evenly spaced, time running downwards."""
    import imageio.v3 as iio

    frames = np.asarray(frames, np.uint8)
    if frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames must be uint8 [T>0, H, W, 3], got {frames.shape}")
    picked = frames[np.unique(np.linspace(0, len(frames) - 1, min(rows, len(frames))).round().astype(int))]
    pad = np.full((gap, frames.shape[2], 3), 255, np.uint8)
    strip = np.concatenate([part for f in picked for part in (f, pad)][:-1], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, strip.repeat(upscale, axis=0).repeat(upscale, axis=1))
    return str(path)
