"""Video ingestion: videos or folders of frame images become a dataset in the same form as collect.

Why: a world model's visual dynamics (encoder, latent actions, the flow's z-prior) can be
pre-trained on video that has no actions, proprio or state. Each video, and each folder of
frame images, becomes one episode; proprio and state are stored as empty [T+1, 0] arrays.

* Without labels ``meta.json`` says ``has_actions: false`` and
  :class:`~wm_gym.data.windows.WindowDataset` yields windows without an ``actions`` entry.
* A labels file (``.npz`` or ``.json``, episode name → actions [T, A]) attaches actions to the
  episodes it names, and only to them: ``has_actions: true``, ``labelled_episodes`` lists
  their indices (:attr:`EpisodeData.labelled`), and the other episodes' action rows are NaN,
  so using them by mistake fails loudly instead of training on made-up actions.

Resumable like collect (same staging shards, see collect.py): each episode is written at once
to ``DIR/.staging/episode_XXXXXX.npz`` (tmp file, then ``os.replace``); re-running after a
kill skips them; then the Minari files are written, and ``meta.json`` last.

Frames are center-cropped to a square and resized with Pillow (a dependency of Minari's
image storage, so always installed here; no OpenCV needed): box (area) filter when
shrinking, bilinear when enlarging.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .collect import _PARAMS_FILE, _describe, _finished, _shard_path, open_staging
from .dataset import (FORMAT_NAME, FORMAT_VERSION, STAGING_DIR, Episode, is_complete, read_meta,
                      write_dataset, write_json_atomic)

#: Video containers read through imageio's ffmpeg plugin.
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm")
#: Frame images read with Pillow; a folder holding any of these is one episode.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: The settings that determine the data; a DIR ingested with other values is never mixed in.
_PARAM_KEYS = ("format_version", "source", "videos", "image_size", "fps_stride", "max_frames", "labels")


# ----------------------------------------------------------------------------- frames
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


def _enough(frames: list[np.ndarray], path: Path, fps_stride: int) -> np.ndarray:
    if len(frames) < 2:
        raise ValueError(f"{path} gives {len(frames)} frame(s) after fps_stride={fps_stride}; need at least 2")
    return np.stack(frames)


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
    return _enough(frames, Path(path), fps_stride)


def _natural_key(path: Path) -> list:
    """frame_2.png sorts before frame_10.png."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_images(folder: Path) -> list[Path]:
    """The frame images directly inside ``folder``, in natural name order."""
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)


def read_frame_folder(folder: str | Path, image_size: int = 64, fps_stride: int = 1,
                      max_frames: int | None = None) -> np.ndarray:
    """Every ``fps_stride``-th image of a frame folder (natural name order), squared and resized: uint8 [T, size, size, 3]."""
    from PIL import Image

    paths = frame_images(Path(folder))[::fps_stride][:max_frames]
    frames = []
    for p in paths:
        try:
            with Image.open(p) as img:
                frames.append(square_resize(np.asarray(img.convert("RGB")), image_size))
        except Exception as e:  # PIL.UnidentifiedImageError, OSError (truncated file) ...
            raise ValueError(f"cannot read frame image {p}: {type(e).__name__}: {e}") from e
    return _enough(frames, Path(folder), fps_stride)


# ----------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class VideoSource:
    """One episode to ingest: a video file or a folder of frame images."""

    path: Path
    is_frame_folder: bool

    @property
    def name(self) -> str:
        """The episode's name, which the labels file uses: the video's stem or the folder's name."""
        return self.path.name if self.is_frame_folder else self.path.stem

    def read(self, image_size: int, fps_stride: int, max_frames: int | None) -> np.ndarray:
        """uint8 [T, size, size, 3]; ValueError names the file that cannot be read."""
        reader = read_frame_folder if self.is_frame_folder else read_video
        return reader(self.path, image_size, fps_stride, max_frames)


def _is_video(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES


def _is_frame_folder(path: Path) -> bool:
    return path.is_dir() and bool(frame_images(path))


def find_sources(inputs: str | Path | Sequence[str | Path]) -> list[VideoSource]:
    """The episodes in ``inputs``, in order: each input is a video file, a folder of frame images
    (one episode), or a folder holding videos and/or frame folders (one episode each, by name).

    Other files in a folder are ignored. Raises ValueError for a missing input, an input with
    nothing to ingest, or two episodes with the same name (names key the labels file).
    """
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not items:
        raise ValueError("no inputs given: pass video files, frame folders or folders of them")
    sources: list[VideoSource] = []
    for item in map(Path, items):
        if not item.exists():
            raise ValueError(f"input {item} does not exist")
        if item.is_file():
            if not _is_video(item):
                raise ValueError(f"input {item} is not a video ({', '.join(VIDEO_SUFFIXES)})")
            sources.append(VideoSource(item, False))
        elif _is_frame_folder(item):
            sources.append(VideoSource(item, True))
        else:
            found = [VideoSource(p, _is_frame_folder(p)) for p in sorted(item.iterdir())
                     if _is_video(p) or _is_frame_folder(p)]
            if not found:
                raise ValueError(f"input folder {item} has no .mp4 (or {', '.join(VIDEO_SUFFIXES[1:])}) videos and no "
                                 f"folders of frame images ({', '.join(IMAGE_SUFFIXES)})")
            sources += found
    seen: dict[str, Path] = {}
    for s in sources:
        if s.name in seen:
            raise ValueError(f"two inputs give the episode name {s.name!r} ({seen[s.name]} and {s.path}); "
                             "episode names must be unique (they key the labels file)")
        seen[s.name] = s.path
    return sources


# ----------------------------------------------------------------------------- labels
def load_labels(path: str | Path) -> dict[str, np.ndarray]:
    """Per-episode action labels: episode name → float32 [T, A] (a 1-D array is [T, 1]).

    ``.npz``: one array per episode name. ``.json``: ``{"name": [[a_0, a_1, ...], ...], ...}``.
    Row t is the action that led from kept frame t to kept frame t+1 (after ``fps_stride``).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"labels file {p} does not exist")
    if p.suffix.lower() not in (".npz", ".json"):
        raise ValueError(f"labels file {p} must be .npz (one array per episode name) or .json ({{name: [[...], ...]}})")
    try:
        if p.suffix.lower() == ".npz":
            with np.load(p, allow_pickle=False) as z:
                raw: Any = {k: z[k] for k in z.files}
        else:
            raw = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile, ValueError) as e:
        raise ValueError(f"cannot read labels file {p}: {type(e).__name__}: {e}") from e
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"labels file {p} must map episode names to action arrays; it holds no such mapping")
    labels = {}
    for name, value in raw.items():
        try:
            arr = np.asarray(value, np.float32)
        except (TypeError, ValueError) as e:
            raise ValueError(f"labels file {p}: actions of {name!r} are not a numeric array ({e})") from e
        arr = arr[:, None] if arr.ndim == 1 else arr
        if arr.ndim != 2 or arr.shape[1] < 1 or not np.isfinite(arr).all():
            raise ValueError(f"labels file {p}: actions of {name!r} must be a finite [T, A] array, got shape {arr.shape}")
        labels[str(name)] = arr
    dims = {a.shape[1] for a in labels.values()}
    if len(dims) > 1:
        raise ValueError(f"labels file {p}: every episode's actions must have the same size A, got {sorted(dims)}")
    return labels


def labels_digest(labels: dict[str, np.ndarray]) -> str | None:
    """A fingerprint of the labels' content (not of the file's format), so a resumed run uses the same labels."""
    if not labels:
        return None
    h = hashlib.sha1()
    for name in sorted(labels):
        h.update(f"{name}:{labels[name].shape}".encode())
        h.update(np.ascontiguousarray(labels[name], np.float32).tobytes())
    return h.hexdigest()


def action_bounds(labels: dict[str, np.ndarray]) -> tuple[list[float], list[float]]:
    """Per-dimension (low, high) over every labelled row; a constant dimension gets ±1 around its value."""
    rows = np.concatenate(list(labels.values()))
    low, high = rows.min(0).astype(np.float64), rows.max(0).astype(np.float64)
    flat = high <= low
    low[flat], high[flat] = low[flat] - 1, high[flat] + 1
    return low.tolist(), high.tolist()


def _episode(frames: np.ndarray, actions: np.ndarray | None, action_dim: int, source: VideoSource) -> Episode:
    """An actionless episode; with ``action_dim`` > 0 its actions are ``actions`` cut to T rows, or NaN when unlabelled."""
    n = frames.shape[0]
    T = n - 1
    if action_dim == 0:
        acts = None
    elif actions is None:
        acts = np.full((T, action_dim), np.nan, np.float32)
    elif len(actions) < T:
        raise ValueError(f"labels for episode {source.name!r} have {len(actions)} rows, but {source.path} gives {n} "
                         f"frames, so {T} steps: need one action per step between kept frames")
    else:
        acts = actions[:T]
    return Episode(frames=frames, proprio=np.zeros((n, 0), np.float32), states=np.zeros((n, 0), np.float64),
                   success=np.zeros(n, bool), actions=acts)


# ----------------------------------------------------------------------------- the entry point
def ingest_videos(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    image_size: int = 64,
    fps_stride: int = 1,
    max_frames: int | None = None,
    labels: str | Path | None = None,
    progress: bool = True,
) -> Path:
    """Ingest videos and frame folders (see :func:`find_sources`) as one episode each into dataset ``out``.

    ``fps_stride`` keeps every n-th frame; ``max_frames`` caps the frames kept per episode;
    ``labels`` is an optional labels file (:func:`load_labels`) for some of the episodes.
    Resumable and idempotent like :func:`collect_dataset`: re-running after a kill continues,
    an already-complete ``out`` made with the same settings is returned as is, other settings
    raise ValueError. Raises ValueError for missing or empty inputs, an unreadable file or bad
    labels; when nothing was ingested yet, no folder is left behind.
    """
    for label, value, minimum in (("image_size", image_size, 8), ("fps_stride", fps_stride, 1)):
        if not isinstance(value, (int, np.integer)) or value < minimum:
            raise ValueError(f"{label} must be an integer >= {minimum}, got {value!r}")
    if max_frames is not None and (not isinstance(max_frames, (int, np.integer)) or max_frames < 2):
        raise ValueError(f"max_frames must be an integer >= 2 or None, got {max_frames!r}")
    sources = find_sources(inputs)
    label_arrays = load_labels(labels) if labels is not None else {}
    unknown = sorted(set(label_arrays) - {s.name for s in sources})
    if unknown:
        raise ValueError(f"labels file {labels} names episodes that are not among the inputs: {', '.join(unknown)} "
                         f"(episode names: {', '.join(s.name for s in sources[:10])}{' ...' if len(sources) > 10 else ''})")

    params = {"format_version": FORMAT_VERSION, "source": "video", "videos": [s.path.name for s in sources],
              "image_size": int(image_size), "fps_stride": int(fps_stride), "max_frames": max_frames,
              "labels": labels_digest(label_arrays)}
    root = Path(out)
    if is_complete(root):
        meta = read_meta(root)
        diff = {k: (meta.get(k), v) for k, v in params.items() if meta.get(k) != v}
        if diff:
            raise ValueError(f"{root} already holds a dataset made with other settings ({_describe(diff)}); "
                             "use another output directory or delete it")
        shutil.rmtree(root / STAGING_DIR, ignore_errors=True)  # left over if killed just after meta.json
        return root
    staging = open_staging(root, params, _PARAM_KEYS, "ingestion")
    _stage_episodes(sources, staging, params, label_arrays, progress)
    return _consolidate(root, staging, sources, params, label_arrays, progress)


def _stage_episodes(sources: list[VideoSource], staging: Path, params: dict, labels: dict[str, np.ndarray],
                    progress: bool) -> None:
    """Read and stage every episode not staged yet, one atomic shard each."""
    from tqdm.auto import tqdm

    root_existed = staging.parent.exists()
    staging.mkdir(parents=True, exist_ok=True)
    write_json_atomic(staging / _PARAMS_FILE, params)
    done = _finished(staging, len(sources))
    action_dim = next(iter(labels.values())).shape[1] if labels else 0
    read_args = (params["image_size"], params["fps_stride"], params["max_frames"])
    try:
        with tqdm(total=len(sources), initial=len(done), desc="ingest", unit="ep", disable=not progress) as bar:
            for i, source in enumerate(sources):
                if i in done:
                    continue
                _episode(source.read(*read_args), labels.get(source.name), action_dim, source).save_npz(_shard_path(staging, i))
                bar.update(1)
    except ValueError:
        if not _finished(staging, len(sources)):  # nothing ingested yet: leave nothing behind
            shutil.rmtree(staging, ignore_errors=True)
            if not root_existed and not any(staging.parent.iterdir()):
                staging.parent.rmdir()
        raise


def _consolidate(root: Path, staging: Path, sources: list[VideoSource], params: dict,
                 labels: dict[str, np.ndarray], progress: bool) -> Path:
    """Write the staged shards as the Minari dataset, then ``meta.json``, then drop the staging folder."""
    import gymnasium as gym

    size = params["image_size"]
    action_dim = next(iter(labels.values())).shape[1] if labels else 0
    low, high = action_bounds(labels) if labels else (None, None)
    meta = {"format": FORMAT_NAME, **params, "env_id": None, "sim": None, "policy": None, "seed": None,
            "episodes": len(sources), "episode_length": None, "action_low": low, "action_high": high,
            "action_dim": action_dim, "has_actions": bool(labels), "has_goals": False, "proprio_dim": 0, "state_dim": 0,
            "episode_names": [s.name for s in sources],
            "labelled_episodes": [i for i, s in enumerate(sources) if s.name in labels]}
    obs_space = gym.spaces.Dict(
        pixels=gym.spaces.Box(0, 255, (size, size, 3), np.uint8),
        proprio=gym.spaces.Box(-np.inf, np.inf, (0,), np.float32),
    )
    act_space = (gym.spaces.Box(np.array(low, np.float32), np.array(high, np.float32), dtype=np.float32) if labels
                 else gym.spaces.Box(-1.0, 1.0, (0,), np.float32))
    shards: Iterator[Episode] = (Episode.load_npz(_shard_path(staging, i)) for i in range(len(sources)))
    write_dataset(root, shards, meta, obs_space, act_space, dataset_id="wm_gym/video-v0", progress=progress)
    shutil.rmtree(staging, ignore_errors=True)
    return root
