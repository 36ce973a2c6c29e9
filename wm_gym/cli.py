"""The ``wm-gym`` command. Each sub-command is one function; heavy imports happen inside it.

Every command accepts ``--json`` and then prints exactly one JSON object on its last line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable


SIM_HELP = "real sim: wall, pointmaze, pusht, dmc-reacher, dmc-point_mass (v1, DINO-WM parity), or a full id such as wm_gym/Wall-v0 for an older version"


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
        workers=args.workers, progress=not args.json, max_steps=args.max_steps,
    )
    data = load_episodes(out)
    success = [bool(ep_success.any()) for ep_success in data.success]
    return {
        "out": str(out),
        "env": args.env,
        "episodes": len(data.frames),
        "steps": int(sum(len(f) - 1 for f in data.frames)),
        "success_rate": float(sum(success) / max(len(success), 1)),
        "seconds": round(time.perf_counter() - start, 2),
    }


def add_collect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect", help="collect episodes from a real sim into a dataset",
        description="Roll out a data-collection policy in a real sim and write a Minari dataset with lossless "
        "64x64 frames, actions, proprio, true states and success. Interrupted runs resume: re-run the same command.",
    )
    p.add_argument("--env", required=True, help=SIM_HELP)
    p.add_argument("--episodes", type=int, required=True, help="number of episodes to collect")
    p.add_argument("--out", required=True, help="dataset directory to create (or resume)")
    p.add_argument("--policy", default="random", help="collection policy: random | noisy-expert (default: random)")
    p.add_argument("--seed", type=int, default=0, help="episode i is fully determined by (seed, i)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (results do not depend on it)")
    p.add_argument("--max-steps", type=int, default=None, help="steps per episode (default: the sim's episode length)")
    p.set_defaults(func=cmd_collect)


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


def add_ingest(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest", help="turn videos or folders of frame images into a dataset without actions",
        description="Each video (.mp4, .mov, .avi, .mkv, .webm) and each folder of frame images (.png/.jpg, in "
        "natural name order) becomes one episode: center-cropped to a square, resized to --image-size, with no "
        "actions, so `wm-gym train` learns the encoder, the latent actions and the flow z-prior from it. A folder "
        "of videos and/or frame folders gives one episode each. --labels attaches actions to the episodes it names "
        "only. Interrupted runs resume: re-run the same command; nothing is duplicated.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, frame folders, or folders holding them (episode name: the video's file stem "
                   "or the frame folder's name)")
    p.add_argument("--out", required=True, help="dataset directory to create (or resume)")
    p.add_argument("--image-size", type=int, default=64, help="square frame size after the center crop (default: 64)")
    p.add_argument("--fps-stride", type=int, default=1, help="keep every n-th frame (default: 1, all frames)")
    p.add_argument("--max-frames", type=int, default=None, help="keep at most this many frames per episode")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="actions for some episodes: .npz with one [T, A] array per episode name, or .json "
                   "{name: [[a0, a1, ...], ...]}; row t leads from kept frame t to t+1 (T = frames kept - 1)")
    p.set_defaults(func=cmd_ingest)


# ----- train ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.train.world_model import TrainConfig, train_world_model

    config = TrainConfig(
        data=args.data, out=args.out, preset=args.preset, latent=args.latent, regularizer=args.regularizer,
        repa_weight=args.repa_weight, repa_window=args.repa_window, steps=args.steps, encoder=args.encoder,
        encoder_weights=args.encoder_weights,
        history=args.history, frameskip=args.frameskip, action_labels=args.action_labels, seed=args.seed,
        device=args.device, resume=args.resume, log_dir=args.log_dir, progress=not args.json, init_from=args.init_from,
        adversarial=args.adversarial, precision=args.precision, compile=args.compile,
        checkpoint_every=args.checkpoint_every,
        stage_overrides={name: {"steps": steps} for name, steps in map(_stage_steps, args.stage_steps or [])},
    )
    model = train_world_model(config)
    return {"out": args.out, **model.summary(), "train_info": {k: v for k, v in model.meta.train_info.items()
                                                                 if k in ("seconds", "final_loss", "device", "world_size",
                                                                          "flow", "controller", "repa_window")}}


def _stage_steps(text: str) -> tuple[str, int]:
    name, _, steps = text.partition("=")
    if not steps.isdigit() or name not in ("encoder", "latent", "flow", "controller", "predictor"):
        raise ValueError(f"--stage-steps takes STAGE=N with STAGE one of encoder, latent, flow, controller, predictor; "
                         f"got {text!r}")
    return name, int(steps)


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a world model on a dataset",
        description="Train a world model stage by stage: encoder (conv), latent actions (rla/lam), flow dynamics and "
        "controller, or the action-conditioned baseline (--latent action). Checkpoints go to OUT.train-state; "
        "--resume continues an interrupted run. Runs unchanged under torchrun (DDP). Action-free data (`wm-gym "
        "ingest` without --labels) trains the encoder, the latent actions and the flow as a z-prior, and skips the "
        "controller (said in the output and in the model's train_info); with labels for some episodes, flow and "
        "controller train on those only.",
    )
    p.add_argument("--data", required=True, help="dataset directory from `wm-gym collect` or `wm-gym ingest`")
    p.add_argument("--out", required=True, help="world-model file to write (e.g. wall.pt)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "fast", "base"],
                   help="tiny: tests (~1 min CPU); small: <=30 min on 2 CPU cores; fast: half-width model with a patch "
                   "decoder, ~4x faster imagination on CPUs; base: GPU")
    p.add_argument("--latent", default="rla", choices=["rla", "lam", "action"],
                   help="rla: residual latent actions; lam: IDM latent actions; action: DINO-WM-style baseline")
    p.add_argument("--regularizer", default="sparse", choices=["sparse", "noisy", "vq", "none"], help="lam bottleneck")
    p.add_argument("--repa-weight", type=float, default=0.0,
                   help="Seq-Δ-REPA weight in the latent stage: aligns the summed latent actions of a window with its "
                   "feature change, so z means the same motion in every clip (0 = off; Olaf-World: 0.02-1)")
    p.add_argument("--repa-window", type=int, default=4,
                   help="model steps per Seq-Δ-REPA window (Olaf-World: 16); cut to what the longest episode fits")
    p.add_argument("--steps", type=int, default=None, help="override the steps of every stage")
    p.add_argument("--stage-steps", action="append", metavar="STAGE=N", help="override one stage's steps, e.g. flow=1000")
    p.add_argument("--checkpoint-every", type=int, default=None,
                   help="steps between mid-stage checkpoints in OUT.train-state (default: 250)")
    p.add_argument("--encoder", default="conv", choices=["conv", "dinov2-vits14"])
    p.add_argument("--encoder-weights", default=None, help="DINOv2 weights file (dinov2_vits14_pretrain.pth)")
    p.add_argument("--history", type=int, default=1, help="feature frames the dynamics read")
    p.add_argument("--frameskip", type=int, default=5, help="sim steps per model step (the action chunk)")
    p.add_argument("--action-labels", type=float, default=1.0,
                   help="fraction of training episodes whose actions the dynamics see (e.g. 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from OUT.train-state")
    p.add_argument("--init-from", default=None,
                   help="reuse this world model's encoder and latent actions; train only the dynamics (e.g. new labels)")
    p.add_argument("--log-dir", default=None, help="TensorBoard folder (default: runs/<OUT name>)")
    p.add_argument("--adversarial", action="store_true",
                   help="Adversarial World Modeling: FGSM-perturbed dynamics inputs (eps 0.05/0.02 std), clean targets")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="torch.compile each stage's loss (default backend: inductor)")
    p.set_defaults(func=cmd_train)


# ----- eval-wm -------------------------------------------------------------------------------
def cmd_eval_wm(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.evaluate_wm import evaluate_world_model
    from wm_gym.train.loop import setup_device
    from wm_gym.world_model import WorldModel
    from wm_gym.zoo import resolve_model

    device, _ = setup_device(args.device)
    model = WorldModel.load(resolve_model(args.model), device=device)
    return evaluate_world_model(model, args.data, mode=args.mode, seed=args.seed, video_dir=args.video,
                                max_windows=args.windows)


def add_eval_wm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval-wm", help="open-loop error, latent-action checks and a state probe for a world model",
        description="Evaluate a world model on a dataset (ideally held-out episodes from a fresh seed): open-loop "
        "feature MSE at horizons 1/5/10 vs copy-last, latent reconstruction, the leakage (scene-cut) test, latent-"
        "action transfer across episodes, and a linear probe of the state from the features.",
    )
    p.add_argument("--model", required=True, help="world-model file or zoo name (wall, pointmaze)")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--mode", default="controller", choices=["controller", "flow"], help="how z is produced")
    p.add_argument("--windows", type=int, default=256, help="rollout windows evaluated")
    p.add_argument("--video", default=None, help="folder for imagined-vs-true mp4 and PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval_wm)


# ----- plan ----------------------------------------------------------------------------------
def _planner_config(args: argparse.Namespace):
    from wm_gym.agents.planners import PlannerConfig

    from wm_gym.real_episodes import chunks_per_plan

    execute = args.execute or (chunks_per_plan(getattr(args, "budget", None)) if args.mpc else 1)
    return PlannerConfig(horizon=args.horizon, mpc=args.mpc, execute=execute, samples=args.samples, elites=args.elites,
                         iterations=args.iterations, gbp_steps=args.gbp_steps, lr=args.lr, gd_lr=args.gd_lr,
                         seed=args.seed, value_weight=args.value_weight, terminal=args.terminal, decay=args.decay,
                         prior_samples=args.prior_samples)


def _planner_value(args: argparse.Namespace):
    """The --value-agent's critic (a learned cost-to-go), or None."""
    if args.value_agent is None:
        return None
    from wm_gym.agents.train_agent import load_agent, value_function

    return value_function(load_agent(args.value_agent)[0])


def _planner_prior(args: argparse.Namespace, model):
    """The --prior agent (its policy proposes plans on ``model``), or None. A latent-action agent proposes
    through its grounding map: online's --grounding, else the one its sidecar records."""
    if args.prior is None:
        return None
    from wm_gym.agents.planners import load_prior

    return load_prior(args.prior, model=model, grounding=getattr(args, "grounding", None))


def _add_planner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--planner", default="gbp", choices=["cem", "gbp", "gd", "mppi"],
                   help="gbp: Adam on the actions; gd: plain gradient descent; cem / mppi: sampling")
    p.add_argument("--mpc", action="store_true", help="replan after every executed chunk (warm-started)")
    p.add_argument("--horizon", type=int, default=5, help="chunks planned ahead")
    p.add_argument("--execute", type=int, default=None,
                   help="with --mpc: chunks of each plan executed before replanning (default 1; 5 under "
                   "--budget dino-wm or swm, as DINO-WM's MPC and stable-worldmodel's receding horizon)")
    p.add_argument("--samples", type=int, default=300, help="CEM/MPPI samples per iteration")
    p.add_argument("--elites", type=int, default=30, help="CEM top-k")
    p.add_argument("--iterations", type=int, default=10, help="CEM/MPPI iterations")
    p.add_argument("--gbp-steps", type=int, default=100, help="gradient steps per plan (gbp and gd)")
    p.add_argument("--lr", type=float, default=0.2, help="GBP Adam learning rate")
    p.add_argument("--gd-lr", type=float, default=1.0, help="GD learning rate")
    p.add_argument("--value-agent", default=None,
                   help="a PPO agent (train-agent .zip) on this model: its critic adds a learned cost-to-go, "
                   "−w·V(end of plan, goal), to the goal cost")
    p.add_argument("--value-weight", type=float, default=1.0, help="w of --value-agent's cost-to-go")
    p.add_argument("--terminal", default="goal", choices=["goal", "temporal"],
                   help="what scores each predicted frame against the goal: goal = feature MSE; temporal = the "
                   "model's learned model steps to go (a head fitted by `wm-gym train-distance`: counts steps "
                   "around walls, where a feature distance points through them)")
    p.add_argument("--decay", type=float, default=0.5,
                   help="predicted frame i of T weighs decay^(T-i) in the cost (0: only the plan's final frame)")
    p.add_argument("--prior", default=None, metavar="AGENT.zip",
                   help="a policy prior (TD-MPC2 style): this train-agent agent (task goal, on this model) acts in "
                   "the model over the horizon; its plan is a start (GBP/GD begin from it, CEM/MPPI's first mean, "
                   "where cheaper than the MPC warm start)")
    p.add_argument("--prior-samples", type=float, default=0.05, metavar="FRACTION",
                   help="with --prior, CEM/MPPI: share of each iteration's samples that are the prior's rollouts "
                   "(its deterministic one, the rest with its action noise); 0.05 of 300 = 15, about TD-MPC2's 24/512")
    p.add_argument("--waypoints", default=None, metavar="DIR[,DIR]",
                   help="dataset folder(s) (wm-gym collect; random data covers most states) whose frames form a graph "
                   "in feature space; the planner then aims at the waypoint --waypoint-lookahead steps along the "
                   "shortest path to the goal instead of at the goal (goes around walls)")
    p.add_argument("--waypoint-lookahead", type=float, default=1.5,
                   help="how far along the path the waypoint is, in model steps")


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


def cmd_plan(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.real_episodes import evaluate_policy
    from wm_gym.zoo import load_model

    model = load_model(args.model, args.device)
    planner = _cli_planner(args)(model)
    result = evaluate_policy(planner, model, args.env, episodes=args.episodes, seed=args.seed, batch=args.episodes,
                             max_steps=args.max_steps, video_dir=args.video, budget=args.budget)
    steered = getattr(planner, "waypoint_fraction", None)  # share of planning calls' rows aimed at a waypoint
    return {"planner": args.planner, "mpc": args.mpc, "execute": _planner_config(args).execute,
            "terminal": args.terminal, "prior": args.prior, "seconds_per_plan": round(planner.seconds_per_plan, 4),
            "plans": len(planner.plan_seconds), **({"waypoint_fraction": round(sum(steered) / len(steered), 4)}
                                                   if steered else {}), **result}


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan", help="plan with the world model (CEM, GBP, GD, MPPI) and act in the REAL sim",
        description="Plan action chunks with the world model for all episodes in one batch, execute them in the real "
        "sim (open loop, or replanning every step with --mpc) and report success and seconds per plan.",
    )
    p.add_argument("--model", default="wall", help="world model: zoo name or file")
    p.add_argument("--env", default=None, help=SIM_HELP + " (default: the model's sim)")
    _add_planner_args(p)
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--max-steps", type=int, default=None, help="agent steps per episode (default: sim length / frameskip)")
    p.add_argument("--budget", default=None, metavar="dino-wm|swm|STEPS",
                   help="evaluation protocol: dino-wm (success checked every 5 chunks, reported after 2/4/10/20 "
                   "replans = 50/100/250/500 sim steps), swm (50 sim steps, success at any step) or a number of sim "
                   "steps (default: the sim's episode length); see docs/protocol.md")
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--video", default=None, help="folder for mp4s of the first real episodes")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_plan)


# ----- online --------------------------------------------------------------------------------
def cmd_online(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.online import OnlineConfig, run_online
    from wm_gym.train.finetune import FinetuneConfig

    trainer = None
    if args.retrain_steps and not args.agent:
        raise ValueError("--retrain-steps retrains an agent: give the starting one with --agent AGENT.zip")
    if args.grounding and not (args.agent or args.prior):
        raise ValueError("--grounding grounds a latent-action agent: give it with --agent or --prior AGENT.zip")
    if args.agent and args.retrain_steps:  # the loop loads each round's agent itself
        from wm_gym.agents.online_agent import AgentRetrainer

        policy, trainer = None, AgentRetrainer(device=args.device, progress=not args.json, grounding=args.grounding)
    elif args.agent:
        policy = _online_agent(args.agent, args.grounding)
    else:
        policy = _cli_planner(args)  # rebuilt each round, on that round's model
    config = OnlineConfig(
        out=args.out, env=args.env, rounds=args.rounds, episodes=args.episodes, seed=args.seed, max_steps=args.max_steps,
        batch=args.batch or args.episodes, data=args.data or [], agent=args.agent, retrain_steps=args.retrain_steps,
        grounding=args.grounding,
        eval_episodes=args.eval_episodes, eval_seed=args.eval_seed, device=args.device, progress=not args.json,
        finetune=FinetuneConfig(steps=args.finetune_steps, lr=args.finetune_lr, batch_size=args.batch_size,
                                adversarial=args.adversarial, horizon=args.finetune_horizon, seed=args.seed,
                                progress=not args.json),
    )
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


def add_online(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "online", help="online world modeling: act in the real sim, add the trajectories, fine-tune (and retrain "
        "the agent), repeat",
        description="The data-aggregation loop. Each round runs --episodes real episodes with a planner (or an SB3 "
        "agent, --agent), saves every finished trajectory atomically under OUT/round_RR/episodes, fine-tunes the "
        "dynamics (lr 1e-5, encoder frozen) on --data plus all rounds' trajectories and writes OUT/round_RR/model.pt. "
        "With --agent and --retrain-steps N (the Dreamer-style loop) the agent then continues its PPO in imagination "
        "on that fine-tuned model for N steps, warm-started from the agent that acted, and is saved as "
        "OUT/round_RR/agent.zip; the next round acts with it. Each round's result.json reports its real episodes and "
        "sim steps, this round and in total, the acting policy's success and, with --eval-episodes, the next "
        "policy's success on held-out seeds (the starting one's in OUT/base_eval.json). "
        "Re-run the same command to resume an interrupted run: nothing is lost, duplicated or trained twice.",
    )
    p.add_argument("--model", default="wall", help="starting world model: zoo name or file")
    p.add_argument("--env", default=None, help=SIM_HELP + " (default: the model's sim)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--episodes", type=int, default=50, help="real episodes per round")
    p.add_argument("--agent", default=None,
                   help="act with this SB3 agent (train-agent .zip) instead of a planner; fixed unless "
                   "--retrain-steps. A latent-action agent (train-agent --action-space latent) acts through its "
                   "grounding map")
    p.add_argument("--grounding", default=None, metavar="G.pt",
                   help="latent-action --agent or --prior: the `wm-gym ground` file mapping (features, z) to real "
                   "action chunks (default: the one recorded in the agent's sidecar); a retrained agent records it")
    p.add_argument("--retrain-steps", type=int, default=0, metavar="N",
                   help="with --agent: each round, after fine-tuning, continue the agent's RL in imagination on the "
                   "new model for N more steps (its own settings, no re-cloning) and act with it next round "
                   "(0: keep the agent fixed)")
    _add_planner_args(p)
    p.add_argument("--data", action="append", help="base dataset dir to fine-tune on as well (repeatable)")
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--finetune-lr", type=float, default=1e-5)
    p.add_argument("--finetune-horizon", type=int, default=1, help="open-loop steps in the fine-tuning loss")
    p.add_argument("--batch-size", type=int, default=64, help="fine-tuning batch size")
    p.add_argument("--adversarial", action="store_true", help="FGSM-perturbed inputs while fine-tuning")
    p.add_argument("--eval-episodes", type=int, default=0,
                   help="also evaluate each round's new model (planner) or retrained agent on fixed held-out seeds")
    p.add_argument("--eval-seed", type=int, default=100_000)
    p.add_argument("--max-steps", type=int, default=None, help="agent steps per episode")
    p.add_argument("--batch", type=int, default=None, help="episodes run in lockstep (default: all of a round)")
    p.add_argument("--seed", type=int, default=0, help="round r, episode i resets with seed + r*episodes + i")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_online)


# ----- finetune ------------------------------------------------------------------------------
def cmd_finetune(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.train.finetune import FinetuneConfig, finetune_dynamics
    from wm_gym.zoo import load_model

    model = load_model(args.model, args.device)
    info = finetune_dynamics(model, args.data, FinetuneConfig(
        steps=args.steps, lr=args.lr, batch_size=args.batch_size, adversarial=args.adversarial, seed=args.seed,
        horizon=args.horizon,
        log_dir=args.log_dir, progress=not args.json))
    model.save(args.out)
    return {"out": args.out, **info}


def add_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "finetune", help="fine-tune a world model's dynamics on more data (optionally adversarial)",
        description="Fine-tune only the dynamics (the predictor, or the controller of rla/lam models) on one-step "
        "feature error; the encoder, latent actions and flow stay frozen. --adversarial trains on FGSM-perturbed "
        "history features (eps 0.05 std) and actions (eps 0.02 std) with clean targets.",
    )
    p.add_argument("--model", required=True, help="world model: zoo name or file")
    p.add_argument("--data", required=True, action="append",
                   help="dataset dir, or an online round's episodes folder (repeatable)")
    p.add_argument("--out", required=True, help="world-model file to write")
    p.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--adversarial", action="store_true", help="FGSM with a random start on the inputs, clean targets")
    p.add_argument("--horizon", type=int, default=1,
                   help="loss over open-loop rollouts of this many steps (re-projected, as planners roll out)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-dir", default=None, help="TensorBoard folder")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_finetune)


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
                       "CPU fp32 GEMM peak of the probes alternated with that model's repeats (top level: of all); "
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
    from wm_gym.device import use_bf16
    from wm_gym.zoo import load_model

    model = load_model(name, "cpu")
    runs = bench_repeats(name, args, first_pointmaze, pointmaze)
    out: dict[str, Any] = {"imagine_steps_per_s": {"cpu": float(np.median(runs["imagine_cpu"]))}}
    if torch.cuda.is_available() and args.device != "cpu":
        out["imagine_steps_per_s"]["cuda"] = bench.imagine_steps_per_s(name, args.batch, device="cuda", seed=args.seed)
    out["repeats"] = runs
    sim, fs, cpu = model.meta.sim, model.config.frameskip, out["imagine_steps_per_s"]["cpu"]
    out["feature_sim_steps_per_s"] = {sim: bench.feature_sim_steps_per_s(model, seed=args.seed)}
    median_pm = float(np.median(runs["pointmaze"])) if runs["pointmaze"] else None
    out["ratios"] = {
        "imagine_cpu_vs_pointmaze_pixel_steps": round(cpu / median_pm, 1) if median_pm else None,
        "imagine_cpu_sim_time_vs_pointmaze": round(cpu * fs / median_pm, 1) if median_pm else None,
        f"imagine_cpu_vs_{sim}_feature_sim": round(cpu / out["feature_sim_steps_per_s"][sim], 1),
    }
    flops = bench.imagine_step_flops(name, args.batch, seed=args.seed)
    peak = round(float(np.median(runs["gemm_peak_cpu"])))
    out.update(flops_per_step=flops, flops_per_agent_step=round(flops / args.batch), gemm_peak_flops=peak,
               fraction_of_peak=round(bench.fraction_of_peak(flops, args.batch, cpu, peak), 4))
    if "cuda" in out["imagine_steps_per_s"]:  # against the peak of the dtype the dynamics run in there
        peak = cuda_peaks["cuda_bf16" if use_bf16(model.precision, torch.device("cuda")) else "cuda_fp32"]
        out["fraction_of_peak_cuda"] = round(
            bench.fraction_of_peak(flops, args.batch, out["imagine_steps_per_s"]["cuda"], peak), 4)
    breakdown = bench.imagine_step_breakdown(name, args.batch, seed=args.seed)
    out["time_breakdown_ms"], out["flops_breakdown"] = breakdown["time_ms"], breakdown["flops"]
    if not args.no_ppo:
        ppo = {w: bench.ppo_steps_per_s(model, w, seed=args.seed) for w in ("imagine", "sim")}
        out["ppo_steps_per_s"] = {**ppo, "ratio": round(ppo["imagine"] / ppo["sim"], 1)}
    return out


def bench_repeats(name: str, args: argparse.Namespace, first_pointmaze: float | None,
                  pointmaze: bool) -> dict[str, list[float]]:
    """CPU imagination, the CPU fp32 GEMM peak and (with ``pointmaze``) PointMaze pixel steps, timed alternately
    ``--repeats`` times each and compared by their medians, so a slow spell of a shared machine hits all sides
    alike. ``first_pointmaze`` (the sims' pass) counts as PointMaze's first repeat."""
    from wm_gym import bench

    runs: dict[str, list[float]] = {"imagine_cpu": [], "pointmaze": [first_pointmaze] if first_pointmaze else [],
                                    "gemm_peak_cpu": []}
    for _ in range(args.repeats):
        runs["imagine_cpu"].append(bench.imagine_steps_per_s(name, args.batch, device="cpu", seed=args.seed))
        runs["gemm_peak_cpu"].append(round(bench.gemm_peak_flops("cpu", "fp32", seconds=args.peak_seconds)))
        if pointmaze and len(runs["pointmaze"]) < args.repeats:
            runs["pointmaze"].append(round(bench.sim_steps_per_s("pointmaze", args.steps, args.seed), 1))
    return runs


def bench_machine() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, {gpu}"


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="throughput: imagination vs real-sim steps/s, FLOPs and fraction of peak, SB3 PPO in both",
        description="Measure, in one run so ratios are fair: real-sim pixel steps/s of every sim, a GEMM peak "
        "(square fp32 matmuls; on CUDA fp32 and bf16), and per world model: batched imagination steps/s (CPU, and "
        "CUDA when present), the FLOPs of one imagined step, the fraction of the GEMM peak that reaches, the time "
        "and FLOPs of each part of a step, one real-sim agent step with encoding, and SB3 PPO end-to-end steps/s "
        "in imagination vs in the real sim.",
    )
    p.add_argument("--sims", action="store_true", help="only the real sims")
    p.add_argument("--sim", action="append", help="only this sim (repeatable)")
    p.add_argument("--model", action="append",
                   help="world model for imagination, zoo name or file; repeatable (default: every zoo model "
                   "shipped in this install)")
    p.add_argument("--batch", type=int, default=256, help="imagined envs stepped together")
    p.add_argument("--device", default="auto", help="auto: CPU, plus CUDA when present; cpu: CPU only")
    p.add_argument("--no-ppo", action="store_true", help="skip the SB3 PPO end-to-end timing")
    p.add_argument("--steps", type=int, default=300, help="steps timed per sim")
    p.add_argument("--repeats", type=int, default=3,
                   help="imagination and PointMaze pixel steps are timed alternately this many times; medians are "
                   "compared")
    p.add_argument("--peak-seconds", type=float, default=2.0,
                   help="seconds each GEMM peak probe runs (square matmuls: CPU fp32 once per repeat, alternated with "
                   "imagination like PointMaze; CUDA fp32 and bf16 once)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)


# ----- calibrate -----------------------------------------------------------------------------
def cmd_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.calibrate import calibrate_success
    from wm_gym.data.demo_bank import DemoBank
    from wm_gym.world_model import WorldModel
    from wm_gym.zoo import resolve_model

    model = WorldModel.load(resolve_model(args.model))
    result: dict[str, Any] = {"out": args.out or args.model}
    if args.demos:
        model.bank = DemoBank.from_dataset(args.demos, model.config.frameskip, args.demo_episodes,
                                           heldout_fraction=args.heldout_fraction, seed=args.seed)
        result["demos"] = {"dataset": args.demos, "count": len(model.bank), "heldout": int(model.bank.heldout.sum())}
    result["calibration"] = calibrate_success(model, args.data, metric=args.metric)
    model.meta.train_info["calibration"] = result["calibration"]
    model.save(args.out or resolve_model(args.model))
    return result


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate", help="attach demos and calibrate the success threshold of a world model",
        description="Pick the feature distance to the goal that best matches the sim's own success on held-out real "
        "data (fit on half the episodes, precision/recall reported on the other half), and optionally attach a "
        "demo bank (starts, goals and video-aligned rewards for WMImagine-v0) from a dataset of demos.",
    )
    p.add_argument("--model", required=True, help="world-model file (or zoo name)")
    p.add_argument("--data", required=True, help="held-out dataset of the same sim (e.g. a fresh seed)")
    p.add_argument("--demos", default=None, help="dataset of demos for the bank (e.g. `collect --policy noisy-expert`)")
    p.add_argument("--demo-episodes", type=int, default=None, help="use only the first N demo episodes")
    p.add_argument("--heldout-fraction", type=float, default=0.2, help="demos reserved for evaluation")
    p.add_argument("--metric", default="l1", choices=["l1", "l2", "cosine", "temporal"],
                   help="distance to the goal: a feature distance, or 'temporal', the learned steps to go (needs "
                   "`wm-gym train-distance` first)")
    p.add_argument("--out", default=None, help="write here instead of overwriting --model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_calibrate)


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
    config = TemporalDistanceConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, gamma=args.gamma,
                                    expectile=args.expectile, p_future=args.p_future,
                                    feature_noise=args.feature_noise, imagined_fraction=args.imagined_fraction,
                                    seed=args.seed)
    report = fit_temporal_distance(model, args.data, config, checkpoint=str(out) + ".distance-state",
                                   log_dir=args.log_dir, max_episodes=args.max_episodes, progress=not args.json)
    model.save(out)
    Path(str(out) + ".distance-state").unlink(missing_ok=True)
    return {"out": str(out), **{k: v for k, v in report.items() if k != "config"}}


def add_train_distance(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-distance", help="fit a temporal-distance head (learned steps to a goal) on a world model",
        description="Learn how many model steps separate a state from a goal, from the order of frames in the "
        "datasets' episodes (no actions needed): HILP-style V(s,g) = -|phi(s) - phi(g)| by expectile TD with -1 "
        "per step, over the model's frozen features. The head is saved inside the model; then "
        "`--reward temporal` (progress in steps) and `calibrate --metric temporal` (success test) use it. "
        "Resumable: an interrupted run continues from OUT.distance-state.",
    )
    p.add_argument("--model", required=True, help="world-model file or zoo name")
    p.add_argument("--data", action="append", required=True, help="dataset of the same sim (repeatable), e.g. "
                   "random and expert episodes: random ones cover the space, expert ones the shortest paths")
    p.add_argument("--out", default=None, help="write here instead of overwriting --model")
    p.add_argument("--steps", type=int, default=10_000, help="gradient steps")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=0.95, help="discount per model step; sets the distance scale")
    p.add_argument("--expectile", type=float, default=0.9, help="> 0.5 learns shortest paths from random data")
    p.add_argument("--p-future", type=float, default=0.7,
                   help="fraction of goals drawn from the same episode's future (the rest: any frame)")
    p.add_argument("--feature-noise", type=float, default=0.0,
                   help="std of Gaussian noise on training states (robustness to imagined features)")
    p.add_argument("--imagined-fraction", type=float, default=0.5,
                   help="fraction of training states replaced by the model's open-loop prediction of them, so the "
                   "head reads imagined states like the real ones (needs action labels; 0 for action-free video)")
    p.add_argument("--max-episodes", type=int, default=None, help="use only the first N episodes of each dataset")
    p.add_argument("--log-dir", default=None, help="TensorBoard folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_train_distance)


# ----- train-agent / evaluate ------------------------------------------------------------------
def cmd_train_agent(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.agents.train_agent import AgentConfig, train_agent

    config = AgentConfig(model=args.model, out=args.out, algo=args.algo, steps=args.steps, num_envs=args.num_envs,
                      seed=args.seed, device=args.device, task=args.task, reward=args.reward, metric=args.metric,
                      horizon=args.horizon, resume=args.resume, log_dir=args.log_dir, progress=not args.json,
                      n_steps=args.n_steps, batch_size=args.batch_size, learning_rate=args.learning_rate,
                      checkpoint_every=args.checkpoint_every, log_std_init=args.log_std_init,
                      success_threshold=args.success_threshold, critic_warmup=args.critic_warmup,
                      bc_noise=args.bc_noise, gamma=args.gamma, gae_lambda=args.gae_lambda, n_epochs=args.n_epochs,
                      net_arch=list(args.net_arch), bc_epochs=args.bc_epochs,
                      bc_data=None if args.bc_data == "none" else args.bc_data,
                      action_space=args.action_space, grounding=args.grounding)
    return train_agent(config)


def add_train_agent(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-agent", help="train an SB3 agent entirely in imagination",
        description="Train PPO or SAC (MlpPolicy on world-model features) in WMImagine-v0: batched imagined rollouts "
        "with video-aligned rewards; no simulator is touched. Writes AGENT.zip, AGENT.json (its world model and "
        "task), a learning-curve PNG, TensorBoard logs and resumable checkpoints.",
    )
    p.add_argument("--model", default="wall", help="world model: zoo name (wall, pointmaze) or file")
    p.add_argument("--algo", default="ppo", choices=["ppo", "sac"])
    p.add_argument("--out", required=True, help="agent file to write (AGENT.zip)")
    p.add_argument("--steps", type=int, default=300_000, help="imagined agent steps")
    p.add_argument("--num-envs", type=int, default=64, help="imagined episodes per batch")
    p.add_argument("--task", default="goal", choices=["goal", "demo"], help="policy sees the goal or the demo frame")
    p.add_argument("--action-space", default="sim", choices=["sim", "latent"],
                   help="sim: real action chunks (needs a trained controller); latent: the model's standardised latent "
                   "actions z (video-first: cloning targets are the demos' own z, no action labels needed). A latent "
                   "agent acts in a real sim through a grounding map (see `wm-gym ground`)")
    p.add_argument("--grounding", default=None, metavar="G.pt",
                   help="latent agents: grounding file from `wm-gym ground`, checked against the model and recorded in "
                   "the sidecar so `evaluate` uses it")
    p.add_argument("--reward", default="demo", help="rewards/ spec: demo | goal | progress | seq-delta | a+b")
    p.add_argument("--metric", default="l1", choices=["l1", "l2", "cosine"])
    p.add_argument("--horizon", type=int, default=None, help="agent steps per imagined episode")
    p.add_argument("--n-steps", type=int, default=64, help="PPO rollout length per env (steps round up to whole rollouts)")
    p.add_argument("--batch-size", type=int, default=512, help="minibatch size")
    p.add_argument("--learning-rate", type=float, default=1e-4, help="PPO/SAC learning rate")
    p.add_argument("--gamma", type=float, default=0.9, help="discount (RLA-WM's PPO: 0.9)")
    p.add_argument("--gae-lambda", type=float, default=0.95, help="PPO GAE lambda")
    p.add_argument("--n-epochs", type=int, default=4, help="PPO epochs per rollout")
    p.add_argument("--net-arch", type=int, nargs="+", default=[256, 256], help="hidden layer widths of policy and value")
    p.add_argument("--bc-epochs", type=int, default=30, help="behaviour-cloning epochs before RL")
    p.add_argument("--checkpoint-every", type=int, default=50_000, help="atomic checkpoint every N steps")
    p.add_argument("--bc-data", default="auto",
                   help="behaviour-clone demos before RL: auto (the model's demo bank, if it has action labels), bank, "
                   "a dataset folder (several: A,B), or none (pure RL from a random policy)")
    p.add_argument("--bc-noise", type=float, default=0.0,
                   help="std of Gaussian noise added to the features while cloning (regularises cloning on few demos)")
    p.add_argument("--log-std-init", type=float, default=-1.6, help="PPO initial log std of the action noise")
    p.add_argument("--critic-warmup", type=int, default=3,
                   help="PPO rollouts whose update trains only the value net (keeps a cloned actor while the critic "
                   "learns)")
    p.add_argument("--success-threshold", type=float, default=None,
                   help="imagined success distance that ends an episode (default: the model's calibrated one; 0: "
                   "episodes end only at the horizon)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="imagination device: auto | cpu | cuda")
    p.add_argument("--resume", action="store_true", help="continue from OUT's checkpoint")
    p.add_argument("--log-dir", default=None, help="TensorBoard folder (default: runs/<agent name>)")
    p.set_defaults(func=cmd_train_agent)


def cmd_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.agents.evaluate import evaluate_agent

    result = evaluate_agent(args.agent, env=args.env, model=args.model, episodes=args.episodes, seed=args.seed,
                            device=args.device, video_dir=args.video, max_steps=args.max_steps, budget=args.budget,
                            grounding=args.grounding)
    if not args.per_episode:
        result.pop("per_episode")
    return result


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate", help="success rate of an agent in the REAL sim",
        description="Run an agent in the real simulator: render -> world-model encoder -> policy -> action chunk. "
        "Success is the sim's own criterion. Episode i uses reset seed SEED+i.",
    )
    p.add_argument("--agent", required=True, help="AGENT.zip from train-agent")
    p.add_argument("--env", default=None, help=SIM_HELP + " (default: the agent's world model's sim)")
    p.add_argument("--model", default=None, help="world model (default: the one the agent was trained on)")
    p.add_argument("--grounding", default=None, metavar="G.pt",
                   help="latent-action agents: the `wm-gym ground` file mapping (features, z) to real action chunks "
                   "(default: the one recorded at training)")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=1000, help="fresh seeds, distinct from the data's")
    p.add_argument("--max-steps", type=int, default=None, help="agent steps per episode (default: sim length / frameskip)")
    p.add_argument("--budget", default=None, metavar="dino-wm|swm|STEPS",
                   help="evaluation protocol: dino-wm (success checked every 5 chunks, reported after 2/4/10/20 "
                   "replans = 50/100/250/500 sim steps), swm (50 sim steps, success at any step) or a number of sim "
                   "steps (default: the sim's episode length); see docs/protocol.md")
    p.add_argument("--video", default=None, help="folder for mp4s of the first episodes")
    p.add_argument("--per-episode", action="store_true", help="include per-episode results")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)


def cmd_ground(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.grounding import GroundingConfig, fit_dataset_grounding
    from wm_gym.zoo import load_model

    config = GroundingConfig(labelled_fraction=args.labelled_fraction, hidden=args.hidden, layers=args.layers,
                             epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
                             weight_decay=args.weight_decay, val_fraction=args.val_fraction, seed=args.seed)
    _, report = fit_dataset_grounding(load_model(args.model, args.device), args.data, config, out=args.out,
                                      model_name=args.model)
    return {k: v for k, v in report.items() if k not in ("episodes", "config")}


def add_ground(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ground", help="fit the map from latent actions back to real action chunks (for latent agents)",
        description="Fit a small MLP g(s_t, z) -> real action chunk [frameskip x sim action] in sim units, within the "
        "action bounds, on (s_t, z = latent_action(s_t, s_t+1), recorded chunk) triples from a seeded "
        "--labelled-fraction of the dataset's labelled episodes. It lets an agent trained with "
        "`train-agent --action-space latent` act in the real sim (`evaluate --grounding G.pt`). The file records "
        "the episodes used and a fingerprint of the model's latent space; it is written atomically.",
    )
    p.add_argument("--model", default="wall", help="latent-action world model (rla or lam): zoo name or file")
    p.add_argument("--data", required=True, help="dataset folder with action labels (at least on some episodes)")
    p.add_argument("--out", required=True, help="grounding file to write (G.pt)")
    p.add_argument("--labelled-fraction", type=float, default=0.1,
                   help="share of the labelled episodes used, seeded (at least one; same choice as `train "
                   "--action-labels`)")
    p.add_argument("--hidden", type=int, default=256, help="MLP width")
    p.add_argument("--layers", type=int, default=3, help="MLP Linear layers")
    p.add_argument("--epochs", type=int, default=200, help="passes over the training triples, at most")
    p.add_argument("--patience", type=int, default=30, help="stop after N epochs without a lower held-out error")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="used episodes held out; the epoch with the lowest held-out error is kept")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="where features and latent actions are computed")
    p.set_defaults(func=cmd_ground)


# ----- entry point ---------------------------------------------------------------------------
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    add_collect, add_ingest, add_train, add_eval_wm, add_calibrate, add_train_distance, add_train_agent, add_evaluate, add_ground, add_plan, add_online, add_finetune,
    add_bench]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wm-gym",
        description="World models as Gymnasium imagination environments, and the real sims to evaluate in.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print one JSON object on the last line")
    return parser


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
