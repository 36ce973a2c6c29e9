"""benchmarks/goal_distance_check.py: the true cost-to-go of a Wall-v1 pair, in sim steps, on hand cases."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from wm_gym.envs.wall import WALL_V1, wall_step

_spec = importlib.util.spec_from_file_location(
    "goal_distance_check", Path(__file__).resolve().parents[1] / "benchmarks" / "goal_distance_check.py")
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)

# Wall-v1: wall x in [29, 35], door y in [26, 34]; the path keeps 1 px from the door's edges: y in [27, 33].
CASES = [  # (start, goal, fewest sim steps)
    ((10, 10), (20, 16), 5),    # one room: max(10, 6) px / 2 px a step
    ((20, 30), (44, 30), 12),   # straight through the door: 24 px
    ((20, 10), (44, 10), 20),   # up 17 to the door while moving 9 across, 6 through it, down 17: 40 px
    ((20, 20), (44, 40), 12),   # the climb to the door hides in the horizontal legs: 9 + 6 + 9 px
]


def test_shortest_sim_steps_hand_cases():
    start, goal, steps = (np.array([c[i] for c in CASES], np.float64) for i in range(3))
    assert check.shortest_sim_steps(WALL_V1, start, goal) == pytest.approx(steps)
    assert check.shortest_sim_steps(WALL_V1, goal, start) == pytest.approx(steps)  # symmetric


def run(start, action, n: int) -> np.ndarray:
    pos = np.array([start], np.float64)
    for _ in range(n):
        pos = wall_step(pos, np.array([action]), WALL_V1)
    return pos[0]


def test_the_real_sim_moves_2_px_per_axis_per_step():
    """The bound the old 2 px Euclidean step broke: 5 real steps cover 11.7 px, more than 2 px each."""
    assert run((10, 10), (1.0, 0.6), 5) == pytest.approx([20, 16])
    assert np.hypot(10, 6) / 2 > 5  # the Euclidean conversion would say 5.83 steps for a 5-step move


def test_a_door_crossing_is_bounded_below():
    """(20, 10) -> (44, 10): bound 20 steps; a hand plan does it in 21 (up and across to the door, through, down)."""
    pos = np.array([[20.0, 10.0]])
    for action, n in (((0.5, 1.0), 9), ((1.0, 0.0), 3), ((0.5, -1.0), 9)):
        for _ in range(n):
            pos = wall_step(pos, np.array([action]), WALL_V1)
    assert pos[0] == pytest.approx([44, 10])
    assert check.shortest_sim_steps(WALL_V1, np.array([20.0, 10.0]), np.array([44.0, 10.0])) == pytest.approx(20)


def test_the_door_crossing_minimum_is_exact():
    """The vertex search equals a dense search over where the path enters and leaves the door (0.01 px grid)."""
    rng = np.random.default_rng(0)
    start = check.random_positions(200, rng)
    goal = check.random_positions(200, rng)
    across = np.sign(start[:, 0] - WALL_V1.wall_x) != np.sign(goal[:, 0] - WALL_V1.wall_x)
    start, goal = start[across], goal[across]
    y = np.linspace(WALL_V1.door_lo + 1.0, WALL_V1.door_hi - 1.0, 601)
    on_left = start[:, 0] < WALL_V1.wall_x
    near = np.where(on_left, WALL_V1.wall_lo, WALL_V1.wall_hi)[:, None, None]
    far = np.where(on_left, WALL_V1.wall_hi, WALL_V1.wall_lo)[:, None, None]
    y_a, y_b = y[None, :, None], y[None, None, :]
    cost = (np.maximum(np.abs(start[:, 0, None, None] - near), np.abs(start[:, 1, None, None] - y_a))
            + np.maximum(np.abs(far - near), np.abs(y_a - y_b))
            + np.maximum(np.abs(goal[:, 0, None, None] - far), np.abs(goal[:, 1, None, None] - y_b)))
    dense = cost.reshape(len(start), -1).min(1)
    exact = check.max_norm_path(WALL_V1, start, goal)
    assert len(start) > 50 and np.all(exact <= dense + 1e-9) and np.allclose(exact, dense, atol=0.02)
