"""Re-create a shipped zoo model (wm_gym/zoo/NAME.pt) from scratch, on the CPU or a GPU.

Every step is a `wm-gym` command writing its own file, so each can be re-run or resumed on its
own; re-running the script after an interruption skips the finished steps and resumes the one
that was cut (collection continues, training passes `--resume`, the head fit resumes):

1. collect random episodes (the world model's training data) and a held-out set at a fresh seed;
2. train the world model on the random episodes;
3. collect noisy-expert demos and retrain the dynamics (flow, controller) on them, keeping the
   encoder, the latent actions and their feature normalisation from the random data (`--init-from`):
   expert paths (through Wall's door, along PointMaze's U) are rare in random data, and they are
   exactly where an agent will go;
4. attach the demo bank and calibrate the success threshold on the held-out set;
5. fit the temporal-distance head (learned steps to a goal) on the random and expert episodes;
6. write the fp16 copy into the package;
7. where the recipe has a plan: record it as the model's `wm-gym plan` defaults, and train, export and ship
   the agent that seeds those plans (NAME-prior.zip).

At the end it prints the per-stage time table (seconds and share of the total) and records it in
the zoo model's ``train_info["recipe_seconds"]``.

    python examples/train_zoo.py wall --device auto
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from wm_gym.device import PRECISIONS
from wm_gym.io import atomic_path

#: One recipe per sim. episodes / heldout / expert: random, held-out and noisy-expert episodes; bank: demos
#: in the model's bank (drawn from the expert episodes, or with demos=N from N more noisy-expert episodes collected
#: at their own seed for the bank alone: dm_control point_mass's cloning needs thousands, docs/results.md);
#: history: feature frames the dynamics read (PointMaze's ball has momentum: one frame cannot show its velocity); preset: model size (`fast`: the CPU-speed model; `--preset small --name wall-small` the wider one);
#: base_dynamics: flow and controller steps of the random-data model (the demo stage retrains both, so they
#: are kept short); distance_steps / distance_imagined: the temporal-distance head's steps and the fraction
#: of its training states taken from the model's own open-loop predictions (every episode is rolled out for
#: those: a subset of 500, `--imagined-episodes`, saved 23 s of PushT's 18 min and lost a little imagined
#: precision, docs/results.md); distance_rollouts: roll out only that many episodes per dataset; frame_stride:
#: collect only every k-th frame (`wm-gym collect --frame-stride`), the frames a frameskip-k model reads.
#: base_data / dynamics_data: the datasets the random-data model and the demo stage train on (default random,
#: then expert); base_history: the random-data model's history (default 1; the latent actions are reused only
#: when it equals `history`). PointMaze trains both on random and expert data with history 3: a controller
#: fitted on one of them maps the other's actions to wrong latents (h1 error 3x copy-last, docs/results.md).
#: rollout_finetune: (steps, lr, horizon) of each `wm-gym finetune --horizon` on the dynamics data after the demo
#: stage, in turn: they train the controller through open-loop rollouts (PointMaze h5/copy-last 0.72 -> 0.52 -> 0.47).
#: plan: the model's `wm-gym plan` recipe (its meta.plan_defaults); with plan_prior, the `wm-gym train-agent` flags
#: of the agent that seeds those plans (TD-MPC2's policy prior), trained on the shipped model and shipped beside it
#: as NAME-prior.zip (fp16, no optimizer state). Wall: MPC-GBP on the temporal head's steps to go, seeded by BC + PPO
#: whose imagined episodes run on after success; PointMaze the same planner with no prior (a prior adds nothing
#: there: 0.975 with, 0.980 without; docs/results.md, issue 28), replanning from scratch after every chunk with every
#: predicted frame weighed alike, so plans stop the ball on the goal (1.000 against 0.980); reacher the same planner
#: under its own 100-step episode, seeded by the keypoint net cloned from the bank (200 episodes: 0.885 with the
#: prior, 0.705 without; the clone alone 0.870). plan_prior's "{real}" stands for the model's real-encoding success
#: threshold (`train_info["real_success_threshold"]`). agent: the model's `wm-gym train-agent`
#: recipe (its meta.agent_defaults; PointMaze: its planner distilled by DAgger in imagination, each label a fresh plan,
#: into the keypoint policy net: 0.958 under dino-wm over four seeds (0.920-0.985), against PPO's <= 0.79). probe:
#: calibration also fits a state probe (`calibrate --probe`), so `evaluate --imagined probe` can judge imagined
#: episodes by the sim's own test.
RECIPES = {
    "wall": dict(episodes=1920, heldout=100, expert=1000, bank=500, history=1, preset="fast", base_dynamics=100,
                 distance_steps=6000, distance_imagined=0.0,
                 plan=dict(planner="gbp", mpc=True, terminal="temporal", gbp_steps=30, budget="dino-wm"),
                 plan_prior=("--steps", "61440", "--num-envs", "128", "--n-steps", "32", "--seed", "0",
                             "--success-threshold", "0")),
    "pointmaze": dict(episodes=2000, heldout=100, expert=600, bank=500, history=3, preset="fast", base_dynamics=100,
                      distance_steps=6000, distance_imagined=0.5, base_data=("random", "expert"),
                      dynamics_data=("random", "expert"), base_history=3,
                      rollout_finetune=((1000, 1e-4, 3), (1000, 1e-4, 5)),
                      plan=dict(planner="gbp", mpc=True, terminal="temporal", gbp_steps=30, budget="dino-wm",
                                execute=1, warm_start=False, decay=1.0),
                      agent=dict(teacher="plan", steps=0, teacher_start="zero", policy_net="keypoints"), probe=True),
    "pusht": dict(episodes=2000, heldout=100, expert=1000, bank=500, history=3, preset="fast", base_dynamics=100,
                  distance_steps=6000, distance_imagined=0.5),
    "dmc-point_mass": dict(episodes=1500, heldout=100, expert=600, bank=2400, demos=2400, history=3, preset="small",
                           base_dynamics=100, distance_steps=6000, distance_imagined=0.5),
    # the arm swings (fingertip ~0.8 m per random episode) and keeps its momentum: PointMaze's recipe (random +
    # expert data in both stages, history 3, open-loop fine-tunes), the `small` preset like point_mass; a 2,000-demo
    # bank, as cloning needs (400 training demos 0.63, 1,600 0.82: docs/results.md)
    "dmc-reacher": dict(episodes=1500, heldout=100, expert=600, bank=2000, demos=2000, history=3, preset="small",
                        base_dynamics=100, distance_steps=6000, distance_imagined=0.5, base_data=("random", "expert"),
                        dynamics_data=("random", "expert"), base_history=3,
                        rollout_finetune=((1000, 1e-4, 3), (1000, 1e-4, 5)),
                        plan=dict(planner="gbp", mpc=True, terminal="temporal", gbp_steps=30),
                        plan_prior=("--steps", "0", "--policy-net", "keypoints", "--seed", "0")),
}


def resume_flag(out: Path) -> list[str]:
    """``--resume`` when ``out``'s training state exists: an interrupted training continues where it stopped."""
    return ["--resume"] if Path(f"{out}.train-state").exists() else []


def run(*args: str) -> dict:
    cmd = [sys.executable, "-m", "wm_gym.cli", *args, "--json"]
    print("+", " ".join(cmd[2:]), flush=True)
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


class StageTimes:
    """Seconds per recipe stage, kept in a JSON file beside the data so a resumed run still reports
    the stages it skipped (with the seconds they took when they ran)."""

    def __init__(self, path: Path):
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.is_file() else {}

    def record(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(float(seconds), 1)
        with atomic_path(self.path) as tmp:  # in stage order, not sorted: the table prints in this order
            tmp.write_text(json.dumps(self.seconds, indent=1))

    def step(self, name: str, done: bool, *args: str) -> dict | None:
        """Run ``wm-gym ARGS`` unless ``done``; time it as stage ``name``."""
        if done:
            print(f"= {name}: done before ({self.seconds.get(name, '?')} s)", flush=True)
            return None
        t0 = time.perf_counter()
        result = run(*args)
        self.record(name, time.perf_counter() - t0)
        return result

    def table(self) -> str:
        total = sum(self.seconds.values()) or 1.0
        rows = [f"{'stage':<44}{'seconds':>9}{'share':>8}"]
        rows += [f"{name:<44}{s:>9.1f}{100 * s / total:>7.1f}%" for name, s in self.seconds.items()]
        return "\n".join(rows + [f"{'total':<44}{total:>9.1f}{100.0:>7.1f}%"])

    def split(self, name: str, parts: dict[str, float]) -> None:
        """Replace step ``name`` by its timed parts (a training's stages); the rest is start-up, loading, saving."""
        total = self.seconds.pop(name, None)
        for part, seconds in parts.items():
            self.record(f"{name}: {part}", seconds)
        if total is not None:
            self.record(f"{name}: start, load, save", max(0.0, total - sum(parts.values())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sim", choices=list(RECIPES))
    parser.add_argument("--data", default="data", help="where datasets and intermediate models go")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto", choices=PRECISIONS,
                        help="training autocast of every stage (auto: bf16 on CUDA and on CPUs with bf16 units: AMX or AVX-512 BF16)")
    parser.add_argument("--workers", type=int, default=2, help="collection processes")
    parser.add_argument("--preset", default=None, choices=["small", "fast"],
                        help="world-model size (`wm-gym train --preset`; default: the recipe's)")
    parser.add_argument("--name", default=None, help="zoo entry to write (default: the sim's name), e.g. wall-small")
    parser.add_argument("--frame-stride", type=int, default=None,
                        help="collect only every k-th frame (default: the recipe's, 1); datasets go to their own folders")
    parser.add_argument("--base-dynamics-steps", type=int, default=None,
                        help="flow and controller steps of the random-data model (default: the recipe's, 100); "
                        "the demo stage retrains both, so a short run only skips that model's own dynamics")
    args = parser.parse_args()
    r, d, sim = RECIPES[args.sim], Path(args.data), args.sim
    preset, name = args.preset or r["preset"], args.name or sim
    stride = args.frame_stride if args.frame_stride is not None else r.get("frame_stride", 1)
    data_tag = "" if stride == 1 else f"-every{stride}"  # a strided collection never resumes into a full one
    from wm_gym.world_model import WorldModel
    from wm_gym.zoo import MODELS, ZOO_DIR

    d.mkdir(parents=True, exist_ok=True)
    zoo_file = MODELS.get(name, f"{name}.pt")  # a new sim's model is written there; list it in wm_gym.zoo.MODELS
    stem = d / f"{sim}-rla-{preset}{data_tag}"
    rollouts = r.get("rollout_finetune", ())  # (steps, lr, horizon) of each open-loop fine-tune after the demo stage
    tuned_tag = "-ft" + (f"-roll{len(rollouts)}" if rollouts else "")
    base, tuned, calibrated, final = (Path(f"{stem}{s}.pt") for s in ("", "-ft", f"{tuned_tag}-cal", f"{tuned_tag}-cal-td"))
    base_data, dynamics_data = r.get("base_data", ("random",)), r.get("dynamics_data", ("expert",))
    times = StageTimes(Path(f"{stem}-recipe-seconds.json"))
    done = lambda path: Path(path).is_file()  # noqa: E731  (every step's file is written atomically, last)
    started = time.perf_counter()

    base_dynamics = args.base_dynamics_steps if args.base_dynamics_steps is not None else r["base_dynamics"]
    bank_data = "demos" if r.get("demos") else "expert"  # the bank's own demos, or the expert episodes
    collections = [("random", r["episodes"], 0, "random", args.workers), ("heldout", r["heldout"], 1, "random", 1),
                   ("expert", r["expert"], 3, "noisy-expert", args.workers)]
    if bank_data == "demos":
        collections.append(("demos", r["demos"], 5, "noisy-expert", args.workers))
    for label, episodes, seed, policy, workers in collections:
        out = d / f"{sim}-{label}{data_tag}"
        times.step(f"collect {label}", done(out / "meta.json"), "collect", "--env", sim, "--episodes", str(episodes),
                   "--out", str(out), "--seed", str(seed), "--policy", policy, "--workers", str(workers),
                   *(["--frame-stride", str(stride)] if stride != 1 else []))
    data_dir = lambda label: str(d / f"{sim}-{label}{data_tag}")  # noqa: E731
    data_flags = lambda labels: [flag for label in labels for flag in ("--data", data_dir(label))]  # noqa: E731
    base_stage = f"train on {' + '.join(base_data)} data"
    if not done(base):
        times.step(base_stage, False, "train", *data_flags(base_data), "--out", str(base),
                   "--preset", preset, "--latent", "rla", "--history", str(r.get("base_history", 1)),
                   "--device", args.device, "--precision", args.precision,
                   "--stage-steps", f"flow={base_dynamics}", "--stage-steps", f"controller={base_dynamics}",
                   *resume_flag(base))
        times.split(base_stage, WorldModel.load(base).meta.train_info["stage_seconds"])
    if not done(tuned):
        times.step("demo stage", False, "train", *data_flags(dynamics_data), "--out", str(tuned),
                   "--preset", preset, "--latent", "rla", "--history", str(r["history"]), "--init-from", str(base),
                   "--stage-steps", "flow=1000", "--device", args.device, "--precision", args.precision, *resume_flag(tuned))
        times.split("demo stage", WorldModel.load(tuned).meta.train_info["stage_seconds"])
    rolled = tuned
    for i, (steps, lr, horizon) in enumerate(rollouts, start=1):  # each continues from the one before
        target = Path(f"{stem}-ft-roll{i}.pt")
        times.step(f"rollout fine-tune {i} (horizon {horizon})", done(target), "finetune", "--model", str(rolled),
                   *data_flags(dynamics_data), "--steps", str(steps), "--lr", str(lr),
                   "--horizon", str(horizon), "--device", args.device, "--out", str(target))
        rolled = target
    times.step("calibration", done(calibrated), "calibrate", "--model", str(rolled), "--data", data_dir("heldout"),
               "--demos", data_dir(bank_data), "--demo-episodes", str(r["bank"]), *(["--probe"] if r.get("probe") else []),
               "--out", str(calibrated))
    head = times.step("temporal-distance head", done(final), "train-distance", "--model", str(calibrated),
               "--data", data_dir("random"), "--data", data_dir("expert"),
               "--steps", str(r["distance_steps"]), "--imagined-fraction", str(r["distance_imagined"]),
               *(["--imagined-episodes", str(r["distance_rollouts"])] if r.get("distance_rollouts") else []),
               "--device", args.device, "--precision", args.precision, "--out", str(final))
    if head is not None:
        times.split("temporal-distance head", head["stage_seconds"])

    model = WorldModel.load(final)
    model.meta.train_info["recipe"] = {"sim": sim, "preset": preset, **r, "frame_stride": stride}
    model.meta.train_info["recipe_seconds"] = dict(times.seconds)
    model.meta.plan_defaults = dict(r.get("plan", {}))
    model.meta.agent_defaults = dict(r.get("agent", {}))
    model.save(ZOO_DIR / zoo_file, half=True)
    if r.get("plan_prior"):  # trained on the shipped (fp16) file: the model it will plan with
        from wm_gym.agents.train_agent import export_agent

        agent = Path(f"{stem}-prior.zip")
        real = str(model.meta.train_info.get("real_success_threshold"))  # "{real}": the real-encoding threshold
        flags = [real if flag == "{real}" else flag for flag in r["plan_prior"]]
        times.step("plan prior (agent)", done(agent), "train-agent", "--model", str(ZOO_DIR / zoo_file),
                   "--out", str(agent), *flags, "--device", "cpu", "--precision", args.precision)
        export_agent(agent, ZOO_DIR / f"{name}-prior.zip")
        model.meta.plan_defaults["prior"] = f"{name}-prior"
        model.meta.train_info["recipe_seconds"] = dict(times.seconds)
        model.save(ZOO_DIR / zoo_file, half=True)
    size = (ZOO_DIR / zoo_file).stat().st_size / 1e6
    print("\n" + times.table())
    print(f"this run: {time.perf_counter() - started:.1f} s wall-clock (a resumed run counts only what it ran)")
    print(json.dumps({"zoo": str(ZOO_DIR / zoo_file), "megabytes": round(size, 1),
                      "calibration": model.meta.train_info.get("calibration"), "recipe_seconds": times.seconds}))


if __name__ == "__main__":
    main()
