"""`make demo`: the main job on the shipped defaults.

Today (issue #2) it collects a small Wall dataset with the noisy expert and writes an mp4 of
the episodes next to their goal images. When the shipped world model lands (#4) this grows
into: train PPO in imagination, evaluate in the real sim, write videos and a learning curve.

    python examples/demo.py --out out/demo --episodes 8
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np

from wm_gym.data.collect import collect_dataset
from wm_gym.data.dataset import load_episodes


def episode_grid_video(frames: list[np.ndarray], goals: np.ndarray, scale: int = 3) -> np.ndarray:
    """[T, rows*H, 2*cols*W, 3]: each episode (left) beside its goal image (right), tiled."""
    length = max(len(f) for f in frames)
    tiles = []
    for ep_frames, goal in zip(frames, goals):
        padded = np.concatenate([ep_frames, np.repeat(ep_frames[-1:], length - len(ep_frames), 0)])
        tile = np.concatenate([padded, np.repeat(goal[None], length, 0)], axis=2)
        tiles.append(np.pad(tile, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=128))  # grey frame
    cols = int(np.ceil(np.sqrt(len(tiles))))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + cols], axis=2) for i in range(0, len(tiles), cols)]
    video = np.concatenate(rows, axis=1)
    return video.repeat(scale, axis=1).repeat(scale, axis=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo", help="output folder")
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    out = Path(args.out)
    data_dir = collect_dataset("wall", args.episodes, out / "wall-data", policy="noisy-expert", seed=args.seed)
    data = load_episodes(data_dir)
    video_path = out / "wall_episodes.mp4"
    iio.imwrite(video_path, episode_grid_video(data.frames, data.goal_pixels), fps=10, codec="libx264")
    success = float(np.mean([s.any() for s in data.success]))
    print(json.dumps({"dataset": str(data_dir), "video": str(video_path), "episodes": len(data.frames), "success_rate": success}))


if __name__ == "__main__":
    main()
