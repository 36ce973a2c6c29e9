"""The contract every real sim shares (envs/goal_env.py), checked on all five ids at once."""
import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from wm_gym.data.collect import rollout
from wm_gym.envs import SIMS, resolve_env_id, sim_name, sim_spec
from wm_gym.envs.action_chunk import ActionChunk

IDS = [spec.env_id for spec in SIMS.values()]


@pytest.fixture(params=IDS)
def env(request):
    env = gym.make(request.param)
    yield env
    env.close()


def test_make_all_ids_and_obs_contract(env):
    obs, info = env.reset(seed=3)
    sim = env.unwrapped
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].shape == (sim.proprio_dim,)
    assert env.observation_space.contains(obs)
    assert info["state"].shape == (sim.state_dim,) and sim.goal.shape == (sim.state_dim,)
    assert np.array_equal(info["goal"], sim.goal)
    assert sim.goal_pixels.shape == (64, 64, 3) and sim.goal_pixels.dtype == np.uint8
    assert isinstance(info["is_success"], bool)
    assert env.render().shape == (64, 64, 3)
    assert env.spec.max_episode_steps == next(s for s in SIMS.values() if s.env_id == env.spec.id).max_episode_steps


def test_check_env_passes(env):
    check_env(env.unwrapped, skip_render_check=False)


def test_seeded_reset_is_deterministic(env):
    obs_a, info_a = env.reset(seed=11)
    goal_a = env.unwrapped.goal_pixels.copy()
    obs_b, info_b = env.reset(seed=11)
    assert np.array_equal(obs_a["pixels"], obs_b["pixels"])
    assert np.array_equal(info_a["state"], info_b["state"]) and np.array_equal(info_a["goal"], info_b["goal"])
    assert np.array_equal(goal_a, env.unwrapped.goal_pixels)
    _, info_c = env.reset(seed=12)
    assert not np.array_equal(info_a["state"], info_c["state"])


def test_seeded_policy_rollouts_are_deterministic(env):
    a, b = (rollout(env, "random", seed=7, index=0, steps=12) for _ in range(2))
    other = rollout(env, "random", seed=8, index=0, steps=12)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.states, b.states)
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.goal_pixels, b.goal_pixels)
    assert not np.array_equal(a.states, other.states)
    assert not np.array_equal(a.states[1], a.states[-1])  # the random policy moves something


@pytest.mark.parametrize("bad", ["shape", "nan", "inf", "dtype"])
def test_bad_actions_raise_clear_errors(env, bad):
    env.reset(seed=0)
    shape = env.action_space.shape
    action = {
        "shape": np.zeros(shape[0] + 1, np.float32),
        "nan": np.full(shape, np.nan, np.float32),
        "inf": np.full(shape, np.inf, np.float32),
        "dtype": np.array(["a"] * shape[0]),
    }[bad]
    with pytest.raises(ValueError, match=rf"shape \({shape[0]},\)"):
        env.step(action)


def test_bad_hand_built_state_raises(env):
    with pytest.raises(ValueError, match="start_state"):
        env.reset(seed=0, options={"start_state": np.zeros(env.unwrapped.state_dim + 1)})


@pytest.mark.parametrize("env_id", IDS)
def test_action_chunk_equals_stepping_the_sim(env_id):
    frameskip = 5
    chunked, plain = ActionChunk(gym.make(env_id), frameskip), gym.make(env_id)
    assert chunked.action_space.shape == (frameskip * plain.action_space.shape[0],)
    chunked.reset(seed=5)
    plain.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(3):
        chunk = rng.uniform(chunked.action_space.low, chunked.action_space.high).astype(np.float32)
        obs_c, rew_c, term_c, trunc_c, info_c = chunked.step(chunk)
        rew_p = 0.0
        for sim_action in chunk.reshape(frameskip, -1):
            obs_p, r, term_p, trunc_p, info_p = plain.step(sim_action)
            rew_p += r
            if term_p or trunc_p:
                break
        assert np.array_equal(obs_c["pixels"], obs_p["pixels"])
        np.testing.assert_allclose(info_c["state"], info_p["state"])
        assert (rew_c, term_c, trunc_c) == (rew_p, term_p, trunc_p)
        if term_c or trunc_c:
            break
    chunked.close()
    plain.close()


def test_action_chunk_rejects_a_single_sim_action():
    env = ActionChunk(gym.make("wm_gym/Wall-v1"), frameskip=5)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(10,\) in \[-1, 1\]"):
        env.step(np.zeros(2, np.float32))


def test_names_resolve_and_unknown_names_raise():
    assert resolve_env_id("wall") == "wm_gym/Wall-v1"  # short names are the DINO-WM parity versions
    assert resolve_env_id("pointmaze") == "wm_gym/PointMaze-UMaze-v1" and resolve_env_id("pusht") == "wm_gym/PushT-v1"
    assert resolve_env_id("wm_gym/PushT-v0") == "wm_gym/PushT-v0"  # older versions stay registered by id
    assert sim_name("wm_gym/Wall-v0") == sim_name("wm_gym/Wall-v1") == "wall"
    assert sim_spec("wm_gym/Wall-v0").kwargs == (("version", 0),) and sim_spec("wall").kwargs == (("version", 1),)
    assert sim_name("wm_gym/DMC-reacher-easy-v0") == "dmc-reacher"
    with pytest.raises(ValueError, match="unknown env 'mars'.*wall"):
        resolve_env_id("mars")


def test_string_entry_point_forms_and_no_torch_in_envs():
    # `import wm_gym` registers ids; the sims themselves never import torch (layering rule).
    code = (
        "import sys, gymnasium as gym, wm_gym\n"
        "gym.make('wm_gym/Wall-v1').reset(seed=0)\n"
        "gym.make('wm_gym:wm_gym/Wall-v0')\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("close", [False, True], ids=["left-open", "closed"])
def test_mujoco_sims_exit_without_egl_errors(close):
    """A PointMaze renderer made before a DMC env (whose dm_control import registers its own
    eglTerminate) must still be freed before the EGL display goes, with or without close()."""
    code = (
        "import wm_gym, gymnasium as gym\n"
        "envs = [gym.make('wm_gym/PointMaze-UMaze-v1'), gym.make('wm_gym/DMC-point_mass-easy-v0')]\n"
        "for e in envs:\n"
        "    e.reset(seed=0)\n"
        "    assert e.render().shape == (64, 64, 3)\n"
        + ("for e in envs:\n    e.close()\n" if close else "")
    )
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MUJOCO_GL": "egl"})
    assert proc.returncode == 0, proc.stderr
    assert "EGLError" not in proc.stderr and "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, \
        proc.stderr
