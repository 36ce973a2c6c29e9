"""Does a distance in feature space know how far the goal really is? Wall, against the true shortest path.

Random (state, goal) pairs of Wall-v1 positions, rendered exactly as the sim renders them and
encoded by the model. For each pair the truth is the fewest sim steps from state to goal
(:func:`shortest_sim_steps`), divided by ``frameskip`` for model steps. A Wall action is clipped
to [-1, 1] per component and moves the dot by ``2 · action``, so one sim step moves it up to 2 px
along each axis at once (2·√2 px diagonally): the step count is the shortest path in the max-norm
(each leg costs max(|dx|, |dy|)) through the door, divided by 2 px, unrounded. In open space that
is exact up to rounding to whole steps; through the door it is a lower bound, as whole steps cannot
always turn exactly at the door's corners (tests/test_goal_distance_check.py: a crossing with a
bound of 20 steps that a hand plan does in 21).
Each distance (the feature L1 the rewards and success test use, and the learned temporal
distance when the model has one) is compared with it by Spearman rank correlation, overall and
for far pairs only (Euclidean path around the wall longer than ``--far`` px, where the dots no
longer overlap and a feature distance saturates); the temporal distance also by its error in
model steps.

    python benchmarks/goal_distance_check.py --model wall --pairs 2000 --seed 0
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
from wm_gym.envs.wall import STEP_SCALE, WALL_V1, WallGeometry, render_dots  # noqa: E402
from wm_gym.zoo import load_model  # noqa: E402

#: The most a sim step moves the dot along each axis: ``pos += STEP_SCALE · action``, action in [-1, 1]².
STEP_PX = STEP_SCALE


def max_norm_path(geometry: WallGeometry, p: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Shortest path [...] from ``p`` to ``goal`` [..., 2] around the wall when a leg costs max(|dx|, |dy|).

    Straight on one side. Across, the path enters the door corridor (the wall's x-span, y within
    the opening 1 px from its edges, as :func:`oracle_planning.geodesic`) at (near face, y_a) and
    leaves at (far face, y_b); the cost, convex and piecewise linear in (y_a, y_b), is minimised
    exactly over the vertices of its pieces: each y from {the door's edges, p_y ± its horizontal
    leg}, or the other y ± the wall's width.
    """
    p, goal = np.asarray(p, np.float64), np.asarray(goal, np.float64)
    cheb = lambda a, b: np.abs(a - b).max(-1)  # noqa: E731
    lo, hi = geometry.door_lo + 1.0, geometry.door_hi - 1.0
    on_left = p[..., 0] < geometry.wall_x
    near_x = np.where(on_left, geometry.wall_lo, geometry.wall_hi)
    far_x = np.where(on_left, geometry.wall_hi, geometry.wall_lo)
    width = geometry.wall_hi - geometry.wall_lo
    leg_in, leg_out = np.abs(p[..., 0] - near_x), np.abs(goal[..., 0] - far_x)
    y_in = [np.full_like(leg_in, lo), np.full_like(leg_in, hi), p[..., 1] - leg_in, p[..., 1] + leg_in]
    y_out = [np.full_like(leg_in, lo), np.full_like(leg_in, hi), goal[..., 1] - leg_out, goal[..., 1] + leg_out]
    pairs = [(a, b) for a in y_in for b in y_out]
    pairs += [(a, a + s) for a in y_in for s in (-width, width)] + [(b + s, b) for b in y_out for s in (-width, width)]
    best = np.full(leg_in.shape, np.inf)
    for y_a, y_b in pairs:
        y_a, y_b = np.clip(y_a, lo, hi), np.clip(y_b, lo, hi)
        a, b = np.stack([near_x, y_a], -1), np.stack([far_x, y_b], -1)
        best = np.minimum(best, cheb(p, a) + cheb(a, b) + cheb(b, goal))
    same_side = geometry.side(p[..., 0]) == geometry.side(goal[..., 0])
    return np.where(same_side, cheb(p, goal), best)


def shortest_sim_steps(geometry: WallGeometry, p: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """The fewest sim steps [...] from ``p`` to ``goal`` [..., 2] (unrounded): the max-norm path over 2 px a step."""
    return max_norm_path(geometry, p, goal) / STEP_PX


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
    truth = shortest_sim_steps(WALL_V1, s_pos, g_pos) / model.config.frameskip  # model steps
    far = geodesic(WALL_V1, s_pos, g_pos) > args.far
    metrics = {"feature_l1": model.goal_distance(s, g, "l1").numpy()}
    if model.temporal_distance is not None:
        metrics["temporal_steps"] = model.goal_distance(s, g, "temporal").numpy()
    result = {"model": str(args.model), "pairs": args.pairs, "far_pairs": int(far.sum()), "far_px": args.far,
              "seed": args.seed, "truth": "fewest sim steps (max-norm path / 2 px) / frameskip", "metrics": {}}
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
