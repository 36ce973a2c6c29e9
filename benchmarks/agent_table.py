"""The agent table of one zoo model: real success of the demo recorder and of agents trained in imagination.

Rows, all on the same fresh reset seeds and under the same budgets (``wm_gym/real_episodes.py``):

* the sim's noisy expert, the policy that recorded the demos (the ceiling of cloning);
* behaviour cloning on the model's demo bank only (0 imagined steps);
* BC + PPO in imagination (the `train-agent` defaults);
* PPO from scratch in imagination (no cloning);
* optionally (``--agents bc-ppo-hold``) BC + PPO whose imagined episodes do not end at success,
  so the reward also pays for staying on the goal (what DINO-WM's budget checks);
* optionally (``scratch-temporal``, ``bc-ppo-temporal``) the same with the learned temporal-progress
  reward (a model with a ``wm-gym train-distance`` head);
* optionally (``bc-ppo-temporal-success``) BC + PPO whose imagined episodes end where the model's temporal head
  reads less than one model step to the goal (a model with a ``wm-gym train-distance`` head), and with the head
  as reward too (``scratch-temporal-success``, ``bc-ppo-temporal-both``): no feature-distance threshold at all;
* optionally (``bc-dagger-plan``) BC, then DAgger in imagination with the model's `wm-gym plan` recipe as
  the teacher (a model that has one): the planner labels the states the policy reaches, no RL; ``bc-dagger-fresh``
  the same with each label a fresh plan from the zero plan (``--teacher-start zero``); ``bc-keypoints``,
  ``bc-ppo-keypoints``, ``bc-dagger-keypoints``, ``bc-dagger-fresh-keypoints``: cloning, PPO and DAgger with the
  keypoint policy net (``--policy-net keypoints``);
* optionally (``bc-ppo-real-threshold``) BC + PPO whose imagined episodes end at the success threshold
  calibrated on real encodings instead of on imagined ones (where the imagined calibration cannot tell
  success apart, e.g. PushT's: its threshold lets almost every imagined step count as a success).

Agents are trained once into ``--out`` and reused on a re-run (delete a zip to retrain it), so
the script resumes after an interruption. The default folder is keyed by the model file's
content (``out/agent_table/STEM-SHA``), so two models with one name never share agents, and each
agent file by its settings (``NAME-KEY.zip``, the key a hash of the model's fingerprint and every
setting that changes what is trained, ``--ppo-steps`` included): a changed setting trains a new
agent rather than relabelling an old one. Each figure comes with its 95 % Wilson interval.
``--imagined TEST ...`` adds each agent's success in its world model (one imagined run per agent and
budget, read by every test), and ``--paired`` the real success on those same imagined episodes' starts
and goals, the number imagination should match (``wm-gym evaluate --paired``).

    python benchmarks/agent_table.py --model wall --episodes 200 --seed 1000 --budgets default dino-wm

Writes ``OUT/table.json`` and ``OUT/table.md`` and prints the markdown table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

import wm_gym  # noqa: F401  (registers the sims)
from wm_gym.agents.evaluate import evaluate_agent
from wm_gym.agents.train_agent import AgentConfig, train_agent
from wm_gym.data.collect import make_sim
from wm_gym.device import PRECISIONS
from wm_gym.envs.policies import run_policy
from wm_gym.imagined_episodes import IMAGINED_TESTS
from wm_gym.real_episodes import Budget, mean_interval, sim_budget, wilson_interval
from wm_gym.zoo import load_model, resolve_model

#: name -> (label, AgentConfig overrides). The imagined-step budget is --ppo-steps.
AGENTS = {
    "bc": ("behaviour cloning on the bank's demos", dict(steps=0)),
    "bc-ppo": ("BC + PPO in imagination (defaults)", dict()),
    "scratch": ("PPO from scratch in imagination", dict(bc_data=None, log_std_init=0.0)),
    "bc-ppo-hold": ("BC + PPO, imagined episodes run on after success", dict(success_threshold=0.0)),
    # the learned temporal distance (`wm-gym train-distance`): progress in steps to go, which keeps its slope far
    # from the goal where the feature distance is flat (the model must have the head)
    "scratch-progress": ("PPO from scratch, feature-progress reward", dict(bc_data=None, log_std_init=0.0,
                                                                            reward="progress")),
    "scratch-temporal": ("PPO from scratch, temporal-progress reward", dict(bc_data=None, log_std_init=0.0,
                                                                             reward="temporal")),
    "bc-ppo-temporal": ("BC + PPO, demo + temporal-progress reward", dict(reward="demo+temporal")),
    "bc-ppo-real-threshold": ("BC + PPO, episodes end at the real-encoding threshold", dict(success_threshold="real")),
    # the temporal head as the success test (`train-agent --success-metric temporal`): for a model whose predicted
    # frames are too blurred for a feature-distance goal test (PointMaze-v1's imagined calibration precision 0.2)
    "bc-ppo-temporal-success": ("BC + PPO, episodes end where the temporal head reads < 1 step to go",
                                dict(success_metric="temporal", success_threshold=1.0)),
    # the temporal head as both the reward's progress term and the success test: no feature-distance threshold at all
    "scratch-temporal-success": ("PPO from scratch, temporal reward and success test",
                                 dict(bc_data=None, log_std_init=0.0, reward="temporal", success_metric="temporal",
                                      success_threshold=1.0)),
    "bc-ppo-temporal-both": ("BC + PPO, demo + temporal reward, temporal success test",
                             dict(reward="demo+temporal", success_metric="temporal", success_threshold=1.0)),
    # the model's own `wm-gym plan` recipe as a teacher (agents/distill.py): DAgger in imagination, no RL; for a model
    # that plans well where PPO cannot learn (PointMaze-v1: planner 0.98, PPO agents <= 0.79 under dino-wm)
    "bc-dagger-plan": ("BC, then DAgger from the model's planner in imagination", dict(steps=0, teacher="plan")),
    # the same, each label a fresh plan from the zero plan: a label the state alone decides (warm_start off)
    "bc-dagger-fresh": ("BC, then DAgger from the model's planner, fresh plan per state",
                        dict(steps=0, teacher="plan", teacher_start="zero")),
    # the same rows with a conv over the token grid read as points instead of an MLP (agents/policy_nets.py): a
    # student that generalises from few states (PointMaze-v1's MLP fits its labels, not the next round's states)
    "bc-keypoints": ("behaviour cloning, keypoint policy net", dict(steps=0, policy_net="keypoints")),
    "bc-dagger-keypoints": ("BC, then DAgger from the model's planner, keypoint policy net",
                            dict(steps=0, teacher="plan", policy_net="keypoints")),
    "bc-ppo-keypoints": ("BC + PPO in imagination, keypoint policy net", dict(policy_net="keypoints")),
    "bc-dagger-fresh-keypoints": ("BC, then DAgger from the model's planner, fresh plan per state, keypoint policy net",
                                  dict(steps=0, teacher="plan", teacher_start="zero", policy_net="keypoints")),
}


#: AgentConfig fields that do not change what is trained (where it is written, logged, run); ``model`` is
#: keyed by its file's content instead of its name.
NOT_SETTINGS = ("model", "out", "log_dir", "progress", "resume", "checkpoint_every", "device", "policy_device")


def model_fingerprint(model: str) -> str:
    """The first 12 hex digits of the sha256 of the model file (a zoo name or a path)."""
    return hashlib.sha256(resolve_model(model).read_bytes()).hexdigest()[:12]


def default_out(model: str) -> Path:
    """``out/agent_table/STEM-SHA``: one folder per model file content, readable by its stem."""
    return Path("out/agent_table") / f"{resolve_model(model).stem}-{model_fingerprint(model)}"


def agent_key(config: AgentConfig, fingerprint: str) -> str:
    """10 hex digits naming what an agent was trained with: the model content and every setting that counts."""
    settings = {k: v for k, v in asdict(config).items() if k not in NOT_SETTINGS}
    return hashlib.sha256(json.dumps({"model": fingerprint, **settings}, sort_keys=True).encode()).hexdigest()[:10]


def agent_configs(names: list[str], model: str, out: Path, ppo_steps: int, agent_seed: int,
                  real_threshold: float | None = None, precision: str = "auto") -> dict[str, AgentConfig]:
    """Each row's AgentConfig, written to ``OUT/NAME-KEY.zip``; an existing file of that name is that agent.
    ``success_threshold="real"`` in a row stands for ``real_threshold`` (the model's real-encoding calibration)."""
    fingerprint, configs = model_fingerprint(model), {}
    for name in names:
        _, overrides = AGENTS[name]
        if overrides.get("success_threshold") == "real":
            if real_threshold is None:
                raise ValueError(f"{name} needs the model's real-encoding threshold; calibrate it with `wm-gym calibrate`")
            overrides = dict(overrides, success_threshold=float(real_threshold))
        settings = dict(model=str(model), steps=ppo_steps, num_envs=128, n_steps=32, seed=agent_seed, device="cpu",
                        precision=precision)
        config = AgentConfig(**{**settings, **overrides})
        stem = f"{name}-{agent_key(config, fingerprint)}"
        configs[name] = replace(config, out=str(out / f"{stem}.zip"), log_dir=str(out / "tb" / stem))
    return configs


def expert_success(env_id: str, seeds: list[int], budget: Budget, policy: str = "noisy-expert") -> dict:
    """The collection policy's success on ``seeds`` under ``budget`` (success checked as the budget says). Under a
    task budget the sim's own task episodes run to their end and the row adds their mean return, like an agent's."""
    env = make_sim(env_id, task=budget.to_end).unwrapped  # no TimeLimit cut: the budget says when to stop
    env.skip_pixels = True  # the experts read states; drawing frames nobody looks at only costs time
    infos = [run_policy(env, policy, seed, np.random.default_rng(seed), budget.sim_steps,
                        stop_on_success=not budget.to_end, check_every=budget.check_every) for seed in seeds]
    env.close()
    wins = sum(info["success_step"] is not None for info in infos)
    out = {"success_rate": wins / len(seeds), "success_ci95": list(wilson_interval(wins, len(seeds))),
           "episodes": len(seeds)}
    if budget.to_end:
        returns = [info.get("task_return", 0.0) for info in infos]
        out.update(mean_task_return=float(np.mean(returns)), task_return_ci95=list(mean_interval(returns)))
    return out


def table_cell(result: dict) -> str:
    """Success with its interval, and under a task budget the mean task return with its own."""
    cell = f"{result['success_rate']:.3f} ({result['success_ci95'][0]:.3f}–{result['success_ci95'][1]:.3f})"
    if "mean_task_return" in result:
        lo, hi = result["task_return_ci95"]
        cell += f"; return {result['mean_task_return']:.1f} ({lo:.1f}–{hi:.1f})"
    return cell


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="wall", help="zoo name or world-model file")
    parser.add_argument("--episodes", type=int, default=200, help="fresh real episodes per cell")
    parser.add_argument("--seed", type=int, default=1000, help="episode i resets with seed + i")
    parser.add_argument("--budgets", nargs="+", default=["default", "dino-wm"],
                        help="default (the sim's episode length) | dino-wm | swm | task (dm_control's own 1,000-step "
                        "episode, with its return) | STEPS")
    parser.add_argument("--agents", nargs="+", default=["bc", "bc-ppo", "scratch"], choices=list(AGENTS))
    parser.add_argument("--ppo-steps", type=int, default=61_440, help="imagined agent steps of the PPO rows")
    parser.add_argument("--agent-seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="imagination's dynamics autocast while the PPO rows train (train-agent --precision)")
    parser.add_argument("--imagined", nargs="*", default=[], choices=IMAGINED_TESTS,
                        help="also each agent's success in imagination under each budget, by these tests (on the "
                        "bank's held-out demos; `wm-gym evaluate --imagined`): the number to hold beside the real one")
    parser.add_argument("--paired", action="store_true",
                        help="with --imagined: also the real success on those same held-out demos' starts and goals "
                        "(`wm-gym evaluate --paired`), so imagined and real differ only by the model")
    parser.add_argument("--out", default=None,
                        help="folder for agents and the table (default: out/agent_table/MODEL-SHA, by file content)")
    args = parser.parse_args()
    if args.paired and not args.imagined:
        parser.error("--paired compares imagined episodes with real ones: give --imagined TEST too")
    out = Path(args.out) if args.out else default_out(args.model)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model, "cpu")
    env_id, fs = model.meta.env_id, model.config.frameskip
    seeds = [args.seed + i for i in range(args.episodes)]
    budgets = [sim_budget(None if b == "default" else b, env_id, fs) for b in args.budgets]

    rows: dict[str, dict] = {"expert": {"label": "noisy expert (recorded the demos)", "imagined_steps": 0}}
    configs = agent_configs(args.agents, args.model, out, args.ppo_steps, args.agent_seed,
                            model.meta.train_info.get("real_success_threshold"), args.precision)
    for name, config in configs.items():
        rows[name] = {"label": AGENTS[name][0], "imagined_steps": config.steps, "agent": config.out}
        if not Path(config.out).exists():  # trained once; a re-run with the same settings reuses the agent
            started = time.perf_counter()
            train_agent(config)
            rows[name]["train_seconds"] = round(time.perf_counter() - started, 1)
    for budget in budgets:
        rows["expert"][budget.name] = expert_success(env_id, seeds, budget)
        for name, config in configs.items():
            # with --imagined, one imagined rollout per agent and budget, read by every test
            result = evaluate_agent(config.out, episodes=args.episodes, seed=args.seed, device="cpu", budget=budget,
                                    imagined=args.imagined, paired=args.paired)
            result.pop("per_episode")
            rows[name][budget.name] = result

    table = {"model": str(args.model), "model_sha256": model_fingerprint(args.model), "env": env_id,
             "episodes": args.episodes, "seeds": [seeds[0], seeds[-1]],
             "budgets": [b.name for b in budgets], "rows": rows}
    (out / "table.json").write_text(json.dumps(table, indent=1))
    imagined = [(b.name, test) for b in budgets for test in args.imagined]
    paired = [b.name for b in budgets] if args.paired else []
    header = "| agent | imagined steps | " + " | ".join(f"real success, {b.name} (95 % CI)" for b in budgets) + \
        "".join(f" | imagined, {name} ({test} test)" for name, test in imagined) + \
        "".join(f" | real on the imagined episodes, {name}" for name in paired) + " |"
    lines = [header, "|" + "---|" * (2 + len(budgets) + len(imagined) + len(paired))]
    for row in rows.values():
        cells = [table_cell(row[b.name]) for b in budgets] + [
            f"{row[name]['imagined'][test]['imagined_success_rate']:.3f}" if "imagined" in row[name] else "–"
            for name, test in imagined] + [
            f"{row[name]['paired']['real_success_rate']:.3f}" if "paired" in row[name] else "–" for name in paired]
        lines.append(f"| {row['label']} | {row['imagined_steps']:,} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines)
    (out / "table.md").write_text(markdown + "\n")
    print(markdown)
    print(json.dumps({"table": str(out / "table.json"), "env": env_id, "episodes": args.episodes,
                      "seeds": f"{seeds[0]}-{seeds[-1]}"}))


if __name__ == "__main__":
    main()
