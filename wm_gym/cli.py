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

os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering on CPU (Mesa) or GPU

SIM_HELP = "real sim: wall, pointmaze, pusht, dmc-reacher, dmc-point_mass (or a full id like wm_gym/Wall-v0)"


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


# ----- train ---------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.train.world_model import TrainConfig, train_world_model

    cfg = TrainConfig(
        data=args.data, out=args.out, preset=args.preset, latent=args.latent, regularizer=args.regularizer,
        repa_weight=args.repa_weight, steps=args.steps, encoder=args.encoder, encoder_weights=args.encoder_weights,
        history=args.history, frameskip=args.frameskip, action_labels=args.action_labels, seed=args.seed,
        device=args.device, resume=args.resume, log_dir=args.log_dir, progress=not args.json, init_from=args.init_from,
    )
    model = train_world_model(cfg)
    return {"out": args.out, **model.summary(), "train_info": {k: v for k, v in model.meta.train_info.items()
                                                                 if k in ("seconds", "final_loss", "device", "world_size")}}


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train", help="train a world model on a dataset",
        description="Train a world model stage by stage: encoder (conv), latent actions (rla/lam), flow dynamics and "
        "controller, or the action-conditioned baseline (--latent action). Checkpoints go to OUT.train-state; "
        "--resume continues an interrupted run. Runs unchanged under torchrun (DDP).",
    )
    p.add_argument("--data", required=True, help="dataset directory from `wm-gym collect`")
    p.add_argument("--out", required=True, help="world-model file to write (e.g. wall.pt)")
    p.add_argument("--preset", default="small", choices=["tiny", "small", "base"],
                   help="tiny: tests (~1 min CPU); small: <=30 min on 2 CPU cores; base: GPU")
    p.add_argument("--latent", default="rla", choices=["rla", "lam", "action"],
                   help="rla: residual latent actions; lam: IDM latent actions; action: DINO-WM-style baseline")
    p.add_argument("--regularizer", default="sparse", choices=["sparse", "noisy", "vq", "none"], help="lam bottleneck")
    p.add_argument("--repa-weight", type=float, default=0.0, help="Seq-Δ-REPA auxiliary loss weight (0 = off)")
    p.add_argument("--steps", type=int, default=None, help="override the steps of every stage")
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
    p.set_defaults(func=cmd_train)


# ----- eval-wm -------------------------------------------------------------------------------
def cmd_eval_wm(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym.evaluate_wm import evaluate_world_model
    from wm_gym.train.loop import setup_device
    from wm_gym.world_model import WorldModel

    device, _ = setup_device(args.device)
    model = WorldModel.load(args.model, device=device)
    return evaluate_world_model(model, args.data, mode=args.mode, seed=args.seed, video_dir=args.video,
                                max_windows=args.windows)


def add_eval_wm(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval-wm", help="open-loop error, latent-action checks and a state probe for a world model",
        description="Evaluate a world model on a dataset (ideally held-out episodes from a fresh seed): open-loop "
        "feature MSE at horizons 1/5/10 vs copy-last, latent reconstruction, the leakage (scene-cut) test, latent-"
        "action transfer across episodes, and a linear probe of the state from the features.",
    )
    p.add_argument("--model", required=True, help="world-model file")
    p.add_argument("--data", required=True, help="dataset directory")
    p.add_argument("--mode", default="controller", choices=["controller", "flow"], help="how z is produced")
    p.add_argument("--windows", type=int, default=256, help="rollout windows evaluated")
    p.add_argument("--video", default=None, help="folder for imagined-vs-true mp4 and PNG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval_wm)


# ----- bench ---------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    from wm_gym import bench

    result: dict[str, Any] = {"machine": bench_machine()}
    result["sim_steps_per_s"] = bench.bench_sims(args.sim or None, steps=args.steps, seed=args.seed)
    result["wall_vector_steps_per_s"] = bench.wall_vector_steps_per_s(num_envs=256, seed=args.seed)
    return result


def bench_machine() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}"


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="throughput: real-sim pixel steps/s (and later imagination steps/s)",
        description="Measure real-sim pixel steps per second on this machine, all in one run so ratios are fair.",
    )
    p.add_argument("--sims", action="store_true", help="measure the real sims (the default and, for now, only part)")
    p.add_argument("--sim", action="append", help="only this sim (repeatable)")
    p.add_argument("--steps", type=int, default=300, help="steps timed per sim")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)


# ----- entry point ---------------------------------------------------------------------------
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_collect, add_train, add_eval_wm, add_bench]


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
