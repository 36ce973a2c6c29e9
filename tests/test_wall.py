"""Wall sim: Gymnasium contract, physics (no tunnelling), rendering, policies, and the vector env."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wm_gym  # noqa: F401  (registers the ids)
from wm_gym.envs.policies import make_policy
from wm_gym.envs.wall import (
    SPAWN_CLEARANCE,
    STEP_SCALE,
    WallEnv,
    WALL_V0,
    WallGeometry,
    WallVectorEnv,
    expert_waypoint,
    goal_reached,
    render_dots,
    sample_start_goal,
    wall_step,
)

ENV_ID = "wm_gym/Wall-v0"  # these tests pin v0; tests/test_wall_v1.py covers v1
GEO = WALL_V0


def pixel_index(coord: float) -> int:
    """The 64-px image index whose centre is nearest internal coordinate ``coord``."""
    return int(round((coord + 0.5) * 64 / 65 - 0.5))


def inside_solid(pos: np.ndarray) -> np.ndarray:
    """bool [B]: strictly inside a solid piece of wall (the door excluded)."""
    in_band = (pos[:, 0] > GEO.wall_lo) & (pos[:, 0] < GEO.wall_hi)
    return in_band & ((pos[:, 1] < GEO.door_lo) | (pos[:, 1] > GEO.door_hi))


# ----- Gymnasium contract ----------------------------------------------------------------------
def test_check_env_unwrapped_and_made():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite proprio bounds / "wrapped env" advice are expected
        check_env(gym.make(ENV_ID).unwrapped)
        check_env(gym.make(ENV_ID))


def test_spaces_and_reset_info():
    env = gym.make(ENV_ID)
    assert env.spec.max_episode_steps == 50
    obs, info = env.reset(seed=0)
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert obs["proprio"].dtype == np.float32 and obs["proprio"].shape == (2,)
    np.testing.assert_allclose(obs["proprio"], info["state"], rtol=1e-6)
    assert info["state"].shape == (2,) and info["goal"].shape == (2,) and info["is_success"] is False
    assert env.unwrapped.goal_pixels.shape == (64, 64, 3)
    assert env.action_space.shape == (2,) and np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)


def test_seeded_determinism():
    def rollout(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = WallEnv(version=0)
        obs, info = env.reset(seed=seed)
        actions = np.random.default_rng(123).uniform(-1, 1, (30, 2)).astype(np.float32)
        frames, states = [obs["pixels"]], [info["state"]]
        for a in actions:
            obs, _, _, _, info = env.step(a)
            frames.append(obs["pixels"])
            states.append(info["state"])
        return np.stack(frames), np.stack(states)

    frames_a, states_a = rollout(5)
    frames_b, states_b = rollout(5)
    np.testing.assert_array_equal(frames_a, frames_b)
    np.testing.assert_array_equal(states_a, states_b)
    frames_c, states_c = rollout(6)
    assert not np.array_equal(states_a, states_c) and not np.array_equal(frames_a, frames_c)


@pytest.mark.parametrize("distance, success", [(0.0, True), (4.4, True), (4.5, False), (4.6, False)])
def test_success_radius(distance, success):
    env = WallEnv(version=0)
    goal = np.array([10.0, 20.0])
    start = goal + np.array([distance, 0.0])  # 10 + 4.5 = 14.5 exactly, so the strict "<" is tested
    _, info = env.reset(seed=0, options={"start_state": start, "goal_state": goal})
    assert info["is_success"] is success
    _, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert (info["is_success"], terminated, reward, truncated) == (success, success, float(success), False)


def test_start_and_goal_on_opposite_sides():
    env = WallEnv(version=0)
    lo, hi = GEO.margin, GEO.extent - GEO.margin
    for seed in range(300):
        _, info = env.reset(seed=seed)
        start, goal = info["state"], info["goal"]
        assert GEO.side(start[0]) == -GEO.side(goal[0]) != 0
        for p in (start, goal):
            assert np.all((p >= lo) & (p <= hi))
            assert p[0] <= GEO.wall_lo - SPAWN_CLEARANCE or p[0] >= GEO.wall_hi + SPAWN_CLEARANCE
    starts = np.array([sample_start_goal(np.random.default_rng(s), GEO)[0] for s in range(400)])
    assert 0.35 < np.mean(starts[:, 0] < GEO.wall_x) < 0.65  # both sides are used


# ----- physics: the wall can only be crossed through the door -----------------------------------
def test_hand_computed_collisions():
    face_left, face_right = GEO.wall_x - 1.5, GEO.wall_x + 1.5  # 30.5 and 33.5 with the defaults
    # Two +x steps at full speed from x=28: 28 -> 30 -> stopped at the face 30.5 (not 32).
    pos = np.array([[28.0, 10.0]])
    pos = wall_step(pos, np.array([[1.0, 0.0]]), GEO)
    np.testing.assert_allclose(pos, [[30.0, 10.0]])
    pos = wall_step(pos, np.array([[1.0, 0.0]]), GEO)
    np.testing.assert_array_equal(pos, [[face_left, 10.0]])
    # Pushing further keeps it at the face.
    np.testing.assert_array_equal(wall_step(pos, np.array([[1.0, 0.0]]), GEO), [[face_left, 10.0]])
    # From the right side, moving -x.
    np.testing.assert_array_equal(wall_step(np.array([[34.5, 60.0]]), np.array([[-1.0, 0.0]]), GEO), [[face_right, 60.0]])
    # Diagonal: contact half-way at (30.5, 11), the rest of the move slides along the face to y=12.
    np.testing.assert_allclose(wall_step(np.array([[29.5, 10.0]]), np.array([[1.0, 1.0]]), GEO), [[face_left, 12.0]])
    # Inside the door channel, moving +y stops at the door's upper edge.
    pos = np.array([[GEO.wall_x, GEO.door_center]])
    for _ in range(5):
        pos = wall_step(pos, np.array([[0.0, 1.0]]), GEO)
    np.testing.assert_array_equal(pos, [[GEO.wall_x, GEO.door_hi]])
    # Arena border clip.
    np.testing.assert_array_equal(wall_step(np.array([[4.0, 62.0]]), np.array([[-1.0, 1.0]]), GEO), [[GEO.margin, GEO.extent - GEO.margin]])


def test_max_speed_pushes_away_from_door_never_cross():
    rng = np.random.default_rng(0)
    n, steps = 4000, 10
    max_drift = steps * STEP_SCALE * 0.3  # |action_y| <= 0.3 keeps every dot far from the door
    below = rng.uniform([GEO.margin, GEO.margin], [GEO.wall_lo, GEO.door_lo - max_drift - 1], (n, 2))
    above = rng.uniform([GEO.wall_hi, GEO.door_hi + max_drift + 1], [GEO.extent - GEO.margin] * 2, (n, 2))
    for pos, push in ((below, 1.0), (above, -1.0)):
        start_side = GEO.side(pos[:, 0])
        for _ in range(steps):
            action = np.stack([np.full(n, push), rng.uniform(-0.3, 0.3, n)], -1)
            pos = wall_step(pos, action, GEO)
            assert np.all(GEO.side(pos[:, 0]) == start_side)
            assert not inside_solid(pos).any()
        face = GEO.wall_lo if push > 0 else GEO.wall_hi
        assert np.mean(pos[:, 0] == face) > 0.5  # most dots ended pressed against the face


def test_random_max_speed_walks_cross_only_through_door():
    """Every step that changes side must be a straight segment through the door gap."""
    rng = np.random.default_rng(1)
    n = 2000
    pos = np.stack([rng.uniform(GEO.margin, GEO.extent - GEO.margin, n), rng.uniform(GEO.margin, GEO.extent - GEO.margin, n)], -1)
    pos[inside_solid(pos), 0] = GEO.margin  # start outside the wall
    crossings = 0
    for _ in range(60):
        speed = np.where(rng.random((n, 2)) < 0.7, 1.0, rng.random((n, 2)))  # mostly max speed
        action = np.sign(rng.uniform(-1, 1, (n, 2))) * speed
        new = wall_step(pos, action, GEO)
        assert not inside_solid(new).any()
        assert np.all(np.linalg.norm(new - pos, axis=-1) <= STEP_SCALE * np.sqrt(2) + 1e-9)
        crossed = GEO.side(new[:, 0]) * GEO.side(pos[:, 0]) < 0
        old, nxt = pos[crossed], new[crossed]
        for x in (GEO.wall_lo, GEO.wall_hi):  # where the step's segment meets each face of the band
            passes = (np.minimum(old[:, 0], nxt[:, 0]) <= x) & (x <= np.maximum(old[:, 0], nxt[:, 0]))
            y_at = old[:, 1] + (x - old[:, 0]) / (nxt[:, 0] - old[:, 0]) * (nxt[:, 1] - old[:, 1])
            assert np.all((y_at[passes] >= GEO.door_lo) & (y_at[passes] <= GEO.door_hi))
        crossings += crossed.sum()
        pos = new
    assert crossings > 20  # the property was actually exercised


def test_straight_path_through_door_crosses():
    env = WallEnv(version=0)
    _, info = env.reset(seed=0, options={"start_state": [20.0, GEO.door_center], "goal_state": [50.0, 10.0]})
    for _ in range(10):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(info["state"], [40.0, GEO.door_center])
    # The same push 10 px below the door is stopped at the face.
    env.reset(seed=0, options={"start_state": [20.0, GEO.door_lo - 10], "goal_state": [50.0, 10.0]})
    for _ in range(10):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    np.testing.assert_array_equal(info["state"], [GEO.wall_lo, GEO.door_lo - 10])


def test_geometry_kwargs_move_the_door():
    env = WallEnv(version=0, door_center=15.0, door_width=10.0, wall_x=30.0)
    env.reset(seed=0, options={"start_state": [20.0, 15.0], "goal_state": [50.0, 15.0]})
    for _ in range(10):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    assert info["state"][0] == 40.0
    env.reset(seed=0, options={"start_state": [20.0, 44.0], "goal_state": [50.0, 15.0]})  # old door is now wall
    for _ in range(10):
        _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    assert info["state"][0] == 30.0 - 1.5
    with pytest.raises(ValueError):
        WallEnv(version=0, wall_x=2.0)
    with pytest.raises(ValueError):
        WallEnv(version=0, door_width=0.0)


# ----- pixels ----------------------------------------------------------------------------------
def test_pixels_dot_wall_and_no_goal():
    env = WallEnv(version=0)
    start, goal = np.array([12.0, 20.0]), np.array([50.0, 40.0])
    obs, _ = env.reset(seed=0, options={"start_state": start, "goal_state": goal})
    img = obs["pixels"].astype(int)
    redness = img[..., 0] - img[..., 1]
    row, col = np.unravel_index(redness.argmax(), redness.shape)
    assert abs(row - pixel_index(start[1])) <= 1 and abs(col - pixel_index(start[0])) <= 1
    assert img[row, col, 0] > 200
    # Wall: grey in the wall's column outside the door, dark in the door gap and elsewhere.
    wall_col = pixel_index(GEO.wall_x)
    for y in (5.0, 25.0, 60.0):
        assert np.all(img[pixel_index(y), wall_col] > 100)
        assert img[pixel_index(y), wall_col, 0] == img[pixel_index(y), wall_col, 1] == img[pixel_index(y), wall_col, 2]
    assert np.all(img[pixel_index(GEO.door_center), wall_col] < 10)
    assert np.all(img[pixel_index(5.0), pixel_index(5.0)] < 10)
    # No goal marker: dark around the goal, and the frame doesn't depend on the goal at all.
    gr, gc = pixel_index(goal[1]), pixel_index(goal[0])
    assert img[gr - 2 : gr + 3, gc - 2 : gc + 3].max() < 10
    other, _ = env.reset(seed=0, options={"start_state": start, "goal_state": [55.0, 10.0]})
    np.testing.assert_array_equal(obs["pixels"], other["pixels"])
    # goal_pixels shows the dot at the goal.
    env.reset(seed=0, options={"start_state": start, "goal_state": goal})
    np.testing.assert_array_equal(env.goal_pixels, render_dots(goal[None], GEO)[0])
    assert env.goal_pixels[gr, gc, 0] > 200


def test_render_matches_obs():
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=4)
    np.testing.assert_array_equal(env.render(), obs["pixels"])


# ----- policies ----------------------------------------------------------------------------------
def _run_policy(kind: str, episodes: int, seed: int = 100) -> tuple[float, float]:
    """(fraction of episodes whose dot changed side, fraction that reached the goal) in 50 steps."""
    env = WallEnv(version=0)
    policy = make_policy(env, kind, np.random.default_rng(seed))
    crossed = reached = 0
    for episode in range(episodes):
        obs, info = env.reset(seed=seed + episode)
        policy.reset(obs, info)
        start_side, changed = GEO.side(info["state"][0]), False
        for _ in range(50):
            action = policy(obs, info)
            assert env.action_space.contains(action)
            obs, _, terminated, _, info = env.step(action)
            changed |= bool(GEO.side(info["state"][0]) == -start_side)
            if terminated:
                break
        crossed += changed
        reached += bool(terminated)
    return crossed / episodes, reached / episodes


def test_random_policy_crosses_door():
    crossed, _ = _run_policy("random", 200)
    assert crossed >= 0.1, crossed  # measured 0.15 on these seeds (rho=0.95, sigma=1.0; white noise ≈ 0.04)


def test_noisy_expert_reaches_goal():
    crossed, reached = _run_policy("noisy-expert", 40)
    assert crossed >= 0.9 and reached >= 0.8, (crossed, reached)


def test_expert_waypoints():
    mouth_x, exit_x = GEO.wall_lo - SPAWN_CLEARANCE, GEO.wall_hi + SPAWN_CLEARANCE
    pos = np.array([[10.0, 10.0], [10.0, GEO.door_center + 1], [50.0, 10.0]])
    goal = np.array([[50.0, 10.0], [50.0, 10.0], [55.0, 20.0]])
    np.testing.assert_allclose(expert_waypoint(pos, goal, GEO), [[mouth_x, GEO.door_center], [exit_x, GEO.door_center], [55.0, 20.0]])


# ----- the vector env ----------------------------------------------------------------------------
def _mixed_actions(rng: np.random.Generator, info: dict) -> np.ndarray:
    """Even rows head for the goal (so episodes terminate), odd rows act at random."""
    target = expert_waypoint(info["state"], info["goal"], GEO)
    toward = np.clip((target - info["state"]) / STEP_SCALE, -1, 1)
    actions = np.where((np.arange(len(toward)) % 2 == 0)[:, None], toward, rng.uniform(-1, 1, toward.shape))
    return actions.astype(np.float32)


def test_vector_matches_single_envs_step_by_step():
    n, seed = 4, 11
    venv = WallVectorEnv(num_envs=n, version=0)
    singles = [gym.make(ENV_ID) for _ in range(n)]  # TimeLimit(50), as the vector env truncates
    obs, info = venv.reset(seed=seed)
    single_out = [env.reset(seed=seed + i) for i, env in enumerate(singles)]
    done = np.zeros(n, bool)
    rng = np.random.default_rng(0)
    saw_terminated = saw_truncated = False
    for t in range(130):
        for i, (s_obs, s_info) in enumerate(single_out):
            np.testing.assert_array_equal(obs["pixels"][i], s_obs["pixels"], err_msg=f"step {t} row {i}")
            np.testing.assert_array_equal(obs["proprio"][i], s_obs["proprio"])
            np.testing.assert_array_equal(info["state"][i], s_info["state"])
            np.testing.assert_array_equal(info["goal"][i], s_info["goal"])
            np.testing.assert_array_equal(venv.goal[i], singles[i].unwrapped.goal)
            np.testing.assert_array_equal(venv.goal_pixels[i], singles[i].unwrapped.goal_pixels)
            assert info["is_success"][i] == s_info["is_success"]
        actions = _mixed_actions(rng, info)
        obs, reward, terminated, truncated, info = venv.step(actions)
        single_out = []
        for i, env in enumerate(singles):
            if done[i]:  # NEXT_STEP: this step is the reset of row i
                single_out.append(env.reset())
                assert (reward[i], terminated[i], truncated[i]) == (0.0, False, False)
            else:
                s_obs, s_reward, s_term, s_trunc, s_info = env.step(actions[i])
                single_out.append((s_obs, s_info))
                assert (reward[i], terminated[i], truncated[i]) == (s_reward, s_term, s_trunc), f"step {t} row {i}"
        done = terminated | truncated
        saw_terminated |= terminated.any()
        saw_truncated |= truncated.any()
    assert saw_terminated and saw_truncated  # both autoreset paths were exercised


def test_autoreset_next_step():
    venv = WallVectorEnv(num_envs=2, max_episode_steps=3, version=0)
    goal = np.array([[10.0, 10.0], [50.0, 50.0]])
    obs, info = venv.reset(seed=3, options={"start_state": goal + [[0.0, 3.0], [20.0, 0.0]], "goal_state": goal})
    # Row 0 is within the success radius: it terminates on the first step.
    obs, reward, terminated, truncated, info = venv.step(np.zeros((2, 2), np.float32))
    np.testing.assert_array_equal(terminated, [True, False])
    np.testing.assert_array_equal(reward, [1.0, 0.0])
    # Next step: row 0 restarts (reward 0, not done, fresh start and goal from its own stream).
    obs, reward, terminated, truncated, info = venv.step(np.ones((2, 2), np.float32))
    single = WallEnv(version=0)
    single.reset(seed=3)
    _, fresh = single.reset()
    np.testing.assert_array_equal(info["state"][0], fresh["state"])
    np.testing.assert_array_equal(info["goal"][0], fresh["goal"])
    assert (reward[0], terminated[0], truncated[0]) == (0.0, False, False)
    np.testing.assert_array_equal(obs["pixels"][0], render_dots(fresh["state"][None], GEO)[0])
    assert venv.steps[0] == 0
    # Row 1 truncates at step 3 and restarts at step 4.
    obs, reward, terminated, truncated, info = venv.step(np.zeros((2, 2), np.float32))
    np.testing.assert_array_equal(truncated, [False, True])
    obs, reward, terminated, truncated, info = venv.step(np.zeros((2, 2), np.float32))
    assert (reward[1], terminated[1], truncated[1]) == (0.0, False, False) and venv.steps[1] == 0


def test_make_vec_entry_point_and_sync_agree():
    venv = gym.make_vec(ENV_ID, num_envs=8)
    assert isinstance(venv, WallVectorEnv)
    assert venv.max_episode_steps == 50 and venv.num_envs == 8
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, info = venv.reset(seed=2)
    assert venv.observation_space.contains(obs)
    assert obs["pixels"].shape == (8, 64, 64, 3) and obs["proprio"].shape == (8, 2)
    assert venv.goal.shape == (8, 2) and venv.goal_pixels.shape == (8, 64, 64, 3)
    assert info["is_success"].dtype == bool and info["is_success"].shape == (8,)
    assert venv.single_action_space.shape == (2,) and venv.action_space.shape == (8, 2)
    # Same seeding rule (seed + i) as Gymnasium's SyncVectorEnv, so both modes agree.
    sync = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode="sync")
    sync_obs, _ = sync.reset(seed=2)
    np.testing.assert_array_equal(obs["pixels"], sync_obs["pixels"])
    for _ in range(5):
        actions = venv.action_space.sample()
        obs, reward, *_ = venv.step(actions)
        sync_obs, sync_reward, *_ = sync.step(actions)
        np.testing.assert_array_equal(obs["proprio"], sync_obs["proprio"])
        np.testing.assert_array_equal(reward, sync_reward)
    assert venv.render().shape == (8, 64, 64, 3)
    venv.close()
    sync.close()
    assert gym.make_vec(ENV_ID, num_envs=3, max_episode_steps=7, door_center=20.0).geometry.door_center == 20.0


def test_vector_rejects_bad_actions_and_states():
    venv = WallVectorEnv(num_envs=8, version=0)
    venv.reset(seed=0)
    for bad in (np.zeros((8, 3)), np.zeros((2,)), np.zeros((7, 2))):
        with pytest.raises(ValueError, match=r"\(8, 2\)"):
            venv.step(bad)
    nan = np.zeros((8, 2))
    nan[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"\(8, 2\)"):
        venv.step(nan)
    with pytest.raises(ValueError, match=r"\(2,\)"):
        WallEnv(version=0).step(np.zeros(3))
    with pytest.raises(ValueError, match="start_state"):
        venv.reset(options={"start_state": np.zeros((3, 2))})
    with pytest.raises(gym.error.ResetNeeded):
        WallVectorEnv(num_envs=2, version=0).step(np.zeros((2, 2)))


def test_vector_seeding_rules():
    a, b = WallVectorEnv(num_envs=3, version=0), WallVectorEnv(num_envs=3, version=0)
    _, info_a = a.reset(seed=40)
    _, info_b = b.reset(seed=[40, 41, 42])
    np.testing.assert_array_equal(info_a["state"], info_b["state"])
    # Rows are independent streams, and seed=None continues them like WallEnv.reset() does.
    assert not np.array_equal(info_a["state"][0], info_a["state"][1])
    _, again = a.reset()
    single = WallEnv(version=0)
    single.reset(seed=41)
    np.testing.assert_array_equal(again["state"][1], single.reset()[1]["state"])


def test_goal_reached_is_batched():
    pos = np.array([[0.0, 0.0], [4.49, 0.0], [0.0, 4.5]])
    np.testing.assert_array_equal(goal_reached(pos, np.zeros((3, 2))), [True, True, False])
