"""Regenerate PushT-v1's shipped goal trajectories (``envs/pusht_goal_trajectories.npz``).

DINO-WM cuts its PushT evaluation pairs from noisy expert demonstrations: each one pushes the
T from a random pose to gym-pusht's fixed target. This script records the same kind of data
with wm-gym's scripted noisy expert on PushT-v1's physics:

* start: gym-pusht's random reset (agent xy in [50, 450), block xy in [100, 400), angle
  uniform), as PushT-v0's reset draws it, at rest;
* task: the block to the fixed target :data:`~wm_gym.envs.pusht.FIXED_TARGET_POSE`; the agent
  has no goal of its own (its goal slot holds its start position, never approached, because
  an episode ends as soon as the expert has put the block in place and would start parking);
* speed: actions capped at norm ``--max-action`` 0.3, which gives DINO-WM's demo statistics
  (action std 0.20 x 100 px and agent-velocity std 75 px/s in ``datasets/pusht_dset.py``;
  ours: 0.21 and 78). Uncapped, our expert moves 3x faster, and 25 of its steps would make
  far harder goals than DINO-WM's;
* at most ``--max-steps`` steps; episode ``i`` uses ``episode_seeds(seed, i)`` like ``wm-gym collect``.

The file holds float32 states [N, 7] and actions [N - E, 2] plus int64 episode offsets. PushT-v1
replays ``goal_steps`` (25) recorded actions from a recorded state to make each goal.

    python examples/make_pusht_goals.py                  # the shipped file (seed 0, 80 episodes)
    python examples/make_pusht_goals.py --out /tmp/goals.npz --episodes 20
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from wm_gym.data.collect import episode_seeds
from wm_gym.envs.pusht import DEFAULT_GOAL_FILE, FIXED_TARGET_POSE, GoalTrajectories, NoisyExpertPolicy, PushTEnv


def record_demo(env: PushTEnv, start_env: PushTEnv, seed: int, index: int, max_steps: int,
                max_action: float | None) -> tuple[np.ndarray, np.ndarray, bool]:
    """One noisy-expert demo: (states [T+1, 7], actions [T, 2], whether the block reached the target)."""
    reset_seed, rng = episode_seeds(seed, index)
    start = start_env.reset(seed=reset_seed)[1]["state"]
    goal = start.copy()
    goal[2:5] = FIXED_TARGET_POSE
    obs, info = env.reset(options={"start_state": start, "goal_state": goal})
    policy = NoisyExpertPolicy(env, rng)
    policy.max_action = max_action
    policy.reset(obs, info)
    states, actions = [info["state"]], []
    for _ in range(max_steps):
        action = policy(obs, info)
        if policy.parking:  # the block is in place: a demo ends here
            return np.array(states), np.array(actions, np.float32).reshape(-1, 2), True
        obs, _, _, _, info = env.step(action)
        states.append(info["state"])
        actions.append(action)
    return np.array(states), np.array(actions, np.float32).reshape(-1, 2), False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_GOAL_FILE))
    parser.add_argument("--episodes", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-steps", type=int, default=300, help="steps per demo at most")
    parser.add_argument("--max-action", type=float, default=0.3, help="cap on the action norm (DINO-WM's demo speed)")
    args = parser.parse_args()

    env, start_env = PushTEnv(version=1, render_mode=None), PushTEnv(version=0, render_mode=None)
    t0 = time.time()
    demos = [record_demo(env, start_env, args.seed, i, args.max_steps, args.max_action) for i in range(args.episodes)]
    trajectories = GoalTrajectories.from_episodes([(s, a) for s, a, _ in demos], source=args.out)
    steps = env.protocol.goal_steps
    meta = {"policy": "noisy-expert", "task": "block to gym-pusht's fixed target", "seed": args.seed,
            "episodes": args.episodes, "max_steps": args.max_steps, "max_action": args.max_action,
            "command": f"python examples/make_pusht_goals.py --episodes {args.episodes} --seed {args.seed} "
                       f"--max-steps {args.max_steps} --max-action {args.max_action}"}
    trajectories.save(args.out, **meta)
    lengths = trajectories.lengths
    print(json.dumps({
        "out": args.out, "episodes": len(lengths), "steps": int(lengths.sum()),
        "reached_target": float(np.mean([done for *_, done in demos])),
        "action_std": trajectories.actions.std(axis=0).round(3).tolist(),
        "agent_velocity_std": trajectories.states[:, 5:7].std(axis=0).round(1).tolist(),
        "median_length": float(np.median(lengths)),
        "pairs": int(np.maximum(lengths - steps + 1, 0).sum()),
        "episodes_usable": int((lengths >= steps).sum()),
        "bytes": Path(args.out).stat().st_size,
        "seconds": round(time.time() - t0, 1),
    }))


if __name__ == "__main__":
    main()
