"""The ``wm-gym`` command: dispatch and output. Each sub-command is one function; heavy imports happen inside it.

The options are generated from config dataclasses in :mod:`wm_gym.cli_options` (none is defined here).
Every command accepts ``--json`` and then prints exactly one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from wm_gym import cli_options
from wm_gym.cli_options import config_from


def _emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


# ----- collect -------------------------------------------------------------------------------
def cmd_collect(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.data.collect import collect_dataset
    from wm_gym.data.dataset import load_episodes

    start = time.perf_counter()
    out = collect_dataset(
        args.env, args.episodes, args.out, policy=args.policy, seed=args.seed,
        workers=args.workers, progress=not args.json, max_steps=args.max_steps, goal_split=args.goal_split,
        frame_stride=args.frame_stride, look=args.look,
    )
    data = load_episodes(out)
    success = [bool(ep_success.any()) for ep_success in data.success]
    return {
        "out": str(out),
        "env": args.env,
        "episodes": len(data.frames),
        "steps": int(data.lengths.sum()),
        "success_rate": float(sum(success) / max(len(success), 1)),
        "seconds": round(time.perf_counter() - start, 2),
    }


# ----- ingest --------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.data.dataset import load_episodes
    from wm_gym.data.video import ingest_videos

    start = time.perf_counter()
    out = ingest_videos(args.inputs, args.out, image_size=args.image_size, fps_stride=args.fps_stride,
                        max_frames=args.max_frames, labels=args.labels, progress=not args.json)
    data = load_episodes(out)
    return {
        "out": str(out),
        "episodes": len(data),
        "frames": int(sum(len(f) for f in data.frames)),
        "image_size": data.image_size,
        "labelled_episodes": int(data.labelled.sum()),
        "seconds": round(time.perf_counter() - start, 2),
    }


# ----- train ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.train.world_model import TrainConfig, train_world_model

    config = config_from(args, TrainConfig, progress=not args.json, stage_overrides={
        name: {"steps": steps} for name, steps in map(_stage_steps, args.stage_steps)})
    model = train_world_model(config)
    return {"out": args.out, **model.summary(), "train_info": {k: v for k, v in model.meta.train_info.items()
                                                                 if k in ("seconds", "stage_seconds", "final_loss",
                                                                          "device", "world_size", "threads_per_rank",
                                                                          "precision", "flow", "controller",
                                                                          "repa_window")}}


def _stage_steps(text: str) -> tuple[str, int]:
    from wm_gym.train.world_model import STAGES

    name, _, steps = text.partition("=")
    if not steps.isdigit() or name not in STAGES:
        raise ValueError(f"--stage-steps takes STAGE=N with STAGE one of {', '.join(STAGES)}; got {text!r}")
    return name, int(steps)


# ----- eval-wm -------------------------------------------------------------------------------
def cmd_eval_wm(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.evaluate_wm import evaluate_world_model
    from wm_gym.train.loop import setup_device
    from wm_gym.world_model import WorldModel
    from wm_gym.zoo import resolve_model

    device, _ = setup_device(args.device)
    model = WorldModel.load(resolve_model(args.model), device=device)
    model.precision = args.precision
    result = evaluate_world_model(model, args.data, mode=args.mode, seed=args.seed, video_dir=args.video,
                                  max_windows=args.windows)
    return {"precision": model.precision_in_use, **result}


# ----- plan ----------------------------------------------------------------------------------
def _planner_config(args: argparse.Namespace):
    """The planner's settings: --execute defaults to the budget's chunks per plan under --mpc; the command's
    --seed seeds the planner too."""
    from wm_gym.agents.planners import PlannerConfig
    from wm_gym.real_episodes import chunks_per_plan

    execute = args.execute or (chunks_per_plan(getattr(args, "budget", None)) if args.mpc else 1)
    return config_from(args, PlannerConfig, execute=execute, seed=args.seed)


def _planner_value(args: argparse.Namespace):
    """The --value-agent's critic (a learned cost-to-go), or None."""
    if args.value_agent is None:
        return None
    from wm_gym.agents.train_agent import load_agent, value_function

    return value_function(load_agent(args.value_agent)[0])


def _prior_path(args: argparse.Namespace) -> str | None:
    """--prior's agent, or None for none given and for ``--prior none`` (plan without the prior a model's recipe
    names)."""
    return None if args.prior == "none" else args.prior


def _planner_prior(args: argparse.Namespace, model):
    """The --prior agent (its policy proposes plans on ``model``), or None. A latent-action agent proposes
    through its grounding map: online's --grounding, else the one its sidecar records."""
    if _prior_path(args) is None:
        return None
    from wm_gym.agents.planners import load_prior

    return load_prior(_prior_path(args), model=model, grounding=getattr(args, "grounding", None))


def _cli_planner(args: argparse.Namespace):
    """model -> the planner the flags describe (wrapped in a WaypointPlanner with --waypoints).

    The waypoint graph is built once, with the first model's encoder: fine-tuning (online) keeps it frozen."""
    from wm_gym.agents.planners import make_planner

    config, value, graph = _planner_config(args), _planner_value(args), []

    def build(model):
        planner = make_planner(args.planner, model, config, value, _planner_prior(args, model))
        if not args.waypoints:
            return planner
        from wm_gym.agents.waypoints import WaypointGraph, WaypointPlanner

        if not graph:
            graph.append(WaypointGraph.from_datasets(model, args.waypoints.split(","), progress=not args.json))
        return WaypointPlanner(planner, graph[0], args.waypoint_lookahead)

    return build


def _apply_model_recipe(args: argparse.Namespace, recipe: dict[str, Any], command: str) -> dict[str, Any]:
    """Set the model's recommended settings (``meta.plan_defaults`` for ``plan``, ``meta.agent_defaults`` for
    ``train-agent``) where the command line gave none, so the bare command reproduces the model's reported figure;
    returns what was set. A flag given always wins."""
    unknown = sorted(dest for dest in recipe if not hasattr(args, dest) or dest in ("model", "device", "out"))
    if unknown:
        raise ValueError(f"the model's {command} recipe names {', '.join(unknown)}, which `wm-gym {command}` does not "
                         "take from a model")
    yields = {"budget": "max_steps"}  # a recipe's budget gives way to --max-steps (the harness takes one of them)
    applied = {dest: value for dest, value in recipe.items()
               if dest not in args.given and yields.get(dest) not in args.given}
    for dest, value in applied.items():
        setattr(args, dest, value)
    return applied


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.real_episodes import evaluate_policy
    from wm_gym.zoo import load_model

    model = load_model(args.model, args.device)
    recipe = _apply_model_recipe(args, model.meta.plan_defaults, "plan")
    model.precision = args.precision
    planner = _cli_planner(args)(model)
    result = evaluate_policy(planner, model, args.env, episodes=args.episodes, seed=args.seed, batch=args.episodes,
                             max_steps=args.max_steps, video_dir=args.video, budget=args.budget, look=args.look)
    steered = getattr(planner, "waypoint_fraction", None)  # share of planning calls' rows aimed at a waypoint
    return {"planner": args.planner, "mpc": args.mpc, "execute": _planner_config(args).execute,
            "precision": model.precision_in_use,
            "terminal": args.terminal, "prior": args.prior, "seconds_per_plan": round(planner.seconds_per_plan, 4),
            "seconds_first_plan": round(planner.plan_seconds[0], 4), "plans": len(planner.plan_seconds),
            "model_recipe": recipe, **({"waypoint_fraction": round(sum(steered) / len(steered), 4)}
                                                   if steered else {}), **result}


# ----- online --------------------------------------------------------------------------------
#: The most episodes `online` runs in lockstep unless --batch says otherwise: each sim holds its own renderer, and
#: 500 PointMaze sims in lockstep ran out of 24 GiB.
ONLINE_LOCKSTEP_MAX = 200


def cmd_online(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.online import OnlineConfig, run_online

    trainer = None
    planner_flags = cli_options.option_flags("online", cli_options.PlannerOptions, cli_options.PlannerConfig)
    ignored = [flag for dest, flag in planner_flags.items() if dest in args.given]
    if args.agent and ignored:
        raise ValueError(f"--agent acts instead of a planner, so {', '.join(ignored)} would be ignored: drop "
                         f"{'it' if len(ignored) == 1 else 'them'}, or drop --agent to plan")
    if args.retrain_steps and not args.agent:
        raise ValueError("--retrain-steps retrains an agent: give the starting one with --agent AGENT.zip")
    if args.grounding and not (args.agent or _prior_path(args)):
        raise ValueError("--grounding grounds a latent-action agent: give it with --agent or --prior AGENT.zip")
    if args.agent and args.retrain_steps:  # the loop loads each round's agent itself
        from wm_gym.agents.online_agent import AgentRetrainer

        policy, trainer = None, AgentRetrainer(device=args.device, progress=not args.json, grounding=args.grounding)
    elif args.agent:
        policy = _online_agent(args.agent, args.grounding)
    else:
        policy = _cli_planner(args)  # rebuilt each round, on that round's model
    config = config_from(args, OnlineConfig, batch=args.batch or min(args.episodes, ONLINE_LOCKSTEP_MAX),
                         progress=not args.json,
                         finetune={"seed": args.seed, "progress": not args.json})
    rounds = run_online(args.model, policy, config, trainer)
    keys = ("round", "success_rate", "episodes_added", "sim_steps_added", "real_episodes_total", "sim_steps_total")
    return {"out": args.out, "rounds": [{k: r[k] for k in keys if k in r}  # runs before the totals lack them
                                        | ({"agent": r["agent"]} if "agent" in r else {})
                                        | {"mse_before": r["finetune"].get("mse_before"),
                                           "mse_after": r["finetune"].get("mse_after")}
                                        | ({"eval_success_rate": r["eval"]["success_rate"]} if "eval" in r else {})
                                        for r in rounds]}


def _online_agent(path: str, grounding: str | None):
    """model -> the fixed --agent acting in real action chunks on it (a latent-action agent through its
    grounding map, checked against each round's model)."""
    from wm_gym.agents.evaluate import real_policy
    from wm_gym.agents.train_agent import load_agent

    agent, meta = load_agent(path)
    return lambda model: real_policy(agent, meta, model, grounding, name=path)[0]


# ----- finetune ------------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.train.finetune import FinetuneConfig, finetune_dynamics
    from wm_gym.zoo import load_model

    model = load_model(args.model, args.device)
    info = finetune_dynamics(model, args.data, config_from(args, FinetuneConfig, progress=not args.json))
    model.save(args.out)
    return {"out": args.out, **info}


# ----- bench ---------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    from wm_gym import bench
    from wm_gym.zoo import available

    result: dict[str, Any] = {"machine": bench_machine()}
    result["sim_steps_per_s"] = bench.bench_sims(args.sim or None, steps=args.steps, seed=args.seed)
    result["wall_vector_steps_per_s"] = bench.wall_vector_steps_per_s(num_envs=256, seed=args.seed)
    if args.sims:
        return result
    cuda_peaks = bench_cuda_gemm_peaks(args)
    # the sims' pass above is PointMaze's first repeat for the first model
    first_pointmaze = result["sim_steps_per_s"].get("pointmaze")
    names = args.model or available()
    if not names:
        raise ValueError("no zoo model is shipped in this install: pass --model FILE")
    result["models"] = {name: bench_model(name, args, cuda_peaks, first_pointmaze if i == 0 else None,
                                          pointmaze=first_pointmaze is not None)
                        for i, name in enumerate(names)}
    cpu_peaks = [peak for report in result["models"].values() for peak in report["repeats"]["gemm_peak_cpu"]]
    result["gemm_peak_flops"] = {"cpu_fp32": round(float(np.median(cpu_peaks))), **cuda_peaks}
    # the top-level keys of one-model runs (before --model was repeatable): the first model's
    first = result["models"][names[0]]
    result.update({key: first[key] for key in ("imagine_steps_per_s", "repeats", "feature_sim_steps_per_s", "ratios",
                                               "ppo_steps_per_s") if key in first})
    result["notes"] = (f"imagine: agent steps (one action chunk each) at batch {args.batch}, rows counted; "
                       "sim_steps_per_s: single sim steps with a 64x64 render; feature_sim: one agent step in the "
                       "real sim = chunk + render + encoder; flops_per_step: one batched imagined step (matmuls, "
                       "convs, attention; 2 per multiply-add), flops_per_agent_step = that / batch; "
                       "fraction_of_peak = flops_per_agent_step x imagine cpu steps/s / gemm_peak_flops, the median "
                       "CPU fp32 GEMM peak (also when precision says the dynamics ran in bf16) of the probes "
                       "alternated with that model's repeats (top level: of all); "
                       "time_breakdown_ms: one batched CPU step, part by part; top-level imagine_steps_per_s, "
                       "repeats, feature_sim_steps_per_s, ratios, ppo_steps_per_s: the first model's")
    return result


def bench_cuda_gemm_peaks(args: argparse.Namespace) -> dict[str, float]:
    """CUDA's fp32 and bf16 square-matmul FLOP/s, when it is present and not --device cpu (the CPU's is probed
    alongside each model's repeats, where a busy machine slows it as much as imagination)."""
    import torch

    from wm_gym import bench

    if not torch.cuda.is_available() or args.device == "cpu":
        return {}
    return {f"cuda_{dtype}": round(bench.gemm_peak_flops("cuda", dtype, seconds=args.peak_seconds))
            for dtype in ("fp32", "bf16")}


def bench_model(name: str, args: argparse.Namespace, cuda_peaks: dict[str, float], first_pointmaze: float | None,
                pointmaze: bool) -> dict[str, Any]:
    """Everything bench measures for one world model: steps/s (vs PointMaze and its own real sim), FLOPs per
    step, the fraction of the GEMM peak it reaches, where a step's time goes and, unless --no-ppo, SB3 PPO."""
    import numpy as np
    import torch

    from wm_gym import bench
    from wm_gym.zoo import load_model

    model = load_model(name, "cpu")
    model.precision = args.precision  # every CPU measurement below steps this model
    runs = bench_repeats(model, args, first_pointmaze, pointmaze)
    out: dict[str, Any] = {"imagine_steps_per_s": {"cpu": float(np.median(runs["imagine_cpu"]))},
                           "precision": {"cpu": model.precision_in_use}}
    if torch.cuda.is_available() and args.device != "cpu":
        cuda_model = load_model(name, "cuda")
        cuda_model.precision = args.precision
        out["imagine_steps_per_s"]["cuda"] = bench.imagine_steps_per_s(cuda_model, args.batch, device="cuda",
                                                                       seed=args.seed)
        out["precision"]["cuda"] = cuda_model.precision_in_use
    out["repeats"] = runs
    sim, fs, cpu = model.meta.sim, model.config.frameskip, out["imagine_steps_per_s"]["cpu"]
    out["feature_sim_steps_per_s"] = {sim: bench.feature_sim_steps_per_s(model, seed=args.seed)}
    median_pm = float(np.median(runs["pointmaze"])) if runs["pointmaze"] else None
    out["ratios"] = {
        "imagine_cpu_vs_pointmaze_pixel_steps": round(cpu / median_pm, 1) if median_pm else None,
        "imagine_cpu_sim_time_vs_pointmaze": round(cpu * fs / median_pm, 1) if median_pm else None,
        f"imagine_cpu_vs_{sim}_feature_sim": round(cpu / out["feature_sim_steps_per_s"][sim], 1),
    }
    flops = bench.imagine_step_flops(model, args.batch, seed=args.seed)
    peak = round(float(np.median(runs["gemm_peak_cpu"])))
    out.update(flops_per_step=flops, flops_per_agent_step=round(flops / args.batch), gemm_peak_flops=peak,
               fraction_of_peak=round(bench.fraction_of_peak(flops, args.batch, cpu, peak), 4))
    if "cuda" in out["imagine_steps_per_s"]:  # against the peak of the dtype the dynamics run in there
        peak = cuda_peaks[f"cuda_{out['precision']['cuda']}"]
        out["fraction_of_peak_cuda"] = round(
            bench.fraction_of_peak(flops, args.batch, out["imagine_steps_per_s"]["cuda"], peak), 4)
    breakdown = bench.imagine_step_breakdown(model, args.batch, seed=args.seed)
    out["time_breakdown_ms"], out["flops_breakdown"] = breakdown["time_ms"], breakdown["flops"]
    if not args.no_ppo:
        ppo = {w: bench.ppo_steps_per_s(model, w, seed=args.seed) for w in ("imagine", "sim")}
        out["ppo_steps_per_s"] = {**ppo, "ratio": round(ppo["imagine"] / ppo["sim"], 1)}
    return out


def bench_repeats(model, args: argparse.Namespace, first_pointmaze: float | None,
                  pointmaze: bool) -> dict[str, list[float]]:
    """CPU imagination, the CPU fp32 GEMM peak and (with ``pointmaze``) PointMaze pixel steps, timed alternately
    ``--repeats`` times each and compared by their medians, so a slow spell of a shared machine hits all sides
    alike. ``first_pointmaze`` (the sims' pass) counts as PointMaze's first repeat."""
    from wm_gym import bench

    runs: dict[str, list[float]] = {"imagine_cpu": [], "pointmaze": [first_pointmaze] if first_pointmaze else [],
                                    "gemm_peak_cpu": []}
    for _ in range(args.repeats):
        runs["imagine_cpu"].append(bench.imagine_steps_per_s(model, args.batch, device="cpu", seed=args.seed))
        runs["gemm_peak_cpu"].append(round(bench.gemm_peak_flops("cpu", "fp32", seconds=args.peak_seconds)))
        if pointmaze and len(runs["pointmaze"]) < args.repeats:
            runs["pointmaze"].append(round(bench.sim_steps_per_s("pointmaze", args.steps, args.seed), 1))
    return runs


def bench_machine() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, {gpu}"


# ----- calibrate -----------------------------------------------------------------------------
def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.calibrate import calibrate_success
    from wm_gym.data.demo_bank import DemoBank
    from wm_gym.world_model import WorldModel
    from wm_gym.zoo import resolve_model

    flags = cli_options.option_flags("calibrate", cli_options.CalibrateOptions)
    without_demos = [flags[dest] for dest in ("demo_episodes", "heldout_fraction", "seed")
                     if dest in args.given and not args.demos]
    if without_demos:
        verb = "applies" if len(without_demos) == 1 else "apply"
        raise ValueError(f"{', '.join(without_demos)} only {verb} to the demo bank of --demos DATASET (how many demos "
                         "it takes, which are held out); without --demos nothing uses them: the calibration itself is "
                         "deterministic (fit on the even episodes, reported on the odd ones)")
    model = WorldModel.load(resolve_model(args.model))
    result: dict[str, Any] = {"out": args.out or args.model}
    if args.demos:
        model.bank = DemoBank.from_dataset(args.demos, model.config.frameskip, args.demo_episodes,
                                           heldout_fraction=args.heldout_fraction, seed=args.seed)
        result["demos"] = {"dataset": args.demos, "count": len(model.bank), "heldout": int(model.bank.heldout.sum())}
    result["calibration"] = calibrate_success(model, args.data, metric=args.metric)
    model.meta.train_info["calibration"] = result["calibration"]
    if args.probe:
        from wm_gym.state_probe import fit_state_probe

        result["probe"] = model.meta.train_info["probe"] = fit_state_probe(model, args.data)
    model.save(args.out or resolve_model(args.model))
    return result


# ----- train-distance ------------------------------------------------------------------------
def cmd_train_distance(args: argparse.Namespace) -> dict[str, Any]:
    from pathlib import Path

    from wm_gym.device import resolve_device
    from wm_gym.temporal_distance import TemporalDistanceConfig
    from wm_gym.train.temporal_distance import fit_temporal_distance
    from wm_gym.world_model import WorldModel
    from wm_gym.zoo import resolve_model

    model = WorldModel.load(resolve_model(args.model), resolve_device(args.device))
    out = Path(args.out or resolve_model(args.model))
    config = config_from(args, TemporalDistanceConfig)
    report = fit_temporal_distance(model, args.data, config, checkpoint=str(out) + ".distance-state",
                                   log_dir=args.log_dir, max_episodes=args.max_episodes, progress=not args.json)
    model.save(out)
    Path(str(out) + ".distance-state").unlink(missing_ok=True)
    return {"out": str(out), **{k: v for k, v in report.items() if k != "config"}}


# ----- train-agent / evaluate ------------------------------------------------------------------
def cmd_train_agent(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.agents.train_agent import AgentConfig, train_agent
    from wm_gym.zoo import load_model

    model = load_model(args.model, args.device)  # read once: its recipe here, then trained on
    recipe = _apply_model_recipe(args, model.meta.agent_defaults, "train-agent")
    config = config_from(args, AgentConfig, progress=not args.json,
                         bc_data=None if args.bc_data == "none" else args.bc_data,
                         teacher=None if args.teacher == "none" else args.teacher)
    return {**train_agent(config, model), "model_recipe": recipe}


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.agents.evaluate import evaluate_agent

    result = evaluate_agent(args.agent, env=args.env, model=args.model, episodes=args.episodes, seed=args.seed,
                            device=args.device, video_dir=args.video, max_steps=args.max_steps, budget=args.budget,
                            look=args.look, grounding=args.grounding, imagined=args.imagined,
                            paired=args.paired)
    if not args.per_episode:
        result.pop("per_episode")
    return result


def cmd_ground(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.grounding import GroundingConfig, fit_dataset_grounding
    from wm_gym.zoo import load_model

    _, report = fit_dataset_grounding(load_model(args.model, args.device), args.data,
                                      config_from(args, GroundingConfig), out=args.out, model_name=args.model)
    return {k: v for k, v in report.items() if k not in ("episodes", "config")}


def cmd_align(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.look_adaptation import align_model
    from wm_gym.zoo import load_model

    aligned, report = align_model(load_model(args.model, args.device), args.old, args.new, args.look,
                                  max_episodes=args.max_episodes, ridge=args.ridge)
    aligned.save(args.out)
    return {"out": args.out, "model": args.model, **report}


# ----- entry point ---------------------------------------------------------------------------
HANDLERS = {"collect": cmd_collect, "ingest": cmd_ingest, "train": cmd_train, "finetune": cmd_finetune,
            "eval-wm": cmd_eval_wm, "calibrate": cmd_calibrate, "train-distance": cmd_train_distance,
            "ground": cmd_ground, "align": cmd_align, "train-agent": cmd_train_agent, "evaluate": cmd_evaluate, "plan": cmd_plan,
            "online": cmd_online, "bench": cmd_bench}


def build_parser() -> argparse.ArgumentParser:
    return cli_options.build_parser(HANDLERS)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"wm-gym {args.command}: error: {err}", file=sys.stderr)
        return 2
    _emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
