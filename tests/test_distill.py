"""Distilling a planner into a policy by DAgger in imagination (agents/distill.py, train-agent --teacher plan)."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

from wm_gym.agents.distill import dagger, recipe_teacher
from wm_gym.agents.planners import GradientDescentPlanner
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
