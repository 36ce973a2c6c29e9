"""PointMaze U-maze, v1 (DINO-WM parity) and v0 (wm-gym's first): physics, sampling, success,
camera, determinism and the collection policies.

Hand-computed values come from DINO-WM's public code (``env/pointmaze/maze_model.py``,
``env/pointmaze/point_maze_wrapper.py``, ``plan.py``, ``conf/plan_point_maze.yaml``).
"""
import math
import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env

from wm_gym.envs.pointmaze import (MAX_SPEED, SUCCESS_RADIUS, VIEW_EXTENT, WALL_CLEARANCE, PointMazeEnv,
                                   PointMazeRandomPolicy)
from wm_gym.envs.policies import make_policy, run_policy

FREE = {(1, 1), (1, 2), (1, 3), (2, 3), (3, 1), (3, 2), (3, 3)}
#: The D4RL ball: a 0.1 m sphere of density 1000, joints damped 1, motors of gear 100, 0.01 s steps.
BALL_MASS = 1000 * 4 / 3 * math.pi * 0.1**3
DT = 0.01
#: DINO-WM evaluates 50 pairs with seeds 99·n + 1 (plan.py: seed 99, n_evals 50).
DINO_WM_EVAL_SEEDS = [99 * n + 1 for n in range(50)]


@pytest.fixture(scope="module")
def sim1():
    env = PointMazeEnv(version=1)
    yield env
    env.close()


@pytest.fixture(scope="module")
def sim0():
    env = PointMazeEnv(version=0)
    yield env
    env.close()


@pytest.fixture(scope="module", params=[0, 1])
def sim(request, sim0, sim1):
    return {0: sim0, 1: sim1}[request.param]


def still(x, y):
    return np.array([x, y, 0.0, 0.0])


def cell_xy(sim, row, col):
    """Hand-written cell centres: v1 in D4RL grid coordinates, v0 centred (gymnasium-robotics)."""
    return (row - 0.2, col - 0.2) if sim.version == 1 else (col - 2.0, 2.0 - row)


def dino_wm_pair(seed):
    """DINO-WM's ``sample_random_init_goal_states`` for one env, written out from its rules."""
    rs = np.random.RandomState(seed)

    def state():
        while True:
            x, y = rs.uniform(0.5, 3.1), rs.uniform(0.5, 3.1)
            if ((0.5 <= x <= 1.1 or 2.5 <= x <= 3.1) and 0.5 <= y <= 3.1) or (1.1 < x < 2.5 and 2.5 <= y <= 3.1):
                break
        return np.array([x, y, rs.uniform(-5.2262554, 5.2262554), rs.uniform(-5.2262554, 5.2262554)])

    return state(), state()


# ----- the Gymnasium contract ------------------------------------------------------------------
@pytest.mark.parametrize("version", [0, 1])
def test_check_env(version):
    env = PointMazeEnv(version=version)
    check_env(env, skip_render_check=False)
    env.close()
    # With a spec, check_env also asserts that seeded resets and steps are deterministic.
    made = gym.make(EnvSpec(f"test/PointMaze-v{version}", entry_point="wm_gym.envs.pointmaze:PointMazeEnv",
                            kwargs={"version": version}, max_episode_steps=100))
    check_env(made, skip_render_check=True)  # the render check re-makes the env; done above
    made.close()


def test_registered_ids_pick_the_version():
    for env_id, version in (("wm_gym/PointMaze-UMaze-v1", 1), ("wm_gym/PointMaze-UMaze-v0", 0)):
        made = gym.make(env_id)
        assert made.spec.max_episode_steps == 100 and made.unwrapped.version == version
        made.close()


def test_unknown_version_is_rejected():
    with pytest.raises(ValueError, match="version must be one of"):
        PointMazeEnv(version=2)


def test_spaces_and_state_layout(sim):
    assert sim.state_dim == 4 and sim.proprio_dim == 4
    assert np.array_equal(sim.action_space.low, [-1, -1]) and np.array_equal(sim.action_space.high, [1, 1])
    obs, info = sim.reset(seed=0)
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert obs["proprio"].dtype == np.float32 and info["state"].shape == (4,)
    assert np.array_equal(obs["proprio"], info["state"].astype(np.float32))
    assert set(sim.free_cells) == FREE
    assert sim.metadata["render_fps"] == {0: 100, 1: 20}[sim.version]


def test_set_state_is_exact(sim):
    s = np.array([0.723456789, 0.987654321, -1.25, 3.5])
    _, info = sim.reset(seed=0, options={"start_state": s, "goal_state": still(*cell_xy(sim, 3, 3))})
    assert np.array_equal(info["state"], s)
    assert np.array_equal(sim.data.qpos, s[:2]) and np.array_equal(sim.data.qvel, s[2:])


def test_the_module_does_not_import_torch():
    code = "import sys, wm_gym.envs.pointmaze; sys.exit(int('torch' in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ----- v1 physics: D4RL maze2d with frame_skip 5 ---------------------------------------------------
def test_v1_model_is_d4rl_maze2d(sim1):
    m = sim1.model
    assert m.opt.timestep == DT and m.opt.integrator == mujoco.mjtIntegrator.mjINT_EULER
    assert np.array_equal(m.opt.gravity, [0, 0, 0]) and m.opt.iterations == 20
    assert m.nq == 2 and m.body_mass[1] == pytest.approx(BALL_MASS, rel=1e-12)
    assert np.array_equal(m.dof_damping, [1, 1]) and np.array_equal(m.actuator_gear[:, 0], [100, 100])
    assert np.array_equal(m.actuator_ctrlrange, [[-1, 1], [-1, 1]])
    ball = m.geom("particle_geom")
    assert ball.size[0] == 0.1 and ball.condim[0] == 1 and ball.margin[0] == 0.002
    # Walls sit at world (row + 1, col + 1) and the ball body at (1.2, 1.2): in joint (state)
    # coordinates wall (row, col) is centred at (row - 0.2, col - 0.2).
    walls = {tuple(map(int, name.split("_")[1:])): m.geom(name) for name in
             (m.geom(i).name for i in range(m.ngeom)) if name.startswith("wall_")}
    assert set(walls) == {(r, c) for r in range(5) for c in range(5)} - FREE
    for (r, c), g in walls.items():
        assert np.allclose(g.pos, [r + 1, c + 1, 0]) and np.allclose(g.size, [0.5, 0.5, 0.2])
        assert np.allclose(sim1.cell_center((r, c)), np.array([r + 1, c + 1]) - m.body_pos[1][:2])
    assert m.nsite == 1  # only the ball's site: D4RL's target marker is never drawn


def test_v1_takes_five_substeps_per_step(sim1):
    sim1.reset(seed=0, options={"start_state": still(0.8, 0.8), "goal_state": still(2.8, 2.8)})
    assert sim1.data.time == 0.0
    for k in range(1, 4):
        sim1.step(np.array([0.3, 0.2], np.float32))
        assert sim1.data.time == pytest.approx(5 * DT * k, abs=1e-12)


def test_v0_takes_one_substep_per_step(sim0):
    sim0.reset(seed=0, options={"start_state": still(-1.0, 1.0), "goal_state": still(1.0, -1.0)})
    for k in range(1, 4):
        sim0.step(np.array([0.3, 0.2], np.float32))
        assert sim0.data.time == pytest.approx(DT * k, abs=1e-12)


def euler_substeps(v, y, force, n, clip_each):
    """MuJoCo's Euler step of the damped ball, by hand: v' = (m v + h F) / (m + h b), y' = y + h v'."""
    for _ in range(n):
        if clip_each:
            v = min(v, MAX_SPEED)
        v = (BALL_MASS * v + DT * force) / (BALL_MASS + DT * 1.0)
        y = y + DT * v
    return v, y


def test_v1_clips_the_velocity_once_per_step(sim1):
    # Along the free top corridor (x = 0.8, y from 0.3 to 3.3): start at 9 m/s with full force.
    sim1.reset(seed=0, options={"start_state": np.array([0.8, 0.8, 0.0, 9.0]), "goal_state": still(2.8, 2.8)})
    _, _, _, _, info = sim1.step(np.array([0.0, 1.0], np.float32))
    once = euler_substeps(MAX_SPEED, 0.8, 100.0, 5, clip_each=False)  # clip to 5, then 5 free substeps
    each = euler_substeps(MAX_SPEED, 0.8, 100.0, 5, clip_each=True)   # re-clipped before every substep
    never = euler_substeps(9.0, 0.8, 100.0, 5, clip_each=False)
    vy, y = info["state"][3], info["state"][1]
    assert (vy, y) == pytest.approx(once, abs=1e-9)
    assert vy > MAX_SPEED + 1.0  # the force pushes it past 5 within the step: not re-clipped
    for other in (each, never):  # the alternatives differ by far more than the tolerance
        assert abs(vy - other[0]) > 0.1 and abs(y - other[1]) > 1e-3
    assert info["state"][0] == 0.8 and info["state"][2] == 0.0
    # The next step starts by clipping the ~6.1 m/s back to 5.
    _, _, _, _, info = sim1.step(np.array([0.0, 0.0], np.float32))
    assert (info["state"][3], info["state"][1]) == pytest.approx(euler_substeps(MAX_SPEED, y, 0.0, 5, False), abs=1e-9)


def test_v0_velocity_is_clipped_like_gymnasium_robotics(sim0):
    sim0.reset(seed=0, options={"start_state": np.array([0.0, 1.0, 20.0, 0.0]), "goal_state": still(1.0, -1.0)})
    _, _, _, _, info = sim0.step(np.zeros(2, np.float32))
    assert (info["state"][2], info["state"][0]) == pytest.approx(euler_substeps(MAX_SPEED, 0.0, 0.0, 1, False), abs=1e-9)


def test_walls_stop_the_ball(sim):
    # Full force for a second from the corner cell (1, 1) towards the outer wall beside it.
    sim.reset(seed=0, options={"start_state": still(*cell_xy(sim, 1, 1)), "goal_state": still(*cell_xy(sim, 3, 3))})
    push = np.array([-1.0, 0.0] if sim.version == 1 else [0.0, 1.0], np.float32)  # towards row 0
    for _ in range(int(round(1.0 / sim.protocol.dt))):
        _, _, _, _, info = sim.step(push)
    assert sim.cell_of(info["state"][:2]) == (1, 1)
    assert sim.wall_clearance(info["state"][:2]) == pytest.approx(0.1, abs=0.01)  # the 0.1 m collision sphere


# ----- success ---------------------------------------------------------------------------------
@pytest.mark.parametrize("offset, expected", [(0.0, True), (0.49, True), (0.51, False)])
def test_success_radius_on_hand_built_states(sim, offset, expected):
    center = np.array(cell_xy(sim, 1, 2))
    goal = np.array([*center, 2.0, -2.0])  # the goal velocity is ignored
    along = center + offset * np.array(sim.frame.col_axis)  # along the top corridor, away from walls
    _, info = sim.reset(seed=0, options={"start_state": still(*along), "goal_state": goal})
    assert info["is_success"] is expected
    # A zero-force step from rest keeps the ball in place and reports it as termination.
    _, reward, terminated, truncated, info = sim.step(np.zeros(2, np.float32))
    assert info["is_success"] is expected and terminated is expected and reward == float(expected)
    assert not truncated
    assert abs(info["distance"] - offset) < 1e-9
    assert SUCCESS_RADIUS == 0.5


# ----- start and goal sampling -----------------------------------------------------------------
def test_v1_resets_give_dino_wm_evaluation_pairs(sim1):
    for seed in DINO_WM_EVAL_SEEDS:
        start, goal = dino_wm_pair(seed)
        _, info = sim1.reset(seed=seed)
        assert np.array_equal(info["state"], start) and np.array_equal(sim1.goal, goal), seed


def test_v1_sampling_follows_dino_wm_rules(sim1):
    seen, solved = set(), 0
    for seed in range(400):
        rs = np.random.RandomState(seed)
        start = sim1._sample_state_dino_wm(rs, True)
        goal = sim1._sample_state_dino_wm(rs, True)
        assert (np.array_equal(start, dino_wm_pair(seed)[0]) and np.array_equal(goal, dino_wm_pair(seed)[1]))
        for s in (start, goal):
            assert sim1.cell_of(s[:2]) in FREE and sim1.wall_clearance_per_axis(s[:2]) >= WALL_CLEARANCE
            assert np.all(np.abs(s[2:]) <= 5.2262554) and np.all(s[2:] != 0)
            seen.add(sim1.cell_of(s[:2]))
        solved += sim1.is_success(start, goal)
    assert seen == FREE
    # DINO-WM draws start and goal independently: ~12% of pairs start inside the success radius.
    assert 0.05 < solved / 400 < 0.2


def test_v1_unseeded_resets_continue_deterministically():
    a, b = PointMazeEnv(version=1), PointMazeEnv(version=1)
    try:
        runs = []
        for env in (a, b):
            env.reset(seed=5)
            runs.append([env.reset()[1]["state"] for _ in range(3)])
        assert all(np.array_equal(x, y) for x, y in zip(*runs))
        assert not np.array_equal(runs[0][0], runs[0][1])
    finally:
        a.close()
        b.close()


def test_v1_zero_start_velocity_keeps_the_dino_wm_goal():
    env = PointMazeEnv(version=1, random_start_velocity=False)
    try:
        _, info = env.reset(seed=100)
        start, goal = dino_wm_pair(100)
        assert np.array_equal(info["state"], [*start[:2], 0.0, 0.0]) and np.array_equal(env.goal, goal)
    finally:
        env.close()


def test_v0_starts_and_goals_lie_in_free_cells(sim0):
    sim0.reset(seed=123)
    seen = set()
    for _ in range(300):
        start, goal = sim0._sample_start_goal()
        for s in (start, goal):
            assert sim0.cell_of(s[:2]) in FREE
            assert sim0.wall_clearance(s[:2]) >= WALL_CLEARANCE
            assert np.all(np.abs(s[2:]) <= MAX_SPEED)
            seen.add(sim0.cell_of(s[:2]))
        assert np.linalg.norm(start[:2] - goal[:2]) >= SUCCESS_RADIUS  # never solved at reset
        assert np.any(goal[2:] != 0)
    assert seen == FREE


def test_wall_clearance(sim):
    middle_wall, corner, corridor = cell_xy(sim, 2, 2), cell_xy(sim, 1, 1), cell_xy(sim, 2, 3)
    assert sim.wall_clearance(middle_wall) == 0.0
    assert sim.wall_clearance(corner) == pytest.approx(0.5)
    assert sim.wall_clearance(corridor) == pytest.approx(0.5)
    # Near an inner corner the Euclidean and the per-axis clearance differ (D4RL frame, wall (2, 2)
    # spans x, y in [1.3, 2.3]): 0.1 and 0.15 away on the two axes.
    if sim.version == 1:
        assert sim.wall_clearance([1.2, 2.45]) == pytest.approx(math.hypot(0.1, 0.15))
        assert sim.wall_clearance_per_axis([1.2, 2.45]) == pytest.approx(0.15)


# ----- what the camera shows --------------------------------------------------------------------
def pixel_of(sim, x, y, size=64, look="default"):
    """(row, col) of the state point (x, y) in the top-down image (at the floor height z = 0)."""
    if sim.version == 0:  # orthographic, VIEW_EXTENT wide, centred on the origin, +y up
        return int((0.5 - y / VIEW_EXTENT) * size), int((x / VIEW_EXTENT + 0.5) * size)
    if look == "default":  # v1: orthographic, 3.4 m wide, centred on world (3, 3) = state (1.8, 1.8), +y down
        width = 3.4
    else:
        # DINO-WM's view: perspective (fovy 45°) from mujoco-py's default distance, the model's
        # extent: the ground plane counts as 0.1 of its half-size (40) around x = 0, the far wall
        # box reaches 5 + √(0.5² + 0.5² + 0.2²), so extent = 9 + √0.54.
        width = 2 * (9 + math.sqrt(0.54)) * math.tan(math.radians(22.5))
    # Looking at world (3, 3); the ball's world position is the state + 1.2. Rows are flipped as
    # mujoco-py's images come: +y points down.
    return int((0.5 + (y + 1.2 - 3) / width) * size), int((0.5 + (x + 1.2 - 3) / width) * size)


def green(img):
    """Mask of the ball's green (the floor is blue-grey, the walls tan)."""
    img = img.astype(int)
    return (img[..., 1] > img[..., 0] + 40) & (img[..., 1] > img[..., 2] + 40)


@pytest.mark.parametrize("look", ["default", "dino-wm-view"])
def test_v1_camera_shows_maze_and_ball_where_computed(look):
    sim1 = PointMazeEnv(version=1, look=look)
    try:
        if look == "dino-wm-view":
            assert sim1.model.stat.extent == pytest.approx(9 + math.sqrt(0.54))
        obs, _ = sim1.reset(seed=0, options={"start_state": still(0.8, 2.8), "goal_state": still(2.8, 0.8)})
        img = obs["pixels"].astype(int)
        r, c = pixel_of(sim1, 0.8, 2.8, look=look)
        assert green(img)[r, c]
        assert r > 36 and c < 28  # x = 0.8 is on the left, y = 2.8 near the bottom
        wall, floor = img[pixel_of(sim1, 1.8, 0.8, look=look)], img[pixel_of(sim1, 1.8, 2.8, look=look)]
        assert wall[0] > 150 and floor[0] < 100  # tan walls (2, 1), dark free cell (2, 3)
        goal = sim1.goal_pixels
        gr, gc = pixel_of(sim1, 2.8, 0.8, look=look)
        assert gr < 28 and gc > 36 and green(goal)[gr, gc]
        # A vertical flip of what the camera sees: the render without the flip is upside down.
        sim1._renderer.update_scene(sim1.data, camera=sim1._camera)
        assert np.array_equal(sim1._renderer.render()[::-1], obs["pixels"])
    finally:
        sim1.close()


def test_v1_default_view_draws_the_ball_large_enough_to_track():
    """The one deliberate difference from DINO-WM (issue 26): at 64 px its view draws the 0.4 m ball
    2-3 px wide; the close view draws it 0.4 / 3.4 · 64 ≈ 7.5 px wide, ~44 px of area."""
    areas = {}
    for look in ("default", "dino-wm-view"):
        env = PointMazeEnv(version=1, look=look)
        try:
            obs, _ = env.reset(seed=0, options={"start_state": still(1.8, 2.8), "goal_state": still(0.8, 0.8)})
            mask = green(obs["pixels"])
            rows, cols = np.nonzero(mask)
            areas[look] = (mask.sum(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
        finally:
            env.close()
    area, height, width = areas["default"]
    assert 30 <= area <= 60 and 6 <= height <= 9 and 6 <= width <= 9
    assert areas["dino-wm-view"][0] <= 12 and max(areas["dino-wm-view"][1:]) <= 4


def test_v1_looks_change_only_the_pixels():
    envs = [PointMazeEnv(version=1, look=look) for look in ("default", "dino-wm-view")]
    try:
        for env in envs:
            env.reset(seed=3)
        for _ in range(10):
            action = np.array([0.7, -0.4])
            out = [env.step(action) for env in envs]
            assert np.array_equal(out[0][0]["proprio"], out[1][0]["proprio"])
            assert out[0][1] == out[1][1] and out[0][4]["is_success"] == out[1][4]["is_success"]
            assert not np.array_equal(out[0][0]["pixels"], out[1][0]["pixels"])
    finally:
        for env in envs:
            env.close()


def test_unknown_looks_are_rejected():
    with pytest.raises(ValueError, match="look"):
        PointMazeEnv(version=1, look="big-ball")
    with pytest.raises(ValueError, match="v0 has one look"):
        PointMazeEnv(version=0, look="dino-wm-view")


def test_v0_camera_shows_maze_and_ball(sim0):
    obs, _ = sim0.reset(seed=0, options={"start_state": still(-1.0, 1.0), "goal_state": still(1.0, -1.0)})
    img = obs["pixels"].astype(int)
    r, c = pixel_of(sim0, -1.0, 1.0)
    assert img[r, c, 1] > img[r, c, 0] + 40 and img[r, c, 1] > img[r, c, 2] + 40  # green ball
    wall, floor = img[pixel_of(sim0, -0.5, 0.0)], img[pixel_of(sim0, 1.0, 0.0)]
    assert wall[0] > 150 and floor[0] < 100
    for y in (2.2, -2.2):  # the outer wall is in view at the top and bottom edges
        assert img[pixel_of(sim0, 0.0, y)][0] > 150


def test_same_camera_in_a_fresh_env(sim):
    start, goal = still(*cell_xy(sim, 1, 1)), still(*cell_xy(sim, 3, 3))
    obs, _ = sim.reset(seed=0, options={"start_state": start, "goal_state": goal})
    other = PointMazeEnv(version=sim.version)
    try:
        obs2, _ = other.reset(seed=5, options={"start_state": start, "goal_state": goal})
        assert np.array_equal(obs2["pixels"], obs["pixels"])
    finally:
        other.close()


def test_goal_is_not_drawn_in_observations(sim):
    start = still(*cell_xy(sim, 3, 1))
    obs_a, _ = sim.reset(seed=0, options={"start_state": start, "goal_state": still(*cell_xy(sim, 1, 1))})
    obs_b, _ = sim.reset(seed=0, options={"start_state": start, "goal_state": still(*cell_xy(sim, 2, 3))})
    assert np.array_equal(obs_a["pixels"], obs_b["pixels"])
    assert not np.array_equal(sim.goal_pixels, obs_b["pixels"])  # the goal image does show the ball there


def test_v0_robotics_goal_sphere_stays_hidden(sim0):
    start, goal = still(-1.0, -1.0), still(1.0, 0.0)
    obs, _ = sim0.reset(seed=0, options={"start_state": start, "goal_state": goal})
    target = sim0._robotics.target_site_id
    saved_pos = sim0.model.site_pos[target].copy()
    sim0.model.site_pos[target, :2] = (1.0, 0.0)
    mujoco.mj_forward(sim0.model, sim0.data)  # site_xpos, which the renderer draws
    try:
        assert np.array_equal(sim0._render_pixels(), obs["pixels"])
        sim0.model.site_rgba[target, 3] = 0.7  # ... and the check can fail: made opaque, it shows
        assert not np.array_equal(sim0._render_pixels(), obs["pixels"])
    finally:
        sim0.model.site_rgba[target, 3] = 0.0
        sim0.model.site_pos[target] = saved_pos
        mujoco.mj_forward(sim0.model, sim0.data)


def test_goal_pixels_show_the_ball_at_the_goal(sim):
    goal = np.array([*cell_xy(sim, 3, 3), 3.0, 1.0])
    obs, _ = sim.reset(seed=0, options={"start_state": still(*cell_xy(sim, 3, 3)), "goal_state": goal})
    assert np.array_equal(obs["pixels"], sim.goal_pixels)


def test_closing_one_env_leaves_the_others_images_intact():
    a, b = PointMazeEnv(version=1), PointMazeEnv(version=0)
    try:
        b.reset(seed=0)
        before = b._render_pixels().copy()
        a.close()
        assert np.array_equal(b._render_pixels(), before)
        del a  # garbage-collecting a closed or unclosed env must not blank it either
        c = PointMazeEnv(version=1)
        c.reset(seed=0)
        del c
        assert np.array_equal(b._render_pixels(), before)
    finally:
        b.close()


# ----- determinism -----------------------------------------------------------------------------
@pytest.mark.parametrize("version", [0, 1])
def test_seeded_episodes_are_identical(version):
    runs = []
    for _ in range(2):
        env = PointMazeEnv(version=version)
        obs, info = env.reset(seed=11)
        policy = make_policy(env, "random", np.random.default_rng(11))
        policy.reset(obs, info)
        frames, states = [obs["pixels"]], [info["state"]]
        for _ in range(15):
            obs, _, _, _, info = env.step(policy(obs, info))
            frames.append(obs["pixels"])
            states.append(info["state"])
        runs.append((np.stack(frames), np.stack(states), env.goal.copy()))
        env.close()
    for x, y in zip(*runs):
        assert np.array_equal(x, y)


# ----- collection policies ---------------------------------------------------------------------
def test_random_policy_keeps_its_correlation_time_in_seconds(sim):
    policy = make_policy(sim, "random", np.random.default_rng(0))
    assert isinstance(policy, PointMazeRandomPolicy)
    assert policy.rho == pytest.approx(0.95 ** sim.protocol.substeps)
    assert policy.rho == (0.95 if sim.version == 0 else pytest.approx(0.7737809375))


def test_random_policy_moves_the_ball(sim):
    obs, info = sim.reset(seed=3)
    policy = make_policy(sim, "random", np.random.default_rng(3))
    policy.reset(obs, info)
    path, cells = 0.0, set()
    for _ in range(40):
        action = policy(obs, info)
        assert sim.action_space.contains(action)
        prev = info["state"][:2]
        obs, _, _, _, info = sim.step(action)
        path += np.linalg.norm(info["state"][:2] - prev)
        cells.add(sim.cell_of(info["state"][:2]))
    assert path > (0.5 if sim.version == 0 else 3.0)  # 40 v1 steps are 2 s
    if sim.version == 1:
        assert len(cells) >= 3


def test_v1_random_episodes_cover_the_maze(sim1):
    cells = set()
    for seed in range(4):
        obs, info = sim1.reset(seed=seed)
        policy = make_policy(sim1, "random", np.random.default_rng(seed))
        policy.reset(obs, info)
        for _ in range(100):
            obs, _, _, _, info = sim1.step(policy(obs, info))
            cells.add(sim1.cell_of(info["state"][:2]))
    assert cells == FREE


def test_noisy_expert_reaches_most_goals(sim):
    successes = [run_policy(sim, "noisy-expert", 100 + seed, np.random.default_rng(seed), 100)["is_success"]
                 for seed in range(5)]
    assert sum(successes) >= 4, successes


@pytest.mark.parametrize("seed", [0, 1])
def test_noisy_expert_goes_around_the_middle_wall(sim, seed):
    # Top corridor to bottom corridor: the straight line is blocked by the wall in between.
    start, goal = still(*cell_xy(sim, 1, 2)), still(*cell_xy(sim, 3, 2))
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
    assert visited <= FREE


def test_noisy_expert_rests_at_the_goal_on_v1(sim1):
    # Collection runs whole episodes past success: the v1 gains keep the ball at the goal.
    obs, info = sim1.reset(seed=2, options={"start_state": still(0.8, 0.8), "goal_state": still(2.8, 0.8)})
    policy = make_policy(sim1, "noisy-expert", np.random.default_rng(2))
    policy.reset(obs, info)
    inside = []
    for _ in range(100):
        obs, _, _, _, info = sim1.step(policy(obs, info))
        inside.append(info["is_success"])
    assert all(inside[60:])


def test_close_is_idempotent():
    env = PointMazeEnv()
    env.reset(seed=0)
    env.close()
    env.close()
    with pytest.raises(RuntimeError, match="closed"):
        env._render_pixels()
