"""Re-create a shipped zoo model (wm_gym/zoo/NAME.pt) from scratch, on the CPU or a GPU.

Every step is a `wm-gym` command, so each can be re-run or resumed on its own; re-running the
script after an interruption resumes it (collection continues, training passes `--resume`):

1. collect random episodes (the world model's training data) and a held-out set at a fresh seed;
2. train the world model (`--preset small`: about 25 min on 2 CPU cores; `--preset fast` for wall-fast);
3. collect noisy-expert demos and retrain the dynamics (flow, controller) on them, keeping the
   encoder and latent actions learned from random data (`--init-from`): expert paths (through
   Wall's door, along PointMaze's U) are rare in random data, and they are exactly where an
   agent will go;
4. attach the demo bank and calibrate the success threshold on the held-out set;
5. fit the temporal-distance head (learned steps to a goal) on the random and expert episodes;
6. write the fp16 copy into the package.

    python examples/train_zoo.py wall --device auto
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RECIPES = {
    # random episodes, held-out episodes, noisy-expert demos (fine-tuning and the bank), demos in the bank,
    # the dynamics' history (PointMaze's ball has momentum: one frame cannot show its velocity), and the
    # model size (`--preset fast --name wall-fast` makes the CPU-speed model), and the random-data model's own
    # flow and controller steps (the demo stage retrains both, so the base model's are kept short); the
    # temporal-distance head's steps and imagined-state fraction (default 3,000 and 0.5)
    "wall": dict(episodes=1920, heldout=100, expert=1000, bank=500, history=1, preset="small", base_dynamics=100,
                 distance_steps=6000, distance_imagined=0.0),
    "pointmaze": dict(episodes=2000, heldout=100, expert=600, bank=500, history=3, preset="small", base_dynamics=100),
    "dmc-point_mass": dict(episodes=1500, heldout=100, expert=600, bank=500, history=3, preset="small",
                           base_dynamics=100),
}


def resume_flag(out: Path) -> list[str]:
    """``--resume`` when ``out``'s training state exists: an interrupted recipe continues where it stopped."""
    return ["--resume"] if Path(str(out) + ".train-state").exists() else []


def run(*args: str) -> dict:
    cmd = [sys.executable, "-m", "wm_gym.cli", *args, "--json"]
    print("+", " ".join(cmd[2:]), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sim", choices=list(RECIPES))
    parser.add_argument("--data", default="data", help="where datasets and intermediate models go")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--preset", default=None, choices=["small", "fast"],
                        help="world-model size (`wm-gym train --preset`; default: the recipe's)")
    parser.add_argument("--name", default=None, help="zoo entry to write (default: the sim's name), e.g. wall-fast")
    parser.add_argument("--base-dynamics-steps", type=int, default=None,
                        help="flow and controller steps of the random-data model (default: the recipe's, 100); "
                        "the demo stage retrains both, so a short run only skips that model's own dynamics")
    args = parser.parse_args()
    r, d, sim = RECIPES[args.sim], Path(args.data), args.sim
    preset, name = args.preset or r["preset"], args.name or sim
    from wm_gym.world_model import WorldModel
    from wm_gym.zoo import MODELS

    zoo_file = MODELS.get(name, f"{name}.pt")  # a new sim's model is written there; list it in wm_gym.zoo.MODELS
    base_dynamics = args.base_dynamics_steps if args.base_dynamics_steps is not None else r["base_dynamics"]
    base_steps = ["--stage-steps", f"flow={base_dynamics}", "--stage-steps", f"controller={base_dynamics}"]
    run("collect", "--env", sim, "--episodes", str(r["episodes"]), "--out", str(d / f"{sim}-random"),
        "--seed", "0", "--workers", str(args.workers))
    run("collect", "--env", sim, "--episodes", str(r["heldout"]), "--out", str(d / f"{sim}-heldout"), "--seed", "1")
    run("collect", "--env", sim, "--episodes", str(r["expert"]), "--out", str(d / f"{sim}-expert"),
        "--policy", "noisy-expert", "--seed", "3", "--workers", str(args.workers))
    base, tuned = d / f"{sim}-rla-{preset}.pt", d / f"{sim}-rla-{preset}-ft.pt"
    run("train", "--data", str(d / f"{sim}-random"), "--out", str(base), "--preset", preset, "--latent", "rla",
        "--device", args.device, *base_steps, *resume_flag(base))
    run("train", "--data", str(d / f"{sim}-expert"), "--out", str(tuned), "--preset", preset, "--latent", "rla",
        "--history", str(r["history"]), "--init-from", str(base), "--stage-steps", "flow=1000", "--device", args.device,
        *resume_flag(tuned))
    calibration = run("calibrate", "--model", str(tuned), "--data", str(d / f"{sim}-heldout"),
                      "--demos", str(d / f"{sim}-expert"), "--demo-episodes", str(r["bank"]))
    if "temporal_distance" not in WorldModel.load(tuned).meta.train_info:  # a re-run keeps the fitted head
        run("train-distance", "--model", str(tuned), "--data", str(d / f"{sim}-random"), "--data",
            str(d / f"{sim}-expert"), "--steps", str(r.get("distance_steps", 3000)),
            "--imagined-fraction", str(r.get("distance_imagined", 0.5)), "--device", args.device)
    from wm_gym.zoo import ZOO_DIR

    model = WorldModel.load(tuned)
    model.save(ZOO_DIR / zoo_file, half=True)
    size = (ZOO_DIR / zoo_file).stat().st_size / 1e6
    print(json.dumps({"zoo": str(ZOO_DIR / zoo_file), "megabytes": round(size, 1), **calibration}))


if __name__ == "__main__":
    main()
