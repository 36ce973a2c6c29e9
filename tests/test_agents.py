"""Agents: SB3 training in imagination (files, checkpoints, resume, SAC, learning), loading, real-sim
evaluation (observations, seeds, success, videos) and the feature sim."""
from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

import wm_gym.agents.train_agent as train_mod
from wm_gym.agents.evaluate import evaluate_policy
from wm_gym.agents.train_agent import AgentConfig, atomic_sb3_save, load_agent, sidecar_path, train_agent
from wm_gym.envs.action_chunk import ActionChunk
from wm_gym.envs.wall import STEP_SCALE, expert_waypoint
from wm_gym.imagine import WMImagineVectorEnv
from wm_gym.imagine.real_sim import make_feature_sim
from wm_gym.world_model import WorldModel

torch.set_num_threads(1)

WALL = "wm_gym/Wall-v0"  # the tiny test models are trained on v0 (conftest.TINY_WORLD_SIM)




def config(world, out, **kwargs) -> AgentConfig:
    base = dict(model=str(world.path), out=str(out), steps=512, num_envs=8, n_steps=32, batch_size=64, device="cpu",
                progress=False, checkpoint_every=10**9, log_dir=str(out.parent / "tb"), bc_data=None, log_std_init=0.0,
                critic_warmup=0)
    return AgentConfig(**{**base, **kwargs})  # pure RL from scratch unless a test asks for cloning


def test_default_agent_is_cloned_from_the_models_demo_bank_first(world, tmp_path):
    out = tmp_path / "bc.zip"
    train_agent(config(world, out, steps=0, bc_data="auto", bc_epochs=10))
    losses = json.loads(sidecar_path(out).read_text())["bc_losses"]
    assert len(losses) == 10 and losses[-1] < 0.5 * losses[0]
    train_agent(config(world, tmp_path / "none.zip", steps=0, bc_data=None))
    assert json.loads(sidecar_path(tmp_path / "none.zip").read_text())["bc_losses"] == []


def test_bc_data_names_one_or_several_dataset_folders(world, tmp_path, monkeypatch):
    import wm_gym.agents.behavior_cloning as bc_mod

    seen, real = [], bc_mod.demo_pairs
    monkeypatch.setattr(bc_mod, "demo_pairs", lambda model, demos, **kw: seen.append(demos) or real(model, demos, **kw))
    expert = str(world.expert_dir)
    train_agent(config(world, tmp_path / "one.zip", steps=0, bc_data=expert, bc_epochs=2))
    train_agent(config(world, tmp_path / "two.zip", steps=0, bc_data=f"{expert},{expert}", bc_epochs=2))
    # train_agent passes the folder list; demo_pairs then calls itself once per folder
    assert seen == [[expert], expert, [expert, expert], expert, expert]
    assert all(len(json.loads(sidecar_path(tmp_path / f"{n}.zip").read_text())["bc_losses"]) == 2 for n in ("one", "two"))


def test_precision_sets_imaginations_autocast_and_bad_values_raise(world, tmp_path, monkeypatch):
    import wm_gym.imagine as imagine

    seen, real = [], imagine.make_sb3_vec_env
    monkeypatch.setattr(imagine, "make_sb3_vec_env", lambda **kw: seen.append(kw["model"].uses_bf16) or real(**kw))
    for precision in ("bf16", "fp32"):
        train_agent(config(world, tmp_path / f"{precision}.zip", steps=0, precision=precision))
    assert seen == [True, False]
    with pytest.raises(ValueError, match="precision must be one of"):
        train_agent(config(world, tmp_path / "bad.zip", steps=0, precision="fp16"))
    # what it changes: the same imagined step, in bf16, is close to fp32's but not equal
    obs = {}
    for precision in ("fp32", "bf16"):
        env = WMImagineVectorEnv(num_envs=4, model=str(world.path), device="cpu", render_mode=None)
        env.model.precision = precision
        env.reset(seed=0)
        obs[precision] = env.step(np.full(env.action_space.shape, 0.5, np.float32))[0]
    gap = np.abs(obs["bf16"] - obs["fp32"]).max()
    assert 0 < gap < 0.1 * np.abs(obs["fp32"]).max(), gap


def ckpt_of(out: Path) -> Path:
    return out.with_name(out.stem + ".ckpt.zip")


def encode(model: WorldModel, frames: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] -> flat features [B, N*C], as the policy observation's halves hold them."""
    with torch.no_grad():
        return model.encode(torch.from_numpy(np.ascontiguousarray(frames))).reshape(len(frames), -1).numpy()


@pytest.fixture(scope="module")
def trained(world, tmp_path_factory):
    """One small PPO run (512 steps, checkpoints every 128), with every atomic_sb3_save call recorded."""
    out = tmp_path_factory.mktemp("agent") / "agent.zip"
    saves: list[tuple[str, int, bool]] = []  # (path, agent timesteps, a complete zip right after)
    original = train_mod.atomic_sb3_save

    def spy(agent, path):
        original(agent, path)
        saves.append((str(path), int(agent.num_timesteps), zipfile.is_zipfile(path)))

    train_mod.atomic_sb3_save = spy
    try:
        result = train_agent(config(world, out, checkpoint_every=128))
    finally:
        train_mod.atomic_sb3_save = original
    return out, result, saves


# ----- train_agent: files, checkpoints, TensorBoard -----------------------------------------------------
def test_train_agent_writes_agent_sidecar_curve_and_tensorboard(trained, world):
    out, result, _ = trained
    assert out.is_file() and sidecar_path(out) == out.with_suffix(".json") and sidecar_path(out).is_file()
    meta = json.loads(sidecar_path(out).read_text())
    assert meta["algo"] == "ppo" and meta["model"] == str(world.path) and meta["task"] == "goal"
    assert meta["config"]["steps"] == 512 and meta["config"]["num_envs"] == 8
    curve = meta["curve"]
    assert isinstance(curve, list) and len(curve) == 2  # one point per rollout of 8 envs x 32 steps
    assert [c["step"] for c in curve] == [256, 512]
    for point in curve:
        assert set(point) == {"step", "return", "length", "success"}
        assert np.isfinite(point["return"]) and 1 <= point["length"] <= 10 and 0.0 <= point["success"] <= 1.0
    assert result["steps"] == 512 and result["algo"] == "ppo" and result["out"] == str(out)
    assert result["final_imagined_return"] == curve[-1]["return"]
    assert result["curve_png"] and iio.imread(result["curve_png"]).ndim == 3  # a readable PNG
    events = list((out.parent / "tb").rglob("events.out.tfevents.*"))
    assert events and all(e.stat().st_size > 0 for e in events)
    assert result["log_dir"] == str(out.parent / "tb")


def test_train_agent_checkpoints_periodically_then_removes_the_checkpoint(trained):
    out, _, saves = trained
    ckpt = ckpt_of(out)
    ckpt_saves = [(steps, ok) for path, steps, ok in saves if path == str(ckpt)]
    assert [steps for steps, _ in ckpt_saves] == [128, 256, 384, 512]
    assert all(ok for _, ok in ckpt_saves)  # each checkpoint was a complete SB3 zip when written
    assert saves[-1][:2] == (str(out), 512)  # the agent itself last
    assert not ckpt.exists()
    assert not list(out.parent.glob(".*.tmp"))  # no atomic-write leftovers


def test_load_agent_returns_the_ppo_and_its_sidecar(trained):
    out, _, _ = trained
    agent, meta = load_agent(out)
    assert isinstance(agent, PPO) and agent.num_timesteps == 512
    assert meta == json.loads(sidecar_path(out).read_text())
    obs = np.zeros((3, *agent.observation_space.shape), np.float32)
    actions, _ = agent.predict(obs, deterministic=True)
    assert actions.shape == (3, *agent.action_space.shape)


def test_load_agent_errors(trained, tmp_path):
    out, _, _ = trained
    with pytest.raises(FileNotFoundError):
        load_agent(tmp_path / "missing.zip")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ValueError, match="not a readable SB3"):
        load_agent(corrupt)
    foo = tmp_path / "foo.zip"
    shutil.copy(out, foo)
    meta = json.loads(sidecar_path(out).read_text())
    sidecar_path(foo).write_text(json.dumps({**meta, "algo": "foo"}))
    with pytest.raises(ValueError, match="foo"):
        load_agent(foo)
    sidecar_path(foo).unlink()  # without a sidecar the same (valid) file loads as PPO with empty metadata
    agent, meta = load_agent(foo)
    assert isinstance(agent, PPO) and meta == {}


def test_train_agent_rejects_an_unknown_algo(world, tmp_path):
    with pytest.raises(ValueError, match="algo"):
        train_agent(config(world, tmp_path / "a.zip", algo="dqn"))
    assert not (tmp_path / "a.zip").exists()


# ----- SAC, resume --------------------------------------------------------------------------------------
def test_sac_trains_and_writes_its_files(world, tmp_path):
    out = tmp_path / "sac.zip"
    result = train_agent(config(world, out, algo="sac", steps=200, batch_size=32, net_arch=[32, 32]))
    assert result["algo"] == "sac" and result["steps"] == 200
    assert out.is_file() and json.loads(sidecar_path(out).read_text())["algo"] == "sac"
    agent, meta = load_agent(out)
    assert isinstance(agent, SAC) and agent.num_timesteps == 200 and meta["algo"] == "sac"
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert not ckpt_of(out).exists()


def test_resume_continues_from_the_checkpoint(world, tmp_path):
    out = tmp_path / "agent.zip"
    first = train_agent(config(world, out, steps=256))
    assert first["steps"] == 256
    agent, _ = load_agent(out)
    with torch.no_grad():  # mark the checkpoint so we can tell its weights from a fresh start (log_std 0)
        agent.policy.log_std.fill_(-2.0)
    atomic_sb3_save(agent, ckpt_of(out))  # as if a run had been interrupted right after 256 steps
    resumed = train_agent(config(world, out, steps=512, resume=True))
    assert resumed["steps"] == 512
    final, meta = load_agent(out)
    assert final.num_timesteps == 512  # 256 more, not 512 more
    assert [c["step"] for c in meta["curve"]] == [512]  # it learned only the second half
    log_std = final.policy.log_std.detach()
    assert torch.all((log_std - -2.0).abs() < 0.1) and not torch.equal(log_std, torch.full_like(log_std, -2.0))
    assert not ckpt_of(out).exists()
    # already at the target: nothing to learn, the checkpoint's agent is written as is
    atomic_sb3_save(final, ckpt_of(out))
    again = train_agent(config(world, out, steps=512, resume=True))
    assert again["steps"] == 512 and again["imagined_steps_per_s"] is None
    assert load_agent(out)[0].num_timesteps == 512 and not ckpt_of(out).exists()


def test_resume_without_a_checkpoint_starts_fresh(world, tmp_path):
    out = tmp_path / "agent.zip"
    result = train_agent(config(world, out, steps=256, resume=True))
    assert result["steps"] == 256
    agent, meta = load_agent(out)
    assert agent.num_timesteps == 256 and [c["step"] for c in meta["curve"]] == [256]
    assert torch.allclose(agent.policy.log_std.detach(), torch.zeros(10), atol=0.1)


# ----- the acceptance test: PPO raises its imagined return ---------------------------------------------
HORIZON = 3
LEARN = dict(task="goal", reward="progress", horizon=HORIZON, num_envs=32, n_steps=8, batch_size=128, n_epochs=10,
             learning_rate=6e-3, net_arch=[64, 64], seed=0)


def imagined_returns(env: WMImagineVectorEnv, act, seed: int = 123) -> np.ndarray:
    """Per-row return of the first imagined episode of each row (fixed seed, so fixed demos)."""
    obs, _ = env.reset(seed=seed)
    total, alive = np.zeros(env.num_envs), np.ones(env.num_envs, bool)
    for _ in range(HORIZON):
        obs, reward, terminated, truncated, _ = env.step(act(obs))
        total += reward * alive
        alive &= ~(terminated | truncated)
    assert not alive.any()
    return total


def test_sb3_ppo_on_a_tiny_model_raises_its_imagined_reward(world, tmp_path):
    """Deterministic policy, imagined return over 64 fixed episodes: before (fresh PPO, same seed) vs after 6k steps.

    reward="progress" (d(s_prev, goal) - d(s_next, goal)) rather than "goal": it is the same goal signal without
    the per-episode level of the distance, which otherwise dwarfs what an action can change in 3 steps.
    The margin is relative to what the tiny model allows: the gain of the best constant action over doing nothing.
    """
    rows = 64
    env = WMImagineVectorEnv(num_envs=rows, model=str(world.path), task="goal", reward=LEARN["reward"],
                             horizon=HORIZON, device="cpu", render_mode=None)
    zero = imagined_returns(env, lambda o: np.zeros((rows, 10), np.float32))
    compass = [np.tile(np.array([dx, dy], np.float32), 5) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy]
    best_constant = max(imagined_returns(env, lambda o, a=a: np.tile(a, (rows, 1))).mean() for a in compass)
    gain = best_constant - zero.mean()
    assert gain > 0.2 * zero.std(), "the fixture world model barely responds to actions: nothing to learn"

    before_out, after_out = tmp_path / "before.zip", tmp_path / "after.zip"
    train_agent(config(world, before_out, steps=0, **LEARN))  # the same PPO, untrained
    train_agent(config(world, after_out, steps=6144, **LEARN))
    before_agent, _ = load_agent(before_out)
    after_agent, _ = load_agent(after_out)
    assert before_agent.num_timesteps == 0 and after_agent.num_timesteps == 6144

    def policy(agent):
        return lambda obs: agent.predict(obs, deterministic=True)[0]

    before = imagined_returns(env, policy(before_agent)).mean()
    after = imagined_returns(env, policy(after_agent)).mean()
    report = f"zero action {zero.mean():.4f}, best constant {best_constant:.4f}, before {before:.4f}, after {after:.4f}"
    assert after - before > 0.5 * gain, report
    assert after > zero.mean() + 0.5 * gain, report


def test_critic_warmup_trains_only_the_value_net_first(world, tmp_path):
    """2 rollouts of 8 envs × 32 steps with critic_warmup=5: the actor (incl. log std) stays as built."""
    out = tmp_path / "warm.zip"
    train_agent(config(world, tmp_path / "init.zip", steps=0))
    train_agent(config(world, out, steps=512, critic_warmup=5))
    init, _ = load_agent(tmp_path / "init.zip")
    warm, _ = load_agent(out)
    changed = {k for k, v in warm.policy.state_dict().items() if not torch.equal(v, init.policy.state_dict()[k])}
    assert changed and all(k.startswith(("value_net", "mlp_extractor.value_net")) for k in changed), changed
    train_agent(config(world, tmp_path / "free.zip", steps=512, critic_warmup=1))  # 2nd update trains the actor
    free, _ = load_agent(tmp_path / "free.zip")
    assert not torch.equal(free.policy.log_std, init.policy.log_std)


def test_success_threshold_zero_runs_every_imagined_episode_to_the_horizon(world, tmp_path):
    out = tmp_path / "long.zip"
    train_agent(config(world, out, steps=256, success_threshold=0.0, horizon=4, n_steps=16))
    curve = json.loads(sidecar_path(out).read_text())["curve"]
    assert curve and all(c["length"] == 4 and c["success"] == 0 for c in curve)


# ----- evaluate_policy in the real sim ------------------------------------------------------------------
class ZeroPolicy:
    """Always the zero chunk; records what it was shown."""

    def __init__(self, action_dim: int):
        self.action_dim, self.seen, self.resets = action_dim, [], 0

    def reset(self):
        self.resets += 1

    def predict(self, obs, deterministic=True):
        self.seen.append(np.array(obs))
        return np.zeros((len(obs), self.action_dim), np.float32), None


def reset_wall(seed: int):
    sim = gym.make(WALL).unwrapped
    obs, info = sim.reset(seed=seed)
    return sim, obs, info


def test_evaluate_policy_shows_features_and_goal_features_and_counts_episodes(model):
    policy = ZeroPolicy(model.config.frameskip * model.config.sim_action_dim)
    seed = 1000
    result = evaluate_policy(policy, model, episodes=4, seed=seed, max_steps=3)
    assert result["episodes"] == 4 and result["max_steps"] == 3 and result["env"] == WALL
    assert 0.0 <= result["success_rate"] <= 1.0
    assert [e["seed"] for e in result["per_episode"]] == [seed + i for i in range(4)]
    assert result["mean_episode_length"] <= 3
    # the zero chunk never moves the dot, and starts and goals lie in opposite halves: no success, full length
    assert result["success_rate"] == 0.0 and all(e["length"] == 3 for e in result["per_episode"])
    assert len(policy.seen) == 3 and policy.resets == 1
    d = model.n_tokens * model.dim
    starts, goals = zip(*[(obs["pixels"], sim.goal_pixels) for sim, obs, _ in map(reset_wall, range(seed, seed + 4))])
    for obs in policy.seen:
        assert obs.shape == (4, 2 * d) and obs.dtype == np.float32
        np.testing.assert_allclose(obs[:, d:], encode(model, np.stack(goals)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(policy.seen[0][:, :d], encode(model, np.stack(starts)), rtol=1e-5, atol=1e-5)
    assert not np.allclose(policy.seen[0][:, d:], policy.seen[0][:, :d])  # start and goal differ


def test_evaluate_policy_batches_do_not_change_results_and_videos(model, tmp_path):
    policy = ZeroPolicy(model.config.frameskip * model.config.sim_action_dim)
    one = evaluate_policy(policy, model, episodes=5, seed=7, max_steps=2, batch=50)
    split = evaluate_policy(policy, model, episodes=5, seed=7, max_steps=2, batch=2,
                            video_dir=tmp_path / "v", video_episodes=3)
    assert split["per_episode"] == one["per_episode"]
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == [f"episode_{s}.mp4" for s in (7, 8, 9)]
    frames = iio.imread(tmp_path / "v" / "episode_8.mp4", index=None)
    assert frames.shape[0] == 2 + 1  # the start and one frame per agent step
    size = model.meta.image_size * 4  # upscaled 4x; two panels side by side with a gap
    assert frames.shape[1] == size and frames.shape[2] > 2 * size


class ShadowExpert:
    """An oracle: it replays each episode in its own copy of the Wall sim (same seeds, same actions) to read
    the true state, and steers with the noiseless Wall expert. The observation is ignored; the harness says
    (keep_rows) which episodes it still shows, as it tells planners."""

    def __init__(self, seeds, frameskip: int):
        self.frameskip = frameskip
        self.sims = [reset_wall(s)[0] for s in seeds]
        self.success = np.zeros(len(seeds), bool)
        self.length = np.zeros(len(seeds), int)
        self.rows = np.arange(len(seeds))  # the episodes the observation's rows are

    def keep_rows(self, keep):
        self.rows = self.rows[keep.numpy()]

    def predict(self, obs, deterministic=True):
        assert len(obs) == len(self.rows)
        chunks = np.zeros((len(obs), self.frameskip * 2), np.float32)
        for j, i in enumerate(self.rows):
            sim = self.sims[i]
            for k in range(self.frameskip):  # plan each sim step from the state it will start from
                target = expert_waypoint(sim.pos[None], sim.goal[None], sim.geometry)[0]
                direction = (target - sim.pos) / STEP_SCALE
                chunks[j, 2 * k:2 * k + 2] = direction / max(1.0, np.abs(direction).max())
                _, _, terminated, _, _ = sim.step(chunks[j, 2 * k:2 * k + 2])
                if terminated:  # ActionChunk stops here too; the rest of the chunk stays zero and unplayed
                    self.success[i] = True
                    break
            self.length[i] += 1
        return chunks, None


def test_evaluate_policy_detects_success_with_the_sims_own_criterion(model):
    seed, episodes = 2000, 6
    oracle = ShadowExpert(range(seed, seed + episodes), model.config.frameskip)
    result = evaluate_policy(oracle, model, episodes=episodes, seed=seed)
    assert result["max_steps"] == 50 // model.config.frameskip
    assert [e["success"] for e in result["per_episode"]] == list(oracle.success)
    assert [e["length"] for e in result["per_episode"]] == list(oracle.length)
    assert result["success_rate"] == pytest.approx(oracle.success.mean()) and result["success_rate"] >= 0.5
    successful = [e["length"] for e in result["per_episode"] if e["success"]]
    assert successful and max(successful) <= result["max_steps"] and result["mean_episode_length"] < result["max_steps"]


def test_evaluate_policy_rejects_another_sim_and_bad_episodes(model):
    policy = ZeroPolicy(10)
    with pytest.raises(ValueError, match="trained on"):
        evaluate_policy(policy, model, env="pointmaze", episodes=1)
    with pytest.raises(ValueError, match="episodes"):
        evaluate_policy(policy, model, episodes=0)
    assert policy.seen == []


# ----- the feature sim: the real sim through the encoder ------------------------------------------------
def test_feature_sim_matches_the_imagination_interface_and_truncates(model, world):
    env = make_feature_sim(model)
    imagine = WMImagineVectorEnv(num_envs=1, model=model, device="cpu", render_mode=None)
    assert env.observation_space.shape == imagine.single_observation_space.shape
    assert env.action_space.shape == imagine.single_action_space.shape == (model.config.frameskip * 2,)
    d = model.n_tokens * model.dim
    obs, _ = env.reset(seed=5)
    shadow, start, _ = reset_wall(5)
    assert obs.shape == (2 * d,) and obs.dtype == np.float32 and env.observation_space.contains(obs)
    np.testing.assert_allclose(obs[:d], encode(model, start["pixels"][None])[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obs[d:], encode(model, shadow.goal_pixels[None])[0], rtol=1e-5, atol=1e-5)
    shadow = ActionChunk(shadow, model.config.frameskip)
    chunk = np.tile(np.array([0.5, -0.5], np.float32), model.config.frameskip)
    obs, _, terminated, truncated, info = env.step(chunk)
    shadow_obs, *_ = shadow.step(chunk)
    assert obs.shape == (2 * d,) and info["chunk_steps"] == model.config.frameskip
    np.testing.assert_allclose(obs[:d], encode(model, shadow_obs["pixels"][None])[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(obs[d:], encode(model, shadow.unwrapped.goal_pixels[None])[0], rtol=1e-5, atol=1e-5)
    steps = 1
    while not (terminated or truncated):
        obs, _, terminated, truncated, _ = env.step(np.zeros(env.action_space.shape, np.float32))
        steps += 1
    assert truncated and not terminated and steps == 50 // model.config.frameskip == 10
    env.close()


def test_sb3_evaluates_an_imagination_agent_on_the_registered_real_env(trained, world):
    """WMReal-v0 is a plain Gymnasium env: SB3's own evaluate_policy runs the agent in the real sim."""
    from stable_baselines3.common.evaluation import evaluate_policy as sb3_evaluate

    agent, _ = load_agent(trained[0])
    real = gym.make("wm_gym/WMReal-v0", model=str(world.path), device="cpu")
    imagine = gym.make("WMImagine-v0", model=str(world.path), device="cpu")
    assert real.observation_space == imagine.observation_space and real.action_space == imagine.action_space
    rewards, lengths = sb3_evaluate(agent, real, n_eval_episodes=3, return_episode_rewards=True)
    assert len(lengths) == 3 and all(1 <= n <= 10 for n in lengths)  # real Wall-v0: 50 sim steps = 10 chunks
    assert all(r in (0.0, 1.0) for r in rewards)  # the sim's own reward: 1 on success, else 0
    _, info = real.reset(seed=0)
    assert info["state"].shape == (2,) and real.unwrapped.goal_pixels.shape == (64, 64, 3)
    vec = gym.make_vec("wm_gym/WMReal-v0", num_envs=2, model=str(world.path), device="cpu")
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, *real.observation_space.shape)
    vec.close()
    with pytest.raises(ValueError, match="unknown model"):
        gym.make("wm_gym/WMReal-v0", model="no-such-model")


def test_value_function_is_the_ppo_critic_and_checks_its_input(trained):
    from types import SimpleNamespace

    from wm_gym.agents.train_agent import value_function

    out, _, _ = trained
    agent, _ = load_agent(out)
    value = value_function(agent)
    obs = torch.randn(4, *agent.observation_space.shape, generator=torch.Generator().manual_seed(0), requires_grad=True)
    v = value(obs)
    assert v.shape == (4,)
    assert torch.allclose(v, agent.policy.predict_values(obs).squeeze(-1))
    v.sum().backward()
    assert obs.grad is not None and obs.grad.abs().sum() > 0  # differentiable: planners push gradients through it
    with pytest.raises(ValueError, match="critic takes observations"):
        value(obs[:, :-1])
    with pytest.raises(ValueError, match="PPO agent's critic"):
        value_function(SimpleNamespace(policy=object()))
