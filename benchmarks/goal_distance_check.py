"""Does a distance in feature space know how far the goal really is? Wall, against the true shortest path.

Random (state, goal) pairs of Wall-v1 positions, rendered exactly as the sim renders them and
encoded by the model. For each pair the true cost-to-go is the shortest path around the wall
(``oracle_planning.geodesic``), in model steps (one step moves the dot at most 2 px × frameskip).
Each distance (the feature L1 the rewards and success test use, and the learned temporal
distance when the model has one) is compared with it by Spearman rank correlation, overall and
for far pairs only (beyond ``--far`` px), where a feature distance saturates; the temporal
distance also by its error in model steps.

    python benchmarks/goal_distance_check.py --model data/wall-td.pt --pairs 2000 --seed 0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from oracle_planning import geodesic  # noqa: E402

import wm_gym  # noqa: E402,F401
from wm_gym.envs.wall import WALL_V1, render_dots  # noqa: E402
from wm_gym.zoo import load_model  # noqa: E402

STEP_PX = 2.0  # Wall moves the dot at most 2 px per sim step


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable")  # noqa: E731
    return float(np.corrcoef(rank(a), rank(b))[0, 1])


def random_positions(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform over both rooms' spawn areas (the states episodes start and end in)."""
    (lx0, lx1), (rx0, rx1), (y0, y1) = WALL_V1.spawn_ranges()
    left = rng.random(n) < 0.5
    x = np.where(left, rng.uniform(lx0, lx1, n), rng.uniform(rx0, rx1, n))
    return np.stack([x, rng.uniform(y0, y1, n)], -1)


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="wall", help="a Wall-v1 world model (zoo name or file)")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--far", type=float, default=16.0, help="'far' pairs: true path longer than this (px)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the JSON result here too")
    args = parser.parse_args()
    model = load_model(args.model, "cpu")
    if model.meta.env_id != "wm_gym/Wall-v1":
        parser.error(f"{args.model} is a {model.meta.env_id} model; this check is for wm_gym/Wall-v1")
    rng = np.random.default_rng(args.seed)
    s_pos, g_pos = random_positions(args.pairs, rng), random_positions(args.pairs, rng)
    encode = lambda pos: model.encode(torch.from_numpy(render_dots(pos, WALL_V1, model.meta.image_size)))  # noqa: E731
    s, g = encode(s_pos), encode(g_pos)
    truth = geodesic(WALL_V1, s_pos, g_pos) / (STEP_PX * model.config.frameskip)  # model steps
    far = truth * STEP_PX * model.config.frameskip > args.far
    metrics = {"feature_l1": model.goal_distance(s, g, "l1").numpy()}
    if model.temporal_distance is not None:
        metrics["temporal_steps"] = model.goal_distance(s, g, "temporal").numpy()
    result = {"model": str(args.model), "pairs": args.pairs, "far_pairs": int(far.sum()), "far_px": args.far,
              "seed": args.seed, "metrics": {}}
    for name, d in metrics.items():
        result["metrics"][name] = {"spearman_all": round(spearman(d, truth), 3),
                                   "spearman_far": round(spearman(d[far], truth[far]), 3)}
    if "temporal_steps" in metrics:
        err = metrics["temporal_steps"] - truth
        result["metrics"]["temporal_steps"].update(mean_abs_error_steps=round(float(np.abs(err).mean()), 2),
                                                   mean_error_steps=round(float(err.mean()), 2))
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
