"""Actionless video ingestion: turn a folder of .mp4 files into the same dataset form as collect.

Why: a world model's visual dynamics can be pre-trained on video that has no actions (or
proprio or state). Each video becomes one episode; ``meta.json`` says ``has_actions: false``
and ``has_goals: false``, proprio and state are stored as empty [T+1, 0] arrays, and
:class:`~wm_gym.data.windows.WindowDataset` then yields windows without an ``actions`` entry.

Frames are center-cropped to a square and resized with Pillow (a dependency of Minari's
image storage, so always installed here; no OpenCV needed): box (area) filter when
shrinking, bilinear when enlarging.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from .dataset import FORMAT_NAME, FORMAT_VERSION, Episode, is_complete, read_meta, write_dataset


def square_resize(frame: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [size, size, 3]: center crop to a square, then resize."""
    from PIL import Image

    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=2)
    frame = frame[..., :3]
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = np.ascontiguousarray(frame[top:top + side, left:left + side], dtype=np.uint8)
    if side == size:
        return crop
    resample = Image.Resampling.BOX if side > size else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(crop).resize((size, size), resample=resample), np.uint8)


def read_video(path: str | Path, image_size: int = 64, fps_stride: int = 1, max_frames: int | None = None) -> np.ndarray:
    """Every ``fps_stride``-th frame of a video, squared and resized: uint8 [T, size, size, 3]."""
    import imageio.v2 as iio

    frames = []
    try:
        reader = iio.get_reader(str(path), format="ffmpeg")
        try:
            for t, frame in enumerate(reader):
                if t % fps_stride:
                    continue
                frames.append(square_resize(np.asarray(frame), image_size))
                if max_frames is not None and len(frames) >= max_frames:
                    break
        finally:
            reader.close()
    except Exception as e:  # imageio/ffmpeg raise OSError, RuntimeError, IndexError ... for bad files
        raise ValueError(f"cannot read video {path}: {type(e).__name__}: {e}") from e
    if len(frames) < 2:
        raise ValueError(f"video {path} gives {len(frames)} frame(s) after fps_stride={fps_stride}; need at least 2")
    return np.stack(frames)


def ingest_videos(
    folder: str | Path,
    out: str | Path,
    image_size: int = 64,
    fps_stride: int = 1,
    max_frames: int | None = None,
    progress: bool = True,
) -> Path:
    """Ingest every ``*.mp4`` in ``folder`` (sorted by name, not recursive) as one episode each.

    ``fps_stride`` keeps every n-th frame; ``max_frames`` caps the frames kept per video.
    Writes atomically like :func:`collect_dataset`; an already-complete ``out`` made with the
    same settings is returned as is, other settings raise ValueError. Raises ValueError for a
    missing or empty folder or an unreadable video (before anything is written).
    """
    import gymnasium as gym

    src = Path(folder)
    if not src.is_dir():
        raise ValueError(f"video folder {src} does not exist or is not a directory")
    videos = sorted(p for p in src.iterdir() if p.is_file() and p.suffix.lower() == ".mp4")
    if not videos:
        raise ValueError(f"video folder {src} has no .mp4 files")
    for label, value, minimum in (("image_size", image_size, 8), ("fps_stride", fps_stride, 1)):
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or max_frames < 2):
        raise ValueError(f"max_frames must be an integer >= 2 or None, got {max_frames!r}")

    params = {"format_version": FORMAT_VERSION, "source": "video", "videos": [p.name for p in videos],
              "image_size": int(image_size), "fps_stride": int(fps_stride), "max_frames": max_frames}
    root = Path(out)
    if is_complete(root):
        meta = read_meta(root)
        diff = [k for k, v in params.items() if meta.get(k) != v]
        if diff:
            raise ValueError(f"{root} already holds a dataset made with other settings ({', '.join(diff)} differ); "
                             "use another output directory or delete it")
        return root
    if root.exists() and any(root.iterdir()):
        raise ValueError(f"output directory {root} is not empty and holds no wm-gym dataset; choose an empty or new directory")

    def episodes() -> Iterator[Episode]:
        for p in videos:
            frames = read_video(p, image_size, fps_stride, max_frames)
            n = frames.shape[0]
            yield Episode(frames=frames, proprio=np.zeros((n, 0), np.float32), states=np.zeros((n, 0), np.float64),
                          success=np.zeros(n, bool))

    meta = {"format": FORMAT_NAME, **params, "env_id": None, "sim": None, "policy": None, "seed": None,
            "episodes": len(videos), "episode_length": None, "action_low": None, "action_high": None,
            "action_dim": 0, "has_actions": False, "has_goals": False, "proprio_dim": 0, "state_dim": 0}
    obs_space = gym.spaces.Dict(
        pixels=gym.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
        proprio=gym.spaces.Box(-np.inf, np.inf, (0,), np.float32),
    )
    act_space = gym.spaces.Box(-1.0, 1.0, (0,), np.float32)
    try:
        return write_dataset(root, episodes(), meta, obs_space, act_space, dataset_id="wm_gym/video-v0", progress=progress)
    except ValueError:
        if root.exists() and not any(root.iterdir()):
            root.rmdir()  # leave no empty folder behind after a bad video
        raise
