"""`make demo`: train PPO entirely in imagination on the shipped wall world model, then test it for real.

1. PPO (SB3, MlpPolicy on world-model features) learns in ``WMImagine-v0``: batched imagined
   rollouts with the video-aligned reward. No simulator step is taken.
2. The agent is evaluated in the real Wall sim (render → encoder → policy → action chunk) on
   fresh seeds, and the success rate is printed.
3. out/demo/ gets the learning curve (PNG) and an mp4 (and a PNG filmstrip) of one episode
   played twice from the same start and goal: in the real sim and in imagination, side by side.

    python examples/demo.py --steps 61440 --episodes 50 --out out/demo
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from wm_gym.agents.evaluate import evaluate_agent
from wm_gym.agents.train_agent import AgentConfig, load_agent, train_agent
from wm_gym.data.collect import make_sim
from wm_gym.envs.action_chunk import ActionChunk
from wm_gym.imagine import WMImagineEnv
from wm_gym.imagine.vector_env import policy_observation, push_history
from wm_gym.media import side_by_side, write_filmstrip, write_mp4


def real_vs_imagined_video(agent_path: Path, model: str, seed: int, out: Path) -> str:
    """Play the agent from one real start/goal in the real sim and in imagination; mp4 of both."""
    agent, _ = load_agent(agent_path)
    imagined = WMImagineEnv(model=model, device="cpu", reward="goal")
    wm = imagined.model
    real = ActionChunk(make_sim(wm.meta.env_id).unwrapped, wm.config.frameskip)
    obs, _ = real.reset(seed=seed)
    goal = real.unwrapped.goal_pixels
    im_obs, _ = imagined.reset(seed=seed, options={"start_frame": obs["pixels"], "goal_frame": goal})
    goal_feat = wm.encode(torch.from_numpy(goal[None]))
    frames = [side_by_side(obs["pixels"], imagined.render()[:, :64], goal)]
    real_done = imag_done = False
    history = None
    for _ in range(imagined.vec.horizon):
        real_feat = wm.encode(torch.from_numpy(obs["pixels"][None]))  # encode is no_grad already
        history = push_history(history, real_feat, wm.config.history)
        real_obs = policy_observation(history, goal_feat)
        if not real_done:
            action, _ = agent.predict(real_obs, deterministic=True)
            obs, _, real_done, _, _ = real.step(action[0])
        if not imag_done:
            action, _ = agent.predict(im_obs, deterministic=True)
            im_obs, _, imag_done, truncated, _ = imagined.step(action)
            imag_done = imag_done or truncated
        frames.append(side_by_side(obs["pixels"], imagined.render()[:, :64], goal))
    write_filmstrip(out / "real_vs_imagined.png", np.stack(frames))  # the README's picture
    return write_mp4(out / "real_vs_imagined.mp4", np.stack(frames), fps=3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="wall", help="world model: zoo name or file")
    parser.add_argument("--steps", type=int, default=61_440, help="imagined PPO steps (~4 min on 2 CPU cores)")
    parser.add_argument("--num-envs", type=int, default=128)
    parser.add_argument("--episodes", type=int, default=50, help="real-sim evaluation episodes (fresh seeds)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out/demo")
    args = parser.parse_args()
    out = Path(args.out)
    started = time.perf_counter()

    trained = train_agent(AgentConfig(model=args.model, out=str(out / "ppo_wall.zip"), steps=args.steps,
                                      num_envs=args.num_envs, n_steps=32, seed=args.seed, device="auto",
                                      log_dir=str(out / "tb")))
    result = evaluate_agent(out / "ppo_wall.zip", episodes=args.episodes, seed=1000, video_dir=out / "real_episodes")
    video = real_vs_imagined_video(out / "ppo_wall.zip", args.model, seed=1000, out=out)
    summary = {
        "real_success_rate": result["success_rate"], "episodes": result["episodes"],
        "mean_episode_length": result["mean_episode_length"],
        "imagined_steps": trained["steps"], "train_seconds": trained["seconds"],
        "final_imagined_success": trained["final_imagined_success"],
        "learning_curve": trained["curve_png"], "real_vs_imagined_video": video,
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"\nPPO trained only in imagination: real Wall success {result['success_rate']:.2f} "
          f"over {result['episodes']} fresh episodes")


if __name__ == "__main__":
    main()
