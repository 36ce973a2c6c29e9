"""Encode a dataset's frames once; keep the fp16 features on disk keyed by encoder and frames.

World-model training reads features many times per epoch while φ stays frozen, so the encoder
runs once per (encoder weights, frames) pair. The file stores both keys; a change in either
(retrained encoder, re-collected data) silently recomputes instead of serving stale features.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from wm_gym.device import resolve_device
from wm_gym.io import atomic_torch_save

from .base import FrozenEncoder


def frames_fingerprint(frames: np.ndarray) -> str:
    """Shape, dtype and a BLAKE2 hash of every byte (~1 GB/s: far cheaper than encoding the frames)."""
    frames = np.ascontiguousarray(frames)
    digest = hashlib.blake2b(memoryview(frames).cast("B"), digest_size=16).hexdigest()
    return f"{frames.dtype}{list(frames.shape)}:{digest}"


@torch.inference_mode()
def encode_frames(encoder: FrozenEncoder, frames: np.ndarray, batch_size: int = 256,
                  device: str | torch.device = "auto", progress: bool = True) -> torch.Tensor:
    """uint8 frames [M, H, W, 3] → CPU float16 features [M, N, C]. Moves ``encoder`` to ``device``."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [M, H, W, 3], got {frames.dtype} {frames.shape}")
    encoder.to(resolve_device(device)).eval()
    out = torch.empty(len(frames), encoder.n_tokens, encoder.dim, dtype=torch.float16)
    for start in tqdm(range(0, len(frames), batch_size), desc="encoding frames", disable=not progress):
        batch = torch.from_numpy(frames[start:start + batch_size])
        out[start:start + len(batch)] = encoder(batch).to("cpu", torch.float16)
    return out


def cached_features(encoder: FrozenEncoder, frames: np.ndarray, cache_path: str | Path, batch_size: int = 256,
                    device: str | torch.device = "auto", progress: bool = True) -> torch.Tensor:
    """Features [M, N, C] (float16, CPU) from ``cache_path`` if it was made by this encoder from these
    frames, else encoded now and written atomically (temp file + ``os.replace``: a crash never
    leaves a half-written cache). A reused cache comes back memory-mapped from the file."""
    cache_path = Path(cache_path)
    key = {"encoder": encoder.identity(), "frames": frames_fingerprint(frames)}
    if cache_path.is_file():
        try:  # mmap: checking the key of a multi-GB cache reads only a few bytes
            cached = torch.load(cache_path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # unreadable or foreign file: recompute and overwrite it
            cached = {}
        if isinstance(cached, dict) and cached.get("key") == key:
            return cached["features"]

    features = encode_frames(encoder, frames, batch_size, device, progress)
    atomic_torch_save({"key": key, "features": features}, cache_path)
    return features


def dataset_features(encoder: FrozenEncoder, data_dir: str | Path, frames: np.ndarray, progress: bool = True,
                     device: str | torch.device = "auto") -> torch.Tensor:
    """:func:`cached_features` of a dataset's frames, cached in ``DIR/.cache`` per encoder."""
    cache = Path(data_dir) / ".cache" / f"features-{encoder.identity()}.pt"
    return cached_features(encoder, frames, cache, progress=progress, device=device)


def episode_step_features(encoder: FrozenEncoder, data_dir: str | Path, episodes: list[np.ndarray], frameskip: int,
                          progress: bool = True, device: str | torch.device = "auto") -> tuple[torch.Tensor, list[int]]:
    """Raw features of every ``frameskip``-th frame of each episode (one per model step), back to back, and
    each episode's count; cached in ``DIR/.cache`` per encoder and frameskip (graphs and distance heads
    read the same frames)."""
    clips = [f[::frameskip] for f in episodes]
    cache = Path(data_dir) / ".cache" / f"features-{encoder.identity()}-every{frameskip}.pt"
    raw = cached_features(encoder, np.concatenate(clips), cache, progress=progress, device=device)
    return raw, [len(c) for c in clips]
