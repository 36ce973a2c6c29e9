"""benchmarks/oracle_planning.py: the perfect-model MPC-CEM diagnostic for Wall."""
import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

from wm_gym.envs.wall import WALL_V0, WALL_V1

_spec = importlib.util.spec_from_file_location(
    "oracle_planning", Path(__file__).resolve().parents[1] / "benchmarks" / "oracle_planning.py")
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)
G = WALL_V0  # wall x in [30.5, 33.5], door y in [38, 50]


def test_geodesic_hand_computed():
    p = np.array([[10.0, 20.0], [10.0, 44.0], [10.0, 10.0]])
    g = np.array([[20.0, 10.0], [54.0, 44.0], [54.0, 10.0]])
    d = oracle.geodesic(G, p, g)
    leg = math.hypot(30.5 - 10.0, 39.0 - 10.0)  # to the door's upper end (1 px inside), then across, then out
    assert d == pytest.approx([math.hypot(10, 10), 44.0, 2 * leg + 3.0])


def test_plan_cost_weights_last_frame_most():
    traj = np.array([[[0.0, 0.0], [3.0, 4.0]]])  # two chunks, goal at the origin
    cost = oracle.plan_cost(G, "position", traj, np.zeros((1, 2)))
    assert cost == pytest.approx([0.5 * 0.0 + 1.0 * 25.0])


def test_rollout_matches_stepping_and_wall_blocks():
    plans = np.ones((1, 2, oracle.FRAMESKIP, 2)) * np.array([1.0, 0.0])  # push right, at y = 10 (wall there)
    traj = oracle.rollout(G, np.array([[20.0, 10.0]]), plans)
    assert traj[0, 0] == pytest.approx([30.0, 10.0])        # 5 steps of 2 px
    assert traj[0, 1] == pytest.approx([G.wall_lo, 10.0])    # stopped at the wall face


def test_geodesic_cost_solves_what_position_cost_cannot():
    kwargs = dict(episodes=6, seed=1000, samples=64, elites=8, iterations=4, geometry=G)
    geo, pos = oracle.mpc_cem("geodesic", **kwargs), oracle.mpc_cem("position", **kwargs)
    assert geo["success_rate"] == 1.0        # a cost-to-go gets every pair through the door
    assert pos["success_rate"] <= 5 / 6      # the straight-line goal distance leaves some against the wall


def test_dino_wm_budget_on_wall_v1_checks_success_at_replan_ends():
    result = oracle.mpc_cem("geodesic", episodes=4, seed=1000, samples=48, elites=6, iterations=3,
                            geometry=WALL_V1, budget="dino-wm")
    assert result["budget"] == "dino-wm" and result["execute"] == 5 and result["version"] == 1
    rates = result["success_at_sim_steps"]
    assert list(rates) == ["50", "100", "250", "500"] and list(rates.values()) == sorted(rates.values())
    assert result["success_rate"] == rates["500"] == 1.0
    assert all(k % 25 == 0 for k in result["success_sim_steps"])  # seen only at the end of a replan
