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
batch, and writes ``OUT/table.md`` and ``OUT/table.json``. Each cell records ``seconds_per_plan``
(the mean: the batch shrinks as episodes end) and ``seconds_first_plan`` (every episode in the batch). ``--speed-episodes N`` also times one
GBP plan against one CEM plan at the full settings (100 Adam steps; 300 samples, top 30,
``--speed-cem-iterations`` iterations) on the same N-episode batch, in this run.
The defaults are the paper's settings; on a 2-core CPU use fewer episodes, gradient steps and
CEM samples (the README lists the reduced settings used for its figures).

Planning at the anchors' level: ``--variants`` adds rows per planner, same seeds, same budget:
* ``goal``: the feature-distance goal cost (the table above);
* ``temporal``: the learned cost-to-go, the model's temporal-distance head (``--terminal temporal``;
  the model needs a head: ``wm-gym train-distance``);
* ``waypoints``: the goal cost aimed at graph waypoints over ``--waypoints`` datasets;
* ``prior``: the planner seeded by ``--agent``'s policy (``--prior``, ``--prior-samples``);
and combinations joined by ``+`` (``temporal+prior``). ``--agent`` also adds the agent-alone row
(it acts every chunk, so one run fills both columns; its "seconds per plan" is one ``predict``).

    python benchmarks/planning_table.py --model data/wall-td.pt --models base --budget dino-wm \
        --variants goal,temporal,waypoints,prior --waypoints data/wall-random \
        --agent out/agent_table/wall/bc-ppo-hold.zip --out out/planning-anchors
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

from wm_gym.agents.planners import PlannerConfig, load_prior, make_planner
from wm_gym.agents.waypoints import WaypointGraph, WaypointPlanner
from wm_gym.data.dataset import write_json_atomic
from wm_gym.online import OnlineConfig, run_online
from wm_gym.real_episodes import chunks_per_plan, evaluate_policy
from wm_gym.train.finetune import FinetuneConfig, finetune_dynamics
from wm_gym.world_model import WorldModel
from wm_gym.zoo import load_model

PLANNER_ROWS = {"GD": "gd", "Adam": "gbp", "CEM": "cem", "MPPI": "mppi"}
MODELS = ("base", "online", "adversarial")
#: What a variant changes about the planner, and its row label; "goal" changes nothing.
VARIANT_PARTS = {"temporal": "learned cost-to-go", "waypoints": "graph waypoints", "prior": "policy prior"}
#: Settings every cell of one output folder shares; resuming with others would mix incomparable cells.
CELL_SETTINGS = ("episodes", "seed", "budget", "horizon")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="wall", help="zoo name or world-model file")
    p.add_argument("--data", default=None, help="dataset the online and adversarial fine-tunes also train on "
                   "(needed for those columns only)")
    p.add_argument("--out", required=True, help="output folder (resumable)")
    p.add_argument("--episodes", type=int, default=50, help="evaluation episodes per cell (one batch)")
    p.add_argument("--seed", type=int, default=1000, help="first evaluation seed (fresh: online uses seeds from 0)")
    p.add_argument("--budget", default=None, metavar="dino-wm|swm|STEPS",
                   help="evaluation protocol (docs/protocol.md); under dino-wm and swm MPC executes 5 chunks per plan")
    p.add_argument("--models", default=",".join(MODELS), help="which columns to run")
    p.add_argument("--modes", default="open,mpc", help="open-loop and/or MPC columns")
    p.add_argument("--planners", default="GD,Adam,CEM", help=f"which rows to run ({', '.join(PLANNER_ROWS)})")
    p.add_argument("--variants", default="goal",
                   help="planner variants, comma-separated: goal, temporal, waypoints, prior, or parts joined by + "
                   "(temporal+prior); see the module docstring")
    p.add_argument("--waypoints", default=None, metavar="DIR[,DIR]", help="datasets of the waypoint graph")
    p.add_argument("--waypoint-lookahead", type=float, default=1.5)
    p.add_argument("--agent", default=None, metavar="AGENT.zip",
                   help="train-agent agent on this model: the prior of the prior variants, and the agent-alone row")
    p.add_argument("--prior-samples", type=float, default=0.05, help="CEM/MPPI: share of samples from the prior")
    p.add_argument("--horizon", type=int, default=5, help="chunks planned ahead")
    p.add_argument("--device", default="cpu")
    p.add_argument("--gbp-steps", type=int, default=100, help="Adam steps per plan")
    p.add_argument("--starts", type=int, default=1, help="Adam/GD: plans optimised side by side per episode, the "
                   "cheapest kept (PlannerConfig.starts)")
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


def variant_parts(variant: str) -> set[str]:
    """"goal" → {}, "temporal+prior" → {"temporal", "prior"}; unknown parts raise."""
    parts = set(variant.split("+")) - {"goal"}
    if parts - set(VARIANT_PARTS):
        raise ValueError(f"unknown variant {variant!r}: use goal or {', '.join(VARIANT_PARTS)}, joined by +")
    return parts


def variant_label(variant: str) -> str:
    parts = variant_parts(variant)
    return " + ".join(label for part, label in VARIANT_PARTS.items() if part in parts) or "goal distance"


def planner_config(args, name: str, mpc: bool, variant: str = "goal") -> PlannerConfig:
    steps = args.gd_steps if name == "gd" else args.gbp_steps
    execute = chunks_per_plan(args.budget) if mpc else 1
    terminal = "temporal" if "temporal" in variant_parts(variant) else "goal"
    return PlannerConfig(horizon=args.horizon, mpc=mpc, execute=execute, gbp_steps=steps, samples=args.samples,
                         elites=args.elites, iterations=args.iterations, seed=args.seed, terminal=terminal,
                         prior_samples=args.prior_samples, starts=args.starts)


def build_models(args, out: Path) -> dict[str, WorldModel]:
    base = load_model(args.model, args.device)
    models = {"base": base}
    wanted = args.models.split(",")
    if ("online" in wanted or "adversarial" in wanted) and not args.data:
        raise SystemExit("the online and adversarial columns fine-tune on --data DIR: give one")
    if "online" in wanted:
        rounds = run_online(base, lambda m: make_planner("gbp", m, planner_config(args, "gbp", mpc=False)),
                            OnlineConfig(out=str(out / "online"), rounds=args.online_rounds, episodes=args.online_episodes,
                                         data=[args.data], device=args.device,
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


class Policies:
    """What the cells act with, each built once: the agent (prior and agent-alone row), the waypoint graph."""

    def __init__(self, args):
        self.args, self._agent, self._graph = args, None, None

    @property
    def agent(self):
        if self.args.agent is None:
            raise SystemExit("the prior variants and the agent-alone row need --agent AGENT.zip")
        if self._agent is None:
            self._agent = load_prior(self.args.agent)
        return self._agent

    def graph(self, model: WorldModel) -> WaypointGraph:
        """Built with the first model's encoder: fine-tunes keep the encoder, so its features hold for all."""
        if not self.args.waypoints:
            raise SystemExit("the waypoints variants need --waypoints DIR[,DIR]")
        if self._graph is None:
            self._graph = WaypointGraph.from_datasets(model, self.args.waypoints.split(","))
        return self._graph

    def planner(self, model: WorldModel, name: str, mpc: bool, variant: str):
        parts = variant_parts(variant)
        plan = make_planner(name, model, planner_config(self.args, name, mpc, variant),
                            prior=self.agent if "prior" in parts else None)
        return WaypointPlanner(plan, self.graph(model), self.args.waypoint_lookahead) if "waypoints" in parts else plan


class TimedPolicy:
    """An agent with a planner's timing: seconds per ``predict`` (one per executed chunk)."""

    def __init__(self, agent):
        self.agent, self.plan_seconds = agent, []

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        started = time.perf_counter()
        out = self.agent.predict(obs, state, episode_start, deterministic)
        self.plan_seconds.append(time.perf_counter() - started)
        return out

    @property
    def seconds_per_plan(self) -> float:
        return sum(self.plan_seconds) / max(1, len(self.plan_seconds))


def run_cell(args, model: WorldModel, policy) -> dict:
    """Success (with its 95 % interval and the budget's reporting points) and seconds per plan of one policy."""
    result = evaluate_policy(policy, model, episodes=args.episodes, seed=args.seed, batch=args.episodes,
                             budget=args.budget)
    keep = ("success_rate", "success_ci95", "episodes", "budget", "success_at_sim_steps", "success_after_replans",
            "mean_episode_length", "seconds")
    return {**{k: result[k] for k in keep if k in result}, "seconds_per_plan": policy.seconds_per_plan,
            "seconds_first_plan": policy.plan_seconds[0], "plans": len(policy.plan_seconds)}


def cached_cell(path: Path, settings: dict, run) -> dict:
    """The cell stored at ``path`` (if made with the same ``settings``), else ``run()``'s, stored atomically."""
    if path.exists():
        cell = json.loads(path.read_text())
        stored = cell.get("settings", settings)  # cells from before settings were recorded: trusted
        if stored != settings:
            raise SystemExit(f"{path} was made with {stored}, this run asks for {settings}: use another --out")
        return cell
    started = time.perf_counter()
    cell = {**run(), "settings": settings, "wall_seconds": round(time.perf_counter() - started, 1)}
    write_json_atomic(path, cell)
    return cell


def cell_key(model: str, planner: str, mode: str, variant: str) -> str:
    """``base-cem-mpc`` for the goal cost (as before variants existed, so old folders resume), else ``…-VARIANT``."""
    return f"{model}-{planner}-{mode}" + ("" if variant == "goal" else f"-{variant}")


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


def table_markdown(cells: dict, models: list[str], planners: list[str], variants: list[str], modes: list[str],
                   agent: bool) -> str:
    """Success rate (seconds per plan) per planner × variant row, model × mode column."""
    names = {"open": "open-loop", "mpc": "MPC"}

    def entry(c: dict | None) -> str:
        return f"{c['success_rate']:.2f} ({c['seconds_per_plan']:.3g} s)" if c else "–"

    lines = ["| planner | cost / start | " + " | ".join(f"{m} {names[mode]}" for m in models for mode in modes) + " |",
             "|---|---|" + "---|" * (len(models) * len(modes))]
    for row in planners:
        for variant in variants:
            keys = [cell_key(m, PLANNER_ROWS[row], mode, variant) for m in models for mode in modes]
            entries = [entry(cells.get(k)) for k in keys]
            lines.append(f"| {row} | {variant_label(variant)} | " + " | ".join(entries) + " |")
    if agent:  # acts every chunk: the same run in both columns
        entries = [entry(cells.get(f"{m}-agent")) for m in models for _ in modes]
        lines.append("| agent alone | its policy, every chunk | " + " | ".join(entries) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    planners, variants, modes = args.planners.split(","), args.variants.split(","), args.modes.split(",")
    for v in variants:
        variant_parts(v)
    out = Path(args.out)
    (out / "cells").mkdir(parents=True, exist_ok=True)
    models = build_models(args, out)
    policies, settings = Policies(args), {k: getattr(args, k) for k in CELL_SETTINGS}
    cells = {}
    for name, model in models.items():
        for row in planners:
            for variant in variants:
                for mode in modes:
                    key = cell_key(name, PLANNER_ROWS[row], mode, variant)
                    cells[key] = cached_cell(out / "cells" / f"{key}.json", settings, lambda: run_cell(
                        args, model, policies.planner(model, PLANNER_ROWS[row], mode == "mpc", variant)))
                    print(key, cells[key], flush=True)
        if args.agent:
            key = f"{name}-agent"
            cells[key] = cached_cell(out / "cells" / f"{key}.json", {**settings, "agent": args.agent},
                                     lambda: run_cell(args, model, TimedPolicy(policies.agent)))
            print(key, cells[key], flush=True)
    report = {"args": vars(args), "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads",
              "cells": cells}
    if args.speed_episodes:
        path = out / "speed.json"
        if not path.exists():
            write_json_atomic(path, speed(args, models["base"]))
        report["speed"] = json.loads(path.read_text())
    table = table_markdown(cells, list(models), planners, variants, modes, agent=bool(args.agent))
    write_json_atomic(out / "table.json", report)
    (out / "table.md").write_text(table + "\n")
    print(table)
    if "speed" in report:
        print(json.dumps(report["speed"]))


if __name__ == "__main__":
    main()
