"""Adapt a video-first model to a changed look from unlabelled video of that look.

stable-worldmodel measured DINO-WM on PushT falling from 94 % to 10 % when the background colour
changes. This script measures the same for the model of examples/video_first.py, and what
unlabelled video of the new look buys back. It runs after video_first.py, on its --data and
--repa-weight (the base run's settings, its sim included, are read from there). For --look L (a
look of that sim, e.g. on Wall blue-floor, green-walls, big-dot, checker-floor; `wm-gym collect --help`):

1. unadapted  the base run's agent and grounding in the real sim drawn in look L
              (`wm-gym evaluate --look L`), on the base run's evaluation seeds;
2. record*    new-look video: --adapt-random random and --adapt-expert noisy-expert episodes
              drawn in look L (`wm-gym collect --look L`, seeds no base episode used, so no
              trajectory is seen in both looks), written as folders of PNG frames (--format png,
              lossless, as the deployed camera delivers them) or mp4s; their actions go nowhere;
3. ingest     the new-look random episodes, with no labels;
4. align      `wm-gym align`: the base model, its features of the new look mapped onto those of
              its own (old-look) random videos, per token (mean and covariance);
5. evaluate   the base agent and grounding, unchanged, through the aligned model in look L.

--retrain instead trains a new model on the old and new videos together (each new one --repeat
times), a new bank, grounding (old labels only) and agent, and evaluates them in both looks: the
approach that did not work (docs/results.md has the figures and the measured cause).

Each step is recorded under --data/model-repa<W>/adapt-<L>[...]/ and skipped when re-run. Prints one
JSON summary last.

    python examples/video_first.py && python examples/adapt_look.py --look blue-floor
    python examples/adapt_look.py --look green-walls --unadapted-only   # step 1 only: the drop, no adaptation
    python examples/adapt_look.py --look blue-floor --quick    # after video_first.py --quick
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # video_first's pipeline sits beside this script
import video_first  # noqa: E402
from video_first import (SIMS, Pipeline, Settings, default_root, evaluation_row, export_episodes,  # noqa: E402
                         model_folder)

#: New-look collections: (policy, seed). Seeds unlike video_first.SOURCES' so no trajectory appears in both looks.
NEW_LOOK_SOURCES = {"random": ("random", 20), "expert": ("noisy-expert", 23)}


def base_settings(root: Path, repa_weight: float) -> Settings:
    """The settings video_first.py ran with (its model folder's settings.json)."""
    folder = root / model_folder(Settings(repa_weight=repa_weight))
    path = folder / "settings.json"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run examples/video_first.py --data {root} "
                         f"--repa-weight {repa_weight:g} first (this script adapts its model)")
    saved = json.loads(path.read_text())
    return Settings(**{f.name: saved[f.name] for f in fields(Settings) if f.name in saved})


def record_new_look(p: Pipeline, look: str, counts: dict[str, int], workers: int, fmt: str) -> dict[str, list[str]]:
    """Collect the sim's episodes drawn in ``look``; write them as PNG frame folders or mp4s
    (videos/<look>-<kind>-<fmt>)."""
    names = {}
    for kind, (policy, seed) in NEW_LOOK_SOURCES.items():
        if counts[kind] == 0:
            continue
        dataset = p.root / f"sim-{look}-{kind}"
        video_first.run("collect", "--env", p.s.sim, "--episodes", str(counts[kind]), "--policy", policy, "--seed",
                        str(seed), "--look", look, "--out", str(dataset), "--workers", str(workers))
        names[kind] = export_episodes(dataset, new_look_folder(p, look, kind, fmt), f"{look}-{kind}", fmt)
    return names


def new_look_folder(p: Pipeline, look: str, kind: str, fmt: str) -> Path:
    return p.videos / (f"{look}-{kind}" if fmt == "mp4" else f"{look}-{kind}-png")


def repeated_videos(sources: list[Path], repeat: int) -> list[Path]:
    """Folders of links that show each new-look episode (an mp4 or a frame folder) ``repeat - 1`` more times under
    new names (PREFIX-rJ_NNNN): oversampling, so that a few minutes of new video are not a few percent of what
    training draws."""
    folders = []
    for source in sources:
        folder = source.with_name(f"{source.name}-x{repeat}")
        folder.mkdir(parents=True, exist_ok=True)
        for episode in sorted(e for e in source.iterdir() if not e.name.startswith(".")):
            prefix, index = episode.stem.rsplit("_", 1)
            for j in range(1, repeat):
                link = folder / f"{prefix}-r{j}_{index}{episode.suffix}"
                if not link.exists():
                    link.symlink_to(episode.resolve())
        folders.append(folder)
    return folders


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--look", required=True, help="the new look (a look of the base run's sim other than default)")
    parser.add_argument("--data", default=None, help="video_first.py's --data (default: its default for --sim)")
    parser.add_argument("--sim", default="wall", choices=SIMS, help="the base run's sim, to find its default --data")
    parser.add_argument("--quick", action="store_true", help="adapt video_first.py --quick's run (4 + 4 new videos)")
    parser.add_argument("--repa-weight", type=float, default=0.0, help="which of video_first.py's models to adapt")
    parser.add_argument("--adapt-random", type=int, default=None,
                        help="new-look random-policy episodes (default 500: 25,500 frames; the alignment's data; 100 "
                        "gave 0.70 on blue-floor, 500 and 1,000 both 0.82 on selection seeds; --quick: 4)")
    parser.add_argument("--adapt-expert", type=int, default=None,
                        help="new-look noisy-expert videos, also added to the demo bank (default 100; --quick: 4)")
    parser.add_argument("--format", default="png", choices=("png", "mp4"),
                        help="how the new-look video is written: png frame folders (lossless, as the sim's camera "
                        "delivers frames at deployment) or H.264 mp4s, whose colour shift the alignment does not "
                        "survive (docs/results.md)")
    parser.add_argument("--retrain", action="store_true",
                        help="adapt by training a new model, bank, grounding and agent on old + new video instead "
                        "of aligning the base model (measured: it does not work)")
    parser.add_argument("--repeat", type=int, default=None,
                        help="--retrain: training sees each new-look video this many times (links under new names; "
                        "default 8: 200 videos then make a third of the episodes; --quick: 2)")
    parser.add_argument("--unadapted-only", action="store_true",
                        help="stop after step 1: the base agent's success in the new look (a cheap row per look)")
    parser.add_argument("--device", default="auto", help="training and imagination device: auto | cpu | cuda")
    args = parser.parse_args(argv)
    args.adapt_random = (4 if args.quick else 500) if args.adapt_random is None else args.adapt_random
    args.adapt_expert = (4 if args.quick else 100) if args.adapt_expert is None else args.adapt_expert
    args.repeat = (2 if args.quick else 8) if args.repeat is None else args.repeat
    if args.repeat < 1:
        parser.error(f"--repeat must be >= 1, got {args.repeat}")
    if args.adapt_random < 0 or args.adapt_expert < 1:
        parser.error("--adapt-random must be >= 0 and --adapt-expert >= 1 (the new look's demos)")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    root = Path(args.data) if args.data else default_root(args.sim, args.quick)
    s, look, started = base_settings(root, args.repa_weight), args.look, time.perf_counter()
    from wm_gym.envs.registration import sim_spec

    looks = [name for name in sim_spec(s.sim).looks if name != "default"]
    if look not in looks:
        raise SystemExit(f"--look must be a {s.sim} look: one of {', '.join(looks)}, got {look!r}")
    base = Pipeline(root, s, args.device)
    p = Pipeline(root, s, args.device)
    method = f"retrain-x{args.repeat}" if args.retrain else "align"
    p.models = base.models / f"adapt-{look}-{args.format}-{method}"
    counts = {"random": args.adapt_random, "expert": args.adapt_expert}
    from wm_gym.data.dataset import write_json_atomic
    from wm_gym.envs.registration import sim_spec

    path = p.models / "adapt-settings.json"
    if path.exists() and json.loads(path.read_text()) != counts:
        raise SystemExit(f"{p.models} holds an adaptation with other settings ({path.read_text()}); use the same "
                         "--adapt-random/--adapt-expert to resume")
    write_json_atomic(path, counts)

    b = base.models
    for needed in (b / "agent-latent.zip", b / "grounding.pt", base.model_file("-bank")):
        if not needed.exists():
            raise SystemExit(f"{needed} does not exist: finish examples/video_first.py --data {root} first")
    unadapted = p.evaluate("evaluate-unadapted", b / "agent-latent.zip", b / "grounding.pt", look)
    summary = {"root": str(root), "look": look, "repa_weight": s.repa_weight,
               "unadapted_in_new_look": evaluation_row(unadapted, {})}
    if args.unadapted_only:
        print(json.dumps(summary))
        return summary

    if not (found := p.done("record", new_look_folder(p, look, "expert", args.format), p.models)):
        found = p.keep("record", {"names": record_new_look(p, look, counts, s.workers, args.format), **counts}, p.models)
    new_frames = sum(counts.values()) * (sim_spec(s.sim).max_episode_steps + 1)
    summary.update(models=str(p.models), method=method, format=args.format, new_look_videos=counts,
                   new_look_frames=new_frames, new_look_minutes_at_10_fps=round(new_frames / 600, 1))
    new_folders = [new_look_folder(p, look, kind, args.format) for kind in found["names"]]
    if args.retrain:
        summary.update(retrain(p, root, s, look, counts, new_folders, args.repeat))
    else:
        new_data = f"{look}-random-{args.format}"
        p.ingest(new_data, [new_look_folder(p, look, "random", args.format)], None)
        aligned = p.model_file("-aligned")
        fit = p.step("align", aligned, "align", "--model", str(base.model_file("-bank")), "--old",
                     str(root / "video"), "--new", str(root / new_data), "--look", look, "--max-episodes",
                     str(counts["random"]), "--out", str(aligned), "--device", args.device)
        adapted = p.evaluate("evaluate-aligned", b / "agent-latent.zip", b / "grounding.pt", look, model=aligned)
        summary.update(alignment={k: fit[k] for k in ("old_frames", "new_frames", "mean_gap_before", "mean_gap_after")},
                       adapted_in_new_look=evaluation_row(adapted, {}))
    summary["seconds_this_run"] = round(time.perf_counter() - started, 1)
    print(json.dumps(summary))
    return summary


def retrain(p: Pipeline, root: Path, s: Settings, look: str, counts: dict[str, int], new_folders: list[Path],
            repeat: int) -> dict:
    """--retrain: a new model on old + new video (new --repeat times), bank, grounding (old labels) and agent."""
    data_name = f"video-{p.models.name}"
    folders = [p.videos / "random", p.videos / "expert", *new_folders]
    folders += repeated_videos(new_folders, repeat) if repeat > 1 else []
    p.ingest(data_name, folders, None)
    model, with_bank, grounding, agent = (p.model_file(), p.model_file("-bank"), p.models / "grounding.pt",
                                          p.models / "agent-latent.zip")
    trained = p.train(root / data_name, model)
    bank = p.bank(model, root / data_name, with_bank, {"expert": s.bank, f"{look}-expert": counts["expert"]})
    with_head = p.model_file("-td")
    p.distance(with_bank, root / data_name, with_head)
    fit = p.ground("ground", model, root / "video-labelled", grounding)
    trained_agent = p.agent(with_head, grounding, agent)
    return {"repeat": repeat, "train_seconds": trained["train_info"].get("seconds"), "bank": bank["demos"],
            "agent_steps": trained_agent.get("steps"),
            "adapted_in_new_look": evaluation_row(p.evaluate("evaluate-adapted", agent, grounding, look), fit),
            "adapted_in_original_look": evaluation_row(p.evaluate("evaluate-adapted-original-look", agent, grounding),
                                                       fit)}


if __name__ == "__main__":
    main()
