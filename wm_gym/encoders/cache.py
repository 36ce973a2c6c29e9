"""Encode a dataset's frames once; keep the fp16 features on disk keyed by encoder and frames.

World-model training reads features many times per epoch while φ stays frozen, so the encoder
runs once per (encoder weights, frames) pair. The file stores both keys; a change in either
(retrained encoder, re-collected data) silently recomputes instead of serving stale features.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

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


def cache_key(encoder: FrozenEncoder, frames: np.ndarray) -> dict[str, str]:
    """What a cache of ``encoder``'s features of ``frames`` must have been made from to be served."""
    return {"encoder": encoder.identity(), "frames": frames_fingerprint(frames)}


def read_cache(cache_path: str | Path, key: dict[str, str]) -> torch.Tensor | None:
    """The cached features [M, N, C] (memory-mapped) if ``cache_path`` was made for ``key``, else None.

    An unreadable or foreign file counts as no cache: it is recomputed and overwritten."""
    cache_path = Path(cache_path)
    if not cache_path.is_file():
        return None
    try:  # mmap: checking the key of a multi-GB cache reads only a few bytes
        cached = torch.load(cache_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        return None
    return cached["features"] if isinstance(cached, dict) and cached.get("key") == key else None


def write_cache(cache_path: str | Path, key: dict[str, str], features: torch.Tensor) -> None:
    """Atomic (temp file + ``os.replace``): a crash never leaves a half-written cache."""
    atomic_torch_save({"key": key, "features": features}, Path(cache_path))


def cached_features(encoder: FrozenEncoder, frames: np.ndarray, cache_path: str | Path, batch_size: int = 256,
                    device: str | torch.device = "auto", progress: bool = True,
                    encode: Callable[[], torch.Tensor] | None = None, write: bool = True) -> torch.Tensor:
    """Features [M, N, C] (float16, CPU) from ``cache_path`` if it was made by this encoder from these
    frames, else encoded now and written atomically. A reused cache comes back memory-mapped.

    ``encode`` replaces :func:`encode_frames` for a miss (DDP ranks each encode a share and gather),
    and ``write=False`` leaves the writing to another process (rank 0)."""
    key = cache_key(encoder, frames)
    features = read_cache(cache_path, key)
    if features is None:
        features = encode() if encode is not None else encode_frames(encoder, frames, batch_size, device, progress)
        if write:
            write_cache(cache_path, key, features)
    return features


def dataset_cache_path(encoder: FrozenEncoder, data_dir: str | Path) -> Path:
    """Where a dataset keeps ``encoder``'s features of all its frames: ``DIR/.cache``, per encoder."""
    return Path(data_dir) / ".cache" / f"features-{encoder.identity()}.pt"


def dataset_features(encoder: FrozenEncoder, data_dir: str | Path, frames: np.ndarray, progress: bool = True,
                     device: str | torch.device = "auto", **cache_options) -> torch.Tensor:
    """:func:`cached_features` of a dataset's frames, cached in :func:`dataset_cache_path`."""
    return cached_features(encoder, frames, dataset_cache_path(encoder, data_dir), progress=progress, device=device,
                           **cache_options)


def episode_step_features(encoder: FrozenEncoder, data_dir: str | Path, episodes: list[np.ndarray], frameskip: int,
                          progress: bool = True, device: str | torch.device = "auto") -> tuple[torch.Tensor, list[int]]:
    """Raw features of every ``frameskip``-th frame of each episode (one per model step), back to back, and
    each episode's count; cached in ``DIR/.cache`` per encoder and frameskip (graphs and distance heads
    read the same frames). A cache of every frame (world-model training writes one) is sliced, not re-encoded."""
    lengths = [len(f) for f in episodes]
    every_frame = read_cache(dataset_cache_path(encoder, data_dir), cache_key(encoder, np.concatenate(episodes)))
    if every_frame is not None:
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        rows = np.concatenate([o + np.arange(0, n, frameskip) for o, n in zip(offsets, lengths)])
        return every_frame[torch.as_tensor(rows)].clone(), [len(range(0, n, frameskip)) for n in lengths]
    clips = [f[::frameskip] for f in episodes]
    cache = Path(data_dir) / ".cache" / f"features-{encoder.identity()}-every{frameskip}.pt"
    raw = cached_features(encoder, np.concatenate(clips), cache, progress=progress, device=device)
    return raw, [len(c) for c in clips]
