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

    python benchmarks/oracle_planning.py --cost position geodesic --budget dino-wm swm --episodes 50 --seed 1000
    python benchmarks/oracle_planning.py --version 0 --budget 50 --execute 1   # wm-gym v0's Wall and budget

Budgets are the evaluation harness's (``--budget dino-wm``: replan every 5 chunks, success
checked at the end of each replan, reported after 2/4/10/20 replans; ``swm``: 50 sim steps).
Numpy only, on one core: about a minute per 50 episodes and 10 plans at horizon 5.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np

from wm_gym.envs import SIMS
from wm_gym.envs.wall import WallGeometry, goal_reached, make_geometry, sample_start_goal, wall_step
from wm_gym.real_episodes import chunks_per_plan, make_budget

FRAMESKIP = 5  # sim steps per planned chunk, as in the world models


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
            geometry: WallGeometry | None = None, budget: str | int | None = None, execute: int | None = None) -> dict:
    """Run MPC-CEM on the true dynamics for ``episodes`` fresh pairs (reset seeds seed, seed+1, ...).

    ``budget`` is the harness's (``wm_gym.real_episodes.make_budget``): ``dino-wm`` replans
    every 5 executed chunks and checks success only at the end of each replan; ``swm`` and
    step counts check it at every sim step. ``execute`` chunks of each plan run before the
    next plan (default: 5 under ``dino-wm`` and ``swm``, as both protocols do; else 1).
    """
    geometry, rng = geometry or WallGeometry(), np.random.default_rng(planner_seed)
    budget = make_budget(budget, FRAMESKIP, SIMS["wall"].max_episode_steps)
    execute = execute or chunks_per_plan(budget)
    if not 1 <= execute <= horizon:
        raise ValueError(f"need 1 <= execute <= horizon, got {execute} and {horizon}")
    pairs = [sample_start_goal(np.random.default_rng(seed + i), geometry) for i in range(episodes)]
    pos, goal = np.stack([s for s, _ in pairs]), np.stack([g for _, g in pairs])
    done, success_step = np.zeros(episodes, bool), np.full(episodes, np.inf)
    warm = np.zeros((episodes, horizon, FRAMESKIP, 2))
    started, sim_steps, chunk = time.perf_counter(), 0, 0
    while sim_steps < budget.sim_steps and not done.all():
        if chunk % execute == 0:  # (re)plan
            mean, std = warm, np.ones_like(warm)
            for _ in range(iterations):
                u = np.clip(mean[:, None] + std[:, None] * rng.standard_normal((episodes, samples, *mean.shape[1:])), -1, 1)
                u[:, 0] = np.clip(mean, -1, 1)  # keep the current mean among the candidates
                flat = u.reshape(episodes * samples, *mean.shape[1:])
                cost = plan_cost(geometry, kind, rollout(geometry, np.repeat(pos, samples, 0), flat),
                                 np.repeat(goal, samples, 0)).reshape(episodes, samples)
                best = np.take_along_axis(u, np.argsort(cost, 1)[:, :elites, None, None, None], 1)
                mean, std = best.mean(1), best.std(1) + 1e-3
            plan = mean
            warm = np.concatenate([mean[:, execute:], np.repeat(mean[:, -1:], execute, 1)], 1)
        for k in range(FRAMESKIP):  # execute the next chunk of the plan; finished episodes stay put
            if sim_steps >= budget.sim_steps:
                break
            pos = np.where(done[:, None], pos, wall_step(pos, plan[:, chunk % execute, k], geometry))
            sim_steps += 1
            if budget.checks(sim_steps):
                newly = ~done & goal_reached(pos, goal)
                success_step[newly], done = sim_steps, done | newly
        chunk += 1
    at_face = (np.abs(pos[:, 0] - geometry.wall_lo) < 1.0) | (np.abs(pos[:, 0] - geometry.wall_hi) < 1.0)
    at_wall = at_face & ((pos[:, 1] < geometry.door_lo) | (pos[:, 1] > geometry.door_hi))  # solid part, not the door
    report = {str(k): float((success_step <= k).mean()) for k in budget.report_at}
    return {"cost": kind, "version": geometry.version, "budget": budget.name, "execute": execute,
            "success_rate": float(done.mean()), "success_at_sim_steps": report, "failures": int((~done).sum()),
            "failures_against_wall": int((~done & at_wall).sum()), "episodes": episodes, "seed": seed,
            "horizon": horizon, "door_center": geometry.door_center,
            "mean_sim_steps_to_success": float(success_step[done].mean()) if done.any() else None,
            "success_sim_steps": [int(k) if np.isfinite(k) else None for k in success_step],
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
    parser.add_argument("--version", type=int, default=1, choices=[0, 1], help="Wall-v1 (DINO-WM) or Wall-v0")
    parser.add_argument("--door-center", type=float, default=None,
                        help="door's y (default: the version's, v1 30, v0 44)")
    parser.add_argument("--budget", nargs="+", default=["dino-wm", "swm"],
                        help="evaluation budgets (dino-wm | swm | sim steps), each a separate run")
    parser.add_argument("--execute", type=int, default=None,
                        help="chunks executed per plan (default: 5 under dino-wm and swm, else 1)")
    args = parser.parse_args()
    geometry = make_geometry(args.version, door_center=args.door_center)
    for budget in args.budget:
        for kind in args.cost:
            print(json.dumps(mpc_cem(kind, args.episodes, args.seed, args.horizon, args.samples, args.elites,
                                     args.iterations, geometry=geometry, budget=budget, execute=args.execute)),
                  flush=True)


if __name__ == "__main__":
    main()
