"""Latent-action agents wherever an agent acts (online --agent, its retraining, plan --prior), and the worked
video-first example (examples/video_first.py): its pieces and a --quick run end to end."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wm_gym.agents.train_agent import AgentConfig, load_agent, sidecar_path, train_agent
from wm_gym.cli import main
from wm_gym.data.dataset import Episode, load_episodes
from wm_gym.grounding import GroundedPolicy, GroundingConfig, fit_dataset_grounding
from wm_gym.online import OnlineConfig, run_online
from wm_gym.world_model import WorldModel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def cli(*argv: str) -> tuple[int, dict | None, str]:
    """``wm-gym ARGV --json`` in process: (exit code, its JSON line or None, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main([*argv, "--json"])
    lines = out.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if rc == 0 and lines else None), err.getvalue()


# ----- a tiny latent agent and its grounding on the shared tiny Wall world ------------------------------------
@pytest.fixture(scope="module")
def world(tiny_imagine_world):
    torch.set_num_threads(1)
    return tiny_imagine_world


@pytest.fixture(scope="module")
def grounding(world, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grounding") / "g.pt"
    fit_dataset_grounding(WorldModel.load(world.path), world.random_dir, GroundingConfig(labelled_fraction=0.5,
                                                                                          epochs=5), out=out)
    return out


@pytest.fixture(scope="module")
def latent_agent(world, grounding, tmp_path_factory) -> Path:
    """A latent-action PPO agent (cloned on the bank's latents, 64 PPO steps) that records its grounding."""
    out = tmp_path_factory.mktemp("latent_agent") / "latent.zip"
    train_agent(AgentConfig(model=str(world.path), out=str(out), steps=64, num_envs=8, n_steps=8, batch_size=64,
                            net_arch=[32, 32], device="cpu", progress=False, checkpoint_every=10**9,
                            log_dir=str(out.parent / "tb"), action_space="latent", grounding=str(grounding),
                            bc_epochs=2))
    return out


def without_grounding(agent: Path, folder: Path) -> Path:
    """A copy of ``agent`` whose sidecar records no grounding map."""
    bare = folder / "bare.zip"
    shutil.copy(agent, bare)
    meta = json.loads(sidecar_path(agent).read_text())
    sidecar_path(bare).write_text(json.dumps({**meta, "grounding": None, "config": {**meta["config"],
                                                                                   "grounding": None}}))
    return bare


def assert_real_chunks(folder: Path, model: WorldModel, count: int) -> None:
    """``count`` saved episodes whose actions are real sim actions within the model's bounds."""
    episodes = [Episode.load_npz(p) for p in sorted(folder.glob("episode_*.npz"))]
    assert len(episodes) == count
    low, high = model.meta.action_low or [-1.0, -1.0], model.meta.action_high or [1.0, 1.0]
    for ep in episodes:
        assert ep.actions.shape == (ep.steps, model.config.sim_action_dim) and ep.steps > 0
        assert np.all(ep.actions >= np.array(low) - 1e-6) and np.all(ep.actions <= np.array(high) + 1e-6)


# ----- online ----------------------------------------------------------------------------------------------------
def test_online_round_with_a_latent_agent_acts_through_its_grounding(world, latent_agent, tmp_path):
    out = tmp_path / "run"
    rc, line, err = cli("online", "--model", str(world.path), "--agent", str(latent_agent), "--out", str(out),
                        "--rounds", "1", "--episodes", "2", "--max-steps", "2", "--finetune-steps", "2",
                        "--device", "cpu")
    assert rc == 0, err
    assert line["rounds"][0]["episodes_added"] == 2 and line["rounds"][0]["real_episodes_total"] == 2
    assert_real_chunks(out / "round_00" / "episodes", WorldModel.load(world.path), 2)
    # the same agent without a recorded grounding: a clear error, or --grounding
    bare = without_grounding(latent_agent, tmp_path)
    rc, _, err = cli("online", "--model", str(world.path), "--agent", str(bare), "--out", str(tmp_path / "r2"),
                     "--rounds", "1", "--episodes", "1", "--max-steps", "1", "--device", "cpu")
    assert rc == 2 and "acts in latent actions" in err and "--grounding" in err
    assert not list((tmp_path / "r2").glob("round_*/episodes/*.npz"))  # refused before acting


def test_online_retrains_a_latent_agent_keeping_its_action_space_and_grounding(world, latent_agent, grounding,
                                                                              tmp_path):
    bare = without_grounding(latent_agent, tmp_path)  # acts through --grounding, which the retrained one records
    out = tmp_path / "run"
    rc, line, err = cli("online", "--model", str(world.path), "--agent", str(bare), "--grounding", str(grounding),
                        "--retrain-steps", "64", "--out", str(out), "--rounds", "1", "--episodes", "2",
                        "--max-steps", "1", "--finetune-steps", "2", "--eval-episodes", "1", "--device", "cpu")
    assert rc == 0, err
    retrained = out / "round_00" / "agent.zip"
    assert line["rounds"][0]["agent"] == str(retrained) and "eval_success_rate" in line["rounds"][0]
    agent, meta = load_agent(retrained)
    assert meta["action_space"] == "latent" and meta["grounding"] == str(grounding)
    assert agent.num_timesteps == load_agent(bare)[0].num_timesteps + 64
    assert len(meta["latent_mean"]) == agent.action_space.shape[0]
    assert json.loads((out / "online.json").read_text())["grounding"] == str(grounding.resolve())


def test_online_refuses_misplaced_groundings_and_untrainable_models(world, grounding, tmp_path):
    rc, _, err = cli("online", "--model", str(world.path), "--grounding", str(grounding), "--out", str(tmp_path / "a"))
    assert rc == 2 and "--agent or --prior" in err
    sim_agent = tmp_path / "sim.zip"
    train_agent(AgentConfig(model=str(world.path), out=str(sim_agent), steps=0, num_envs=8, n_steps=8, batch_size=64,
                            device="cpu", progress=False, bc_data=None, log_dir=str(tmp_path / "tb")))
    rc, _, err = cli("online", "--model", str(world.path), "--agent", str(sim_agent), "--grounding", str(grounding),
                     "--out", str(tmp_path / "b"), "--rounds", "1", "--episodes", "1", "--max-steps", "1",
                     "--device", "cpu")
    assert rc == 2 and "only for latent-action agents" in err
    video_model = WorldModel.load(world.path)  # as if trained on video without labels: nothing to fine-tune
    video_model.meta.train_info["controller"] = "skipped: no action labels"
    with pytest.raises(ValueError, match="controller was not trained.*--init-from"):
        run_online(video_model, lambda m: None, OnlineConfig(out=str(tmp_path / "c"), rounds=1, episodes=1))
    assert not (tmp_path / "c").exists()


# ----- plan --prior ----------------------------------------------------------------------------------------------
def test_a_latent_prior_proposes_grounded_chunks(world, latent_agent, tmp_path):
    from wm_gym.agents.planners import load_prior, policy_rollout

    model = WorldModel.load(world.path)
    prior = load_prior(latent_agent, model=model)  # the grounding its sidecar records
    assert isinstance(prior, GroundedPolicy)
    s_hist = torch.randn(3, model.config.history, model.n_tokens, model.dim)
    plans = policy_rollout(model, prior, s_hist, torch.randn(3, model.n_tokens, model.dim), horizon=2)
    assert plans.shape == (3, 2, model.config.action_dim)
    assert bool(((plans >= model.action_low) & (plans <= model.action_high)).all())
    with pytest.raises(ValueError, match="sim action chunks.*grounding"):
        load_prior(latent_agent)  # no model to ground on
    with pytest.raises(ValueError, match="sim action chunks.*grounding"):
        load_prior(without_grounding(latent_agent, tmp_path), model=model)


def test_plan_cli_with_a_latent_prior(world, latent_agent, tmp_path):
    common = ("--model", str(world.path), "--planner", "cem", "--samples", "8", "--elites", "2", "--iterations", "1",
              "--horizon", "2", "--episodes", "2", "--max-steps", "2", "--device", "cpu")
    rc, result, err = cli("plan", *common, "--prior", str(latent_agent))
    assert rc == 0, err
    assert result["prior"] == str(latent_agent) and result["episodes"] == 2
    rc, _, err = cli("plan", *common, "--prior", str(without_grounding(latent_agent, tmp_path)))
    assert rc == 2 and "train-agent --action-space latent --grounding" in err


# ----- the worked example -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def video_first():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import video_first
    finally:
        sys.path.remove(str(EXAMPLES))
    return video_first


def test_recorded_mp4s_ingest_with_labels_on_the_chosen_fraction_only(video_first, tmp_path):
    from wm_gym.data.collect import collect_dataset
    from wm_gym.data.video import ingest_videos

    sim = collect_dataset("wall", 4, tmp_path / "sim", policy="noisy-expert", seed=3, progress=False)
    names = video_first.export_episodes(sim, tmp_path / "videos", "expert")
    assert names == [f"expert_{i:04d}" for i in range(4)]
    labelled = video_first.write_labels(tmp_path / "labels.npz", [sim], [names], 0.25)
    assert len(labelled) == 1  # ceil(0.25 * 4)
    out = ingest_videos(tmp_path / "videos", tmp_path / "ds", labels=tmp_path / "labels.npz", progress=False)
    data, truth = load_episodes(out), load_episodes(sim)
    assert data.meta["episode_names"] == names and list(np.flatnonzero(data.labelled)) == [names.index(labelled[0])]
    for e in range(4):  # H.264 at 4x the size, box-filtered back: close to the sim's frames
        assert data.frames[e].shape == truth.frames[e].shape
        assert np.abs(data.frames[e].astype(int) - truth.frames[e].astype(int)).mean() < 2
    e = names.index(labelled[0])
    np.testing.assert_array_equal(data.actions[e], truth.actions[e])
    assert np.isnan(data.actions[(e + 1) % 4]).all()  # the others stay unlabelled
    mtime = (tmp_path / "videos" / "expert_0000.mp4").stat().st_mtime_ns
    video_first.export_episodes(sim, tmp_path / "videos", "expert")  # a re-run keeps what exists
    assert (tmp_path / "videos" / "expert_0000.mp4").stat().st_mtime_ns == mtime


def test_options_default_to_the_full_run_or_quick_and_override_both(video_first):
    args, settings = video_first.parse_args([])
    assert settings == video_first.Settings() and settings.eval_episodes == 200 and settings.labelled == 0.1
    args, settings = video_first.parse_args(["--quick", "--eval-episodes", "3", "--preset", "fast"])
    assert args.quick and settings.preset == "fast" and settings.eval_episodes == 3 and settings.random == 6
    with pytest.raises(SystemExit):
        video_first.parse_args(["--labelled", "0"])
    with pytest.raises(SystemExit):
        video_first.parse_args(["--sim", "pusht"])


def test_a_sim_brings_its_recipe_counts_and_history_and_its_own_folder(video_first):
    """--sim pointmaze: train_zoo's episode counts and history 3 (the ball's speed needs frames), quick or not; any
    option still overrides them; each sim keeps its own default folder, Wall's the name it always had."""
    _, wall = video_first.parse_args([])
    _, maze = video_first.parse_args(["--sim", "pointmaze"])
    assert (wall.sim, wall.random, wall.expert, wall.history) == ("wall", 1920, 1000, 1)
    assert (maze.sim, maze.random, maze.expert, maze.history) == ("pointmaze", 2000, 600, 3)
    assert (wall.labelled_from, maze.labelled_from) == ("expert", "all")
    assert video_first.parse_args(["--sim", "pointmaze", "--labelled-from", "expert"])[1].labelled_from == "expert"
    _, quick = video_first.parse_args(["--sim", "pointmaze", "--quick", "--history", "2"])
    assert (quick.random, quick.preset, quick.history) == (6, "tiny", 2)
    assert video_first.default_root("wall", False) == Path("data/video-first")
    assert video_first.default_root("pointmaze", True) == Path("data/video-first-quick-pointmaze")


def test_quick_run_end_to_end_then_resumes_by_skipping(video_first, tmp_path, monkeypatch, capsys):
    """--quick (smaller still), every wm-gym step in process with the argv the script builds: one interpreter
    instead of a dozen start-ups. The world model sees no label; a re-run skips every recorded step; other
    settings are refused; another REPA weight trains a second model on the same recorded videos."""
    calls = []

    def run(*argv: str) -> dict:
        calls.append(argv[0])
        rc, result, err = cli(*argv)
        assert rc == 0, f"wm-gym {' '.join(argv)}: {err}"
        return result

    monkeypatch.setattr(video_first, "run", run)
    argv = ["--quick", "--data", str(tmp_path / "vf"), "--random", "4", "--expert", "4", "--train-steps", "8",
            "--dynamics-steps", "4", "--eval-episodes", "2", "--reference", "--device", "cpu"]
    with pytest.warns(UserWarning, match="skipped the controller"):
        summary = video_first.main(argv)
    model_steps = ["train", "eval-wm", "train-distance", "ground", "train-agent", "evaluate", "evaluate"]
    assert calls == ["collect", "collect", "collect", "ingest", "ingest", *model_steps, "ingest", "ground", "evaluate"]
    assert summary["labelled_episodes"] == 1 and summary["ingested"]["labelled_episodes"] == 0
    assert summary["model_labelled_episodes"] == 0  # the world model saw no label at all
    assert WorldModel.load(summary["model"]).meta.train_info["controller"] == "skipped: no action labels"
    assert summary["ingested"]["episodes"] == 8 and summary["bank"] == 4 and summary["agent_steps"] == 64
    assert set(summary["eval_wm"]["latent_open_loop"]["mse_by_horizon"]) == {"1", "5", "10"}
    for row in ("video_first", "video_first_dino_wm", "reference_full_labels"):
        assert summary[row]["episodes"] == 2 and len(summary[row]["success_ci95"]) == 2
    assert summary["video_first"]["budget"] == "50 steps" and summary["video_first_dino_wm"]["budget"] == "dino-wm"
    assert summary["video_first"]["grounding_episodes"] == 1  # the budget: 10 % of 4 expert episodes
    assert summary["reference_full_labels"]["grounding_episodes"] == 8  # every episode
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary  # one JSON line, last
    calls.clear()
    assert {k: v for k, v in video_first.main(argv).items() if k != "seconds_this_run"} == \
        {k: v for k, v in summary.items() if k != "seconds_this_run"}
    assert calls == []
    with pytest.raises(SystemExit, match="other settings"):
        video_first.main([*argv, "--labelled", "0.5"])
    with pytest.warns(UserWarning, match="skipped the controller"):
        repa = video_first.main([*argv, "--repa-weight", "1"])
    assert calls == [*model_steps, "ground", "evaluate"]  # the recorded and ingested videos are reused
    assert repa["models"].endswith("model-repa1") and summary["models"].endswith("model-repa0")
    assert WorldModel.load(repa["model"]).meta.train_info["repa_window"] >= 1
    assert WorldModel.load(summary["model"]).latent_model.repa is None


def test_a_pointmaze_run_records_trains_and_evaluates_pointmaze(video_first, tmp_path, monkeypatch):
    """--sim pointmaze end to end (smaller than --quick): PointMaze-v1 videos, a label-free model reading 3 frames,
    its files named for the sim, both budgets evaluated in the PointMaze sim."""
    envs = []

    def run(*argv: str) -> dict:
        if "--env" in argv:
            envs.append(argv[argv.index("--env") + 1])
        rc, result, err = cli(*argv)
        assert rc == 0, f"wm-gym {' '.join(argv)}: {err}"
        return result

    monkeypatch.setattr(video_first, "run", run)
    with pytest.warns(UserWarning, match="skipped the controller"):
        summary = video_first.main(["--quick", "--sim", "pointmaze", "--data", str(tmp_path / "pm"), "--random", "3",
                                    "--expert", "3", "--heldout", "2", "--bank", "3", "--train-steps", "6",
                                    "--dynamics-steps", "2", "--distance-steps", "4", "--eval-episodes", "2",
                                    "--device", "cpu"])
    assert envs == ["pointmaze"] * 5  # three collections, two evaluations
    model = WorldModel.load(summary["model"])
    assert Path(summary["model"]).name == "pointmaze-video-bank.pt" and model.config.history == 3
    assert load_episodes(tmp_path / "pm" / "sim-random").meta["env_id"] == "wm_gym/PointMaze-UMaze-v1"
    assert summary["video_first"]["budget"] == "100 steps" and summary["video_first_dino_wm"]["budget"] == "dino-wm"
    # --labelled-from all (PointMaze's default): 10 % of each recording, so one random and one expert episode
    assert summary["labelled_from"] == "all" and summary["labelled_episodes"] == 2
    assert sorted(name.split("_")[0] for name in np.load(tmp_path / "pm" / "labels.npz").files) == ["expert", "random"]
    assert load_episodes(tmp_path / "pm" / "video-labelled").labelled.sum() == 2


def test_adapting_to_a_new_look_from_unlabelled_video(video_first, tmp_path, monkeypatch):
    """examples/adapt_look.py --quick after video_first.py --quick: the unadapted agent is evaluated in the new look;
    the base model is aligned on unlabelled PNG frames of the new look and the same agent evaluated through it; the
    --retrain alternative trains on old + repeated new videos, grounds on the old labels only, evaluates both looks.
    The new-look collections use their own seeds and never reach a labels file."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import adapt_look
    finally:
        sys.path.remove(str(EXAMPLES))
    calls = []

    def run(*argv: str) -> dict:
        calls.append(argv[0] if argv[0] != "evaluate" else
                     f"evaluate{' --look' if '--look' in argv else ''}{' --model' if '--model' in argv else ''}")
        rc, result, err = cli(*argv)
        assert rc == 0, f"wm-gym {' '.join(argv)}: {err}"
        return result

    monkeypatch.setattr(video_first, "run", run)
    root = tmp_path / "vf"
    with pytest.raises(SystemExit, match="run examples/video_first.py"):
        adapt_look.main(["--quick", "--look", "blue-floor", "--data", str(root)])
    with pytest.warns(UserWarning, match="skipped the controller"):
        video_first.main(["--quick", "--data", str(root), "--random", "4", "--expert", "4", "--train-steps", "8",
                          "--dynamics-steps", "4", "--eval-episodes", "2", "--device", "cpu"])
    calls.clear()
    only = adapt_look.main(["--quick", "--look", "big-dot", "--data", str(root), "--unadapted-only", "--device", "cpu"])
    assert calls == ["evaluate --look"] and set(only) == {"root", "look", "repa_weight", "unadapted_in_new_look"}
    calls.clear()
    adapt = ["--quick", "--look", "blue-floor", "--data", str(root), "--adapt-random", "2", "--adapt-expert", "3",
             "--device", "cpu"]
    summary = adapt_look.main(adapt)
    assert calls == ["evaluate --look", "collect", "collect", "ingest", "align", "evaluate --look --model"]
    assert summary["method"] == "align" and summary["new_look_videos"] == {"random": 2, "expert": 3}
    assert summary["alignment"]["new_frames"] == 2 * 51 and summary["adapted_in_new_look"]["episodes"] == 2
    frames = root / "videos" / "blue-floor-random-png" / "blue-floor-random_0001"
    assert len(list(frames.glob("*.png"))) == 51  # lossless frame folders, one per episode
    new = load_episodes(root / "blue-floor-random-png")
    truth = load_episodes(root / "sim-blue-floor-random")
    np.testing.assert_array_equal(new.frames[1], truth.frames[1])
    assert not new.has_actions and truth.meta["look"] == "blue-floor"
    assert {int(s) for s in truth.seeds}.isdisjoint(int(s) for s in load_episodes(root / "sim-random").seeds)
    aligned = WorldModel.load(Path(summary["models"]) / "wall-video-aligned.pt")
    assert aligned.config.look_alignment == "blue-floor"

    calls.clear()
    with pytest.warns(UserWarning, match="skipped the controller"):
        retrained = adapt_look.main([*adapt, "--retrain"])
    assert calls == ["evaluate --look", "collect", "collect", "ingest", "train", "train-distance", "ground",
                     "train-agent", "evaluate --look", "evaluate"]
    assert retrained["repeat"] == 2 and retrained["bank"] == 4 + 3 and retrained["models"].endswith("retrain-x2")
    data = load_episodes(root / f"video-{Path(retrained['models']).name}")
    assert len(data) == 8 + 2 * 5 and not data.has_actions  # old videos and the new ones twice, not one label
    names = data.meta["episode_names"]
    assert "blue-floor-expert_0002" in names and "blue-floor-expert-r1_0002" in names
    np.testing.assert_array_equal(data.frames[names.index("blue-floor-expert_0002")],
                                  data.frames[names.index("blue-floor-expert-r1_0002")])
    labels = np.load(root / "labels-full.npz")
    assert not any(name.startswith("blue-floor") for name in labels.files)
    with pytest.raises(SystemExit):
        adapt_look.main(["--quick", "--look", "purple", "--data", str(root)])
    with pytest.raises(SystemExit, match="other settings"):
        adapt_look.main([*adapt[:5], "--adapt-random", "5"])


def test_the_zero_label_path_as_a_user_runs_it(video_first, tmp_path):
    """ingest mp4s -> train (no label) -> train-distance (no label, default imagined fraction) -> ground (a few
    labelled episodes bring the sim's action size) -> train-agent --action-space latent --reward temporal ->
    evaluate in the real sim: every step a `wm-gym` command (the demo bank is the example's one helper)."""
    from wm_gym.data.collect import collect_dataset

    torch.set_num_threads(1)
    sim = collect_dataset("wall", 6, tmp_path / "sim", policy="noisy-expert", seed=3, progress=False)
    names = video_first.export_episodes(sim, tmp_path / "videos", "expert")
    video_first.write_labels(tmp_path / "labels.npz", [sim], [names], 0.34)  # 3 of 6 episodes

    def ok(*argv: str) -> dict:
        rc, result, err = cli(*argv)
        assert rc == 0, f"wm-gym {' '.join(argv)}: {err}"
        return result

    ingested = ok("ingest", str(tmp_path / "videos"), "--out", str(tmp_path / "ds"))
    assert ingested["labelled_episodes"] == 0
    with pytest.warns(UserWarning, match="skipped the controller"):
        ok("train", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "wm.pt"), "--preset", "tiny", "--steps",
           "8", "--device", "cpu", "--log-dir", str(tmp_path / "tb"))
    td = ok("train-distance", "--model", str(tmp_path / "wm.pt"), "--data", str(tmp_path / "ds"), "--steps", "10",
            "--out", str(tmp_path / "wm-td.pt"), "--device", "cpu")
    assert td["episodes"] == 6
    video_first.attach_bank(tmp_path / "wm-td.pt", tmp_path / "ds", tmp_path / "wm-bank.pt", {"expert": 6})
    ok("ingest", str(tmp_path / "videos"), "--labels", str(tmp_path / "labels.npz"), "--out", str(tmp_path / "labelled"))
    fit = ok("ground", "--model", str(tmp_path / "wm-bank.pt"), "--data", str(tmp_path / "labelled"), "--out",
             str(tmp_path / "g.pt"), "--labelled-fraction", "1", "--epochs", "2", "--device", "cpu")
    assert fit["n_episodes"] == 3
    ok("train-agent", "--model", str(tmp_path / "wm-bank.pt"), "--out", str(tmp_path / "agent.zip"), "--action-space",
       "latent", "--grounding", str(tmp_path / "g.pt"), "--reward", "temporal", "--steps", "64", "--num-envs", "8",
       "--n-steps", "8", "--batch-size", "64", "--device", "cpu", "--log-dir", str(tmp_path / "tb"))
    result = ok("evaluate", "--agent", str(tmp_path / "agent.zip"), "--env", "wall", "--episodes", "2", "--device",
                "cpu")
    assert result["episodes"] == 2 and result["grounding"] == str(tmp_path / "g.pt")
    model = WorldModel.load(tmp_path / "wm-bank.pt")
    assert model.temporal_distance is not None and model.meta.train_info["labelled_episodes"] == 0
