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


def test_gbp_starts_keep_the_cheapest_of_the_warm_start_and_random_plans(setup):
    """starts=K optimises K plans per row side by side and returns each row's cheapest. With no gradient step the
    candidates are the warm start and K − 1 random plans drawn from the planner's generator, so the choice can be
    checked exactly; the warm start here (every action at the top of its range) is a poor plan."""
    model, obs = setup
    s_hist, goal = split_observation(model, torch.as_tensor(obs))
    k, horizon, a = 8, 3, model.config.action_dim
    planner = make_planner("gbp", model, PlannerConfig(horizon=horizon, gbp_steps=0, starts=k, seed=5))
    warm = torch.ones(3, horizon, a)
    planner.generator.manual_seed(5)
    chosen = planner.plan(s_hist, goal, warm)
    g = torch.Generator().manual_seed(5)
    candidates = torch.cat([warm[:, None], torch.randn(3 * (k - 1), horizon, a, generator=g).clamp(-1, 1)
                            .view(3, k - 1, horizon, a)], 1)  # [B, K, T, A], as the planner builds them
    with torch.no_grad():
        costs = planner.cost(s_hist.repeat_interleave(k, 0), goal.repeat_interleave(k, 0),
                             candidates.flatten(0, 1)).view(3, k)
    expected = candidates[torch.arange(3), costs.argmin(1)]
    torch.testing.assert_close(chosen, expected)
    assert not torch.equal(chosen, warm)  # some row found a cheaper random start
    with torch.no_grad():
        assert torch.all(planner.cost(s_hist, goal, chosen) <= planner.cost(s_hist, goal, warm) + 1e-6)
    one = make_planner("gbp", model, PlannerConfig(horizon=horizon, gbp_steps=0, starts=1))
    torch.testing.assert_close(one.plan(s_hist, goal, warm), warm)  # one start: the warm start itself
    with pytest.raises(ValueError, match="starts"):
        PlannerConfig(starts=0)


def test_keep_rows_drops_ended_episodes_and_keeps_the_others_queued_chunks(setup):
    """MPC executing 3 chunks per plan: after episode 1 ends, the next predict sees rows 0 and 2 only and returns
    their second planned chunk, without replanning."""
    model, obs = setup
    planner = make_planner("cem", model, PlannerConfig(horizon=3, execute=3, samples=16, elites=4, iterations=2))
    first, _ = planner.predict(obs)
    queued = planner.to_sim(planner._queue).detach().numpy()  # [3, 2, A]: chunks 2 and 3 of each row's plan
    planner.keep_rows(torch.tensor([True, False, True]))
    second, _ = planner.predict(obs[[0, 2]])
    assert second.shape == (2, model.config.action_dim) and len(planner.plan_seconds) == 1
    np.testing.assert_allclose(second, queued[[0, 2], 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="keep_rows got 3 rows"):
        planner.keep_rows(torch.tensor([True, False, True]))


def test_the_harness_stops_showing_ended_episodes_to_the_policy(setup, monkeypatch):
    """Episode 1 succeeds on its first chunk: from then on the policy is asked about episodes 0 and 2 only (their
    goals, in their order), and a policy with per-row state hears which rows were kept."""
    import wm_gym.real_episodes as harness

    model, _ = setup
    real_run_chunk = harness.run_chunk
    calls = {"n": 0}

    def episode_1_succeeds_at_once(env, chunk, budget, sim_steps, success_step=None):
        obs, steps, _, reward = real_run_chunk(env, chunk, budget, sim_steps, success_step)
        calls["n"] += 1
        return (obs, steps, steps if calls["n"] == 2 else None, reward)  # the 2nd env stepped is episode 1

    class KeepingPolicy:
        def __init__(self):
            self.seen, self.kept = [], []

        def predict(self, obs, deterministic=True):
            self.seen.append(np.array(obs))
            return np.zeros((len(obs), model.config.action_dim), np.float32), None

        def keep_rows(self, keep):
            self.kept.append(keep.tolist())

    monkeypatch.setattr(harness, "run_chunk", episode_1_succeeds_at_once)
    policy = KeepingPolicy()
    result = harness.evaluate_policy(policy, model, episodes=3, seed=3, max_steps=3)
    assert [len(s) for s in policy.seen] == [3, 2, 2]
    assert policy.kept == [[True, False, True]]
    goal_part = model.n_tokens * model.dim
    np.testing.assert_array_equal(policy.seen[1][:, -goal_part:], policy.seen[0][[0, 2], -goal_part:])
    assert [e["length"] for e in result["per_episode"]] == [3, 1, 3]


def test_plan_cli_takes_the_models_recipe_where_no_flag_is_given(tiny_imagine_world, capsys, tmp_path):
    """A model's plan_defaults are the bare command's settings; every flag given overrides its entry (--no-mpc
    too), --max-steps overrides the recipe's budget, and a recipe naming what plan does not take is refused."""
    import json

    from wm_gym.cli import main
    from wm_gym.world_model import WorldModel

    model = WorldModel.load(tiny_imagine_world.path)
    model.meta.plan_defaults = {"planner": "cem", "mpc": True, "samples": 8, "elites": 2, "iterations": 1,
                                "budget": "swm"}
    model.save(tmp_path / "recipe.pt")

    def plan(*flags):
        rc = main(["plan", "--model", str(tmp_path / "recipe.pt"), "--episodes", "2", "--device", "cpu", "--json",
                   *flags])
        assert rc == 0
        return json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    bare = plan()
    assert bare["planner"] == "cem" and bare["mpc"] and bare["execute"] == 5 and bare["budget"] == "swm"
    assert bare["model_recipe"] == model.meta.plan_defaults and bare["plans"] == 2  # 50 sim steps: 2 plans of 5
    given = plan("--planner", "gbp", "--gbp-steps", "1", "--no-mpc", "--horizon", "2", "--max-steps", "2")
    assert given["planner"] == "gbp" and not given["mpc"] and given["execute"] == 1 and given["budget"] != "swm"
    assert given["model_recipe"] == {"samples": 8, "elites": 2, "iterations": 1}
    assert [e["length"] for e in given["per_episode"]] == [2, 2]

    model.meta.plan_defaults = {"episodes_per_round": 3}
    model.save(tmp_path / "bad.pt")
    rc = main(["plan", "--model", str(tmp_path / "bad.pt"), "--episodes", "1", "--device", "cpu", "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and "plan recipe names episodes_per_round" in err
