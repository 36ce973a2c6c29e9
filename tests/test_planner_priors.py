"""Planning at the anchors' level: a learned cost-to-go (terminal="temporal") and a policy prior (TD-MPC2 style)."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from wm_gym.agents.planners import PlannerConfig, make_planner
from wm_gym.imagine.vector_env import policy_observation
from wm_gym.world_model import WorldModel

PLANNER_NAMES = ["cem", "mppi", "gbp", "gd"]


@pytest.fixture(scope="module")
def setup(imagined_starts):
    """(model, obs [3, D], s_hist [3, H, N, C], goal [3, N, C]) of three imagined episodes (conftest)."""
    return imagined_starts


# ----- fake priors: SB3's predict, with known actions ----------------------------------------------------
class LinearPolicy:
    """a = low + (tanh(obs·W) + 1)/2 · (high − low): deterministic, and it reacts to what it sees."""

    def __init__(self, model: WorldModel, seed: int = 0):
        d = (model.config.history + 1) * model.n_tokens * model.dim
        self.w = np.random.default_rng(seed).normal(0, 3 / np.sqrt(d), (d, model.config.action_dim)).astype(np.float32)
        self.low, self.high = model.action_low.numpy(), model.action_high.numpy()
        self.observation_space = spaces.Box(-np.inf, np.inf, (d,), np.float32)
        self.action_space = spaces.Box(self.low, self.high, (model.config.action_dim,), np.float32)

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        return self.low + (np.tanh(np.asarray(obs) @ self.w) + 1) / 2 * (self.high - self.low), None


class TwoFacedPolicy:
    """Constant chunks: ``mean`` when deterministic, ``noisy`` when sampling (its 'policy noise')."""

    def __init__(self, mean: np.ndarray, noisy: np.ndarray):
        self.mean, self.noisy = mean, noisy

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        a = self.mean if deterministic else self.noisy
        return np.repeat(a[None], len(obs), 0), None


def expected_actions(model, policy, s_hist, goal, plan_sim):
    """What ``policy`` does at each step along the plan's own predicted trajectory (model.rollout): [B, T, A]."""
    with torch.no_grad():
        preds = model.rollout(s_hist, plan_sim)
    h, out = model.config.history, []
    frames = torch.cat([s_hist, preds], dim=1)
    for t in range(plan_sim.shape[1]):
        out.append(policy.predict(policy_observation(frames[:, t:t + h], goal), deterministic=True)[0])
    return np.stack(out, 1)


# ----- policy priors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_with_no_optimisation_the_plan_is_the_priors_closed_loop_rollout(setup, name):
    model, obs, s_hist, goal = setup
    prior = LinearPolicy(model)
    config = PlannerConfig(horizon=3, iterations=0, gbp_steps=0, samples=8, elites=2, prior_samples=0.25)
    planner = make_planner(name, model, config, prior=prior)
    plan = planner.to_sim(planner.plan(s_hist, goal, None)).numpy()
    want = expected_actions(model, prior, s_hist, goal, torch.as_tensor(plan))
    np.testing.assert_allclose(plan, want, rtol=1e-4, atol=1e-5)
    assert np.abs(plan[:, 0] - plan[:, 1]).max() > 1e-3  # the prior reacted to the predicted states
    planner.reset()  # through predict too: the first action returned is the prior's on this observation
    np.testing.assert_allclose(planner.predict(obs)[0], prior.predict(obs)[0], rtol=1e-4, atol=1e-5)


def test_a_prior_moves_the_start_away_from_the_cold_start(setup):
    """Control for the test above: without a prior, the same planners start elsewhere."""
    model, _, s_hist, goal = setup
    prior = LinearPolicy(model)
    for name in PLANNER_NAMES:
        config = PlannerConfig(horizon=3, iterations=0, gbp_steps=0, samples=8, elites=2)
        with_prior = make_planner(name, model, config, prior=prior).plan(s_hist, goal, None)
        without = make_planner(name, model, config).plan(s_hist, goal, None)
        assert (with_prior - without).abs().max() > 1e-2, name


def test_each_row_starts_from_the_cheaper_of_warm_start_and_prior(setup):
    model, _, s_hist, goal = setup
    planner = make_planner("gbp", model, PlannerConfig(horizon=3, gbp_steps=0), prior=LinearPolicy(model))
    proposal = planner.propose(s_hist, goal, 1)[:, 0]
    warm = -proposal
    best = torch.stack([warm[0], proposal[1], warm[2]])  # the plan each row's cost below prefers
    planner.cost = lambda s, g, u: ((u - best[torch.arange(len(u)) % 3]) ** 2).flatten(1).sum(1)
    torch.testing.assert_close(planner.plan(s_hist, goal, warm), best)


@pytest.mark.parametrize("share,returns_noisy", [(0.75, True), (0.0, False)])
def test_cem_keeps_the_priors_noisy_rollouts_among_its_samples(setup, share, returns_noisy):
    """Cost minimal exactly at the prior's noisy sequence: 4 samples, 1 iteration find it only as a prior sample."""
    model, _, s_hist, goal = setup
    a = model.config.action_dim
    mean_u, noisy_u = np.full(a, -0.5, np.float32), np.linspace(-0.9, 0.9, a).astype(np.float32)
    sim = make_planner("cem", model).to_sim
    prior = TwoFacedPolicy(sim(torch.as_tensor(mean_u)).numpy(), sim(torch.as_tensor(noisy_u)).numpy())
    planner = make_planner("cem", model, PlannerConfig(horizon=2, samples=4, elites=2, iterations=1,
                                                       prior_samples=share), prior=prior)
    target = torch.as_tensor(noisy_u).expand(2, a)
    planner.cost = lambda s, g, u: ((u - target) ** 2).flatten(1).sum(1)
    plan = planner.plan(s_hist, goal, None)
    assert planner.prior_count == (3 if share else 0)
    assert torch.allclose(plan, target.expand_as(plan), atol=1e-5) == returns_noisy


def test_prior_of_another_model_is_rejected(setup):
    model, *_ = setup
    prior = LinearPolicy(model)
    prior.observation_space = spaces.Box(-1, 1, (7,), np.float32)
    with pytest.raises(ValueError, match="train it on this world model"):
        make_planner("cem", model, prior=prior)
    prior = LinearPolicy(model)
    prior.action_space = spaces.Box(-1, 1, (3,), np.float32)
    with pytest.raises(ValueError, match="sim action chunks"):
        make_planner("gbp", model, prior=prior)


# ----- the learned cost-to-go ---------------------------------------------------------------------------
class StubHead(nn.Module):
    """'Model steps to go' = L1 feature distance / 10: known by hand, differentiable."""

    def steps(self, s, g):
        return (s - g).abs().sum((-2, -1)) / 10


class ConstantHead(nn.Module):
    def steps(self, s, g):
        return torch.full(s.shape[:1], 7.0) + 0 * s.sum((-2, -1))


def with_head(model: WorldModel, head: nn.Module) -> WorldModel:
    model = copy.deepcopy(model)
    model.temporal_distance = head
    return model


def test_temporal_terminal_cost_is_the_heads_steps_of_the_predicted_frames(setup):
    model, _, s_hist, goal = setup
    u = torch.rand(3, 3, model.config.action_dim, generator=torch.Generator().manual_seed(0)) * 2 - 1
    constant = make_planner("cem", with_head(model, ConstantHead()), PlannerConfig(horizon=3, terminal="temporal"))
    torch.testing.assert_close(constant.cost(s_hist, goal, u), torch.full((3,), 7 * (0.25 + 0.5 + 1)))
    stub = with_head(model, StubHead())
    final_only = make_planner("cem", stub, PlannerConfig(horizon=3, terminal="temporal", decay=0.0))
    with torch.no_grad():
        final = stub.rollout(s_hist, final_only.to_sim(u))[:, -1]
        want = (final - goal).abs().sum((-2, -1)) / 10
        got = final_only.cost(s_hist, goal, u)
        feature = make_planner("cem", stub, PlannerConfig(horizon=3, decay=0.0)).cost(s_hist, goal, u)
    torch.testing.assert_close(got, want)
    assert (got - feature).abs().min() > 1e-3  # not the feature MSE


@pytest.mark.parametrize("name", ["gbp", "gd"])
def test_gradients_reach_the_actions_through_the_head(setup, name):
    model, _, s_hist, goal = setup
    stub = with_head(model, StubHead())
    config = PlannerConfig(horizon=2, terminal="temporal", gbp_steps=15, lr=0.1, gd_lr=0.05, noise=0.0, seed=1)
    planner = make_planner(name, stub, config)
    u = (torch.rand(3, 2, model.config.action_dim, generator=torch.Generator().manual_seed(2)) * 2 - 1).requires_grad_()
    planner.cost(s_hist, goal, u).sum().backward()
    by_hand = u.detach().clone().requires_grad_()
    preds = stub.rollout(s_hist, planner.to_sim(by_hand))  # T = 2 frames, weights 0.5 and 1
    (0.5 * StubHead().steps(preds[:, 0], goal) + StubHead().steps(preds[:, 1], goal)).sum().backward()
    assert u.grad.abs().sum() > 0
    torch.testing.assert_close(u.grad, by_hand.grad)  # the head's own gradient reaches the actions
    with torch.no_grad():
        start = planner.cost(s_hist, goal, u.detach())
        planned = planner.cost(s_hist, goal, planner.plan(s_hist, goal, u.detach()))
    assert torch.all(planned < start), (planned, start)


@pytest.mark.parametrize("name", PLANNER_NAMES)
def test_temporal_terminal_without_a_head_is_a_clear_error(setup, name):
    model, *_ = setup
    assert model.temporal_distance is None
    with pytest.raises(ValueError, match="temporal-distance head.*train-distance"):
        make_planner(name, model, PlannerConfig(terminal="temporal"))


def test_bad_terminal_and_prior_share_raise():
    with pytest.raises(ValueError, match="terminal must be one of goal, temporal"):
        PlannerConfig(terminal="value")
    with pytest.raises(ValueError, match="prior_samples"):
        PlannerConfig(prior_samples=2.0)


# ----- a real fitted head and a real SB3 prior, through the CLI ----------------------------------------------
@pytest.fixture(scope="module")
def td_model_path(tiny_imagine_world, tmp_path_factory):
    """The tiny model with a temporal-distance head fitted for a few steps on its random episodes."""
    from wm_gym.temporal_distance import TemporalDistanceConfig
    from wm_gym.train.temporal_distance import fit_temporal_distance

    model = WorldModel.load(tiny_imagine_world.path)
    fit_temporal_distance(model, [tiny_imagine_world.random_dir], TemporalDistanceConfig(
        embed_dim=16, hidden=64, steps=40, batch_size=64, lr=1e-3), progress=False)
    path = tmp_path_factory.mktemp("td") / "wm-td.pt"
    model.save(path)
    return path


def test_gbp_lowers_a_fitted_heads_steps_to_go(td_model_path, setup):
    _, _, s_hist, goal = setup
    model = WorldModel.load(td_model_path)
    planner = make_planner("gbp", model, PlannerConfig(horizon=2, terminal="temporal", decay=0.0, gbp_steps=20,
                                                       noise=0.0, seed=3))
    start = planner._cold_start(3)
    with torch.no_grad():
        before = planner.cost(s_hist, goal, start)
        after = planner.cost(s_hist, goal, planner.plan(s_hist, goal, start))
    assert torch.all(after < before), (after, before)


@pytest.fixture(scope="module")
def prior_agent(td_model_path, tmp_path_factory):
    """An untrained PPO agent on the tiny model: a real SB3 policy with action noise."""
    from wm_gym.agents.train_agent import AgentConfig, train_agent

    out = tmp_path_factory.mktemp("agent")
    train_agent(AgentConfig(model=str(td_model_path), out=str(out / "prior.zip"), steps=0, num_envs=4, n_steps=32,
                            batch_size=64, device="cpu", progress=False, bc_data=None, log_dir=str(out / "tb")))
    return out / "prior.zip"


def test_plan_cli_with_a_learned_cost_to_go_and_a_policy_prior(td_model_path, prior_agent, tiny_imagine_world, capsys):
    from wm_gym.cli import main

    common = ["plan", "--model", str(td_model_path), "--horizon", "2", "--episodes", "2", "--max-steps", "2",
              "--device", "cpu", "--json"]
    rc = main(common + ["--planner", "cem", "--samples", "8", "--elites", "2", "--iterations", "1",
                        "--terminal", "temporal", "--prior", str(prior_agent), "--prior-samples", "0.5"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and out["terminal"] == "temporal" and out["prior"] == str(prior_agent) and out["episodes"] == 2
    assert main(common + ["--planner", "gbp", "--gbp-steps", "2", "--prior", str(prior_agent)]) == 0
    capsys.readouterr()
    rc = main(["plan", "--model", str(tiny_imagine_world.path), "--terminal", "temporal", "--episodes", "1",
               "--device", "cpu"])
    assert rc == 2 and "train-distance" in capsys.readouterr().err


def test_planning_table_compares_costs_and_priors_on_the_same_seeds_and_resumes(
        td_model_path, prior_agent, tiny_imagine_world, tmp_path, monkeypatch, capsys):
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "planning_table", Path(__file__).resolve().parents[1] / "benchmarks" / "planning_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    argv = ["planning_table.py", "--model", str(td_model_path), "--models", "base", "--modes", "mpc",
            "--planners", "CEM", "--variants", "goal,temporal,waypoints,temporal+prior",
            "--waypoints", str(tiny_imagine_world.random_dir), "--agent", str(prior_agent), "--episodes", "2",
            "--budget", "10", "--horizon", "2", "--samples", "4", "--elites", "2", "--iterations", "1",
            "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    table.main()
    cells = json.loads((tmp_path / "table.json").read_text())["cells"]
    assert set(cells) == {"base-cem-mpc", "base-cem-mpc-temporal", "base-cem-mpc-waypoints",
                          "base-cem-mpc-temporal+prior", "base-agent"}
    assert all(c["episodes"] == 2 and c["seconds_per_plan"] > 0 and c["budget"] == "10 steps" for c in cells.values())
    markdown = (tmp_path / "table.md").read_text()
    for label in ("goal distance", "learned cost-to-go", "graph waypoints", "learned cost-to-go + policy prior",
                  "agent alone"):
        assert f"| {label} |" in markdown, markdown
    monkeypatch.setattr(table, "run_cell", lambda *a: pytest.fail("a finished cell ran again"))
    table.main()  # resumes: every cell is read back
    monkeypatch.setattr(sys, "argv", argv + ["--episodes", "3"])  # other settings, same folder
    with pytest.raises(SystemExit, match="use another --out"):
        table.main()


def test_load_prior_takes_only_goal_agents_acting_in_sim_chunks(prior_agent, tmp_path):
    import shutil

    from wm_gym.agents.planners import load_prior

    assert load_prior(prior_agent).observation_space.shape is not None
    for sidecar, message in (({"algo": "ppo", "task": "demo"}, "must see the goal"),
                             ({"algo": "ppo", "task": "goal", "action_space": "latent"}, "sim action chunks")):
        copy_path = tmp_path / f"{message[:4]}.zip"
        shutil.copy(prior_agent, copy_path)
        copy_path.with_suffix(".json").write_text(json.dumps(sidecar))
        with pytest.raises(ValueError, match=message):
            load_prior(copy_path)


def test_export_agent_keeps_the_policy_and_drops_what_only_training_needs(prior_agent, tmp_path):
    """The zoo's copy of an agent: the same actions (fp16 weights: to 1e-2 of the action range), no optimizer
    moments, a sidecar saying where it came from, and a file well under half the size."""
    import zipfile

    from wm_gym.agents.train_agent import export_agent, load_agent

    original, meta = load_agent(prior_agent)
    original.policy.optimizer.step()  # give the optimizer moments to drop (an untrained agent has none yet)
    for p in original.policy.parameters():
        p.grad = torch.ones_like(p)
    original.policy.optimizer.step()
    original.save(tmp_path / "trained.zip")
    (tmp_path / "trained.json").write_text(json.dumps(meta))
    out = export_agent(tmp_path / "trained.zip", tmp_path / "exported.zip")
    exported, exported_meta = load_agent(out)
    assert exported_meta["exported_from"] == str(tmp_path / "trained.zip") and exported_meta["task"] == meta["task"]
    assert next(exported.policy.parameters()).dtype == torch.float32  # fp16 on disk, fp32 to act
    obs = np.random.default_rng(0).normal(size=(32, *original.observation_space.shape)).astype(np.float32)
    span = original.action_space.high - original.action_space.low
    diff = np.abs(exported.predict(obs, deterministic=True)[0] - original.predict(obs, deterministic=True)[0])
    assert diff.max() < 1e-2 * span.max()
    sizes = {name: zipfile.ZipFile(path).getinfo("policy.optimizer.pth").file_size
             for name, path in (("before", tmp_path / "trained.zip"), ("after", out))}
    assert sizes["after"] < 0.01 * sizes["before"]
    assert out.stat().st_size < 0.5 * (tmp_path / "trained.zip").stat().st_size
    exported_full = export_agent(tmp_path / "trained.zip", tmp_path / "full.zip", half=False)
    full, _ = load_agent(exported_full)
    np.testing.assert_allclose(full.predict(obs, deterministic=True)[0], original.predict(obs, deterministic=True)[0],
                               atol=1e-6)


def test_the_shipped_wall_plans_with_its_shipped_prior_by_default():
    """`wm-gym plan --model wall` takes the model's recipe: MPC-GBP with the learned cost-to-go, seeded by the zoo's
    wall-prior agent, which fits the model (observations and action chunks)."""
    from wm_gym.agents.planners import check_prior, load_prior
    from wm_gym.zoo import load_model, resolve_agent

    model = load_model("wall", "cpu")
    recipe = model.meta.plan_defaults
    assert recipe["planner"] == "gbp" and recipe["mpc"] and recipe["terminal"] == "temporal"
    assert recipe["prior"] == "wall-prior" and resolve_agent("wall-prior").is_file()
    check_prior(load_prior(recipe["prior"], model=model), model)
    with pytest.raises(ValueError, match="unknown model"):
        load_model("wall-prior")  # an agent is not a world model
    pointmaze = load_model("pointmaze", "cpu").meta.plan_defaults  # the same planner; a prior added nothing there
    assert pointmaze["terminal"] == "temporal" and pointmaze["mpc"] and "prior" not in pointmaze


def test_the_shipped_pointmaze_replans_every_chunk_from_scratch_with_every_frame_weighed_alike():
    """`wm-gym plan --model pointmaze`: a fresh MPC-GBP plan after every chunk (no warm start), every predicted
    frame's steps to go weighed the same (decay 1), which makes the ball stop at the goal (docs/results.md, issue 28);
    the bare command plans so, and `train-agent`'s DAgger teacher labels with the same cost."""
    from wm_gym.agents.distill import recipe_teacher
    from wm_gym.cli import _apply_model_recipe, _planner_config, build_parser
    from wm_gym.zoo import load_model

    model = load_model("pointmaze", "cpu")
    assert model.meta.plan_defaults == {"planner": "gbp", "mpc": True, "terminal": "temporal", "gbp_steps": 30,
                                        "budget": "dino-wm", "execute": 1, "warm_start": False, "decay": 1.0}
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    import train_zoo

    assert train_zoo.RECIPES["pointmaze"]["plan"] == model.meta.plan_defaults  # the recipe writes what ships
    args = build_parser().parse_args(["plan", "--model", "pointmaze"])
    _apply_model_recipe(args, model.meta.plan_defaults, "plan")
    config = _planner_config(args)
    assert (config.execute, config.warm_start, config.decay, config.gbp_steps) == (1, False, 1.0, 30)
    assert args.budget == "dino-wm" and args.planner == "gbp"
    given = build_parser().parse_args(["plan", "--model", "pointmaze", "--execute", "5", "--warm-start"])
    _apply_model_recipe(given, model.meta.plan_defaults, "plan")
    assert (_planner_config(given).execute, _planner_config(given).warm_start) == (5, True)  # flags still win
    teacher = recipe_teacher(model, start="zero")
    assert (teacher.config.decay, teacher.config.warm_start, teacher.config.execute) == (1.0, False, 1)


def test_the_shipped_reacher_plans_with_its_cloned_keypoint_prior_under_its_own_episode():
    """`wm-gym plan --model dmc-reacher`: MPC-GBP on the learned steps to go, seeded by the keypoint net cloned from
    the model's bank (shipped as dmc-reacher-prior), under the sim's 100-step episode (no budget in the recipe)."""
    from wm_gym.agents.planners import check_prior, load_prior
    from wm_gym.agents.policy_nets import TokenKeypoints
    from wm_gym.agents.train_agent import load_agent
    from wm_gym.zoo import load_model, resolve_agent

    model = load_model("dmc-reacher", "cpu")
    recipe = model.meta.plan_defaults
    assert recipe == {"planner": "gbp", "mpc": True, "terminal": "temporal", "gbp_steps": 30,
                      "prior": "dmc-reacher-prior"}
    prior = load_prior(recipe["prior"], model=model)
    check_prior(prior, model)
    agent, meta = load_agent(resolve_agent("dmc-reacher-prior"))
    assert isinstance(agent.policy.features_extractor, TokenKeypoints) and meta["config"]["steps"] == 0
    assert meta["exported_half"] and meta["model"] == "dmc-reacher"
    assert model.meta.train_info["recipe"]["plan_prior"] == ["--steps", "0", "--policy-net", "keypoints", "--seed", "0"]
