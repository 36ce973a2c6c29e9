"""How well can MPC planning do on Wall with a *perfect* model? CEM on the true sim dynamics.

The planners of ``agents/planners.py`` minimise a goal distance over a short horizon. This
script removes the world model from the question: it runs the same MPC-CEM loop (horizon 5
chunks, 300 samples, top 30, 10 iterations, warm start shifted by one, the 0.5^(T−i) weights)
on the numpy Wall physics itself, with the exact dot position in place of features. What is
left is the objective's own limit.

* ``--cost position``: squared distance to the goal position, the smoothest goal cost a
  feature model could hope to approximate. A straight line to a goal behind the wall ends
  against the wall, and no 5-chunk plan through a far door gets closer, so MPC stalls there.
* ``--cost geodesic``: the length of the shortest path around the wall (through the door's
  nearer end). It is a cost-to-go, not a goal distance, and no goal-image cost provides it.

    python benchmarks/oracle_planning.py --cost position geodesic --episodes 50 --seed 1000
    python benchmarks/oracle_planning.py --cost position --door-center 32     # a mid-wall door

Numpy only, on one core: about a minute per 50 episodes at horizon 5.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from wm_gym.envs import SIMS
from wm_gym.envs.wall import WallGeometry, goal_reached, sample_start_goal, wall_step

FRAMESKIP = 5  # sim steps per planned chunk, as in the world models
EPISODE_CHUNKS = SIMS["wall"].max_episode_steps // FRAMESKIP


def rollout(geometry: WallGeometry, pos: np.ndarray, plans: np.ndarray) -> np.ndarray:
    """Positions after each chunk [M, T, 2] of plans [M, T, FRAMESKIP, 2] from pos [M, 2]."""
    after = []
    for t in range(plans.shape[1]):
        for k in range(plans.shape[2]):
            pos = wall_step(pos, plans[:, t, k], geometry)
        after.append(pos)
    return np.stack(after, 1)


def geodesic(geometry: WallGeometry, p: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """Shortest-path length [...] from p to goal [..., 2] around the wall: straight if on one side,
    else through the door at the y (within the opening, 1 px from its edges) nearest the straight line."""
    same_side = geometry.side(p[..., 0]) == geometry.side(goal[..., 0])
    lo, hi = geometry.door_lo + 1.0, geometry.door_hi - 1.0
    y = np.clip((p[..., 1] + goal[..., 1]) / 2, lo, hi)
    on_left = p[..., 0] < geometry.wall_x
    near_x = np.where(on_left, geometry.wall_lo, geometry.wall_hi)  # the wall face on p's side
    far_x = np.where(on_left, geometry.wall_hi, geometry.wall_lo)
    near, far = np.stack([near_x, y], -1), np.stack([far_x, y], -1)
    via_door = (np.linalg.norm(p - near, axis=-1) + np.linalg.norm(near - far, axis=-1)
                + np.linalg.norm(far - goal, axis=-1))
    return np.where(same_side, np.linalg.norm(p - goal, axis=-1), via_door)


def plan_cost(geometry: WallGeometry, kind: str, traj: np.ndarray, goal: np.ndarray, decay: float = 0.5) -> np.ndarray:
    """Σ_i decay^(T−i) · d(p_i, goal) over a trajectory [M, T, 2]; d = squared distance or geodesic²."""
    goal = np.broadcast_to(goal[:, None], traj.shape)
    per_frame = ((traj - goal) ** 2).sum(-1) if kind == "position" else geodesic(geometry, traj, goal) ** 2
    weights = decay ** np.arange(traj.shape[1] - 1, -1, -1)
    return (per_frame * weights).sum(1)


def mpc_cem(kind: str, episodes: int = 50, seed: int = 1000, horizon: int = 5, samples: int = 300,
            elites: int = 30, iterations: int = 10, planner_seed: int = 0,
            geometry: WallGeometry | None = None) -> dict:
    """Run MPC-CEM on the true dynamics for ``episodes`` fresh pairs (reset seeds seed, seed+1, ...)."""
    geometry, rng = geometry or WallGeometry(), np.random.default_rng(planner_seed)
    pairs = [sample_start_goal(np.random.default_rng(seed + i), geometry) for i in range(episodes)]
    pos, goal = np.stack([s for s, _ in pairs]), np.stack([g for _, g in pairs])
    done, steps = np.zeros(episodes, bool), np.full(episodes, EPISODE_CHUNKS)
    warm = np.zeros((episodes, horizon, FRAMESKIP, 2))
    started = time.perf_counter()
    for chunk in range(EPISODE_CHUNKS):
        mean, std = warm, np.ones_like(warm)
        for _ in range(iterations):
            u = np.clip(mean[:, None] + std[:, None] * rng.standard_normal((episodes, samples, *mean.shape[1:])), -1, 1)
            u[:, 0] = np.clip(mean, -1, 1)  # keep the current mean among the candidates
            flat = u.reshape(episodes * samples, *mean.shape[1:])
            cost = plan_cost(geometry, kind, rollout(geometry, np.repeat(pos, samples, 0), flat),
                             np.repeat(goal, samples, 0)).reshape(episodes, samples)
            best = np.take_along_axis(u, np.argsort(cost, 1)[:, :elites, None, None, None], 1)
            mean, std = best.mean(1), best.std(1) + 1e-3
        for k in range(FRAMESKIP):  # execute the first chunk; finished episodes stay put
            pos = np.where(done[:, None], pos, wall_step(pos, mean[:, 0, k], geometry))
            newly = ~done & goal_reached(pos, goal)
            steps[newly], done = chunk + 1, done | newly
        warm = np.concatenate([mean[:, 1:], mean[:, -1:]], 1)
    at_face = (np.abs(pos[:, 0] - geometry.wall_lo) < 1.0) | (np.abs(pos[:, 0] - geometry.wall_hi) < 1.0)
    at_wall = at_face & ((pos[:, 1] < geometry.door_lo) | (pos[:, 1] > geometry.door_hi))  # solid part, not the door
    return {"cost": kind, "success_rate": float(done.mean()), "failures": int((~done).sum()),
            "failures_against_wall": int((~done & at_wall).sum()), "episodes": episodes, "seed": seed,
            "horizon": horizon, "door_center": geometry.door_center,
            "mean_chunks_to_success": float(steps[done].mean()) if done.any() else None,
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cost", nargs="+", default=["position", "geodesic"], choices=["position", "geodesic"])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1000, help="reset seed of the first pair (fresh: >= 1000)")
    parser.add_argument("--horizon", type=int, default=5, help="chunks planned ahead")
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--elites", type=int, default=30)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--door-center", type=float, default=WallGeometry.door_center,
                        help="door's y (ours: 44; 32 puts it mid-wall, on most straight lines between the sides)")
    args = parser.parse_args()
    geometry = WallGeometry(door_center=args.door_center)
    for kind in args.cost:
        print(json.dumps(mpc_cem(kind, args.episodes, args.seed, args.horizon, args.samples, args.elites,
                                 args.iterations, geometry=geometry)), flush=True)


if __name__ == "__main__":
    main()
