"""Document D's table: {GD, Adam, CEM} × {base, online, adversarial} × {open loop, MPC}, with seconds per plan.

Re-runnable and resumable: every cell is written to ``OUT/cells/*.json`` as it finishes and
skipped on a re-run, the online loop resumes by itself, and the adversarial model is written once.

    python benchmarks/planning_table.py --model wall --data data/wall-expert1k --out out/planning-wall

builds the three models from the zoo model:
* **base**: the model as given;
* **online**: ``--online-rounds`` rounds of Online World Modeling (open-loop GBP on training
  seeds ``0…``, then the dynamics fine-tuned on ``--data`` plus the executed trajectories);
* **adversarial**: the base dynamics fine-tuned with FGSM-perturbed inputs on ``--data``;

then plans ``--episodes`` fresh episodes (seeds ``--seed…``) per cell, all episodes in one
batch, and writes ``OUT/table.md`` and ``OUT/table.json``. ``--speed-episodes N`` also times one
GBP plan against one CEM plan at the full settings (100 Adam steps; 300 samples, top 30,
``--speed-cem-iterations`` iterations) on the same N-episode batch, in this run.
The defaults are the paper's settings; on a 2-core CPU use fewer episodes, gradient steps and
CEM samples (the README lists the reduced settings used for its figures).
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from wm_gym.agents.planners import PlannerConfig, make_planner
from wm_gym.data.dataset import write_json_atomic
from wm_gym.online import OnlineConfig, run_online
from wm_gym.real_episodes import evaluate_policy
from wm_gym.train.finetune import FinetuneConfig, finetune_dynamics
from wm_gym.world_model import WorldModel
from wm_gym.zoo import load_model

PLANNER_ROWS = {"GD": "gd", "Adam": "gbp", "CEM": "cem"}
MODELS = ("base", "online", "adversarial")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wall", help="zoo name or world-model file")
    p.add_argument("--data", required=True, help="dataset the online and adversarial fine-tunes also train on")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes per cell (one batch)")
    p.add_argument("--seed", type=int, default=1000, help="first evaluation seed (fresh: online uses seeds from 0)")
    p.add_argument("--models", default=",".join(MODELS), help="which columns to run")
    p.add_argument("--planners", default=",".join(PLANNER_ROWS), help="which rows to run (GD, Adam, CEM)")
    p.add_argument("--gbp-steps", type=int, default=100, help="Adam steps per plan")
    p.add_argument("--gd-steps", type=int, default=100, help="GD steps per plan (DINO-WM used 1000 at lr 1)")
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--elites", type=int, default=30)
    p.add_argument("--iterations", type=int, default=10)
    p.add_argument("--online-rounds", type=int, default=2)
    p.add_argument("--online-episodes", type=int, default=50)
    p.add_argument("--finetune-steps", type=int, default=1000)
    p.add_argument("--finetune-lr", type=float, default=1e-5)
    p.add_argument("--speed-episodes", type=int, default=0, help="also time GBP vs CEM at full settings on this batch")
    p.add_argument("--speed-cem-iterations", type=int, default=10)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p.parse_args()


def planner_config(args, name: str, mpc: bool) -> PlannerConfig:
    steps = args.gd_steps if name == "gd" else args.gbp_steps
    return PlannerConfig(mpc=mpc, gbp_steps=steps, samples=args.samples, elites=args.elites,
                         iterations=args.iterations, seed=args.seed)


def build_models(args, out: Path) -> dict[str, WorldModel]:
    base = load_model(args.model, "cpu")
    models = {"base": base}
    wanted = args.models.split(",")
    if "online" in wanted:
        rounds = run_online(base, lambda m: make_planner("gbp", m, planner_config(args, "gbp", mpc=False)),
                            OnlineConfig(out=str(out / "online"), rounds=args.online_rounds, episodes=args.online_episodes,
                                         data=[args.data], device="cpu",
                                         finetune=FinetuneConfig(steps=args.finetune_steps, lr=args.finetune_lr)))
        models["online"] = WorldModel.load(rounds[-1]["model"])
    if "adversarial" in wanted:
        path = out / "adversarial.pt"
        if not path.exists():
            adv = copy.deepcopy(base)
            finetune_dynamics(adv, [args.data], FinetuneConfig(steps=args.finetune_steps, lr=args.finetune_lr,
                                                                adversarial=True))
            adv.save(path)
        models["adversarial"] = WorldModel.load(path)
    return {k: v for k, v in models.items() if k in wanted}


def run_cell(args, model: WorldModel, planner: str, mpc: bool) -> dict:
    plan = make_planner(planner, model, planner_config(args, planner, mpc))
    result = evaluate_policy(plan, model, episodes=args.episodes, seed=args.seed, batch=args.episodes)
    return {"success_rate": result["success_rate"], "episodes": result["episodes"],
            "seconds_per_plan": plan.seconds_per_plan, "plans": len(plan.plan_seconds),
            "mean_episode_length": result["mean_episode_length"], "seconds": result["seconds"]}


def speed(args, model: WorldModel) -> dict:
    """One GBP plan vs one CEM plan at the full settings, same batch, same run."""
    out = {}
    for name, config in (("gbp", PlannerConfig(gbp_steps=100)),
                      ("cem", PlannerConfig(samples=300, elites=30, iterations=args.speed_cem_iterations))):
        plan = make_planner(name, model, config)
        evaluate_policy(plan, model, episodes=args.speed_episodes, seed=args.seed, batch=args.speed_episodes, max_steps=1)
        out[name] = plan.seconds_per_plan
    out["gbp_over_cem"] = out["gbp"] / out["cem"]
    return {"episodes_in_batch": args.speed_episodes, "cem_iterations": args.speed_cem_iterations, **out}


def table_markdown(cells: dict, models: list[str]) -> str:
    lines = ["| planner | " + " | ".join(f"{m} open-loop | {m} MPC" for m in models) + " |",
             "|---|" + "---|---|" * len(models)]
    for row, planner in PLANNER_ROWS.items():
        entries = []
        for m in models:
            for mode in ("open", "mpc"):
                c = cells.get(f"{m}-{planner}-{mode}")
                entries.append(f"{c['success_rate']:.2f} ({c['seconds_per_plan']:.1f} s)" if c else "–")
        lines.append(f"| {row} | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    models = build_models(args, out)
    cells = {}
    for name, model in models.items():
        for row in args.planners.split(","):
            planner = PLANNER_ROWS[row]
            for mode in ("open", "mpc"):
                key = f"{name}-{planner}-{mode}"
                path = out / "cells" / f"{key}.json"
                if not path.exists():
                    started = time.perf_counter()
                    cell = run_cell(args, model, planner, mpc=mode == "mpc")
                    write_json_atomic(path, {**cell, "wall_seconds": round(time.perf_counter() - started, 1)})
                cells[key] = json.loads(path.read_text())
                print(key, cells[key], flush=True)
    report = {"args": vars(args), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "cells": cells}
    if args.speed_episodes:
        path = out / "speed.json"
        if not path.exists():
            write_json_atomic(path, speed(args, models["base"]))
        report["speed"] = json.loads(path.read_text())
    table = table_markdown(cells, list(models))
    write_json_atomic(out / "table.json", report)
    (out / "table.md").write_text(table + "\n")
    print(table)
    if "speed" in report:
        print(json.dumps(report["speed"]))


if __name__ == "__main__":
    main()
