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


# ----- bench ---------------------------------------------------------------------------------
def cmd_bench(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from wm_gym import bench

    torch.set_num_threads(max(1, os.cpu_count() or 1))
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
COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [add_collect, add_bench]


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
