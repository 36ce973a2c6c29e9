"""Video first on Wall or PointMaze: a world model learned from mp4s with no action labels, an agent trained in its
latent actions, grounded with the actions of 10 % of the episodes, evaluated in the real sim (Wall-v1, PointMaze-v1).

Every step but two (marked *) is a `wm-gym` command. Re-running the script skips each step whose
output exists and resumes an interrupted one (collection, ingestion and training continue):

1. record*  real --sim episodes as mp4 files: random-policy episodes (coverage) and noisy-expert
            demos, rolled out by `wm-gym collect` and written by `wm_gym.media.write_mp4` (256 px,
            H.264, lossy like any video), plus LABELS.npz, the actions of only a seeded `--labelled`
            fraction of the expert episodes (`--labelled-from all`: of every recording's episodes),
            and a held-out random sim dataset for `eval-wm`.
            Nothing after this step reads the collected training datasets;
2. ingest   the mp4s twice: every video with no labels (the world model's data), and the labelled
            videos alone with their labels (`wm-gym ingest --labels`, the grounding's data);
3. train    the world model on the unlabelled videos: encoder, latent actions (optionally with
            Seq-Δ-REPA, `--repa-weight`) and the flow as a z-prior; the controller is skipped (no labels);
4. eval-wm  on the held-out sim episodes: latent open-loop error by horizon, leakage, probe R²;
5. bank*    attach the expert videos as the model's demo bank (starts, goals, video-aligned rewards).
            Why not `wm-gym calibrate --demos`: its success calibration cannot run on this model.
            The ingested videos name no sim, so it refuses held-out sim data; and its imagined
            calibration replays a held-out set's recorded actions, i.e. more labels than the budget.
            Instead the temporal head below gives a success test with no labels;
6. ground   fit g(s_t, z) -> real action chunk on the labelled episodes (`wm-gym ground`); the
            labelled data brings the sim's action size, which the label-free model does not know;
7. distance the temporal-distance head on the videos (`wm-gym train-distance`, no labels); imagined
            episodes end where it reads < --success-steps model steps to the goal;
8. agent    behaviour cloning on the demos' own latent actions, then PPO in imagination
            (`wm-gym train-agent --action-space latent --grounding --success-metric temporal`);
9. evaluate in the real sim on fresh seeds, with the Wilson 95 % interval (`wm-gym evaluate`), under the sim's
            default budget and DINO-WM's (`--budget dino-wm`).
   --reference adds the same model and agent grounded on every episode's labels (a second labels
   file and ingestion; no retraining): what the 10 % label budget costs.

The recorded data (steps 1-2) lives in --data; everything that depends on the model's settings
lives in --data/model-repa<W>/, so the REPA ablation (`--repa-weight 0` vs another weight) trains
two models on the same videos. Prints one JSON summary last.

    python examples/video_first.py                      # the full run on Wall (CPU: see docs/results.md)
    python examples/video_first.py --sim pointmaze      # the same on PointMaze-v1 (2,000 + 600 episodes, history 3)
    python examples/video_first.py --repa-weight 0.5    # the same videos, a model with Seq-Δ-REPA
    python examples/video_first.py --quick              # smoke run: a few episodes, --preset tiny, ~1 min
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_zoo's helpers sit beside this script
from train_zoo import resume_flag, run  # noqa: E402

SIMS = ("wall", "pointmaze")


def option(default, help: str):
    """A :class:`Settings` field with its ``--help`` line (the CLI is generated from the fields)."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """How big each step is; ``--quick`` swaps in :data:`QUICK`, --sim its :data:`SIM_DEFAULTS`, and any option given
    overrides them."""

    sim: str = option("wall", "the sim recorded, trained on and evaluated in: " + " | ".join(SIMS))
    random: int = option(1920, "random-policy episodes recorded (the world model's coverage; train_zoo's count)")
    expert: int = option(1000, "noisy-expert episodes recorded (demos)")
    labelled: float = option(0.1, "fraction of the episodes whose actions go into the labels file (of each recording "
                             "--labelled-from names)")
    labelled_from: str = option("expert", "recordings the labelled episodes are drawn from: expert (demos only) | all "
                                "(random and expert: on PointMaze a grounding from the demos alone learned nothing, "
                                "their action chunks being mostly per-step noise)")
    bank: int = option(500, "expert videos in the demo bank")
    heldout: int = option(100, "held-out random sim episodes (a fresh seed) for eval-wm")
    preset: str = option("small", "`wm-gym train --preset`")
    history: int = option(1, "frames the model reads per state (`wm-gym train --history`; PointMaze's ball needs its "
                          "velocity: 3)")
    repa_weight: float = option(0.0, "`wm-gym train --repa-weight` (Seq-Δ-REPA in the latent stage; 0 = off)")
    train_steps: int | None = option(None, "steps of every training stage (None: the preset's)")
    dynamics_steps: int = option(100, "flow z-prior steps (a latent agent never uses it; planning does)")
    ground_epochs: int = option(200, "`wm-gym ground --epochs`")
    distance_steps: int = option(6000, "`wm-gym train-distance --steps` (the temporal head, fitted on the videos)")
    success_steps: float = option(1.0, "imagined episodes end when the temporal head reads fewer model steps to the "
                                  "goal (a success test with no labels; 0: they run to the horizon)")
    agent_steps: int = option(61_440, "imagined PPO steps (the agent table's budget)")
    num_envs: int = option(128, "imagined episodes per PPO batch")
    n_steps: int = option(32, "PPO rollout length per env")
    batch_size: int = option(512, "PPO minibatch size")
    eval_episodes: int = option(200, "fresh real episodes evaluated (seeds 1000, 1001, ...)")
    workers: int = option(2, "collection processes")


QUICK = Settings(random=6, expert=6, heldout=3, bank=6, preset="tiny", train_steps=20, dynamics_steps=20, ground_epochs=5,
                 distance_steps=20,
                 agent_steps=64, num_envs=8, n_steps=8, batch_size=64, eval_episodes=4, workers=1)
#: What a sim changes in the defaults (the train_zoo recipe's episode counts and history); --quick keeps its own
#: episode counts and takes the rest.
SIM_DEFAULTS = {"wall": {}, "pointmaze": dict(random=2000, expert=600, history=3, labelled_from="all")}
QUICK_SIM_DEFAULTS = {sim: {k: v for k, v in changes.items() if k not in ("random", "expert")}
                      for sim, changes in SIM_DEFAULTS.items()}


# ----- the two steps that are not wm-gym commands ---------------------------------------------------------
def export_episodes(dataset: Path, folder: Path, prefix: str, fmt: str = "mp4") -> list[str]:
    """Write each episode of a collected dataset as FOLDER/PREFIX_IIII.mp4 (H.264, lossy like any video) or, with
    ``fmt="png"``, as a folder of lossless frames FOLDER/PREFIX_IIII/TTTT.png (atomic; existing ones kept).

    Returns the episode names, the keys of a labels file."""
    from PIL import Image

    from wm_gym.data.dataset import load_episodes
    from wm_gym.media import write_mp4

    if fmt not in ("mp4", "png"):
        raise ValueError(f"fmt must be mp4 or png, got {fmt!r}")
    data = load_episodes(dataset, mmap=True)
    names = [f"{prefix}_{i:04d}" for i in range(len(data))]
    suffix = ".mp4" if fmt == "mp4" else ""
    for i, name in enumerate(names):
        path = folder / f"{name}{suffix}"
        if path.exists():
            continue
        partial = folder / f".{name}.partial{suffix}"  # a kill leaves no half-written episode under a real name
        if fmt == "mp4":
            write_mp4(partial, data.frames[i], fps=10)
        else:
            partial.mkdir(parents=True, exist_ok=True)
            for t, frame in enumerate(np.asarray(data.frames[i])):
                Image.fromarray(frame).save(partial / f"{t:04d}.png")
        os.replace(partial, path)
    return names


def write_labels(path: Path, datasets: list[Path], names: list[list[str]], fraction: float, seed: int = 0) -> list[str]:
    """LABELS.npz: the actions [T, A] of a seeded ``fraction`` of each dataset's episodes (at least one; the rule
    of `wm-gym train --action-labels`), keyed by episode name. Returns the labelled names."""
    from wm_gym.data.dataset import load_episodes
    from wm_gym.io import atomic_path
    from wm_gym.train.world_model import labelled_episodes

    labels = {}
    for dataset, keys in zip(datasets, names):
        actions = load_episodes(dataset, mmap=True).actions
        for e in labelled_episodes(np.arange(len(keys)), fraction, seed):
            labels[keys[e]] = np.asarray(actions[e], np.float32)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **labels)
    return sorted(labels)


def attach_bank(model: Path, videos: Path, out: Path, counts: dict[str, int]) -> dict:
    """OUT: MODEL with a demo bank (20 % held out) of the ingested dataset's videos: for each (prefix, count) of
    ``counts``, the first ``count`` videos named PREFIX_NNNN (e.g. {"expert": 500})."""
    from wm_gym.data.dataset import load_episodes
    from wm_gym.data.demo_bank import DemoBank
    from wm_gym.world_model import WorldModel

    data = load_episodes(videos, mmap=True)
    names = data.meta["episode_names"]
    rows = [i for prefix, count in counts.items()
            for i in [i for i, name in enumerate(names) if name.rsplit("_", 1)[0] == prefix][:count]]
    world_model = WorldModel.load(model)
    world_model.bank = DemoBank.from_videos([np.asarray(data.frames[i]) for i in rows], world_model.config.frameskip,
                                            heldout_fraction=0.2, seed=0)
    world_model.save(out)
    return {"out": str(out), "demos": len(rows), "heldout": int(world_model.bank.heldout.sum())}


# ----- the pipeline --------------------------------------------------------------------------------------
#: Where each sim policy's episodes come from: (policy, collection seed), as examples/train_zoo.py.
SOURCES = {"random": ("random", 0), "expert": ("noisy-expert", 3)}
#: The settings the recorded videos and labels depend on; the rest only changes what is trained on them.
DATA_SETTINGS = ("sim", "random", "expert", "heldout", "labelled", "labelled_from")
#: --labelled-from: the recordings whose episodes the labelled fraction is drawn from.
LABELLED_FROM = {"expert": ("expert",), "all": ("random", "expert")}


def model_folder(settings: Settings) -> str:
    """Where a model's steps live under --data: one folder per REPA weight (the ablation's two arms)."""
    return f"model-repa{settings.repa_weight:g}"


class Pipeline:
    """The steps, each recorded as FOLDER/steps/NAME.json once it succeeded (FOLDER: --data for the recorded
    data, its model folder for the rest): a recorded step whose output exists is skipped (and still reports),
    so a re-run continues where the last one stopped."""

    def __init__(self, root: Path, settings: Settings, device: str):
        self.root, self.s, self.device = root, settings, device
        self.models = root / model_folder(settings)
        self.videos = root / "videos"

    def model_file(self, suffix: str = "") -> Path:
        """MODELS/<sim>-video<suffix>.pt: the trained model ("") and what is built on it ("-bank", "-td", ...)."""
        return self.models / f"{self.s.sim}-video{suffix}.pt"

    def check_settings(self) -> None:
        """Write settings.json on the first run; later runs must match it (or the steps would mix data):
        --data holds the data settings, the model folder all of them."""
        from wm_gym.data.dataset import write_json_atomic

        now = asdict(self.s)
        for folder, keys in ((self.root, DATA_SETTINGS), (self.models, tuple(now))):
            path, wanted = folder / "settings.json", {k: now[k] for k in keys}
            if path.exists():  # a setting added since the run was recorded had its default then
                old = {k: getattr(Settings(), k) for k in wanted} | json.loads(path.read_text())
                diff = {k: (old.get(k), v) for k, v in wanted.items() if old.get(k) != v}
                if diff:
                    raise SystemExit(f"{folder} holds a run with other settings "
                                     f"({', '.join(f'{k}: {a} vs {b}' for k, (a, b) in diff.items())}); use another "
                                     "--data or the same settings to resume")
            write_json_atomic(path, wanted)

    def done(self, name: str, out: Path, folder: Path) -> dict | None:
        record = folder / "steps" / f"{name}.json"
        if out.exists() and record.exists():
            print(f"= {name}: {out} exists, skipped", flush=True)
            return json.loads(record.read_text())
        return None

    def keep(self, name: str, result: dict, folder: Path) -> dict:
        from wm_gym.data.dataset import write_json_atomic

        write_json_atomic(folder / "steps" / f"{name}.json", result)
        return result

    def step(self, name: str, out: Path, *args: str, folder: Path | None = None) -> dict:
        """One `wm-gym` command, unless done (recorded in the model folder unless ``folder`` says otherwise)."""
        folder = folder or self.models
        return self.done(name, out, folder) or self.keep(name, run(*args), folder)

    # ----- the data (shared by every model folder) ----------------------------------------------------------
    def record(self) -> dict:
        """Sim episodes -> mp4s, LABELS.npz (the budget's expert fraction) and LABELS-FULL.npz (every episode)."""
        if found := self.done("record", self.root / "labels-full.npz", self.root):
            return found
        counts = {"random": self.s.random, "expert": self.s.expert}
        datasets, names = {}, {}
        for kind, (policy, seed) in SOURCES.items():
            datasets[kind] = self.root / f"sim-{kind}"
            run("collect", "--env", self.s.sim, "--episodes", str(counts[kind]), "--policy", policy, "--seed",
                str(seed), "--out", str(datasets[kind]), "--workers", str(self.s.workers))
            names[kind] = export_episodes(datasets[kind], self.videos / kind, kind)
        kinds = LABELLED_FROM[self.s.labelled_from]
        labelled = write_labels(self.root / "labels.npz", [datasets[k] for k in kinds], [names[k] for k in kinds],
                                self.s.labelled)
        write_labels(self.root / "labels-full.npz", list(datasets.values()), list(names.values()), 1.0)
        return self.keep("record", {"videos": str(self.videos), **counts, "labelled_episodes": len(labelled),
                                    "labelled_names": labelled}, self.root)

    def heldout(self) -> Path:
        """Random sim episodes on a seed no video came from: eval-wm's held-out data (states for the probe)."""
        out = self.root / "sim-heldout"
        self.step("heldout", out, "collect", "--env", self.s.sim, "--episodes", str(self.s.heldout), "--policy",
                  "random", "--seed", "1", "--out", str(out), "--workers", "1", folder=self.root)
        return out

    def ingest(self, name: str, inputs: list[Path], labels: str | None) -> dict:
        out = self.root / name
        label_args = ["--labels", str(self.root / labels)] if labels else []
        return self.step(f"ingest-{name}", out, "ingest", *map(str, inputs), *label_args, "--out", str(out),
                         folder=self.root)

    # ----- the model and what is built on it ----------------------------------------------------------------
    def train(self, data: Path, out: Path) -> dict:
        s = self.s
        steps = ["--steps", str(s.train_steps)] if s.train_steps else []
        repa = ["--repa-weight", f"{s.repa_weight:g}"] if s.repa_weight else []
        return self.step("train", out, "train", "--data", str(data), "--out", str(out), "--preset", s.preset,
                         "--latent", "rla", "--history", str(s.history), *repa, *steps,
                         "--stage-steps", f"flow={s.dynamics_steps}",
                         "--log-dir", str(self.models / "tb" / out.stem), "--device", self.device, *resume_flag(out))

    def eval_wm(self, model: Path, data: Path) -> dict:
        return self.step("eval-wm", self.models / "steps" / "eval-wm.json", "eval-wm", "--model", str(model),
                         "--data", str(data), "--device", self.device)

    def bank(self, model: Path, videos: Path, out: Path, counts: dict[str, int] | None = None) -> dict:
        """The first --bank expert videos (or ``counts``: prefix -> videos) as MODEL's demo bank."""
        counts = counts or {"expert": self.s.bank}
        return self.done("bank", out, self.models) or self.keep("bank", attach_bank(model, videos, out, counts),
                                                                 self.models)

    def distance(self, model: Path, data: Path, out: Path) -> dict:
        """The temporal-distance head on the unlabelled videos (imagined states: latent rollouts, no labels)."""
        return self.step("distance", out, "train-distance", "--model", str(model), "--data", str(data), "--steps",
                         str(self.s.distance_steps), "--out", str(out), "--device", self.device)

    def ground(self, name: str, model: Path, data: Path, out: Path) -> dict:
        # --labelled-fraction 1: every labelled episode; the labels file already holds only the budget's fraction
        return self.step(name, out, "ground", "--model", str(model), "--data", str(data), "--out", str(out),
                         "--labelled-fraction", "1", "--epochs", str(self.s.ground_epochs), "--device", self.device)

    def agent(self, model: Path, grounding: Path, out: Path) -> dict:
        from wm_gym.agents.train_agent import checkpoint_path

        s = self.s
        resume = ["--resume"] if checkpoint_path(out).exists() else []  # an interrupted PPO run continues
        return self.step("agent", out, "train-agent", "--model", str(model), "--out", str(out), "--action-space",
                         "latent", "--grounding", str(grounding), "--steps", str(s.agent_steps), "--num-envs",
                         str(s.num_envs), "--n-steps", str(s.n_steps), "--batch-size", str(s.batch_size),
                         *(["--success-metric", "temporal", "--success-threshold", f"{s.success_steps:g}"]
                           if s.success_steps else ["--success-threshold", "0"]),
                         "--log-dir", str(self.models / "tb" / out.stem),
                         "--device", self.device, *resume)

    def evaluate(self, name: str, agent: Path, grounding: Path, look: str | None = None,
                 model: Path | None = None, budget: str | None = None) -> dict:
        """Real episodes on seeds 1000, 1001, ... (drawn in ``look``, a `wm-gym evaluate --look`; through ``model``
        instead of the agent's own, e.g. an aligned one; under ``budget``, a `wm-gym evaluate --budget`)."""
        return self.step(name, self.models / "steps" / f"{name}.json", "evaluate", "--agent", str(agent),
                         "--grounding", str(grounding), "--env", self.s.sim, "--episodes", str(self.s.eval_episodes),
                         "--seed", "1000", *(["--look", look] if look else []),
                         *(["--model", str(model)] if model else []), *(["--budget", budget] if budget else []),
                         "--device", self.device)


def evaluation_row(result: dict, grounding: dict) -> dict:
    """What the summary keeps of an evaluation and the grounding it acted through."""
    return {"success_rate": result["success_rate"], "success_ci95": result["success_ci95"],
            "episodes": result["episodes"], "budget": result.get("budget"), "grounding": result.get("grounding"),
            "grounding_episodes": grounding.get("n_episodes"), "grounding_test_mse": grounding.get("test_mse"),
            "grounding_val_mse": grounding.get("val_mse"), "grounding_baseline_mse": grounding.get("baseline_mse")}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0].replace("\n", " "), epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="folder for videos, datasets, models, agents and step records (default: data/video-first, "
                        "data/video-first-quick with --quick; -pointmaze after either for --sim pointmaze)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 6 + 6 episodes, --preset tiny, 20 training steps per stage, 64 PPO steps, "
                        "4 evaluation episodes (success means nothing; it checks the wiring)")
    parser.add_argument("--reference", action="store_true",
                        help="also evaluate the same model and agent grounded on every episode's labels (random and "
                        "expert): the reference row for the label budget")
    parser.add_argument("--device", default="auto", help="training and imagination device: auto | cpu | cuda")
    for f in fields(Settings):
        kind = {"labelled": float, "repa_weight": float, "success_steps": float, "preset": str, "sim": str,
                "labelled_from": str}.get(f.name, int)
        by_sim = lambda table: "".join(f", {sim} {d[f.name]}" for sim, d in table.items() if f.name in d)  # noqa: E731
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                            choices={"sim": SIMS, "labelled_from": tuple(LABELLED_FROM)}.get(f.name),
                            help=f"{f.metadata['help']} (default: {f.default}{by_sim(SIM_DEFAULTS)}; "
                            f"--quick: {getattr(QUICK, f.name)}{by_sim(QUICK_SIM_DEFAULTS)})")
    args = parser.parse_args(argv)
    sim = args.sim or Settings.sim
    base = replace(QUICK, sim=sim, **QUICK_SIM_DEFAULTS[sim]) if args.quick else Settings(sim=sim, **SIM_DEFAULTS[sim])
    settings = replace(base, **{f.name: getattr(args, f.name) for f in fields(Settings)
                                if getattr(args, f.name) is not None})
    if not 0 < settings.labelled <= 1:
        parser.error(f"--labelled is a fraction in (0, 1], got {settings.labelled}")
    if settings.repa_weight < 0:
        parser.error(f"--repa-weight must be >= 0, got {settings.repa_weight}")
    return args, settings


def default_root(sim: str, quick: bool) -> Path:
    """Where a run keeps everything unless --data says otherwise (Wall's keeps its first name)."""
    return Path("data/video-first" + ("-quick" if quick else "") + ("" if sim == "wall" else f"-{sim}"))


def main(argv: list[str] | None = None) -> dict:
    args, s = parse_args(argv)
    root = Path(args.data) if args.data else default_root(s.sim, args.quick)
    p, started = Pipeline(root, s, args.device), time.perf_counter()
    p.check_settings()
    m = p.models
    model, with_bank = p.model_file(), p.model_file("-bank")
    grounding, agent = m / "grounding.pt", m / "agent-latent.zip"
    recorded = p.record()
    heldout = p.heldout()
    unlabelled = p.ingest("video", [p.videos / "random", p.videos / "expert"], None)
    p.ingest("video-labelled", [p.videos / n.rsplit("_", 1)[0] / f"{n}.mp4" for n in recorded["labelled_names"]],
             "labels.npz")
    trained = p.train(root / "video", model)
    fidelity = p.eval_wm(model, heldout)
    bank = p.bank(model, root / "video", with_bank)
    with_head = p.model_file("-td")
    head = p.distance(with_bank, root / "video", with_head)
    fit = p.ground("ground", model, root / "video-labelled", grounding)
    trained_agent = p.agent(with_head, grounding, agent)
    result = p.evaluate("evaluate", agent, grounding)
    dino_wm = p.evaluate("evaluate-dino-wm", agent, grounding, budget="dino-wm")
    from wm_gym.world_model import WorldModel

    info = {**trained["train_info"], **WorldModel.load(model).meta.train_info}  # the model's own record is complete
    summary = {"root": str(root), "sim": s.sim, "models": str(m), "quick": args.quick, "repa_weight": s.repa_weight,
               "success_steps": s.success_steps,
               "episodes_recorded": {"random": recorded["random"], "expert": recorded["expert"]},
               "labelled_from": s.labelled_from, "labelled_episodes": recorded["labelled_episodes"],
               "ingested": {k: unlabelled[k] for k in ("episodes", "frames", "labelled_episodes")},
               "model": str(with_bank), "model_labelled_episodes": info.get("labelled_episodes"),
               "train_seconds": info.get("seconds"), "stage_seconds": info.get("stage_seconds"),
               "eval_wm": {k: fidelity.get(k) for k in ("latent_open_loop", "latent_recon", "leakage", "probe_r2")},
               "bank": bank["demos"], "distance_seconds": head.get("stage_seconds"),
               "agent": str(agent), "agent_steps": trained_agent.get("steps"),
               "imagined_success": trained_agent.get("final_imagined_success"),
               "video_first": evaluation_row(result, fit), "video_first_dino_wm": evaluation_row(dino_wm, fit)}
    if args.reference:
        p.ingest("video-full", [p.videos / "random", p.videos / "expert"], "labels-full.npz")
        full_fit = p.ground("ground-full", model, root / "video-full", m / "grounding-full.pt")
        summary["reference_full_labels"] = evaluation_row(
            p.evaluate("evaluate-full", agent, m / "grounding-full.pt"), full_fit)
    summary["seconds_this_run"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
