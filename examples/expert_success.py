"""Success rate of a sim's own data-collection policy (e.g. the noisy expert that records demos).

An agent cloned from demos cannot be expected to beat the policy that recorded them; this gives
that ceiling on the same fresh seeds and step budget the agents are evaluated on.

    python examples/expert_success.py pointmaze --policy noisy-expert --seed 2000 --episodes 100
    python examples/expert_success.py dmc-reacher --task --episodes 50 --seed 1000   # dm_control's 1,000-step return
"""
from __future__ import annotations

import argparse
import json

import gymnasium as gym
import numpy as np

import wm_gym  # noqa: F401  (registers the sims)
from wm_gym.data.collect import make_sim
from wm_gym.envs import SIMS, resolve_env_id
from wm_gym.envs.policies import run_policy
from wm_gym.real_episodes import mean_interval, wilson_interval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sim", choices=list(SIMS))
    parser.add_argument("--policy", default="noisy-expert", help="a collection policy of the sim")
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=2000, help="episode i resets with seed + i")
    parser.add_argument("--max-steps", type=int, default=None, help="sim steps (default: the sim's episode length)")
    parser.add_argument("--task", action="store_true",
                        help="the sim's own task episodes (`--budget task`: dm_control's 1,000 steps from the suite's own "
                        "starts and targets), run to the end; adds the task's mean return")
    args = parser.parse_args()
    if args.task:  # the unwrapped sim: no 100-step TimeLimit, no stop at success; the experts read states, not pixels
        env, steps = make_sim(args.sim, task=True).unwrapped, args.max_steps or SIMS[args.sim].task_steps
        env.skip_pixels = True
    else:
        env, steps = gym.make(resolve_env_id(args.sim)), args.max_steps or SIMS[args.sim].max_episode_steps
    infos = [run_policy(env, args.policy, args.seed + i, np.random.default_rng(args.seed + i), steps,
                        stop_on_success=not args.task) for i in range(args.episodes)]
    env.close()
    wins = sum(bool(info["is_success"]) for info in infos)
    rate = "at_target_at_end" if args.task else "success"  # a task episode runs on after success
    out = {"sim": args.sim, "policy": args.policy, "episodes": args.episodes, "seed": args.seed, "max_sim_steps": steps,
           f"{rate}_rate": wins / args.episodes, f"{rate}_ci95": list(wilson_interval(wins, args.episodes))}
    if args.task:
        returns = [info["task_return"] for info in infos]
        out.update(task=True, mean_task_return=float(np.mean(returns)), task_return_ci95=list(mean_interval(returns)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
