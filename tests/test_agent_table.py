"""benchmarks/agent_table.py: the expert row counts success the way each budget says."""
import importlib.util
from pathlib import Path

from wm_gym.real_episodes import Budget, make_budget

_spec = importlib.util.spec_from_file_location(
    "agent_table", Path(__file__).resolve().parents[1] / "benchmarks" / "agent_table.py")
agent_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agent_table)


def test_expert_row_follows_the_budget():
    seeds = list(range(1000, 1012))
    full = agent_table.expert_success("wm_gym/Wall-v1", seeds, make_budget("swm", 5, 50))
    assert full["episodes"] == 12 and full["success_rate"] >= 10 / 12  # the noisy expert crosses the door
    lo, hi = full["success_ci95"]
    assert lo < full["success_rate"] <= hi
    # Starts and goals are in opposite rooms at least 12.8 px apart: 3 steps of <= 2.83 px cannot succeed.
    assert agent_table.expert_success("wm_gym/Wall-v1", seeds, Budget("3 steps", 3))["success_rate"] == 0.0
    # Checked only every 25 steps, the same episodes still succeed: the expert stays at its goal.
    assert agent_table.expert_success("wm_gym/Wall-v1", seeds, make_budget("dino-wm", 5, 50))["success_rate"] \
        >= full["success_rate"]
