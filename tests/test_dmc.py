"""dm_control reacher-easy and point_mass-easy: protocol, success, hidden goal, camera, experts."""
import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import wm_gym.envs.dmc as dmc
from wm_gym.envs.dmc import DMCEnv
from wm_gym.envs.policies import make_policy, run_policy

IDS = {"reacher": "wm_gym/DMC-reacher-easy-v0", "point_mass": "wm_gym/DMC-point_mass-easy-v0"}
# dm_control's "at target" radii: reacher target 0.05 + finger 0.01; point_mass target 0.015.
RADIUS = {"reacher": 0.06, "point_mass": 0.015}
FIXED_CAMERA_HALF_EXTENT = (0.75 - 0.01) * math.tan(math.radians(22.5))  # metres, at body height


@pytest.fixture(scope="module")
def reacher():
    env = DMCEnv("reacher", "easy")
    yield env
    env.close()


@pytest.fixture(scope="module")
def point_mass():
    env = DMCEnv("point_mass", "easy")
    yield env
    env.close()


@pytest.fixture(params=["reacher", "point_mass"])
def sim(request):
    return request.getfixturevalue(request.param)


def pixel_of(x, y, size=64):
    h = FIXED_CAMERA_HALF_EXTENT
    return int((1 - y / h) / 2 * size), int((x / h + 1) / 2 * size)


def place(sim, state, goal=None):
    state = np.asarray(state, np.float64)
    goal = state if goal is None else np.asarray(goal, np.float64)
    return sim.reset(seed=0, options={"start_state": state, "goal_state": goal})


@pytest.mark.parametrize("domain", ["reacher", "point_mass"])
def test_check_env_on_unwrapped_and_made_env(domain):
    made = gym.make(IDS[domain])
    assert made.spec.max_episode_steps == 100
    assert made.unwrapped.domain == domain
    check_env(made.unwrapped, skip_render_check=False)
    check_env(made, skip_render_check=True)  # the render check re-makes the env; done above
    made.close()


def test_spaces_and_layout(sim):
    spec = sim._env.action_spec()
    assert np.array_equal(sim.action_space.low, spec.minimum) and np.array_equal(sim.action_space.high, spec.maximum)
    assert sim.state_dim == 6 and sim.proprio_dim == 4
    assert sim.success_radius == pytest.approx(RADIUS[sim.domain])
    obs, info = sim.reset(seed=1)
    assert obs["pixels"].shape == (64, 64, 3) and obs["pixels"].dtype == np.uint8
    assert np.array_equal(obs["proprio"], info["state"][:4].astype(np.float32))


def test_set_state_is_exact_and_one_step_is_the_control_timestep(sim):
    s = np.array([0.1234567, -0.7654321, 0.25, -0.5, 0.0321, -0.0456])
    _, info = place(sim, s)
    assert np.array_equal(info["state"], s)
    assert np.array_equal(sim.physics.data.qpos, s[:2]) and np.array_equal(sim.physics.data.qvel, s[2:4])
    assert np.array_equal(sim.physics.named.model.geom_pos["target", :2], s[4:])
    sim.step(np.zeros(2, np.float32))
    assert sim.physics.data.time == pytest.approx(sim._env.control_timestep()) == pytest.approx(0.02)


def test_reacher_fingertip_matches_mujoco(reacher):
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(-2.7, 2.7)])
        place(reacher, np.concatenate([q, [0, 0, 0.1, 0.1]]))
        np.testing.assert_allclose(reacher.fingertip(q), reacher.physics.named.data.geom_xpos["finger", :2], atol=1e-12)


@pytest.mark.parametrize("offset, expected", [(0.0, True), (-1e-3, True), (1e-3, False)])
def test_success_is_the_task_at_target_condition(sim, offset, expected):
    """Just inside / just outside dm_control's own radius, checked against dm_control's physics."""
    d = sim.success_radius + offset if offset else 0.0
    direction = np.array([0.6, -0.8])
    if sim.domain == "reacher":
        q = np.array([0.3, 0.5])
        target = sim.fingertip(q) + d * direction
        state = np.concatenate([q, [0.0, 0.0], target])
    else:
        xy = np.array([0.05, -0.1])
        target = xy + d * direction
        state = np.concatenate([xy, [0.0, 0.0], target])
    _, info = place(sim, state)
    dm_distance = sim.physics.finger_to_target_dist() if sim.domain == "reacher" else sim.physics.mass_to_target_dist()
    assert dm_distance == pytest.approx(d, abs=1e-9)
    assert info["is_success"] is expected
    if sim.domain == "reacher":  # reacher's reward is exactly the at-target indicator
        assert sim._env.task.get_reward(sim.physics) == float(expected)
    # From rest with zero control nothing moves within a step; success ends the episode.
    _, reward, terminated, truncated, info = sim.step(np.zeros(2, np.float32))
    assert info["is_success"] is expected and terminated is expected and reward == float(expected) and not truncated


def test_a_state_as_a_goal_asks_for_its_own_position(sim):
    """Calibration labels (frame a, frame b) by "a reaches b". A state carries its episode's target, not its
    own position, so b must go through goal_from_state: else every pair would ask "is a at the episode's target"."""
    q = np.array([0.3, 0.5]) if sim.domain == "reacher" else np.array([0.05, -0.1])
    episode_target = sim.effector_xy(np.concatenate([q, [0, 0, 0, 0]])) + np.array([0.1, 0.0])
    b = np.concatenate([q, [0.0, 0.0], episode_target])
    goal = sim.goal_from_state(b)
    np.testing.assert_allclose(goal[4:6], sim.effector_xy(b))
    assert sim.is_success(b, goal)            # b reaches itself
    assert not sim.is_success(b, b)           # used raw, b would ask for the episode's target, 10 cm away
    moved = b.copy()
    moved[0] += 1.0 if sim.domain == "reacher" else 0.05  # well beyond the success radius (reacher: 6 cm)
    assert not sim.is_success(moved, goal)    # a state elsewhere does not reach b
    np.testing.assert_array_equal(b, np.concatenate([q, [0.0, 0.0], episode_target]))  # b is not modified


def test_sampled_starts_and_goals_are_inside_the_arena(sim):
    sim.reset(seed=42)
    for _ in range(200):
        start, goal = sim._sample_start_goal()
        assert np.array_equal(start[4:], goal[4:])  # one target per episode
        assert np.all(np.abs(goal[4:]) < 0.3)  # arena is [-0.3, 0.3]²
        assert np.all(start[2:4] == 0) and np.all(goal[2:4] == 0)
        assert not sim._is_success(start, goal)
        if sim.domain == "reacher":
            assert 0.05 <= np.linalg.norm(goal[4:]) <= 0.20  # dm_control's own target annulus
            np.testing.assert_allclose(sim.fingertip(goal[:2]), goal[4:])  # goal = arm reaching the target
            for q in (start[:2], goal[:2]):
                assert -np.pi <= q[0] <= np.pi and sim.wrist_range[0] <= q[1] <= sim.wrist_range[1]
        else:
            assert np.all(np.abs(start[:2]) <= 0.27) and np.all(np.abs(goal[:2]) <= 0.27)
            assert np.array_equal(goal[:2], goal[4:])
            assert np.linalg.norm(start[:2] - goal[:2]) <= sim.max_goal_distance


def test_goal_is_not_drawn_in_observations(sim, monkeypatch):
    body = np.array([0.2, -0.4]) if sim.domain == "reacher" else np.array([-0.15, 0.1])
    goal_a = np.concatenate([body + 0.3, [0, 0], [0.12, 0.1]])
    goal_b = np.concatenate([body - 0.3, [0, 0], [-0.1, -0.15]])
    obs_a, _ = place(sim, np.concatenate([body, [0, 0], goal_a[4:]]), goal_a)
    obs_b, _ = place(sim, np.concatenate([body, [0, 0], goal_b[4:]]), goal_b)
    assert np.array_equal(obs_a["pixels"], obs_b["pixels"])  # moving the target changes nothing
    assert not np.array_equal(obs_b["pixels"], sim.goal_pixels)
    # The check can fail: leave the target in a drawn group and the two frames differ.
    monkeypatch.setattr(dmc, "_HIDDEN_GROUP", 0)
    assert not np.array_equal(sim._render_pixels(), obs_b["pixels"])


def test_goal_pixels_show_the_body_at_the_goal(sim):
    obs, info = sim.reset(seed=3)
    goal = info["goal"]
    obs, _ = place(sim, goal, goal)
    assert np.array_equal(obs["pixels"], sim.goal_pixels)


def test_rendering_leaves_the_model_untouched(sim):
    model = sim.physics.model
    size, group = model.geom_size.copy(), model.geom_group.copy()
    sim.reset(seed=0)
    sim._render_pixels()
    assert np.array_equal(model.geom_size, size) and np.array_equal(model.geom_group, group)


def test_point_mass_is_clearly_visible_where_it_is(point_mass):
    xy = np.array([0.12, 0.08])
    here, _ = place(point_mass, np.concatenate([xy, [0, 0], [-0.1, -0.1]]))
    away, _ = place(point_mass, np.concatenate([-xy, [0, 0], [-0.1, -0.1]]))
    diff = np.abs(here["pixels"].astype(int) - away["pixels"].astype(int)).sum(-1)
    r, c = pixel_of(*xy)
    assert diff[r, c] > 150  # the drawn mass sits where the fixed top-down camera puts it
    assert (diff[max(r - 4, 0) : r + 5, max(c - 4, 0) : c + 5] > 60).sum() >= 12  # a blob, not a speck


def test_reacher_arm_is_clearly_visible(reacher):
    straight, _ = place(reacher, np.array([0.0, 0.0, 0.0, 0.0, -0.1, -0.1]))  # arm along +x
    folded, _ = place(reacher, np.array([np.pi / 2, 0.0, 0.0, 0.0, -0.1, -0.1]))  # arm along +y
    diff = np.abs(straight["pixels"].astype(int) - folded["pixels"].astype(int)).sum(-1)
    for x in (0.06, 0.12, 0.18, 0.23):
        r, c = pixel_of(x, 0.0)
        assert diff[r, c] > 150
    assert (diff > 60).sum() >= 2 * 3 * 20  # two ~24-px arms at least ~3 px thick


@pytest.mark.parametrize("domain", ["reacher", "point_mass"])
def test_noisy_expert_reaches_most_goals(domain, request):
    sim = request.getfixturevalue(domain)
    successes = [run_policy(sim, "noisy-expert", 200 + seed, np.random.default_rng(seed), 100)["is_success"]
                 for seed in range(4)]
    assert sum(successes) >= 3, successes


def test_unsupported_task_raises():
    with pytest.raises(ValueError, match="unsupported dm_control task cheetah-run"):
        DMCEnv("cheetah", "run")


def test_reach_puts_the_fingertip_on_the_target_with_the_nearer_elbow(reacher):
    rng = np.random.default_rng(5)
    for _ in range(20):
        while True:  # an arm whose fingertip lies in dm_control's target annulus, as the task's targets do
            q = np.array([rng.uniform(-np.pi, np.pi), rng.uniform(*reacher.wrist_range)])
            target = reacher.fingertip(q)
            if 0.05 <= np.linalg.norm(target) <= 0.20:
                break
        np.testing.assert_allclose(reacher.reach(target, q), q, atol=1e-9)  # asked near itself: itself
        ray = math.atan2(target[1], target[0])
        other = np.array([math.remainder(2 * ray - q[0], 2 * np.pi), -q[1]])  # the other elbow, mirrored about the ray
        np.testing.assert_allclose(reacher.fingertip(other), target, atol=1e-9)
        np.testing.assert_allclose(reacher.reach(target, other), other, atol=1e-9)


@pytest.mark.parametrize("domain", ["reacher", "point_mass"])
def test_standard_task_episodes_are_dm_controls_own(domain):
    """The `task` budget's episodes: the suite's own start and target (point_mass: target at the centre, start
    anywhere in the arena), the goal the body on the target, the reward dm_control's, all fixed by the seed."""
    env = DMCEnv(domain, "easy", standard_task=True)
    starts = []
    for seed in range(30):
        _, info = env.reset(seed=seed)
        start, goal = info["state"], info["goal"]
        starts.append(start)
        assert np.array_equal(start[4:], goal[4:]) and np.all(goal[2:4] == 0) and np.all(start[2:4] == 0)
        np.testing.assert_allclose(env.effector_xy(goal), goal[4:], atol=1e-9)  # the goal image shows the target reached
        assert info["task_reward"] == env._env.task.get_reward(env.physics)
        if domain == "point_mass":
            assert np.array_equal(goal[4:], [0.0, 0.0])  # point_mass.xml's fixed target
        else:
            assert 0.05 - 1e-9 <= np.linalg.norm(goal[4:]) <= 0.20 + 1e-9
    _, again = env.reset(seed=7)
    np.testing.assert_array_equal(again["state"], starts[7])
    starts = np.array(starts)
    if domain == "point_mass":  # the whole arena, not only within max_goal_distance (0.15) of the target
        assert np.max(np.linalg.norm(starts[:, :2], axis=1)) > 0.2
    # At the target the reward is dm_control's full 1 (reacher: the at-target indicator).
    _, info = env.reset(seed=0, options={"start_state": env.goal, "goal_state": env.goal})
    assert info["task_reward"] == pytest.approx(1.0) and info["is_success"]
    env.close()


def test_the_expert_earns_most_of_a_task_episodes_return_and_random_torques_do_not():
    """run_policy sums dm_control's reward over a 1,000-step task episode (examples/expert_success.py --task):
    the noisy PD expert reaches the centre and holds it (893 on seeds 1000-1004); random forces rarely pass by."""
    env = DMCEnv("point_mass", "easy", standard_task=True)
    env.skip_pixels = True  # the policies read states
    expert = [run_policy(env, "noisy-expert", s, np.random.default_rng(s), 1000, stop_on_success=False) for s in (0, 1)]
    random = [run_policy(env, "random", s, np.random.default_rng(s), 1000, stop_on_success=False) for s in (0, 1)]
    assert all(info["task_return"] > 700 for info in expert), [info["task_return"] for info in expert]
    assert all(info["task_return"] < 100 for info in random), [info["task_return"] for info in random]
    env.close()
