"""Success rate of a sim's own data-collection policy (e.g. the noisy expert that records demos).

An agent cloned from demos cannot be expected to beat the policy that recorded them; this gives
that ceiling on the same fresh seeds and step budget the agents are evaluated on.

    python examples/expert_success.py pointmaze --policy noisy-expert --seed 2000 --episodes 100
"""
from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np

import wm_gym  # noqa: F401  (registers the sims)
from wm_gym.envs import SIMS, resolve_env_id
from wm_gym.envs.policies import run_policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sim", choices=list(SIMS))
    parser.add_argument("--policy", default="noisy-expert", help="a collection policy of the sim")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2000, help="episode i resets with seed + i")
    parser.add_argument("--max-steps", type=int, default=None, help="sim steps (default: the sim's episode length)")
    args = parser.parse_args()
    env = gym.make(resolve_env_id(args.sim))
    steps = args.max_steps or SIMS[args.sim].max_episode_steps
    success = [bool(run_policy(env, args.policy, args.seed + i, np.random.default_rng(args.seed + i), steps)["is_success"])
               for i in range(args.episodes)]
    env.close()
    print(json.dumps({"sim": args.sim, "policy": args.policy, "episodes": args.episodes, "seed": args.seed,
                      "max_sim_steps": steps, "success_rate": float(np.mean(success))}))


if __name__ == "__main__":
    main()
