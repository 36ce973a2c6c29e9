"""Render start and goal images of every real sim into one PNG (docs/sims.png).

    python examples/render_sims.py --out docs/sims.png --seeds 3
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import wm_gym  # noqa: F401  (registers the ids)
from wm_gym.envs import SIMS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/sims.png")
    parser.add_argument("--seeds", type=int, default=3, help="start/goal pairs per sim")
    args = parser.parse_args()

    fig, axes = plt.subplots(len(SIMS), 2 * args.seeds, figsize=(2 * args.seeds * 1.3, len(SIMS) * 1.45))
    for row, (name, spec) in enumerate(SIMS.items()):
        env = gym.make(spec.env_id)
        for seed in range(args.seeds):
            obs, _ = env.reset(seed=seed)
            for col, (image, label) in enumerate([(obs["pixels"], "start"), (env.unwrapped.goal_pixels, "goal")]):
                ax = axes[row, 2 * seed + col]
                ax.imshow(image, interpolation="nearest")
                ax.set_xticks([]), ax.set_yticks([])
                ax.set_title(f"{label} s{seed}", fontsize=7)
                if seed == 0 and col == 0:
                    ax.set_ylabel(name, fontsize=8)
        env.close()
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
