"""Evaluation budgets: how long a real episode runs and when success is checked (dino-wm, swm, N steps)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wm_gym.envs.wall import WallEnv
from wm_gym.real_episodes import Budget, evaluate_policy, make_budget, run_chunk, summarize, wilson_interval


def test_budgets_by_name():
    dino = make_budget("dino-wm", frameskip=5, default_sim_steps=50)
    assert (dino.sim_steps, dino.check_every, dino.report_at) == (500, 25, (50, 100, 250, 500))
    swm = make_budget("swm", 5, 50)
    assert (swm.sim_steps, swm.check_every, swm.report_at) == (50, 1, (50,))
    assert make_budget("120", 5, 50).sim_steps == 120 and make_budget(None, 5, 100).sim_steps == 100
    assert make_budget("dino-wm", frameskip=2, default_sim_steps=50).check_every == 10  # 5 chunks of 2
    for bad in ("dinowm", "0", "-3", "1.5"):
        with pytest.raises(ValueError, match="budget"):
            make_budget(bad, 5, 50)


def placed_wall(start, goal) -> WallEnv:
    env = WallEnv()
    env.reset(seed=0, options={"start_state": start, "goal_state": goal})
    return env


def test_every_step_budget_sees_success_inside_a_chunk():
    # +x at full speed from x=10 towards a goal at x=20 (same room): 12, 14, 16 -> within 4.5 at step 3.
    env = placed_wall([10.0, 40.0], [20.0, 40.0])
    chunk = np.array([[1.0, 0.0]] * 5, np.float32)
    _, steps, success, _ = run_chunk(env, chunk, make_budget("swm", 5, 50), 0)
    assert (steps, success) == (3, 3)  # the chunk stops at the success


def test_dino_wm_budget_checks_only_at_the_end_of_each_replan():
    budget = make_budget("dino-wm", 5, 50)
    # Passing through the goal inside a replan does not count: the dot is far beyond it at step 25.
    env = placed_wall([10.0, 40.0], [20.0, 40.0])
    steps, success = 0, None
    for _ in range(5):  # one replan = 5 chunks
        _, steps, success, _ = run_chunk(env, np.array([[1.0, 0.0]] * 5, np.float32), budget, steps)
    assert (steps, success) == (25, None)
    # Reaching the goal and staying there counts at the check, sim step 25.
    env = placed_wall([10.0, 40.0], [20.0, 40.0])
    steps = 0
    stop_after_3 = np.array([[1.0, 0.0]] * 3 + [[0.0, 0.0]] * 2, np.float32)
    _, steps, success, _ = run_chunk(env, stop_after_3, budget, steps)
    assert (steps, success) == (5, None)  # at the goal since step 3, but not checked yet
    for _ in range(4):
        _, steps, success, _ = run_chunk(env, np.zeros((5, 2), np.float32), budget, steps)
    assert (steps, success) == (25, 25)


def test_a_budget_stops_mid_chunk():
    env = placed_wall([10.0, 40.0], [50.0, 10.0])
    _, steps, success, _ = run_chunk(env, np.zeros((5, 2), np.float32), Budget("3 steps", 3), 0)
    assert (steps, success) == (3, None)


def test_summary_reports_success_after_each_replan_from_one_run():
    budget = make_budget("dino-wm", 5, 50)
    results = [{"success_step": s, "length": 1} for s in (25, 50, 75, 250, 500, None, None, None)]
    out = summarize(results, budget, frameskip=5)
    assert out["success_after_replans"] == {"2": 2 / 8, "4": 3 / 8, "10": 4 / 8, "20": 5 / 8}
    assert out["success_rate"] == 5 / 8 and out["budget"] == "dino-wm" and out["max_steps"] == 100
    assert out["success_at_sim_steps"] == {"50": 2 / 8, "100": 3 / 8, "250": 4 / 8, "500": 5 / 8}
    assert out["success_ci95"] == [round(x, 4) for x in wilson_interval(5, 8)]


def test_wilson_interval_hand_computed():
    # 8/10: centre (0.8 + 1.96²/20) / (1 + 1.96²/10) = 0.71674, half-width 0.22659.
    assert wilson_interval(8, 10) == pytest.approx((0.49016, 0.94333), abs=1e-4)
    lo, hi = wilson_interval(200, 200)  # all successes still leave room below 1
    assert hi == 1.0 and lo == pytest.approx(0.98116, abs=1e-4)
    assert wilson_interval(0, 50)[0] == 0.0 and 0.07 < wilson_interval(0, 50)[1] < 0.08


class StandStill:
    """Never moves: episodes fail, so they run for the whole budget."""

    def __init__(self, action_dim: int):
        self.action_dim = action_dim

    def predict(self, obs, state=None, episode_start=None, deterministic=True):
        return np.zeros((len(obs), self.action_dim), np.float32), None


def test_evaluate_policy_runs_each_budget_for_its_sim_steps(tiny_imagine_world):
    from wm_gym.world_model import WorldModel

    torch.set_num_threads(1)
    model = WorldModel.load(tiny_imagine_world.path)
    policy = StandStill(model.config.action_dim)
    fs = model.config.frameskip
    for spec, sim_steps in (("swm", 50), ("60", 60), (None, 50), ("dino-wm", 500)):
        result = evaluate_policy(policy, model, episodes=2, seed=11, budget=spec)
        assert [e["sim_steps"] for e in result["per_episode"]] == [sim_steps, sim_steps]
        assert result["success_rate"] == 0.0 and result["mean_episode_length"] == -(-sim_steps // fs)
    with pytest.raises(ValueError, match="either"):
        evaluate_policy(policy, model, episodes=1, budget="swm", max_steps=3)


def test_task_budget_runs_to_the_end_and_needs_a_task():
    task = make_budget("task", 5, 100, task_steps=1000)
    assert (task.sim_steps, task.to_end, task.check_every) == (1000, True, 1)
    with pytest.raises(ValueError, match="no"):
        make_budget("task", 5, 50)  # Wall has no task episode of its own
    env = placed_wall([10.0, 40.0], [20.0, 40.0])
    _, steps, success, _ = run_chunk(env, np.array([[1.0, 0.0]] * 5, np.float32), task, 0)
    assert (steps, success) == (5, 3)  # success at step 3 is kept, the chunk runs on
    _, steps, success, _ = run_chunk(env, np.array([[1.0, 0.0]] * 5, np.float32), task, steps, success)
    assert (steps, success) == (10, 3)  # the first success stays the episode's success step


def test_summary_of_a_task_budget_reports_the_mean_return():
    task = make_budget("task", 5, 100, task_steps=1000)
    results = [{"success_step": s, "length": 200, "task_return": r} for s, r in ((3, 900.0), (None, 100.0), (50, 500.0))]
    out = summarize(results, task, frameskip=5)
    assert out["mean_task_return"] == pytest.approx(500.0) and out["task_return_std"] == pytest.approx(np.std([900, 100, 500]))
    half = 1.96 * 400.0 / np.sqrt(3)  # sample std of 900, 100, 500 is 400
    assert out["task_return_ci95"] == pytest.approx([500 - half, 500 + half])
    assert "mean_task_return" not in summarize(results, make_budget("swm", 5, 50), frameskip=5)


def test_task_budget_sums_dm_controls_reward_over_the_whole_episode(tiny_imagine_world):
    """Reacher's task episode under a policy that never moves: seed 0 starts on the target (reward 1 each step),
    so the return is the full 1,000 although success came at step 1; each return equals a direct replay's sum."""
    from wm_gym.envs.dmc import DMCEnv
    from wm_gym.world_model import WorldModel

    torch.set_num_threads(1)
    model = WorldModel.load(tiny_imagine_world.path)  # any 64-px, 2-D-action model can look at the reacher
    model.meta.env_id = "wm_gym/DMC-reacher-easy-v0"
    result = evaluate_policy(StandStill(model.config.action_dim), model, episodes=2, seed=0, budget="task")
    assert result["budget"] == "task" and [e["sim_steps"] for e in result["per_episode"]] == [1000, 1000]
    env = DMCEnv("reacher", "easy", standard_task=True)
    for episode in result["per_episode"]:
        env.reset(seed=episode["seed"])
        replay = sum(env.step(np.zeros(2, np.float32))[4]["task_reward"] for _ in range(1000))
        assert episode["task_return"] == pytest.approx(replay)
    env.close()
    assert result["per_episode"][0]["task_return"] == pytest.approx(1000.0) and result["per_episode"][0]["success_step"] == 1
    assert result["mean_task_return"] == pytest.approx(np.mean([e["task_return"] for e in result["per_episode"]]))
