"""Imagination envs: registration, spaces, seeding, vector/single agreement, autoreset, rewards, options, SB3."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

import wm_gym  # noqa: F401  (registers WMImagine-v0)
from wm_gym.envs.wall import WALL_V0, render_dots
from wm_gym.imagine import WMImagineEnv, WMImagineVectorEnv, make_sb3_vec_env
from wm_gym.rewards import feature_distance
from wm_gym.world_model import WorldModel

from tests.conftest import RecordingPolicy

TOL = dict(rtol=1e-5, atol=1e-5)
NO_SUCCESS = 0.0  # success_threshold: an l1 distance is never < 0, so episodes only end at the horizon




def make(world, **kwargs) -> gym.Env:
    return gym.make("WMImagine-v0", model=str(world.path), device="cpu", **kwargs)


def make_vec(world, num_envs: int = 4, **kwargs) -> WMImagineVectorEnv:
    return gym.make_vec("WMImagine-v0", num_envs=num_envs, model=str(world.path), device="cpu", **kwargs)


def encode(model: WorldModel, frames: np.ndarray) -> np.ndarray:
    """uint8 [B, H, W, 3] -> flat features [B, N*C], as the env's obs halves hold them."""
    return model.encode(torch.from_numpy(np.ascontiguousarray(frames))).reshape(len(frames), -1).numpy()


def split(obs: np.ndarray, model: WorldModel) -> tuple[np.ndarray, np.ndarray]:
    d = model.n_tokens * model.dim
    return obs[..., :d], obs[..., d:]


def as_features(flat: np.ndarray, model: WorldModel) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(flat)).reshape(-1, model.n_tokens, model.dim)


def wall_frames(*positions) -> np.ndarray:
    return render_dots(np.asarray(positions, np.float64), WALL_V0)  # the tiny models' sim


def actions(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(np.float32)


# ----- registration, spaces, seeding ---------------------------------------------------------------
def test_make_by_id_and_by_namespaced_id_and_env_checker(world):
    for env_id in ("WMImagine-v0", "wm_gym:WMImagine-v0"):
        env = gym.make(env_id, model=str(world.path), device="cpu")
        assert isinstance(env.unwrapped, WMImagineEnv)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        env.close()
    env = make(world)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded Box warns; that is expected of a feature obs
        check_env(env.unwrapped)


def test_spaces_and_reset_obs_are_the_chosen_demo_start_and_goal(world, model):
    env = make(world)
    n_feat = model.n_tokens * model.dim
    assert env.observation_space.shape == (2 * n_feat,) and env.observation_space.dtype == np.float32
    assert env.action_space.shape == (model.config.action_dim,) == (10,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=5)
    assert obs.shape == (2 * n_feat,) and obs.dtype == np.float32 and np.all(np.isfinite(obs))
    k = info["demo_index"]
    bank = model.bank
    feats, goal = split(obs, model)
    np.testing.assert_allclose(feats, encode(model, bank.frames[k, :1])[0], **TOL)
    np.testing.assert_allclose(goal, encode(model, bank.frames[k, bank.lengths[k]][None])[0], **TOL)
    obs, *_ = env.step(env.action_space.sample())
    assert obs.dtype == np.float32 and np.all(np.isfinite(obs)) and env.observation_space.contains(obs)


def test_same_seed_replays_and_other_seeds_pick_other_demos(world):
    acts = actions(0, (4, 10))

    def episode(seed):
        env = make(world)
        obs, info = env.reset(seed=seed)
        out = [obs]
        rewards = []
        for a in acts:
            obs, reward, *_ = env.step(a)
            out.append(obs)
            rewards.append(reward)
        return info["demo_index"], np.stack(out), np.array(rewards)

    k1, obs1, r1 = episode(7)
    k2, obs2, r2 = episode(7)
    assert k1 == k2
    np.testing.assert_array_equal(obs1, obs2)
    np.testing.assert_array_equal(r1, r2)
    env = make(world)
    assert len({env.reset(seed=s)[1]["demo_index"] for s in range(10)}) > 1


def test_split_picks_demos_from_that_split(world, model):
    heldout = set(np.flatnonzero(model.bank.heldout).tolist())
    assert len(heldout) == 3  # round(0.25 * 12)
    train_env, heldout_env = make(world), make(world, split="heldout")
    train_picks = {train_env.reset(seed=s)[1]["demo_index"] for s in range(30)}
    heldout_picks = {heldout_env.reset(seed=s)[1]["demo_index"] for s in range(30)}
    assert train_picks.isdisjoint(heldout) and len(train_picks) > 1
    assert heldout_picks <= heldout and len(heldout_picks) > 1


# ----- the vector env ------------------------------------------------------------------------------
def test_make_vec_gives_the_native_same_step_vector_env(world, model):
    vec = make_vec(world)
    assert isinstance(vec, WMImagineVectorEnv)
    assert vec.metadata["autoreset_mode"] is AutoresetMode.SAME_STEP
    assert vec.num_envs == 4
    assert vec.observation_space.shape == (4, 2 * model.n_tokens * model.dim)
    assert vec.action_space.shape == (4, 10)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (4, 2 * model.n_tokens * model.dim) and obs.dtype == np.float32
    obs, reward, terminated, truncated, info = vec.step(actions(0, (4, 10)))
    assert reward.shape == terminated.shape == truncated.shape == (4,)
    assert reward.dtype == np.float32 and terminated.dtype == truncated.dtype == bool


@pytest.mark.parametrize("mode", ["controller", "flow"])
def test_vector_row_i_replays_single_env_seeded_s_plus_i(world, mode):
    """Over an autoreset too: the single env is reset by hand when its episode ends."""
    n, seed, steps = 4, 11, 5
    acts = actions(1, (steps, n, 10))
    kwargs = dict(mode=mode, horizon=2, success_threshold=NO_SUCCESS)
    vec = make_vec(world, n, **kwargs)
    v_obs = [vec.reset(seed=seed)[0]]
    v_rew, v_final = [], []
    for a in acts:
        obs, reward, _, _, info = vec.step(a)
        v_obs.append(obs)
        v_rew.append(reward)
        v_final.append(info.get("final_obs"))
    for i in range(n):
        env = make(world, **kwargs)
        obs, _ = env.reset(seed=seed + i)
        np.testing.assert_allclose(obs, v_obs[0][i], **TOL)
        for t, a in enumerate(acts):
            obs, reward, terminated, truncated, _ = env.step(a[i])
            np.testing.assert_allclose(reward, v_rew[t][i], **TOL)
            if terminated or truncated:
                np.testing.assert_allclose(obs, v_final[t][i], **TOL)
                obs, _ = env.reset()
            np.testing.assert_allclose(obs, v_obs[t + 1][i], **TOL)


def test_flow_noise_comes_from_each_rows_seed(world):
    """Flow steps from the same demo differ by seed far beyond the tolerance used above,
    so the row/single agreement in flow mode really checks where the noise comes from."""
    a = np.zeros(10, np.float32)
    outs = []
    for seed in (0, 1):
        env = make(world, mode="flow")
        env.reset(seed=seed, options={"demo_index": 0})
        outs.append(env.step(a)[0])
    assert np.abs(outs[0] - outs[1]).max() > 1e-3
    env = make(world, mode="flow")
    env.reset(seed=0, options={"demo_index": 0})
    np.testing.assert_array_equal(env.step(a)[0], outs[0])


def test_autoreset_same_step(world, model):
    vec = make_vec(world, 3, horizon=2, success_threshold=NO_SUCCESS)
    vec.reset(seed=0)
    obs, _, terminated, truncated, info = vec.step(actions(2, (3, 10)))
    assert not truncated.any() and not terminated.any() and "_final_obs" not in info
    obs, _, terminated, truncated, info = vec.step(actions(3, (3, 10)))
    assert truncated.all() and not terminated.any()
    assert info["_final_obs"].all()
    final_feats, _ = split(info["final_obs"], model)
    feats, _ = split(obs, model)
    assert np.all(np.abs(final_feats - feats).max(axis=1) > 1e-3)
    # the returned obs is already the new episode's start: the first frame of the newly picked demo
    np.testing.assert_allclose(feats, encode(model, model.bank.frames[vec.demo_index, 0]), **TOL)
    obs, _, terminated, truncated, info = vec.step(actions(4, (3, 10)))
    assert not truncated.any() and np.all(np.isfinite(obs)) and info["step"].tolist() == [1, 1, 1]
    _, _, _, truncated, _ = vec.step(actions(5, (3, 10)))
    assert truncated.all()


def test_step_info_is_a_snapshot_not_a_view_of_env_state(world):
    vec = make_vec(world, 2, horizon=2, success_threshold=NO_SUCCESS)
    vec.reset(seed=0)
    *_, first = vec.step(np.zeros((2, 10), np.float32))
    assert first["step"].tolist() == [1, 1]
    *_, second = vec.step(np.zeros((2, 10), np.float32))
    assert second["step"].tolist() == [2, 2], "the step that ended the episode is step 2"
    assert first["step"].tolist() == [1, 1], "an earlier info must not change when the env steps on"


def test_single_env_ends_at_default_horizon_then_needs_reset(world):
    env = make(world, success_threshold=NO_SUCCESS)
    assert env.unwrapped.vec.horizon == 50 // 5  # the sim's episode length in model steps
    env.reset(seed=0)
    for t in range(1, 11):
        _, _, terminated, truncated, info = env.step(np.zeros(10, np.float32))
        assert not terminated and truncated == (t == 10) and info["step"] == t
    with pytest.raises(gym.error.ResetNeeded):
        env.step(np.zeros(10, np.float32))
    env.reset()
    env.step(np.zeros(10, np.float32))


def test_success_threshold_terminates_and_wins_over_truncation(world):
    env = make(world, success_threshold=1e9, horizon=1)
    env.reset(seed=0)
    _, _, terminated, truncated, info = env.step(np.zeros(10, np.float32))
    assert terminated and not truncated and info["is_success"] is True
    assert isinstance(info["distance"], float)
    calibrated = make(world)
    assert calibrated.unwrapped.vec.success_threshold == pytest.approx(world.calibration["threshold"])
    calibrated.reset(seed=0)
    _, _, terminated, _, info = calibrated.step(np.zeros(10, np.float32))
    assert terminated == (info["distance"] < world.calibration["threshold"]) == info["is_success"]


# ----- bad input ----------------------------------------------------------------------------------
BAD_SINGLE = {
    "shape": np.zeros(9, np.float32),
    "nan": np.full(10, np.nan, np.float32),
    "inf": np.full(10, np.inf, np.float32),
    "string": np.array(["a"] * 10),
}


@pytest.mark.parametrize("kind", list(BAD_SINGLE))
def test_bad_actions_raise_value_error_naming_the_shape(world, kind):
    env = make(world)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"\(10,\)"):
        env.step(BAD_SINGLE[kind])
    vec = make_vec(world, 2)
    vec.reset(seed=0)
    bad = BAD_SINGLE[kind]
    batch = np.stack([bad, bad]) if kind != "shape" else np.zeros((2, 9), np.float32)
    with pytest.raises(ValueError, match=r"\(2, 10\)"):
        vec.step(batch)
    with pytest.raises(ValueError, match=r"\(2, 10\)"):
        vec.step(np.zeros(10, np.float32))  # a single action given to the batch


@pytest.mark.parametrize("kind", ["nan", "inf", "string"])
def test_single_env_action_errors_do_not_mention_a_batch(world, kind):
    env = make(world)
    env.reset(seed=0)
    with pytest.raises(ValueError) as err:
        env.step(BAD_SINGLE[kind])
    assert "(1, 10)" not in str(err.value) and "batch" not in str(err.value), str(err.value)


def test_step_before_reset_raises(world):
    with pytest.raises(gym.error.ResetNeeded):
        make(world).step(np.zeros(10, np.float32))
    with pytest.raises(gym.error.ResetNeeded):
        make(world).unwrapped.step(np.zeros(10, np.float32))
    with pytest.raises(gym.error.ResetNeeded):
        make_vec(world, 2).step(np.zeros((2, 10), np.float32))


def test_bad_settings_fail_at_construction_naming_the_field(world):
    from wm_gym.imagine import ImagineConfig

    for bad, field in ((dict(mode="teleport"), "mode"), (dict(task="dance"), "task"), (dict(metric="l3"), "metric"),
                       (dict(action_space="joystick"), "action_space"), (dict(split="test"), "split"),
                       (dict(horizon=0), "horizon"), (dict(scale=-1.0), "scale")):
        with pytest.raises(ValueError, match=field):
            make(world, **bad)  # before any reset or step (mode used to be checked only at the first step)
    with pytest.raises(TypeError, match="unknown imagination env argument"):
        make(world, horizn=5)
    config = ImagineConfig.from_kwargs(model=str(world.path), device="cpu", horizon=4, action_space="latent")
    assert config.actions == "latent"
    by_config = WMImagineVectorEnv(num_envs=2, config=config)
    by_kwargs = make_vec(world, 2, horizon=4, action_space="latent")
    assert by_config.config == by_kwargs.config and by_config.horizon == by_kwargs.horizon == 4
    assert by_config.single_action_space == by_kwargs.single_action_space  # the Gymnasium attribute is a Box
    with pytest.raises(TypeError, match="not both"):
        WMImagineVectorEnv(num_envs=2, config=config, horizon=3)


# ----- rewards ------------------------------------------------------------------------------------
def test_goal_reward_is_minus_feature_distance_to_the_goal(world, model):
    env = make(world, reward="goal", metric="l1", scale=1.0, success_threshold=NO_SUCCESS)
    env.reset(seed=3)
    for a in actions(6, (3, 10)):
        obs, reward, *_ = env.step(a)
        feats, goal = split(obs, model)
        expected = -feature_distance(as_features(feats, model), as_features(goal, model), "l1").item()
        assert reward == pytest.approx(expected, rel=1e-5, abs=1e-6)
        assert reward < 0
    scaled = make(world, reward="goal", metric="l2", scale=2.5, success_threshold=NO_SUCCESS)
    scaled.reset(seed=3)
    obs, reward, *_ = scaled.step(actions(6, (3, 10))[0])
    feats, goal = split(obs, model)
    expected = -2.5 * feature_distance(as_features(feats, model), as_features(goal, model), "l2").item()
    assert reward == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_default_demo_reward_tracks_the_demo_frame_shown_before_the_step(world, model):
    """reward_t = -5 * l1(s_next, demo[t+1]); with task="demo" the obs shows demo[t+1] before step t."""
    env = make(world, task="demo", success_threshold=NO_SUCCESS)
    obs, _ = env.reset(seed=2)
    for a in actions(7, (4, 10)):
        _, shown = split(obs, model)
        obs, reward, *_ = env.step(a)
        feats, _ = split(obs, model)
        expected = -5.0 * feature_distance(as_features(feats, model), as_features(shown, model), "l1").item()
        assert reward == pytest.approx(expected, rel=1e-5, abs=1e-6)


# ----- reset options -------------------------------------------------------------------------------
def test_start_and_goal_frames_set_the_episode(world, model):
    env = make(world)
    frames = wall_frames([10.0, 10.0], [52.0, 50.0])
    obs, _ = env.reset(seed=0, options={"start_frame": frames[0], "goal_frame": frames[1]})
    feats, goal = split(obs, model)
    expected = encode(model, frames)
    np.testing.assert_allclose(feats, expected[0], **TOL)
    np.testing.assert_allclose(goal, expected[1], **TOL)
    obs, *_ = env.step(np.zeros(10, np.float32))
    np.testing.assert_allclose(split(obs, model)[1], expected[1], **TOL)  # the goal stays
    vec = make_vec(world, 2)
    obs, _ = vec.reset(seed=0, options={"start_frame": frames[0], "goal_frame": frames[1]})
    np.testing.assert_allclose(obs, np.concatenate([expected[0], expected[1]])[None].repeat(2, 0), **TOL)


@pytest.mark.parametrize("start, goal", [
    ("float32", "ok"), ("small", "small"), ("batched", "batched"), ("small", "ok"), ("ok", "gray"),
])
def test_bad_start_goal_frames_raise_value_error_naming_the_shape(world, start, goal):
    ok = wall_frames([10.0, 10.0])[0]
    variants = {"ok": ok, "float32": ok.astype(np.float32), "small": ok[:32, :32], "batched": ok[None],
                "gray": ok[..., 0]}
    env = make(world)
    with pytest.raises(ValueError, match=r"64, 64, 3"):
        env.reset(options={"start_frame": variants[start], "goal_frame": variants[goal]})


def test_only_one_of_start_and_goal_frame_raises(world):
    env = make(world)
    with pytest.raises(ValueError, match="both"):
        env.reset(options={"start_frame": wall_frames([10.0, 10.0])[0]})


def test_demo_index_option_picks_that_demo(world, model):
    env = make(world)
    bank = model.bank
    for k in (0, 4, len(bank) - 1):
        obs, info = env.reset(seed=0, options={"demo_index": k})
        assert info["demo_index"] == k
        feats, goal = split(obs, model)
        np.testing.assert_allclose(feats, encode(model, bank.frames[k, :1])[0], **TOL)
        np.testing.assert_allclose(goal, encode(model, bank.frames[k, bank.lengths[k]][None])[0], **TOL)
    vec = make_vec(world, 3)
    vec.reset(seed=0, options={"demo_index": [2, 5, 7]})
    assert vec.demo_index.tolist() == [2, 5, 7]
    for bad in (-1, len(bank)):
        with pytest.raises(ValueError, match="demo_index"):
            env.reset(options={"demo_index": bad})


def test_task_demo_target_follows_the_demo(world, model):
    env = make(world, task="demo", success_threshold=NO_SUCCESS)
    bank = model.bank
    k = int(np.argmax(bank.lengths))
    length = int(bank.lengths[k])
    demo = encode(model, bank.frames[k])
    obs, _ = env.reset(seed=0, options={"demo_index": k})
    np.testing.assert_allclose(split(obs, model)[1], demo[1], **TOL)
    targets = [split(obs, model)[1]]
    for t in range(1, length + 2):
        obs, _, _, truncated, _ = env.step(np.zeros(10, np.float32))
        np.testing.assert_allclose(split(obs, model)[1], demo[min(t + 1, length)], **TOL)
        targets.append(split(obs, model)[1])
    assert np.abs(targets[0] - targets[1]).max() > 1e-3  # the target really moves along the demo


def test_custom_demo_frames_longer_than_the_bank_then_plain_resets(world, model):
    long = wall_frames(*np.linspace([10.0, 10.0], [50.0, 44.0], model.bank.frames.shape[1] + 6))
    env = make(world, task="demo")
    obs, _ = env.reset(seed=0, options={"demo_frames": long})
    np.testing.assert_allclose(split(obs, model)[1], encode(model, long[1:2])[0], **TOL)
    obs, info = env.reset(seed=1)  # back to the bank's demos
    np.testing.assert_allclose(split(obs, model)[0], encode(model, model.bank.frames[info["demo_index"], :1])[0], **TOL)
    vec = make_vec(world, 2, horizon=1, success_threshold=NO_SUCCESS)
    vec.reset(seed=0, options={"demo_frames": long})
    _, _, _, truncated, _ = vec.step(np.zeros((2, 10), np.float32))  # autoreset into bank demos
    assert truncated.all()


def test_latent_action_space(world, model):
    env = make(world, action_space="latent", success_threshold=NO_SUCCESS)
    n_latents, latent_dim = model.flow.config.n_latents, model.flow.config.latent_dim
    assert env.action_space.shape == (n_latents * latent_dim,)
    assert np.all(env.action_space.low == -3) and np.all(env.action_space.high == 3)
    outs = []
    for a in (np.zeros(n_latents * latent_dim, np.float32), np.full(n_latents * latent_dim, 2.0, np.float32)):
        env.reset(seed=0)
        obs, reward, *_ = env.step(a)
        assert np.all(np.isfinite(obs)) and np.isfinite(reward)
        outs.append(split(obs, model)[0])
    assert np.abs(outs[0] - outs[1]).max() > 1e-3  # the latent action drives the step
    with pytest.raises(ValueError, match=rf"\({n_latents * latent_dim},\)"):
        env.step(np.zeros(10, np.float32))


# ----- rendering --------------------------------------------------------------------------------------
def test_render_shows_the_imagined_state_beside_the_target(world, model):
    env = make(world)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(actions(8, 10))
    frame = env.render()
    assert frame.shape == (64, 128, 3) and frame.dtype == np.uint8
    feats, goal = split(obs, model)
    expected = model.decode_pixels(torch.cat([as_features(feats, model), as_features(goal, model)])).numpy()
    np.testing.assert_array_equal(frame[:, :64], expected[0])
    np.testing.assert_array_equal(frame[:, 64:], expected[1])
    vec = make_vec(world, 3)
    vec.reset(seed=0)
    assert vec.render().shape == (3, 64, 128, 3)


def test_record_video_writes_an_mp4(world, tmp_path):
    env = gym.wrappers.RecordVideo(make(world, horizon=3, success_threshold=NO_SUCCESS), str(tmp_path / "video"),
                                   episode_trigger=lambda episode: True, disable_logger=True)
    env.reset(seed=0)
    done = False
    while not done:
        _, _, terminated, truncated, _ = env.step(np.zeros(10, np.float32))
        done = terminated or truncated
    env.close()
    videos = list((tmp_path / "video").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 0


# ----- Stable-Baselines3 -------------------------------------------------------------------------------
def test_sb3_vec_env_protocol(world, model):
    d = 2 * model.n_tokens * model.dim
    vec = make_sb3_vec_env(num_envs=4, seed=0, model=str(world.path), device="cpu", horizon=3,
                           success_threshold=NO_SUCCESS)
    obs = vec.reset()
    assert isinstance(obs, np.ndarray) and obs.shape == (4, d) and obs.dtype == np.float32
    again = make_sb3_vec_env(num_envs=4, seed=0, model=str(world.path), device="cpu", horizon=3).reset()
    np.testing.assert_array_equal(obs, again)  # the seed applies to the first reset
    for t in range(1, 4):
        obs, rewards, dones, infos = vec.step(actions(t, (4, 10)))
        assert obs.shape == (4, d) and obs.dtype == np.float32
        assert rewards.shape == (4,) and rewards.dtype == np.float32
        assert dones.shape == (4,) and dones.dtype == bool
        assert isinstance(infos, list) and len(infos) == 4
        for info in infos:
            assert isinstance(info["is_success"], bool) and info["is_success"] is False
            assert info["TimeLimit.truncated"] is (t == 3)
        if t < 3:
            assert not dones.any() and all("terminal_observation" not in info for info in infos)
    assert dones.all()
    for i, info in enumerate(infos):
        terminal = info["terminal_observation"]
        assert terminal.shape == (d,)
        assert np.abs(split(terminal, model)[0] - split(obs[i], model)[0]).max() > 1e-3  # obs is the next start


def test_sb3_ppo_runs(world):
    from stable_baselines3 import PPO

    vec = make_sb3_vec_env(num_envs=4, seed=0, model=str(world.path), device="cpu", horizon=3)
    agent = PPO("MlpPolicy", vec, n_steps=16, batch_size=32, n_epochs=1, device="cpu", seed=0, verbose=0)
    agent.learn(64)
    assert agent.num_timesteps >= 64
    action, _ = agent.predict(vec.reset(), deterministic=True)
    assert action.shape == (4, 10)


# ----- models: zoo, bad files, demo banks ------------------------------------------------------------
def test_zoo_rejects_unknown_names(world):
    from wm_gym.zoo import MODELS, resolve_model

    with pytest.raises(ValueError, match="unknown model 'nonexistent'") as err:
        resolve_model("nonexistent")
    for name in MODELS:
        assert name in str(err.value)
    assert resolve_model(str(world.path)) == world.path
    with pytest.raises(ValueError, match="nonexistent"):
        gym.make("WMImagine-v0", model="nonexistent", device="cpu")


def test_default_env_loads_the_shipped_wall_model_offline(monkeypatch):
    """No arguments: the zoo's wall model, from the installed package, with no network."""
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    from wm_gym.zoo import DEFAULT, ZOO_DIR, available

    assert DEFAULT == "wall" and "wall" in available()
    env = gym.make("WMImagine-v0", device="cpu")
    wm = env.unwrapped.model
    assert wm.meta.sim == "wall" and wm.meta.success_threshold is not None
    assert wm.bank is not None and wm.bank.actions is not None and wm.bank.heldout.any()
    obs, _ = env.reset(seed=0)
    assert obs.shape == (2 * wm.n_tokens * wm.dim,) and np.isfinite(obs).all()
    obs, reward, terminated, truncated, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert np.isfinite(reward) and reward < 0  # video-aligned reward: minus a distance
    assert (ZOO_DIR / "wall.pt").stat().st_size < 14e6  # fp16 dynamics + the temporal head (~2.7 MB)
    assert wm.temporal_distance is not None  # so reward="temporal" works on the default model
    env = gym.make("WMImagine-v0", device="cpu", reward="temporal")
    before, _ = env.reset(seed=0)
    after, reward, *_ = env.step(np.ones(env.action_space.shape, np.float32))  # full speed: the dot moves
    (s_prev, goal), (s_next, _) = split(before, wm), split(after, wm)
    with torch.no_grad():  # progress in model steps: the head's steps to go before the step minus after it
        steps = lambda s: wm.temporal_distance.steps(as_features(s, wm), as_features(goal, wm)).item()  # noqa: E731
        expected = steps(s_prev) - steps(s_next)
    assert reward == pytest.approx(expected, rel=1e-4, abs=1e-5) and abs(expected) > 0.05


def test_shipped_pusht_model_passes_the_env_checker_offline():
    from wm_gym.zoo import ZOO_DIR, available

    assert "pusht" in available() and (ZOO_DIR / "pusht.pt").stat().st_size < 20e6
    env = gym.make("WMImagine-v0", model="pusht", device="cpu")
    wm = env.unwrapped.model
    assert wm.meta.env_id == "wm_gym/PushT-v1" and wm.config.history == 3 and not wm.config.reproject
    assert wm.meta.train_info["preset"] == "fast" and wm.latent_model.config.dec_group == 2
    assert wm.bank is not None and wm.bank.actions is not None and wm.temporal_distance is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded Box warns; that is expected of a feature obs
        check_env(env.unwrapped)


@pytest.mark.parametrize("name, env_id", [("dmc-point_mass", "wm_gym/DMC-point_mass-easy-v0"),
                                          ("dmc-reacher", "wm_gym/DMC-reacher-easy-v0")])
def test_shipped_dm_control_models_pass_the_env_checker_offline(name, env_id):
    from wm_gym.zoo import ZOO_DIR, available

    assert name in available() and (ZOO_DIR / f"{name}.pt").stat().st_size < 27e6  # 2,400- and 2,000-demo banks
    env = gym.make("WMImagine-v0", model=name, device="cpu")
    wm = env.unwrapped.model
    assert wm.meta.env_id == env_id and wm.config.history == 3 and wm.meta.train_info["preset"] == "small"
    assert wm.bank is not None and wm.bank.actions is not None and wm.temporal_distance is not None
    assert wm.meta.success_threshold is not None and wm.meta.train_info["recipe_seconds"]
    assert len(wm.bank) == {"dmc-point_mass": 2400, "dmc-reacher": 2000}[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unbounded Box warns; that is expected of a feature obs
        check_env(env.unwrapped)


def test_shipped_wall_model_is_the_fast_preset_and_the_only_wall_entry():
    """The default is the `fast` preset (a width-16 conv-pyramid encoder with a patch reprojector, a grouped latent
    decoder, a controller over grouped context) on Wall-v1."""
    from wm_gym.train.world_model import PRESETS
    from wm_gym.zoo import MODELS

    assert [name for name in MODELS if name.startswith("wall")] == ["wall"]
    wm = gym.make("WMImagine-v0", model="wall", device="cpu").unwrapped.model
    fast = PRESETS["fast"]
    assert wm.config.encoder_config == dict(fast.encoder, image_size=64) and wm.meta.train_info["preset"] == "fast"
    assert wm.latent_model.config.dec_group == 2 and wm.meta.env_id == "wm_gym/Wall-v1" and wm.reprojects
    assert wm.config.controller_config == fast.controller and wm.encoder.reprojector is not None


def test_corrupt_model_files_raise_value_error(world, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a world model")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(world.path.read_bytes()[:4096])
    for path in (garbage, truncated):
        with pytest.raises(ValueError, match="corrupt or truncated"):
            gym.make("WMImagine-v0", model=str(path), device="cpu")


def test_model_without_a_bank_needs_demos(world, model):
    with pytest.raises(ValueError, match="demo bank"), pytest.warns(UserWarning, match="no calibrated success"):
        gym.make("WMImagine-v0", model=str(world.nobank_path), device="cpu")
    with pytest.warns(UserWarning, match="no calibrated success threshold"):
        env = gym.make("WMImagine-v0", model=str(world.nobank_path), device="cpu", demos=str(world.expert_dir))
    bank = env.unwrapped.vec.bank
    assert len(bank) == 12 and not bank.heldout.any()
    obs, info = env.reset(seed=0)
    feats, _ = split(obs, model)
    np.testing.assert_allclose(feats, encode(model, bank.frames[info["demo_index"], :1])[0], **TOL)
    env.step(np.zeros(10, np.float32))
    video = wall_frames(*np.linspace([10.0, 20.0], [50.0, 44.0], 4))
    env = gym.make("WMImagine-v0", model=str(world.nobank_path), device="cpu", demos=[video], success_threshold=1.0)
    obs, info = env.reset(seed=0)
    assert info["demo_index"] == 0
    expected = encode(model, video)
    np.testing.assert_allclose(obs, np.concatenate([expected[0], expected[3]]), **TOL)


def test_shipped_pointmaze_model_reads_three_frames():
    """The pointmaze zoo model is a `fast` PointMaze-v1 model with a 3-frame history (the ball's velocity), and it
    steps in imagination."""
    env = gym.make("WMImagine-v0", model="pointmaze", device="cpu")
    wm = env.unwrapped.model
    assert wm.meta.sim == "pointmaze" and wm.config.history == 3
    assert wm.meta.env_id == "wm_gym/PointMaze-UMaze-v1" and wm.meta.train_info["preset"] == "fast"
    assert env.unwrapped.vec.horizon == 100 // wm.config.frameskip
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert np.isfinite(obs).all() and np.isfinite(reward)
        if terminated or truncated:
            obs, _ = env.reset()
    assert env.unwrapped.vec.s_hist.shape[1] == 3


# ----- models with a history of H > 1 frames: the policy sees the same history everywhere ------------------------
@pytest.fixture(scope="module")
def history2_model(tiny_imagine_world, tmp_path_factory):
    """The tiny world's encoder and latent actions with history-2 dynamics (a few seconds) and its bank."""
    from wm_gym.data.demo_bank import DemoBank
    from wm_gym.train.world_model import TrainConfig, train_world_model

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("h2") / "h2.pt"
    model = train_world_model(TrainConfig(data=str(tiny_imagine_world.random_dir), out=str(out), preset="tiny", steps=10,
                                          history=2, device="cpu", progress=False, log_dir=str(out.parent / "tb"),
                                          init_from=str(tiny_imagine_world.nobank_path)))
    model.config.reproject = False
    model.bank = DemoBank.from_dataset(tiny_imagine_world.expert_dir, model.config.frameskip, heldout_fraction=0.25)
    return model


def test_history_observations_in_imagination_shift_one_frame_per_step(history2_model):
    model = history2_model
    n = model.n_tokens * model.dim
    env = WMImagineVectorEnv(num_envs=3, model=model, device="cpu")
    assert env.single_observation_space.shape == (3 * n,)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[:, :n], obs[:, n:2 * n])  # a new episode repeats its first frame
    goal = obs[:, 2 * n:]
    nxt, *_ = env.step(np.zeros((3, model.config.action_dim), np.float32))
    np.testing.assert_allclose(nxt[:, :n], obs[:, n:2 * n])  # the newest frame became the older one
    np.testing.assert_allclose(nxt[:, n:2 * n], env.s_hist[:, -1].flatten(1).numpy())
    np.testing.assert_allclose(nxt[:, 2 * n:], goal)


def test_real_sim_harness_gives_the_policy_the_same_history_layout(history2_model):
    from wm_gym.imagine.real_sim import make_feature_sim
    from wm_gym.real_episodes import evaluate_policy

    model = history2_model
    n = model.n_tokens * model.dim
    policy = RecordingPolicy(model.config.action_dim)
    evaluate_policy(policy, model, episodes=2, seed=4, max_steps=3)
    first, second = policy.seen[0], policy.seen[1]
    assert first.shape == (2, 3 * n)
    np.testing.assert_array_equal(first[:, :n], first[:, n:2 * n])
    np.testing.assert_array_equal(second[:, :n], first[:, n:2 * n])
    assert not np.allclose(second[:, n:2 * n], first[:, n:2 * n])  # the dot moved
    # the single-env twin (used by bench and SB3 in the real sim) builds the same observations
    sim = make_feature_sim(model)
    obs, _ = sim.reset(seed=4)  # encoded alone, not in a batch of 2: equal up to float rounding
    np.testing.assert_allclose(obs, first[0], rtol=1e-5, atol=1e-5)
    obs, *_ = sim.step(np.full(model.config.action_dim, 0.5, np.float32))
    np.testing.assert_allclose(obs, second[0], rtol=1e-5, atol=1e-5)


def test_behaviour_cloning_pairs_and_planners_take_history_observations(history2_model):
    from wm_gym.agents.behavior_cloning import demo_pairs
    from wm_gym.agents.planners import PlannerConfig, make_planner

    model = history2_model
    n = model.n_tokens * model.dim
    obs, actions = demo_pairs(model)
    assert obs.shape == (len(actions), 3 * n)
    np.testing.assert_array_equal(obs[0, :n], obs[0, n:2 * n])
    np.testing.assert_array_equal(obs[1, :n], obs[0, n:2 * n])
    planner = make_planner("gbp", model, PlannerConfig(horizon=2, gbp_steps=2))
    chunk, _ = planner.predict(obs[:4])
    assert chunk.shape == (4, model.config.action_dim)
    torch.testing.assert_close(planner._hist, torch.as_tensor(obs[:4, :2 * n]).view(4, 2, model.n_tokens, model.dim))
    with pytest.raises(ValueError, match="2 feature frames"):
        planner.predict(obs[:4, n:])
