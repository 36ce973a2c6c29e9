"""PointMaze U-maze: protocol, success, hidden goal, camera, determinism and the expert."""
import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from wm_gym.envs.pointmaze import MAX_SPEED, SUCCESS_RADIUS, VIEW_EXTENT, WALL_CLEARANCE, PointMazeEnv
from wm_gym.envs.policies import make_policy, run_policy

ENV_ID = "wm_gym/PointMaze-UMaze-v0"
FREE = {(1, 1), (1, 2), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)}


@pytest.fixture(scope="module")
def sim():
    env = PointMazeEnv()
    yield env
    env.close()


def still(x, y):
    return np.array([x, y, 0.0, 0.0])


def pixel_of(x, y, size=64):
    """(row, col) of world point (x, y) in the orthographic top-down image."""
    col = (x / VIEW_EXTENT + 0.5) * size
    row = (0.5 - y / VIEW_EXTENT) * size
    return int(row), int(col)


def test_check_env_on_unwrapped_and_made_env():
    made = gym.make(ENV_ID)
    assert made.spec.max_episode_steps == 100
    check_env(made.unwrapped, skip_render_check=False)
    check_env(made, skip_render_check=True)  # the render check re-makes the env; done above
    made.close()


def test_spaces_and_state_layout(sim):
    assert sim.state_dim == 4 and sim.proprio_dim == 4
    assert np.array_equal(sim.action_space.low, [-1, -1]) and np.array_equal(sim.action_space.high, [1, 1])
    obs, info = sim.reset(seed=0)
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert np.array_equal(obs["proprio"], info["state"].astype(np.float32))
    assert set(sim.free_cells) == FREE


def test_set_state_is_exact(sim):
    s = np.array([0.123456789, 0.987654321, -1.25, 3.5])
    _, info = sim.reset(seed=0, options={"start_state": s, "goal_state": still(1.0, -1.0)})
    assert np.array_equal(info["state"], s)
    assert np.array_equal(sim.data.qpos, s[:2]) and np.array_equal(sim.data.qvel, s[2:])


@pytest.mark.parametrize("offset, expected", [(0.0, True), (0.49, True), (0.51, False)])
def test_success_radius_on_hand_built_states(sim, offset, expected):
    goal = np.array([0.0, 1.0, 2.0, -2.0])  # centre of cell (1, 2); the goal velocity is ignored
    _, info = sim.reset(seed=0, options={"start_state": still(offset, 1.0), "goal_state": goal})
    assert info["is_success"] is expected
    # A zero-force step from rest keeps the ball in place and reports it as termination.
    _, reward, terminated, truncated, info = sim.step(np.zeros(2, np.float32))
    assert info["is_success"] is expected and terminated is expected and reward == float(expected)
    assert not truncated
    assert abs(info["distance"] - offset) < 1e-9


def test_velocity_is_clipped_like_gymnasium_robotics(sim):
    sim.reset(seed=0, options={"start_state": np.array([0.0, 1.0, 20.0, 0.0]), "goal_state": still(1.0, -1.0)})
    _, _, _, _, info = sim.step(np.zeros(2, np.float32))
    assert info["state"][2] <= MAX_SPEED
    # ... and one step is 0.01 s: from 5 m/s the ball moves at most ~5 cm.
    assert 0.0 < info["state"][0] <= 0.051


def test_starts_and_goals_lie_in_free_cells(sim):
    sim.reset(seed=123)
    seen = set()
    for _ in range(300):
        start, goal = sim._sample_start_goal()
        for s in (start, goal):
            assert sim.cell_of(s[:2]) in FREE
            assert sim.wall_clearance(s[:2]) >= WALL_CLEARANCE
            assert np.all(np.abs(s[2:]) <= MAX_SPEED)
            seen.add(sim.cell_of(s[:2]))
        assert np.linalg.norm(start[:2] - goal[:2]) >= SUCCESS_RADIUS  # never solved at reset
        assert np.any(goal[2:] != 0)  # the goal carries a random velocity (DINO-WM)
    assert seen == FREE  # every free cell is used


def test_wall_clearance(sim):
    assert sim.wall_clearance([0.0, 0.0]) == 0.0  # centre of the middle wall block (2, 2)
    assert sim.wall_clearance([-1.0, 1.0]) == pytest.approx(0.5)  # centre of corner cell (1, 1)
    assert sim.wall_clearance([1.0, 0.0]) == pytest.approx(0.5)  # corridor cell (2, 3)


def test_goal_is_not_drawn_in_observations(sim):
    start = still(-1.0, -1.0)
    obs_a, _ = sim.reset(seed=0, options={"start_state": start, "goal_state": still(-1.0, 1.0)})
    obs_b, _ = sim.reset(seed=0, options={"start_state": start, "goal_state": still(1.0, 0.0)})
    assert np.array_equal(obs_a["pixels"], obs_b["pixels"])
    assert not np.array_equal(sim.goal_pixels, obs_b["pixels"])  # the goal image does show the ball there
    # The gymnasium-robotics goal sphere stays invisible even when it sits on the goal ...
    target = sim._robotics.target_site_id
    saved_pos = sim.model.site_pos[target].copy()
    sim.model.site_pos[target, :2] = (1.0, 0.0)
    mujoco.mj_forward(sim.model, sim.data)  # site_xpos, which the renderer draws
    try:
        assert np.array_equal(sim._render_pixels(), obs_b["pixels"])
        # ... and the check can fail: made opaque again, it shows up.
        sim.model.site_rgba[target, 3] = 0.7
        assert not np.array_equal(sim._render_pixels(), obs_b["pixels"])
    finally:
        sim.model.site_rgba[target, 3] = 0.0
        sim.model.site_pos[target] = saved_pos
        mujoco.mj_forward(sim.model, sim.data)


def test_goal_pixels_show_the_ball_at_the_goal(sim):
    goal = np.array([1.0, -1.0, 3.0, 1.0])
    obs, _ = sim.reset(seed=0, options={"start_state": still(1.0, -1.0), "goal_state": goal})
    assert np.array_equal(obs["pixels"], sim.goal_pixels)


def test_fixed_top_down_camera_shows_maze_and_ball(sim):
    obs, _ = sim.reset(seed=0, options={"start_state": still(-1.0, 1.0), "goal_state": still(1.0, -1.0)})
    img = obs["pixels"].astype(int)
    r, c = pixel_of(-1.0, 1.0)
    assert img[r, c, 1] > img[r, c, 0] + 40 and img[r, c, 1] > img[r, c, 2] + 40  # green ball
    wall = img[pixel_of(-0.5, 0.0)]  # the middle wall block
    floor = img[pixel_of(1.0, 0.0)]  # free corridor cell
    assert wall[0] > 150 and floor[0] < 100  # tan walls, dark floor
    for y in (2.2, -2.2):  # the outer wall is in view at the top and bottom edges
        assert img[pixel_of(0.0, y)][0] > 150
    # Same camera every time: a re-render and a fresh env give the identical image.
    other = PointMazeEnv()
    try:
        obs2, _ = other.reset(seed=5, options={"start_state": still(-1.0, 1.0), "goal_state": still(1.0, -1.0)})
        assert np.array_equal(obs2["pixels"], obs["pixels"])
    finally:
        other.close()


def test_random_policy_moves_the_ball(sim):
    obs, info = sim.reset(seed=3)
    policy = make_policy(sim, "random", np.random.default_rng(3))
    policy.reset(obs, info)
    path = 0.0
    for _ in range(40):
        action = policy(obs, info)
        assert sim.action_space.contains(action)
        prev = info["state"][:2]
        obs, _, _, _, info = sim.step(action)
        path += np.linalg.norm(info["state"][:2] - prev)
    assert path > 0.5


def test_noisy_expert_reaches_most_goals(sim):
    successes = [run_policy(sim, "noisy-expert", 100 + seed, np.random.default_rng(seed), 100)["is_success"]
                 for seed in range(5)]
    assert sum(successes) >= 3, successes


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_expert_goes_around_the_middle_wall(sim, seed):
    # Top corridor to bottom corridor: the straight line is blocked by the wall in between.
    start, goal = still(0.0, 1.0), still(0.0, -1.0)
    obs, info = sim.reset(seed=seed, options={"start_state": start, "goal_state": goal})
    policy = make_policy(sim, "noisy-expert", np.random.default_rng(seed))
    policy.reset(obs, info)
    visited = set()
    for _ in range(100):
        obs, _, terminated, _, info = sim.step(policy(obs, info))
        visited.add(sim.cell_of(info["state"][:2]))
        if terminated:
            break
    assert info["is_success"]
    assert (2, 3) in visited  # it went through the corridor cell, not through the wall


def test_close_is_idempotent():
    env = PointMazeEnv()
    env.reset(seed=0)
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env._render_pixels()
