"""A policy's success in imagination under a real-sim budget (wm_gym/imagined_episodes.py, evaluate --imagined)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wm_gym.imagined_episodes import evaluate_in_imagination, evaluate_in_imagination_by_test, success_test
from wm_gym.world_model import WorldModel
from wm_gym.zoo import load_model

torch.set_num_threads(1)


class Still:
    """A policy that answers the middle of the action range and keeps every observation batch it is shown."""

    def __init__(self, model: WorldModel):
        self.action_dim, self.seen = model.config.action_dim, []

    def predict(self, obs, deterministic=True):
        self.seen.append(np.array(obs))
        return np.zeros((len(obs), self.action_dim), np.float32), None


def test_each_test_is_its_metric_and_threshold_and_a_missing_one_is_named(world):
    model = WorldModel.load(world.path)
    assert success_test(model, "calibrated") == (model.meta.success_metric, pytest.approx(model.meta.success_threshold))
    assert success_test(model, "real") == (model.meta.success_metric,
                                           pytest.approx(model.meta.train_info["real_success_threshold"]))
    with pytest.raises(ValueError, match="temporal-distance head"):
        success_test(model, "temporal")
    with pytest.raises(ValueError, match="test must be one of"):
        success_test(model, "oracle")
    with pytest.raises(ValueError, match="calibrated model"):
        success_test(WorldModel.load(world.nobank_path), "real")


def test_success_is_checked_when_the_budget_checks_it_on_distinct_held_out_demos(world):
    model = WorldModel.load(world.path)
    heldout = len(model.bank.indices("heldout"))
    policy = Still(model)
    model.meta.success_threshold = 1e9  # every imagined state passes: success at the budget's first check
    result = evaluate_in_imagination(policy, model, budget="dino-wm", test="calibrated")
    assert result["episodes"] == heldout and result["imagined_success_rate"] == 1.0
    assert (result["model_steps"], result["checked_every"]) == (100, 5) and len(policy.seen) == 100  # 500 sim steps
    assert result["success_at_sim_steps"]["50"] == 1.0  # (the first check, at 25 sim steps, latched)
    first_goals = policy.seen[0][:, -model.n_tokens * model.dim:]
    assert len(np.unique(first_goals.round(4), axis=0)) == heldout  # each held-out demo once
    model.meta.success_threshold = -1.0  # none passes
    none = evaluate_in_imagination(Still(model), model, episodes=2, budget=10, test="calibrated")
    assert none["imagined_success_rate"] == 0.0 and none["episodes"] == 2 and none["model_steps"] == 10 // 5
    assert none["imagined_success_ci95"][0] == 0.0 < none["imagined_success_ci95"][1]
    with pytest.raises(ValueError, match=r"episodes must be in \[1, "):
        evaluate_in_imagination(Still(model), model, episodes=heldout + 1, test="calibrated")
    dmc = load_model("dmc-point_mass", "cpu")  # a sim with a task episode of its own, scored by its task reward
    with pytest.raises(ValueError, match="task budget"):
        evaluate_in_imagination(Still(dmc), dmc, budget="task", test="calibrated")


def test_a_latent_policy_is_run_in_its_own_latent_actions(world):
    model = WorldModel.load(world.path)
    z_dim = int(model.latent_model.config.n_latents * model.latent_model.config.latent_dim)

    class LatentStill(Still):
        def predict(self, obs, deterministic=True):
            self.seen.append(np.array(obs))
            return np.zeros((len(obs), z_dim), np.float32), None

    result = evaluate_in_imagination(LatentStill(model), model, episodes=3, budget=10, test="calibrated",
                                     action_space="latent")
    assert result["action_space"] == "latent" and result["episodes"] == 3 and result["model_steps"] == 2
    assert z_dim != model.config.action_dim  # so a real-chunk answer is refused where the env takes z
    with pytest.raises(ValueError, match="action"):
        evaluate_in_imagination(Still(model), model, episodes=3, budget=10, test="calibrated", action_space="latent")


def test_one_rollout_serves_every_test_each_read_with_its_own_threshold(world):
    model = WorldModel.load(world.path)
    model.meta.success_threshold = 1e9  # the calibrated test passes every state, the real one none
    model.meta.train_info["real_success_threshold"] = -1.0
    policy = Still(model)
    both = evaluate_in_imagination_by_test(policy, model, ["calibrated", "real"], episodes=3, budget="dino-wm")
    assert len(policy.seen) == 100  # one rollout of the budget's 100 model steps, not one per test
    assert both["calibrated"]["imagined_success_rate"] == 1.0 and both["real"]["imagined_success_rate"] == 0.0
    assert both["real"]["threshold"] == -1.0 and both["calibrated"]["tests_in_rollout"] == ["calibrated", "real"]
    for test in ("calibrated", "real"):  # the same figures as a run for that test alone
        alone = evaluate_in_imagination(Still(model), model, episodes=3, budget="dino-wm", test=test)
        assert alone["success_at_sim_steps"] == both[test]["success_at_sim_steps"]
    with pytest.raises(ValueError, match="at least one test"):
        evaluate_in_imagination_by_test(policy, model, [], episodes=3)
    with pytest.raises(ValueError, match="test must be one of"):
        evaluate_in_imagination_by_test(policy, model, ["calibrated", "oracle"], episodes=3)
