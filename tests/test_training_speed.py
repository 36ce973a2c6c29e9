"""Training speed machinery: the CPU layout (ranks, threads), local DDP ranks, the per-stage time table,
frozen work done once (latent targets, the head's every-k-th-frame features) and bf16 with fp32 attention."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wm_gym.data.collect import collect_dataset
from wm_gym.device import RankLayout, set_threads
from wm_gym.train.loop import Distributed, StageConfig, Trainer
from wm_gym.train.world_model import TrainConfig, latent_targets, train_world_model
from wm_gym.world_model import WorldModel

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def wall_data(tmp_path_factory) -> Path:
    return collect_dataset("wm_gym/Wall-v0", 12, tmp_path_factory.mktemp("speed") / "data", policy="noisy-expert",
                           seed=0, progress=False)


@pytest.fixture(scope="module")
def one_rank(wall_data, tmp_path_factory) -> WorldModel:
    out = tmp_path_factory.mktemp("one") / "wm.pt"
    return train_world_model(TrainConfig(data=str(wall_data), out=str(out), preset="tiny", steps=20, device="cpu",
                                         progress=False, log_dir=str(out.parent / "tb")))


# ----- the layout ------------------------------------------------------------------------------------------------
def test_rank_layout_splits_the_thread_budget(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert RankLayout.choose("auto", CPU) == RankLayout(1, 4)
    assert RankLayout.choose(2, CPU) == RankLayout(2, 2)
    assert RankLayout.choose(8, CPU) == RankLayout(8, 1)   # never below one thread
    monkeypatch.setenv("WORLD_SIZE", "2")                   # under torchrun the launcher's ranks stand
    assert RankLayout.choose("auto", CPU) == RankLayout(2, 2)
    monkeypatch.delenv("WORLD_SIZE")
    for bad in (0, -1, "two", True, 1.5):
        with pytest.raises(ValueError, match="ranks must be"):
            RankLayout.choose(bad, CPU)
    with pytest.raises(ValueError, match="torchrun"):
        RankLayout.choose(2, torch.device("cuda"))
    with pytest.raises(ValueError, match="threads"):
        set_threads(0)


def test_training_applies_the_layout_and_restores_the_callers_threads(one_rank, monkeypatch):
    info = one_rank.meta.train_info
    assert info["world_size"] == 1 and info["threads_per_rank"] == 1   # OMP_NUM_THREADS=1 in conftest
    assert torch.get_num_threads() == 1
    # 20 + 20 dynamics steps × 16 draw more windows than the data has: the targets are encoded once ...
    assert "latent_targets" in info["stage_seconds"]


def test_short_dynamics_stages_keep_the_per_batch_targets(wall_data, tmp_path):
    """... while 5 + 5 steps × 16 draw fewer than its windows: encoding them all would cost more."""
    info = train_world_model(TrainConfig(data=str(wall_data), out=str(tmp_path / "m.pt"), preset="tiny", steps=5,
                                         device="cpu", progress=False, log_dir=str(tmp_path / "tb"))).meta.train_info
    assert "latent_targets" not in info["stage_seconds"] and set(info["final_loss"]) >= {"flow", "controller"}


def test_global_batch_is_split_across_ranks():
    config = TrainConfig(data="d", out="o.pt", preset="small")
    assert config.stage("latent").batch_size == 64
    assert config.stage("latent", world_size=2).batch_size == 32
    assert config.stage("latent", world_size=128).batch_size == 1


def test_shards_cover_every_row_once():
    for n, world in ((10, 3), (2, 3), (7, 1), (0, 2)):
        rows = [list(range(n))[Distributed(r, world).shard(n)] for r in range(world)]
        assert sum(rows, []) == list(range(n))
        assert max(map(len, rows)) - min(map(len, rows)) <= 1
    single = Distributed()
    assert torch.equal(single.gather_rows(lambda rows: torch.arange(10)[rows] * 2, 10), torch.arange(10) * 2)


def test_two_local_ranks_train_the_same_replicas_and_time_every_stage(wall_data, tmp_path):
    out = tmp_path / "two.pt"
    model = train_world_model(TrainConfig(data=str(wall_data), out=str(out), preset="tiny", steps=10, device="cpu",
                                          ranks=2, progress=False, log_dir=str(tmp_path / "tb"),
                                          stage_overrides={"flow": {"steps": 20}, "controller": {"steps": 20}}))
    info = WorldModel.load(out).meta.train_info
    assert info["world_size"] == 2 and info["threads_per_rank"] >= 1
    assert len(info["replica_digests"]) == 2 and info["replica_digests"][0] == info["replica_digests"][1]
    # the features and the latent targets were each computed half per rank and gathered
    assert set(info["stage_seconds"]) == {"encoder", "features", "latent", "latent_targets", "flow", "controller"}
    assert all(s >= 0 for s in info["stage_seconds"].values())
    assert isinstance(model, WorldModel)


def test_an_error_in_a_rank_is_raised_with_its_own_type(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        train_world_model(TrainConfig(data=str(tmp_path / "missing"), out=str(tmp_path / "m.pt"), preset="tiny",
                                      device="cpu", ranks=2, progress=False, log_dir=str(tmp_path / "tb")))


# ----- the per-stage time table ----------------------------------------------------------------------------------
def test_trainer_times_each_stage_and_a_resumed_stage_adds_on(tmp_path):
    lin = torch.nn.Linear(2, 1)
    calls = {"n": 0}

    def sample(gen):
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return torch.randn(4, 2, generator=gen)

    def loss(x):
        return lin(x).pow(2).mean(), {}

    def trainer() -> Trainer:
        t = Trainer({"lin": lin}, tmp_path / "state", CPU, progress=False)
        t.load_checkpoint()
        return t

    first = trainer()
    with first.timed("setup"):
        pass
    with pytest.raises(KeyboardInterrupt):
        first.run(StageConfig("fit", 12, ckpt_every=5), lin, loss, sample)
    saved = torch.load(tmp_path / "state", weights_only=False)["seconds"]
    assert set(saved) == {"setup", "fit"} and saved["fit"] > 0      # the checkpoint at step 5 carries the time so far
    second = trainer()
    assert second.seconds["fit"] == pytest.approx(saved["fit"])
    second.run(StageConfig("fit", 12, ckpt_every=5), lin, loss, sample)
    assert second.seconds["fit"] > saved["fit"]


# ----- frozen work done once -------------------------------------------------------------------------------------
def test_latent_targets_equal_the_per_batch_encoding(one_rank, wall_data):
    from wm_gym.data.dataset import load_episodes
    from wm_gym.encoders.cache import dataset_features
    from wm_gym.train.feature_windows import FeatureWindows

    model, data = one_rank, load_episodes(wall_data)
    raw = dataset_features(model.encoder, wall_data, np.concatenate(data.frames), progress=False, device="cpu")
    windows = FeatureWindows.from_data(model.normalize(raw.float()).half(), data, history=1, frameskip=5)
    episodes = np.arange(len(data.frames))
    windows.latent_z = latent_targets(model.latent_model, windows, episodes, Distributed(), batch=7)
    batch = windows.sampler(episodes, 16)(torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.latent_model.encode(batch["s_hist"][:, -1], batch["targets"][:, 0])
    torch.testing.assert_close(batch["z"], expected, rtol=1e-5, atol=1e-5)
    assert batch["z"].abs().sum() > 0


def test_latent_targets_of_a_rank_without_windows_keep_their_shape(one_rank, wall_data):
    """With fewer windows than ranks a rank's share is empty; all_gather still needs its rows shaped [0, K, d]."""
    from wm_gym.data.dataset import load_episodes
    from wm_gym.encoders.cache import dataset_features
    from wm_gym.train.feature_windows import FeatureWindows

    model, data = one_rank, load_episodes(wall_data)
    raw = dataset_features(model.encoder, wall_data, np.concatenate(data.frames), progress=False, device="cpu")
    windows = FeatureWindows.from_data(model.normalize(raw.float()).half(), data, history=1, frameskip=5)
    shares = []

    class EmptyShareFirst(Distributed):  # what the rank with nothing to encode hands to all_gather
        def gather_rows(self, compute, n):
            shares.append(compute(slice(0, 0)))
            return compute(slice(0, n))

    z = latent_targets(model.latent_model, windows, np.arange(2), EmptyShareFirst())
    assert shares[0].shape == (0, *z.shape[1:]) and z.shape[1:] == (model.latent_model.config.n_latents, model.latent_model.config.latent_dim)


def test_head_features_are_sliced_from_the_training_cache(one_rank, wall_data, monkeypatch):
    from wm_gym.data.dataset import load_episodes
    from wm_gym.encoders import cache

    frames = load_episodes(wall_data).frames
    every5, counts = cache.episode_step_features(one_rank.encoder, wall_data, frames, 5, progress=False,
                                                 device="cpu")
    assert counts == [len(f[::5]) for f in frames]
    direct = cache.encode_frames(one_rank.encoder, np.concatenate([f[::5] for f in frames]), device="cpu",
                                 progress=False)
    torch.testing.assert_close(every5.float(), direct.float(), rtol=0, atol=2e-3)   # fp16 storage
    monkeypatch.setattr(cache, "encode_frames", lambda *a, **k: pytest.fail("re-encoded frames the cache holds"))
    cache.episode_step_features(one_rank.encoder, wall_data, frames, 5, progress=False, device="cpu")


def test_the_demo_stage_keeps_the_normalisation_its_latent_actions_were_trained_with(one_rank, tmp_path):
    other = collect_dataset("wm_gym/Wall-v0", 6, tmp_path / "random", policy="random", seed=3, progress=False)
    tuned = train_world_model(TrainConfig(data=str(other), out=str(tmp_path / "ft.pt"), preset="tiny", steps=5,
                                          device="cpu", progress=False, log_dir=str(tmp_path / "tb"),
                                          init_from=one_rank.meta.train_info["config"]["out"]))
    assert torch.equal(tuned.feature_mean, one_rank.feature_mean)
    assert torch.equal(tuned.feature_std, one_rank.feature_std)


# ----- bf16 with attention in fp32 -------------------------------------------------------------------------------
def test_cpu_bf16_autocast_runs_attention_in_fp32(monkeypatch):
    from wm_gym import nn as wnn

    seen = []
    original = F.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.dtype, k.dtype, v.dtype))
        return original(q, k, v, *args, **kwargs)

    monkeypatch.setattr(wnn.F, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    attn = wnn.Attention(32, 4)
    x = torch.randn(2, 5, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
    assert seen == [(torch.float32,) * 3]
    assert y.dtype == torch.bfloat16                         # the Linear layers around it stay bf16
    torch.testing.assert_close(y.float(), attn(x), rtol=0.05, atol=0.05)
    seen.clear()
    attn(x)
    assert seen == [(torch.float32,) * 3]


# ----- the zoo recipe: a re-run skips finished steps -----------------------------------------------------------
def run_recipe(sim: str, tmp_path: Path, monkeypatch, run) -> Path:
    """``examples/train_zoo.py SIM`` on a data folder whose collections are marked done, every `wm-gym` command
    replaced by ``run``, the zoo folder moved to ``tmp_path / "zoo"``; returns the data folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import train_zoo
    import wm_gym.zoo

    data = tmp_path / "data"
    for label in ("random", "heldout", "expert", "demos"):
        (data / f"{sim}-{label}").mkdir(parents=True, exist_ok=True)
        (data / f"{sim}-{label}" / "meta.json").write_text("{}")
    monkeypatch.setattr(train_zoo, "run", run)
    monkeypatch.setattr(wm_gym.zoo, "ZOO_DIR", tmp_path / "zoo")
    (tmp_path / "zoo").mkdir()
    monkeypatch.setattr(sys, "argv", ["train_zoo.py", sim, "--data", str(data), "--device", "cpu"])
    train_zoo.main()
    return data


def test_train_zoo_rerun_skips_finished_steps_and_keeps_the_stage_table(tmp_path, monkeypatch, one_rank,
                                                                         tiny_imagine_world):
    data = tmp_path / "data"
    data.mkdir()
    one_rank.meta.train_info["stage_seconds"] = {"latent": 1.0}
    for suffix in ("", "-ft", "-ft-cal", "-ft-cal-td"):
        one_rank.save(data / f"wall-rla-fast{suffix}.pt")
    (data / "wall-rla-fast-recipe-seconds.json").write_text(json.dumps({"collect random": 3.0}))
    from wm_gym.agents.train_agent import AgentConfig, train_agent

    train_agent(AgentConfig(model=str(tiny_imagine_world.path), out=str(data / "wall-rla-fast-prior.zip"), steps=0,
                            num_envs=4, n_steps=32, batch_size=64, device="cpu", progress=False, bc_data=None,
                            log_dir=str(tmp_path / "tb")))  # the plan prior, trained before
    calls = []
    run_recipe("wall", tmp_path, monkeypatch, lambda *args: calls.append(args) or {})
    assert calls == []                                           # nothing re-collected, re-trained or re-fitted
    shipped = WorldModel.load(tmp_path / "zoo" / "wall.pt")
    assert shipped.meta.train_info["recipe_seconds"] == {"collect random": 3.0}
    assert shipped.meta.train_info["recipe"]["distance_imagined"] == 0.0
    # the recipe's plan becomes the model's `wm-gym plan` defaults, its prior shipped beside it (exported)
    assert shipped.meta.plan_defaults == {"planner": "gbp", "mpc": True, "terminal": "temporal", "gbp_steps": 30,
                                          "budget": "dino-wm", "prior": "wall-prior"}
    exported = json.loads((tmp_path / "zoo" / "wall-prior.json").read_text())
    assert exported["exported_from"] == str(data / "wall-rla-fast-prior.zip") and exported["exported_half"]


def test_pointmaze_recipe_trains_on_random_and_expert_data_then_fine_tunes_open_loop(tmp_path, monkeypatch, one_rank):
    """The PointMaze recipe's commands: both training stages read the random and the expert folders with history 3,
    then `finetune --horizon 3` on both, and calibration and the head read the fine-tuned model."""
    one_rank.meta.train_info["stage_seconds"] = {"latent": 1.0}
    calls = []

    def fake_run(*args):
        calls.append(args)
        one_rank.save(args[args.index("--out") + 1])
        return {"stage_seconds": {}}

    data = run_recipe("pointmaze", tmp_path, monkeypatch, fake_run)
    both = ["--data", str(data / "pointmaze-random"), "--data", str(data / "pointmaze-expert")]
    assert [args[0] for args in calls] == ["train", "train", "finetune", "finetune", "calibrate", "train-distance"]
    train_base, train_demo, tune3, tune5, calibrate, _ = calls
    for args in (train_base, train_demo):
        assert list(args[1:5]) == both and args[args.index("--history") + 1] == "3"
    flag = lambda args, name: args[args.index(name) + 1]  # noqa: E731
    assert list(tune3[3:7]) == both and flag(tune3, "--horizon") == "3" and flag(tune5, "--horizon") == "5"
    assert flag(tune3, "--model").endswith("pointmaze-rla-fast-ft.pt")
    assert flag(tune5, "--model") == flag(tune3, "--out") and flag(calibrate, "--model") == flag(tune5, "--out")
    shipped = WorldModel.load(tmp_path / "zoo" / "pointmaze.pt")
    assert {"rollout fine-tune 1 (horizon 3)", "rollout fine-tune 2 (horizon 5)"} <= set(shipped.meta.train_info["recipe_seconds"])
    assert "--probe" in calibrate  # PointMaze's calibration fits the state probe; its best agent is the distilled one
    assert shipped.meta.agent_defaults == {"teacher": "plan", "steps": 0, "teacher_start": "zero",
                                           "policy_net": "keypoints"}
    # its plan (a fresh plan every chunk, every frame weighed alike: the values the shipped file's test pins,
    # tests/test_planner_priors.py) becomes the model's `wm-gym plan` recipe
    import train_zoo as tz

    assert shipped.meta.plan_defaults == tz.RECIPES["pointmaze"]["plan"]


def test_a_recipe_with_its_own_demos_collects_them_and_builds_the_bank_from_them(tmp_path, monkeypatch, one_rank):
    """dm_control point_mass's bank comes from its own noisy-expert collection (demos=N, seed 5), not from the
    expert episodes the dynamics train on; a recipe without demos banks its expert episodes (PointMaze)."""
    one_rank.meta.train_info["stage_seconds"] = {"latent": 1.0}

    def fake_run(*args):
        calls.append(args)
        one_rank.save(args[args.index("--out") + 1])
        return {"stage_seconds": {}}

    for sim, bank_folder in (("dmc-point_mass", "dmc-point_mass-demos"), ("pointmaze", "pointmaze-expert")):
        calls = []
        data = run_recipe(sim, tmp_path / sim, monkeypatch, fake_run)
        calibrate = next(args for args in calls if args[0] == "calibrate")
        assert calibrate[calibrate.index("--demos") + 1] == str(data / bank_folder)
    import train_zoo as tz

    assert calibrate[calibrate.index("--demo-episodes") + 1] == str(tz.RECIPES["pointmaze"]["bank"])
    recipe = tz.RECIPES["dmc-point_mass"]
    # a fresh data folder: the demos are collected like the other sets, at their own seed
    collected = []
    monkeypatch.setattr(tz, "run", lambda *args: collected.append(args) if args[0] == "collect" else fake_run(*args))
    monkeypatch.setattr(sys, "argv", ["train_zoo.py", "dmc-point_mass", "--data", str(tmp_path / "fresh"), "--device", "cpu"])
    calls = []
    tz.main()
    demos = next(args for args in collected if args[args.index("--out") + 1].endswith("dmc-point_mass-demos"))
    flag = lambda name: demos[demos.index(name) + 1]  # noqa: E731
    assert (flag("--episodes"), flag("--seed"), flag("--policy")) == (str(recipe["demos"]), "5", "noisy-expert")


# ----- collection on a native vector env -------------------------------------------------------------------------
@pytest.mark.parametrize("env_id", ["wm_gym/Wall-v1", "wm_gym/Wall-v0"])
@pytest.mark.parametrize("policy", ["random", "noisy-expert"])
def test_vector_collection_equals_the_single_env_episode_for_episode(env_id, policy):
    from wm_gym.data.collect import make_sim, rollout, vector_rollouts

    indices = [0, 5, 11]
    env = make_sim(env_id, 64)
    batched = vector_rollouts(env, policy, 3, indices, 50)
    for i, episode in zip(indices, batched):
        reference = rollout(env, policy, 3, i, 50)
        for name in ("frames", "proprio", "states", "success", "actions", "rewards", "goal", "goal_pixels"):
            a, b = getattr(episode, name), getattr(reference, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), f"episode {i}: {name}"
        assert episode.seed == reference.seed
    assert any(e.success.any() for e in batched) or policy == "random"   # success does not end a row early


def test_collect_uses_the_vector_env_and_matches_per_episode_workers(tmp_path, monkeypatch):
    from wm_gym.data import collect
    from wm_gym.data.dataset import load_episodes

    vector = load_episodes(collect.collect_dataset("wall", 5, tmp_path / "vec", seed=2, progress=False))
    two = load_episodes(collect.collect_dataset("wall", 5, tmp_path / "two", seed=2, workers=2, progress=False))
    assert all(np.array_equal(a, b) for a, b in zip(vector.frames, two.frames))   # blocks spread over 2 processes
    monkeypatch.setattr(collect, "vector_rollouts", lambda *a: pytest.fail("the vector path ran"))
    import dataclasses

    import wm_gym.envs.registration as registration

    spec = registration.sim_spec
    monkeypatch.setattr(registration, "sim_spec", lambda env: dataclasses.replace(spec(env), vector_entry_point=None))
    single = load_episodes(collect.collect_dataset("wall", 5, tmp_path / "one", seed=2, progress=False))
    for a, b in zip(vector.frames, single.frames):
        assert np.array_equal(a, b)
    for a, b in zip(vector.actions, single.actions):
        assert np.array_equal(a, b)


# ----- the head's imagined states from a subset of episodes ------------------------------------------------------
def test_imagined_states_from_a_subset_keep_the_fraction_and_come_from_the_rolled_out_episodes():
    from wm_gym.temporal_distance import TemporalDistanceConfig
    from wm_gym.train.temporal_distance import evenly_spaced, make_sampler

    assert evenly_spaced(10, 3) == [0, 4, 9] and evenly_spaced(3, 5) == [0, 1, 2] and evenly_spaced(4, None) == [0, 1, 2, 3]
    lengths = np.array([5, 5, 5, 5])
    features = torch.arange(20, dtype=torch.float32)[:, None, None]
    imagined = -features - 100                              # only episodes 1 and 3 have real stand-ins of rollouts
    config = TemporalDistanceConfig(imagined_fraction=0.25, batch_size=8000)
    s, _, _ = make_sampler(features, lengths, config, imagined, np.array([1, 3]))(torch.Generator().manual_seed(0))
    swapped = s[s < -50] + 100                              # back to the frame index, negated
    assert (s < -50).float().mean().item() == pytest.approx(0.25, abs=0.02)
    frames = (-swapped).long()
    assert set((frames // 5).tolist()) == {1, 3}            # imagined states only from rolled-out episodes
    assert (frames % 5 != 4).all()                          # never an episode's last frame
    with pytest.raises(ValueError, match="imagined_episodes"):
        TemporalDistanceConfig(imagined_episodes=0)
