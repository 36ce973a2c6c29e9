"""Wall-v1: DINO-WM's DotWall, checked against hand-computed cases of its collision rules.

Every expected position below is worked out by hand from DINO-WM's ``check_wall_intersect``
(wall solid on x in [29, 35], door y in [26, 34], borders at 4 and 60, pos += 2a, a contact
is pushed back 0.5 px along the wall's normal and +0.5 px along the other axis).
"""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wm_gym  # noqa: F401  (registers the ids)
from wm_gym.data.collect import rollout
from wm_gym.envs.wall import WALL_V1, WallEnv, WallVectorEnv, render_dots, sample_start_goal, wall_step

ENV_ID = "wm_gym/Wall-v1"
G = WALL_V1


def step(pos, action, geometry=G):
    return wall_step(np.array([pos], np.float64), np.array([action], np.float64), geometry)[0]


def test_short_name_is_v1_and_check_env_passes():
    assert wm_gym.envs.resolve_env_id("wall") == ENV_ID
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(gym.make(ENV_ID).unwrapped)
    assert gym.make(ENV_ID).spec.max_episode_steps == 50


def test_layout_is_dino_wm():
    assert (G.wall_lo, G.wall_hi, G.door_lo, G.door_hi) == (29.0, 35.0, 26.0, 34.0)
    assert (G.margin, G.extent - G.margin) == (4.0, 60.0)
    (lx0, lx1), (rx0, rx1), (y0, y1) = G.spawn_ranges()
    np.testing.assert_allclose([lx0, lx1, rx0, rx1, y0, y1], [7.4, 25.6, 38.4, 56.6, 7.4, 56.6])


def test_free_moves_are_two_pixels_per_unit_and_unclipped_by_the_arena():
    np.testing.assert_allclose(step([10.0, 10.0], [1.0, -0.5]), [12.0, 9.0])
    np.testing.assert_allclose(step([20.0, 50.0], [-1.0, 1.0]), [18.0, 52.0])


def test_hits_on_the_middle_wall_stop_and_push_back_without_sliding():
    # Right into the left face at y=10: contact (29, 10), pushed to (28.5, 10.5).
    np.testing.assert_allclose(step([27.5, 10.0], [1.0, 0.0]), [28.5, 10.5])
    # Diagonal: contact at x=29 is at y = 40 + 0.5 * (-1) = 39.5; no sliding along the face, so
    # the y move is lost except for the +0.5 push: (28.5, 40.0).
    np.testing.assert_allclose(step([28.5, 40.0], [1.0, -1.0]), [28.5, 40.0])
    # From the right room, moving left into the right face at y=50: (35, 50) -> (35.5, 50.5).
    np.testing.assert_allclose(step([36.5, 50.0], [-1.0, 0.0]), [35.5, 50.5])
    # Pushing on keeps it off the wall, creeping +0.5 px in y per step, exactly as DINO-WM does.
    pos = np.array([28.5, 10.0])
    for k in range(1, 4):
        pos = step(pos, [1.0, 0.0])
        np.testing.assert_allclose(pos, [28.5, 10.0 + 0.5 * k])


def test_the_door_lets_a_crossing_pass_and_its_edges_stop_vertical_moves():
    np.testing.assert_allclose(step([28.0, 30.0], [1.0, 0.0]), [30.0, 30.0])  # into the door
    pos = np.array([24.0, 30.0])
    for _ in range(8):
        pos = step(pos, [1.0, 0.0])
    np.testing.assert_allclose(pos, [40.0, 30.0])  # straight through
    # Inside the door, moving up across its top edge (y=34) at x=32: (32.5, 33.5).
    np.testing.assert_allclose(step([32.0, 33.0], [0.0, 1.0]), [32.5, 33.5])
    # ... and down across its bottom edge: (30, 27) -> (30.5, 25) meets y=26 half-way, at x=30.25,
    # and is pushed to (30.75, 26.5).
    np.testing.assert_allclose(step([30.0, 27.0], [0.25, -1.0]), [30.75, 26.5])
    # A crossing whose segment meets the face at y = 35 (outside the door) is stopped: contact (29, 35).
    np.testing.assert_allclose(step([28.0, 36.0], [1.0, -1.0]), [28.5, 35.5])
    # The door edge is inclusive: meeting the face exactly at y = 34 passes.
    np.testing.assert_allclose(step([28.0, 35.0], [1.0, -1.0]), [30.0, 33.0])


def test_border_walls_push_back_inside():
    np.testing.assert_allclose(step([5.0, 30.0], [-1.0, 0.0]), [4.5, 30.5])   # left border x=4
    np.testing.assert_allclose(step([20.0, 5.0], [0.0, -1.0]), [20.5, 4.5])   # top border y=4
    np.testing.assert_allclose(step([59.0, 40.0], [1.0, 0.0]), [59.5, 40.5])  # right border x=60
    np.testing.assert_allclose(step([40.0, 59.5], [0.0, 1.0]), [40.5, 59.5])  # bottom border y=60
    # A corner: both the left border and the top border are met; the nearer contact wins.
    # From (5, 4.6) by (-2, -2): the top line y=4 is met at x=4.4 (0.85 px away), the left line
    # x=4 at y=3.6 (1.41 px away): the top wins, pushed to (4.9, 4.5).
    np.testing.assert_allclose(step([5.0, 4.6], [-1.0, -1.0]), [4.9, 4.5])


def test_random_walks_never_enter_the_wall_and_cross_only_through_the_door():
    rng = np.random.default_rng(0)
    n = 3000
    pos = np.concatenate([rng.uniform([5, 5], [28, 59], (n // 2, 2)), rng.uniform([36, 5], [59, 59], (n // 2, 2))])
    crossings = 0
    for _ in range(80):
        action = np.sign(rng.uniform(-1, 1, (n, 2))) * np.where(rng.random((n, 2)) < 0.7, 1.0, rng.random((n, 2)))
        new = wall_step(pos, action, G)
        in_band = (new[:, 0] > G.wall_lo) & (new[:, 0] < G.wall_hi)
        assert not (in_band & ((new[:, 1] < G.door_lo) | (new[:, 1] > G.door_hi))).any()
        assert np.all((new > G.margin) & (new < G.extent - G.margin))
        crossed = np.sign(new[:, 0] - G.wall_x) * np.sign(pos[:, 0] - G.wall_x) < 0
        assert np.all((new[crossed, 1] >= G.door_lo - 2) & (new[crossed, 1] <= G.door_hi + 2))
        crossings += crossed.sum()
        pos = new
    assert crossings > 20


def test_starts_and_goals_in_opposite_rooms_within_dino_wm_ranges():
    (lx0, lx1), (rx0, rx1), (y0, y1) = G.spawn_ranges()
    pairs = [sample_start_goal(np.random.default_rng(s), G) for s in range(400)]
    starts, goals = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    for pts in (starts, goals):
        left = pts[:, 0] < G.wall_x
        assert np.all(np.where(left, (pts[:, 0] >= lx0) & (pts[:, 0] <= lx1), (pts[:, 0] >= rx0) & (pts[:, 0] <= rx1)))
        assert np.all((pts[:, 1] >= y0) & (pts[:, 1] <= y1))
    assert np.all((starts[:, 0] < G.wall_x) != (goals[:, 0] < G.wall_x))
    assert 0.4 < np.mean(starts[:, 0] < G.wall_x) < 0.6


def test_pixels_white_floor_black_walls_and_borders_dot_hidden_by_wall():
    img = render_dots(np.array([[15.0, 45.0]]), G)[0]
    index = lambda c: int(round((c + 0.5) * 64 / 65 - 0.5))  # noqa: E731
    assert tuple(img[index(15), index(50)]) == (255, 255, 255)  # floor
    assert tuple(img[index(45), index(32)]) == (0, 0, 0)         # solid wall
    assert tuple(img[index(30), index(32)]) == (255, 255, 255)  # the door
    assert img[index(45), index(15), 0] == 255 and img[index(45), index(15), 1] < 30  # the red dot
    assert img[index(4), 20].max() < 200 and img[20, index(60)].max() < 200  # border lines
    behind = render_dots(np.array([[32.0, 45.0]]), G)[0]  # a dot drawn on the wall stays hidden
    np.testing.assert_array_equal(behind[index(45), index(32)], [0, 0, 0])


def test_door_center_is_a_reset_option_and_a_constructor_argument():
    env = WallEnv()
    env.reset(seed=0, options={"door_center": 50.0, "start_state": [27.0, 50.0], "goal_state": [50.0, 50.0]})
    _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(info["state"], [29.0, 50.0])  # through the moved door
    env.reset(seed=0, options={"start_state": [27.0, 30.0], "goal_state": [50.0, 50.0]})  # door stays at 50
    _, _, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    np.testing.assert_allclose(info["state"], [28.5, 30.5])  # the old door is wall now
    assert WallEnv(door_center=20.0).geometry.door_center == 20.0
    assert gym.make_vec(ENV_ID, num_envs=2, door_center=20.0).geometry == WallEnv(door_center=20.0).geometry


def test_vector_env_matches_single_env():
    n = 4
    venv = WallVectorEnv(num_envs=n)
    singles = [WallEnv() for _ in range(n)]
    obs, info = venv.reset(seed=3)
    for i, env in enumerate(singles):
        o, inf = env.reset(seed=3 + i)
        np.testing.assert_array_equal(obs["pixels"][i], o["pixels"])
    rng = np.random.default_rng(0)
    for _ in range(20):
        actions = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
        obs, _, term, _, info = venv.step(actions)
        for i, env in enumerate(singles):
            o, _, t, _, inf = env.step(actions[i])
            np.testing.assert_allclose(info["state"][i], inf["state"])
            if t:
                break


def test_noisy_expert_reaches_goals_through_the_door():
    episodes = [rollout(WallEnv(), "noisy-expert", seed=0, index=i, steps=50) for i in range(20)]
    assert sum(ep.success.any() for ep in episodes) >= 18
    crossed = [np.sign(ep.states[0, 0] - G.wall_x) != np.sign(ep.states[-1, 0] - G.wall_x) for ep in episodes]
    assert sum(crossed) >= 18


def test_bad_geometry_and_version_raise():
    with pytest.raises(ValueError, match="version"):
        WallEnv(version=2)
    with pytest.raises(ValueError):
        WallEnv(wall_x=10.0)
