"""Distilling a planner into a policy by DAgger in imagination (agents/distill.py, train-agent --teacher plan)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from wm_gym.agents.distill import dagger, recipe_teacher
from wm_gym.agents.planners import GradientDescentPlanner, PlannerConfig
from wm_gym.agents.train_agent import AgentConfig, load_agent, sidecar_path, train_agent
from wm_gym.imagine import WMImagineVectorEnv, make_sb3_vec_env
from wm_gym.world_model import WorldModel

torch.set_num_threads(1)


class ConstantTeacher:
    """A teacher that answers one fixed chunk everywhere and counts its calls (a planner's interface)."""

    def __init__(self, action: np.ndarray):
        self.action, self.resets, self.seconds_per_plan, self.seen = action, 0, 0.0, []

    def reset(self) -> None:
        self.resets += 1

    def predict(self, obs, deterministic=True):
        self.seen.append(np.array(obs))
        return np.repeat(self.action[None], len(obs), 0), None


def test_dagger_follows_the_teacher_first_then_the_student_and_learns_the_labels(model):
    env = WMImagineVectorEnv(num_envs=4, model=model, horizon=3, success_threshold=0.0, render_mode=None, device="cpu")
    low, high = env.single_action_space.low, env.single_action_space.high
    teacher = ConstantTeacher((low + 0.7 * (high - low)).astype(np.float32))
    agent = PPO("MlpPolicy", make_sb3_vec_env(4, model=model, device="cpu"), seed=0, device="cpu", n_steps=8, batch_size=32)
    executed, real_step = [], env.step
    env.step = lambda actions: executed.append(np.array(actions)) or real_step(actions)
    untrained = copy.deepcopy(agent.policy)

    report = dagger(agent, teacher, env, rounds=2, horizon=3, epochs=300, seed=0)  # 12 labels: 1 batch an epoch

    assert len(teacher.seen) == 6 and teacher.resets == 2 and len(executed) == 6  # labels every state it visits
    assert all(np.allclose(a, teacher.action) for a in executed[:3])  # round 0: the teacher drives
    assert not any(np.allclose(a, teacher.action) for a in executed[3:])  # round 1: the student, not exactly it
    assert report["labels"] == 2 * 3 * 4 and [r["labels"] for r in report["rounds"]] == [12, 24]
    assert [r["driver"] for r in report["rounds"]] == ["teacher", "student"]

    def gap(policy, states):  # the reported disagreement: mean squared chunk gap over the round's states
        return np.mean([np.mean((policy.predict(o, deterministic=True)[0] - teacher.action) ** 2) for o in states])

    assert report["rounds"][0]["action_gap"] == pytest.approx(gap(untrained, teacher.seen[:3]), rel=1e-3)
    assert gap(agent.policy, teacher.seen) < 0.05 * gap(untrained, teacher.seen)  # refitted on every label
    with pytest.raises(ValueError, match="rounds >= 1"):
        dagger(agent, teacher, env, rounds=0, horizon=3, epochs=1)


def test_the_recipe_teacher_is_the_models_plan_recipe_replanning_every_step(model, imagined_starts):
    _, obs, *_ = imagined_starts
    saved = dict(model.meta.plan_defaults)
    try:
        model.meta.plan_defaults = {"planner": "gd", "mpc": True, "terminal": "goal", "gbp_steps": 2, "horizon": 2,
                                    "budget": "dino-wm"}
        teacher = recipe_teacher(model, seed=3)
        assert isinstance(teacher, GradientDescentPlanner)
        c = teacher.config
        assert (c.mpc, c.execute, c.gbp_steps, c.horizon, c.terminal, c.seed) == (True, 1, 2, 2, "goal", 3)
        for _ in range(3):
            teacher.predict(obs)
        assert len(teacher.plan_seconds) == 3  # a fresh plan for every state it labels
        model.meta.plan_defaults = {}
        with pytest.raises(ValueError, match="has none"):
            recipe_teacher(model)
    finally:
        model.meta.plan_defaults = saved


def test_train_agent_teacher_plan_distils_the_recipe_and_records_its_rounds(world, tmp_path):
    wm = WorldModel.load(world.path)
    wm.meta.plan_defaults = {"planner": "gbp", "mpc": True, "terminal": "goal", "gbp_steps": 3, "budget": "dino-wm"}
    wm.save(tmp_path / "recipe.pt")
    common = dict(model=str(tmp_path / "recipe.pt"), steps=0, num_envs=4, n_steps=16, batch_size=64, device="cpu", progress=False,
                  bc_data="auto", bc_epochs=5, log_dir=str(tmp_path / "tb"))
    train_agent(AgentConfig(out=str(tmp_path / "bc.zip"), **common))
    result = train_agent(AgentConfig(out=str(tmp_path / "dagger.zip"), teacher="plan", teacher_rounds=2,
                                     teacher_episodes=4, teacher_horizon=2, teacher_epochs=5, **common))
    recorded = json.loads(sidecar_path(tmp_path / "dagger.zip").read_text())["dagger"]
    assert result["dagger"] == recorded and recorded["labels"] == 2 * 2 * 4 and len(recorded["rounds"]) == 2
    obs = WMImagineVectorEnv(num_envs=4, model=wm, device="cpu").reset(seed=0)[0]
    bc, dagger_agent = (load_agent(tmp_path / f"{n}.zip")[0] for n in ("bc", "dagger"))
    assert not np.allclose(bc.predict(obs, deterministic=True)[0], dagger_agent.predict(obs, deterministic=True)[0])


def test_a_teacher_needs_a_known_name_sim_actions_and_a_recipe(world, tmp_path):
    common = dict(model=str(world.path), out=str(tmp_path / "a.zip"), steps=0, num_envs=4, device="cpu",
                  progress=False, bc_data=None)
    with pytest.raises(ValueError, match="teacher must be one of plan"):
        train_agent(AgentConfig(teacher="cem", **common))
    with pytest.raises(ValueError, match="action_space='sim'"):
        train_agent(AgentConfig(teacher="plan", action_space="latent", **common))
    with pytest.raises(ValueError, match="recipe"):  # the tiny model has no `wm-gym plan` recipe
        train_agent(AgentConfig(teacher="plan", **common))
    assert not (tmp_path / "a.zip").exists()


def _noisy_teacher(model) -> GradientDescentPlanner:
    """A planner whose labels depend on its random stream (noise after each step), as the recipe's GBP does."""
    return GradientDescentPlanner(model, PlannerConfig(mpc=True, execute=1, horizon=2, gbp_steps=2, noise=0.2, seed=4))


def _fresh_dagger_run(model, rounds, checkpoint=None, horizon=2):
    env = WMImagineVectorEnv(num_envs=4, model=model, horizon=horizon, success_threshold=0.0, render_mode=None,
                             device="cpu")
    agent = PPO("MlpPolicy", make_sb3_vec_env(4, model=model, device="cpu"), seed=0, device="cpu", n_steps=8,
                batch_size=32)
    report = dagger(agent, _noisy_teacher(model), env, rounds=rounds, horizon=horizon, epochs=3, seed=0,
                    checkpoint=checkpoint)
    return agent, report


def test_an_interrupted_dagger_goes_on_from_its_checkpoint_as_an_unbroken_run_would(model, tmp_path):
    torch.manual_seed(0)
    unbroken, full = _fresh_dagger_run(model, rounds=2)
    ckpt = tmp_path / "a.dagger.pt"
    _, first = _fresh_dagger_run(model, rounds=1, checkpoint=ckpt)  # "interrupted" after round 0
    saved = torch.load(ckpt, weights_only=False)
    assert len(saved["history"]) == 1 and len(saved["labels"]) == len(saved["observations"]) == 2 * 4
    resumed, rest = _fresh_dagger_run(model, rounds=2, checkpoint=ckpt)  # new process: new agent, new teacher

    assert rest["labels"] == full["labels"] == 16 and rest["rounds"][0] == first["rounds"][0]
    assert [r["action_gap"] for r in rest["rounds"]] == [r["action_gap"] for r in full["rounds"]]
    after = torch.load(ckpt, weights_only=False)
    for a, b in zip(unbroken.policy.state_dict().values(), resumed.policy.state_dict().values()):
        assert torch.allclose(a, b)  # the same labels (the teacher reseeded per round), the same refits
    assert np.array_equal(after["labels"][:8], saved["labels"]) and len(after["labels"]) == 16


def test_a_dagger_checkpoint_of_other_settings_or_no_checkpoint_at_all_is_refused(model, tmp_path):
    ckpt = tmp_path / "a.dagger.pt"
    _fresh_dagger_run(model, rounds=2, checkpoint=ckpt)
    with pytest.raises(ValueError, match="other DAgger settings .*horizon"):
        _fresh_dagger_run(model, rounds=3, checkpoint=ckpt, horizon=3)
    with pytest.raises(ValueError, match="holds 2 DAgger rounds, more than the 1"):
        _fresh_dagger_run(model, rounds=1, checkpoint=ckpt)
    small = PPO("MlpPolicy", make_sb3_vec_env(4, model=model, device="cpu"), device="cpu",
                policy_kwargs=dict(net_arch=[8]))
    env = WMImagineVectorEnv(num_envs=4, model=model, horizon=2, success_threshold=0.0, render_mode=None, device="cpu")
    with pytest.raises(ValueError, match="policy of another shape"):
        dagger(small, _noisy_teacher(model), env, rounds=3, horizon=2, epochs=1, checkpoint=ckpt)
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a DAgger checkpoint"):
        _fresh_dagger_run(model, rounds=1, checkpoint=ckpt)
    assert ckpt.read_bytes() == b"not a checkpoint"  # refused, not overwritten


def test_train_agent_resume_goes_on_from_daggers_last_round_and_removes_the_checkpoint(world, tmp_path):
    from wm_gym.agents.train_agent import dagger_checkpoint_path, distill

    wm = WorldModel.load(world.path)
    wm.meta.plan_defaults = {"planner": "gbp", "mpc": True, "terminal": "goal", "gbp_steps": 3, "budget": "dino-wm"}
    wm.save(tmp_path / "recipe.pt")
    config = AgentConfig(model=str(tmp_path / "recipe.pt"), out=str(tmp_path / "d.zip"), steps=0, num_envs=4,
                         n_steps=16, batch_size=64, device="cpu", progress=False, bc_data=None, teacher="plan",
                         teacher_rounds=1, teacher_episodes=4, teacher_horizon=2, teacher_epochs=2,
                         log_dir=str(tmp_path / "tb"))
    ckpt = dagger_checkpoint_path(config.out)
    agent = PPO("MlpPolicy", make_sb3_vec_env(4, model=wm, device="cpu"), seed=0, device="cpu",
                policy_kwargs=dict(net_arch=config.net_arch))
    done = distill(agent, recipe_teacher(wm, config.seed), wm, config, checkpoint=ckpt)  # the run that was cut
    assert ckpt.is_file()

    config.teacher_rounds, config.resume = 2, True
    result = train_agent(config)
    assert result["dagger"]["rounds"][0] == done["rounds"][0]  # round 0 read back, not re-planned
    assert result["dagger"]["labels"] == 2 * 2 * 4 and not ckpt.exists()

    ckpt.write_bytes(b"stale")  # without resume, a left-over checkpoint is started over, not read
    config.resume = False
    assert len(train_agent(config)["dagger"]["rounds"]) == 2 and not ckpt.exists()


def test_a_zero_start_teacher_answers_a_state_alike_whatever_it_answered_before(model, imagined_starts):
    _, obs, *_ = imagined_starts
    other = obs[::-1].copy()  # the same states in another order: other histories, other goals per row
    saved = dict(model.meta.plan_defaults)
    try:
        model.meta.plan_defaults = {"planner": "gbp", "mpc": True, "terminal": "goal", "gbp_steps": 3, "horizon": 2,
                                    "noise": 0.0}
        fresh = recipe_teacher(model, seed=3, start="zero")
        assert not fresh.config.warm_start and fresh.config.gbp_steps == 3 and fresh.config.seed == 3
        alone = fresh.predict(obs)[0]
        fresh.predict(other)
        assert np.allclose(fresh.predict(obs)[0], alone, atol=1e-6)  # no memory of the states before
        assert len(fresh.plan_seconds) == 3 and fresh.seconds_per_plan > 0
        zero = torch.zeros(len(obs), 2, model.config.action_dim)  # its plan starts from the zero plan
        assert np.allclose(alone, fresh.to_sim(fresh.plan(*split(model, obs), zero)[:, 0]).numpy(),
                           atol=1e-6)

        warm = recipe_teacher(model, seed=3)  # MPC's teacher starts from its last plan: its answer has a memory
        assert warm.config.warm_start
        first = warm.predict(obs)[0]
        warm.predict(other)
        assert not np.allclose(warm.predict(obs)[0], first, atol=1e-4)
        with pytest.raises(ValueError, match="warm or zero"):
            recipe_teacher(model, start="cold")
    finally:
        model.meta.plan_defaults = saved


def split(model, obs):
    from wm_gym.imagine.vector_env import split_observation

    return split_observation(model, torch.as_tensor(obs))
