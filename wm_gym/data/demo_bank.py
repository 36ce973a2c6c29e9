"""DemoBank: the demo videos an imagination env starts from, aims at and is rewarded against.

RLA-WM trains agents on recorded demos: an episode starts at a demo's first frame, the goal
is its last frame, and the video-aligned reward compares the imagined state with the demo
frame at the same time index. The bank stores those demos as lossless, zlib-compressed uint8
frames sampled at the model's step rate (every ``frameskip`` sim steps), so a shipped model
carries its own starts and goals in a few hundred kB and works offline. Features are computed
when an env is built, with the model's own encoder, so they always match it.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class DemoBank:
    frames: np.ndarray        # uint8 [M, T+1, H, W, 3], each demo padded with its last frame
    lengths: np.ndarray       # int64 [M]: model steps in each demo (frames used = lengths + 1)
    heldout: np.ndarray       # bool [M]: reserved for evaluation
    start_states: np.ndarray  # float64 [M, S] (empty S for videos)
    goal_states: np.ndarray   # float64 [M, S]
    actions: np.ndarray | None = None  # float32 [M, T, A]: the action chunk of each step (None for videos)

    def __post_init__(self):
        m = len(self.frames)
        if self.frames.ndim != 5 or self.frames.dtype != np.uint8 or m == 0:
            raise ValueError(f"demo frames must be non-empty uint8 [M, T+1, H, W, 3], got {self.frames.dtype} {self.frames.shape}")
        if self.actions is not None and self.actions.shape[:2] != (m, self.frames.shape[1] - 1):
            raise ValueError(f"demo actions must be [M, T, A] = [{m}, {self.frames.shape[1] - 1}, A], got {self.actions.shape}")
        for name in ("lengths", "heldout", "start_states", "goal_states"):
            if len(getattr(self, name)) != m:
                raise ValueError(f"DemoBank.{name} has {len(getattr(self, name))} rows for {m} demos")
        if np.any(self.lengths < 1) or np.any(self.lengths > self.frames.shape[1] - 1):
            raise ValueError("every demo needs at least one step, and lengths must fit the frames")

    def __len__(self) -> int:
        return len(self.frames)

    def indices(self, split: str) -> np.ndarray:
        """Demo rows of ``split`` ("train", "heldout" or "all")."""
        if split not in ("train", "heldout", "all"):
            raise ValueError(f"split must be 'train', 'heldout' or 'all', got {split!r}")
        rows = np.arange(len(self)) if split == "all" else np.flatnonzero(self.heldout == (split == "heldout"))
        if len(rows) == 0:
            raise ValueError(f"the demo bank has no {split!r} demos")
        return rows

    # ----- building ------------------------------------------------------------------------------
    @classmethod
    def from_videos(cls, videos: list[np.ndarray], frameskip: int = 1, heldout_fraction: float = 0.0,
                    seed: int = 0) -> "DemoBank":
        """Demos from frame arrays uint8 [T_i, H, W, 3], subsampled every ``frameskip`` frames."""
        clips = [np.asarray(v)[::frameskip] for v in videos]
        for i, clip in enumerate(clips):
            if clip.ndim != 4 or clip.shape[-1] != 3 or clip.dtype != np.uint8 or len(clip) < 2:
                raise ValueError(f"demo {i} must be uint8 [T, H, W, 3] with at least 2 frames after frameskip "
                                 f"{frameskip}, got {clip.dtype} {clip.shape}")
        if len({c.shape[1:] for c in clips}) > 1:
            raise ValueError("all demos must have the same frame size")
        lengths = np.array([len(c) - 1 for c in clips], np.int64)
        frames = np.stack([np.concatenate([c, np.repeat(c[-1:], lengths.max() + 1 - len(c), 0)]) for c in clips])
        heldout = np.zeros(len(clips), bool)
        n_held = int(round(heldout_fraction * len(clips)))
        if n_held:
            heldout[np.random.default_rng(seed).permutation(len(clips))[:n_held]] = True
        empty = np.zeros((len(clips), 0))
        return cls(frames, lengths, heldout, empty, empty.copy())

    @classmethod
    def from_dataset(cls, path: str | Path, frameskip: int, episodes: int | None = None,
                     heldout_fraction: float = 0.2, seed: int = 0) -> "DemoBank":
        """Demos from a ``wm-gym collect`` dataset: each episode up to where it first succeeds."""
        from wm_gym.data.dataset import load_episodes

        data = load_episodes(path, cache=False)
        fs, k = data.frame_step(frameskip), data.frame_stride  # stored frames per model step, sim steps per frame
        rows = np.arange(len(data) if episodes is None else min(episodes, len(data)))
        clips, starts, goals, chunks = [], [], [], []
        for e in rows:  # in stored frames
            hit = np.flatnonzero(data.success[e])
            end = int(hit[0]) if len(hit) else len(data.frames[e]) - 1
            last = (len(data.frames[e]) - 1) // fs * fs  # whole model steps only
            end = min(max(fs, int(np.ceil(end / fs)) * fs), last)
            clips.append(data.frames[e][: end + 1])
            if data.actions is not None:
                chunks.append(data.actions[e][: end * k].reshape(end // fs, -1))
            starts.append(data.states[e][0])
            goals.append(data.goals[e] if data.goals is not None else data.states[e][min(end, len(data.states[e]) - 1)])
        bank = cls.from_videos(clips, fs, heldout_fraction, seed)
        bank.start_states, bank.goal_states = np.stack(starts), np.stack(goals)
        if chunks:  # pad with zero actions (steps past a demo's end are never used)
            t = bank.frames.shape[1] - 1
            bank.actions = np.stack([np.pad(c, ((0, t - len(c)), (0, 0))) for c in chunks]).astype(np.float32)
        return bank

    # ----- storage (inside the world-model file) ---------------------------------------------------
    def to_dict(self) -> dict:
        """Tensors only: ``torch.save`` stores a tensor's bytes as they are, but pickles ``bytes`` and numpy
        arrays with protocol 2, which writes each byte above 127 as two (a zlib stream grew 1.6x in the file)."""
        import torch  # local: building a bank from videos or a dataset needs no torch

        def tensor(a: np.ndarray | None):
            return None if a is None else torch.from_numpy(np.ascontiguousarray(a))

        stream = np.frombuffer(bytearray(zlib.compress(self.frames.tobytes(), 6)), np.uint8)  # writable
        return {"frames": tensor(stream), "shape": list(self.frames.shape),
                "lengths": tensor(self.lengths), "heldout": tensor(self.heldout),
                "start_states": tensor(self.start_states), "goal_states": tensor(self.goal_states),
                "actions": tensor(self.actions)}

    @classmethod
    def from_dict(cls, d: dict) -> "DemoBank":
        try:  # a uint8 tensor of the zlib stream, or the bytes themselves (files written before the tensors)
            stream = d["frames"] if isinstance(d["frames"], bytes) else np.asarray(d["frames"]).tobytes()
            frames = np.frombuffer(zlib.decompress(stream), np.uint8).reshape(d["shape"])
        except (zlib.error, ValueError, KeyError) as err:
            raise ValueError(f"the model's demo bank is corrupt: {err}") from err
        actions = d.get("actions")
        return cls(frames.copy(), np.asarray(d["lengths"]), np.asarray(d["heldout"]),
                   np.asarray(d["start_states"]), np.asarray(d["goal_states"]),
                   None if actions is None else np.asarray(actions, np.float32))
