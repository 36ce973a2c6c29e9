"""Planners lower the goal cost on a small differentiable world model, batched, with SB3's predict()."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wm_gym.agents.planners import PlannerConfig, make_planner, split_observation


@pytest.fixture(scope="module")
def setup(imagined_starts):
    """(model, obs [3, D]) of three imagined episodes (conftest)."""
    return imagined_starts[:2]


@pytest.mark.parametrize("name", ["cem", "gbp", "gd", "mppi"])
def test_planner_lowers_the_cost_of_a_random_plan(setup, name):
    model, obs = setup
    config = PlannerConfig(horizon=3, samples=64, elites=8, iterations=4, gbp_steps=30, lr=0.2, seed=0)
    planner = make_planner(name, model, config)
    s_hist, goal = split_observation(model, torch.as_tensor(obs))
    g = torch.Generator().manual_seed(1)
    random_plans = torch.rand(16, 3, 3, model.config.action_dim, generator=g) * 2 - 1  # 16 random plans per row
    with torch.no_grad():
        random_cost = torch.stack([planner.cost(s_hist, goal, u) for u in random_plans]).mean(0)  # [B]
        planned = planner.plan(s_hist, goal, None)
        planned_cost = planner.cost(s_hist, goal, planned)
    assert planned.shape == (3, 3, model.config.action_dim) and planned.abs().max() <= 1
    assert torch.all(planned_cost < random_cost), (planned_cost, random_cost)


@pytest.mark.parametrize("mpc", [True, False])
def test_predict_is_batched_in_sim_units_and_open_loop_replans_every_horizon(setup, mpc):
    model, obs = setup
    planner = make_planner("cem", model, PlannerConfig(horizon=2, samples=16, elites=4, iterations=2, mpc=mpc))
    for _ in range(4):
        actions, state = planner.predict(obs)
        assert actions.shape == (3, model.config.action_dim) and state is None
        assert np.all(actions >= model.action_low.numpy() - 1e-6) and np.all(actions <= model.action_high.numpy() + 1e-6)
    assert len(planner.plan_seconds) == (4 if mpc else 2)
    assert planner.seconds_per_plan > 0
    single, _ = planner.predict(obs[0])
    assert single.shape == (model.config.action_dim,)


def test_mpc_executes_the_first_chunks_of_each_plan_before_replanning(setup):
    """DINO-WM's MPC: plan 5 chunks, execute 5, replan. Here horizon 3, execute 3, over 7 steps."""
    model, obs = setup
    planner = make_planner("cem", model, PlannerConfig(horizon=3, execute=3, samples=16, elites=4, iterations=2))
    returned, planned = [], []
    original_plan = planner.plan

    def plan_and_keep(s_hist, goal, warm):
        plan = original_plan(s_hist, goal, warm)
        planned.append(planner.to_sim(plan).detach().numpy())
        return plan

    planner.plan = plan_and_keep
    for _ in range(7):
        returned.append(planner.predict(obs)[0])
    assert len(planned) == 3  # steps 0, 3 and 6
    for step, actions in enumerate(returned):  # each action is chunk (step mod 3) of the latest plan
        np.testing.assert_allclose(actions, planned[step // 3][:, step % 3], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="execute"):
        make_planner("cem", model, PlannerConfig(horizon=2, execute=3))


def test_bad_planner_inputs_raise(setup):
    model, obs = setup
    with pytest.raises(ValueError, match="unknown planner"):
        make_planner("bogus", model)
    with pytest.raises(ValueError, match="obs must be"):
        make_planner("gbp", model, PlannerConfig(gbp_steps=1)).predict(obs[:, :10])


def test_plan_cli_reports_success_and_seconds_per_plan(tiny_imagine_world, capsys):
    import json

    from wm_gym.cli import main

    rc = main(["plan", "--model", str(tiny_imagine_world.path), "--planner", "cem", "--mpc", "--samples", "8",
               "--elites", "2", "--iterations", "1", "--horizon", "2", "--episodes", "2", "--max-steps", "2",
               "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["planner"] == "cem" and out["episodes"] == 2
    assert 0 <= out["success_rate"] <= 1 and out["seconds_per_plan"] > 0 and out["plans"] >= 1
    assert [e["seed"] for e in out["per_episode"]] == [1000, 1001]


def test_plan_cli_precision_sets_the_planning_models_autocast(tiny_imagine_world, capsys, monkeypatch):
    import json

    from wm_gym.cli import main
    from wm_gym.world_model import WorldModel

    seen = []
    real_rollout = WorldModel.rollout
    monkeypatch.setattr(WorldModel, "rollout", lambda self, *a, **kw: seen.append(self.uses_bf16) or real_rollout(self, *a, **kw))
    for precision in ("bf16", "fp32"):
        seen.clear()
        rc = main(["plan", "--model", str(tiny_imagine_world.path), "--planner", "cem", "--samples", "8", "--elites",
                   "2", "--iterations", "1", "--horizon", "2", "--episodes", "1", "--max-steps", "1", "--precision",
                   precision, "--device", "cpu", "--json"])
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rc == 0 and out["precision"] == precision
        assert seen and set(seen) == {precision == "bf16"}  # every planning rollout ran in that precision


def test_plan_cli_dino_wm_budget_replans_every_five_chunks(tiny_imagine_world, capsys):
    import json

    from wm_gym.cli import main

    rc = main(["plan", "--model", str(tiny_imagine_world.path), "--planner", "cem", "--mpc", "--samples", "8",
               "--elites", "2", "--iterations", "1", "--horizon", "5", "--episodes", "2", "--budget", "dino-wm",
               "--device", "cpu", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["execute"] == 5 and out["budget"] == "dino-wm"
    assert set(out["success_after_replans"]) == {"2", "4", "10", "20"}
    chunks = max(e["length"] for e in out["per_episode"])  # every episode's agent steps
    assert out["plans"] == -(-chunks // 5)  # one plan per 5 executed chunks
    for e in out["per_episode"]:
        assert e["sim_steps"] == 500 or (e["success"] and e["success_step"] % 25 == 0)


@pytest.mark.parametrize("mpc", [True, False])
def test_planner_expected_features_are_the_models_prediction_for_the_returned_action(setup, mpc):
    model, obs = setup
    planner = make_planner("gbp", model, PlannerConfig(horizon=2, gbp_steps=3, mpc=mpc))
    s_hist, _ = split_observation(model, torch.as_tensor(obs))
    for step in range(2):  # open loop: the second action comes from the queue
        actions, _ = planner.predict(obs)
        with torch.no_grad():
            predicted = model.step(s_hist, torch.as_tensor(actions))
        torch.testing.assert_close(planner.expected, predicted, atol=1e-5, rtol=1e-4)
        s_hist = predicted[:, None]
        obs = np.concatenate([predicted.flatten(1).numpy(), obs[:, obs.shape[1] // 2:]], axis=1)


def test_plan_videos_show_real_planned_and_goal_panels(setup, tmp_path):
    import imageio.v3 as iio

    from wm_gym.real_episodes import evaluate_policy

    model, _ = setup
    planner = make_planner("gbp", model, PlannerConfig(horizon=2, gbp_steps=2))
    evaluate_policy(planner, model, episodes=2, seed=3, max_steps=2, video_dir=tmp_path, video_episodes=1)
    (video,) = tmp_path.glob("*.mp4")
    frames = iio.imread(video)
    size = model.meta.image_size
    assert frames.shape[2] == (3 * size + 2 * 2) * 4  # real | planned | goal, 2-px gaps, 4x upscale


def test_value_function_adds_a_cost_to_go_of_the_plans_last_frames(setup):
    from wm_gym.imagine.vector_env import policy_observation_tensor

    model, obs = setup
    s_hist, goal = split_observation(model, torch.as_tensor(obs))
    centre = torch.randn(model.n_tokens, model.dim, generator=torch.Generator().manual_seed(3))

    def value(o):  # prefers ending near `centre`; any differentiable map of the agent's observation works
        return -((o[:, : model.n_tokens * model.dim] - centre.flatten()) ** 2).mean(1)

    config = PlannerConfig(horizon=2, gbp_steps=30, value_weight=2.0)
    plain, guided = make_planner("gbp", model, config), make_planner("gbp", model, config, value=value)
    u = torch.rand(3, 2, model.config.action_dim, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.no_grad():
        last = model.rollout(s_hist, plain.to_sim(u))[:, -1:]
        expected = plain.cost(s_hist, goal, u) - 2.0 * value(policy_observation_tensor(last, goal))
        assert torch.allclose(guided.cost(s_hist, goal, u), expected, atol=1e-5)
    # the gradient reaches the actions through the value: a value that rewards ending far from the goal,
    # weighted to dominate, makes GBP end farther from it than the goal cost alone
    def away(o):
        return ((o[:, : model.n_tokens * model.dim] - goal.flatten(1)) ** 2).mean(1)

    small = dict(horizon=2, gbp_steps=10, lr=0.05, noise=0.0)
    plain = make_planner("gbp", model, PlannerConfig(**small))
    contrary = make_planner("gbp", model, PlannerConfig(**small, value_weight=100.0), value=away)
    with torch.no_grad():
        ends = [model.rollout(s_hist, p.to_sim(p.plan(s_hist, goal, None)))[:, -1] for p in (plain, contrary)]
    dist = [((e - goal) ** 2).mean((1, 2)) for e in ends]
    assert torch.all(dist[1] > dist[0]), dist
