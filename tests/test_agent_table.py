"""benchmarks/agent_table.py: the expert row counts success the way each budget says; agents are keyed by
the model's content and their settings."""
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from wm_gym.real_episodes import Budget, make_budget

_spec = importlib.util.spec_from_file_location(
    "agent_table", Path(__file__).resolve().parents[1] / "benchmarks" / "agent_table.py")
agent_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(agent_table)


def test_expert_row_on_the_real_wall():
    seeds = list(range(1000, 1012))
    full = agent_table.expert_success("wm_gym/Wall-v1", seeds, make_budget("swm", 5, 50))
    assert full["episodes"] == 12 and full["success_rate"] >= 10 / 12  # the noisy expert crosses the door
    lo, hi = full["success_ci95"]
    assert lo < full["success_rate"] <= hi
    # Starts and goals are in opposite rooms at least 12.8 px apart: 3 steps of <= 2.83 px cannot succeed.
    assert agent_table.expert_success("wm_gym/Wall-v1", seeds, Budget("3 steps", 3))["success_rate"] == 0.0


class OnlyBetween:
    """A stand-in sim whose episode seeded s is a success at sim steps s..s+2 only (1-based)."""

    def __init__(self):
        self.unwrapped, self.step_count, self.seed = self, 0, 0

    def reset(self, seed):
        self.step_count, self.seed = 0, seed
        return None, {}

    def step(self, action):
        self.step_count += 1
        return None, 0.0, False, False, {"is_success": self.seed <= self.step_count <= self.seed + 2,
                                         "task_reward": float(self.step_count)}

    def close(self):
        pass


class Idle:
    def reset(self, obs, info):
        pass

    def __call__(self, obs, info):
        return np.zeros(2, np.float32)


def test_success_between_checks_does_not_count(monkeypatch):
    monkeypatch.setattr(agent_table, "make_sim", lambda env_id, task=False: OnlyBetween())
    monkeypatch.setattr("wm_gym.envs.policies.make_policy", lambda env, policy, rng: Idle())
    seeds = list(range(1, 11))  # successful at steps 1-3, 2-4, ..., 10-12
    rate = lambda budget: agent_table.expert_success("stub", seeds, budget)["success_rate"]  # noqa: E731
    assert rate(Budget("every step", 50)) == 1.0
    # checked after steps 5, 10, 15, ...: seeds 3-5 (a window holding 5) and 8-10 (holding 10) count
    assert rate(Budget("every 5th", 50, check_every=5)) == 6 / 10
    assert rate(Budget("every 25th", 50, check_every=25)) == 0.0
    dino = make_budget("dino-wm", 5, 50)  # checked after every 25 sim steps only
    assert dino.check_every == 25 and rate(dino) == 0.0


def test_a_task_budget_runs_every_episode_to_its_end_and_sums_the_task_reward(monkeypatch):
    made = []
    monkeypatch.setattr(agent_table, "make_sim", lambda env_id, task=False: made.append(task) or OnlyBetween())
    monkeypatch.setattr("wm_gym.envs.policies.make_policy", lambda env, policy, rng: Idle())
    task = agent_table.expert_success("stub", [1, 2, 30], Budget("task", 10, to_end=True))
    assert made == [True] and task["success_rate"] == 2 / 3  # seed 30 is a success only at steps 30-32
    assert task["mean_task_return"] == sum(range(1, 11))  # no episode stopped at its success
    short = agent_table.expert_success("stub", [1, 2, 30], Budget("10 steps", 10))
    assert made == [True, False] and short["success_rate"] == 2 / 3 and "mean_task_return" not in short


def test_the_budgets_are_the_sims_own(monkeypatch, tmp_path):
    """--budgets task is dm_control's own 1,000-step episode; a sim without one refuses it by name."""
    seen = []
    model = SimpleNamespace(meta=SimpleNamespace(env_id="wm_gym/DMC-reacher-easy-v0", train_info={}),
                            config=SimpleNamespace(frameskip=5))
    monkeypatch.setattr(agent_table, "load_model", lambda name, device: model)
    monkeypatch.setattr(agent_table, "expert_success", lambda env, seeds, budget: seen.append(budget) or
                        {"success_rate": 1.0, "success_ci95": [0.9, 1.0], "mean_task_return": 900.0,
                         "task_return_ci95": [880.0, 920.0]})
    argv = ["agent_table", "--model", "m.pt", "--agents", "bc", "--episodes", "2", "--out", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*argv, "--budgets", "default", "task"])
    monkeypatch.setattr(agent_table, "agent_configs", lambda *a: {})
    monkeypatch.setattr(agent_table, "model_fingerprint", lambda path: "sha")
    agent_table.main()
    assert [(b.name, b.sim_steps, b.to_end) for b in seen] == [("100 steps", 100, False), ("task", 1000, True)]
    assert "return 900.0 (880.0–920.0)" in (tmp_path / "table.md").read_text()
    model.meta.env_id = "wm_gym/Wall-v1"
    with pytest.raises(ValueError, match="no task episode|has none"):
        agent_table.main()


# ----- agents keyed by model content and settings ------------------------------------------------------
def test_the_folder_is_keyed_by_the_model_file_not_its_name(tmp_path, monkeypatch):
    a, b = tmp_path / "a" / "wall.pt", tmp_path / "b" / "wall.pt"
    a.parent.mkdir(), b.parent.mkdir()
    a.write_bytes(b"one model"), b.write_bytes(b"another model")
    assert agent_table.default_out(str(a)) != agent_table.default_out(str(b))
    assert agent_table.default_out(str(a)).name.startswith("wall-")
    b.write_bytes(b"one model")  # the same content in another place: the same agents
    assert agent_table.default_out(str(a)) == agent_table.default_out(str(b))
    from wm_gym.zoo import resolve_model  # the zoo's `wall` and a file named wall.pt are different models
    assert agent_table.default_out("wall") != agent_table.default_out(str(a))
    assert agent_table.default_out("wall").name == f"wall-{agent_table.model_fingerprint(str(resolve_model('wall')))}"


def test_a_changed_setting_names_a_new_agent(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    names = ["scratch", "scratch-temporal"]
    short = agent_table.agent_configs(names, str(model), tmp_path, ppo_steps=61_440, agent_seed=0)
    again = agent_table.agent_configs(names, str(model), tmp_path / "elsewhere", ppo_steps=61_440, agent_seed=0)
    long = agent_table.agent_configs(names, str(model), tmp_path, ppo_steps=245_760, agent_seed=0)
    other_seed = agent_table.agent_configs(names, str(model), tmp_path, ppo_steps=61_440, agent_seed=1)
    bf16 = agent_table.agent_configs(names, str(model), tmp_path, ppo_steps=61_440, agent_seed=0, precision="bf16")
    for name in names:
        assert bf16[name].precision == "bf16" and short[name].precision == "auto" and bf16[name].out != short[name].out
        assert Path(short[name].out).parent == tmp_path and Path(short[name].out).name.startswith(f"{name}-")
        assert Path(short[name].out).name == Path(again[name].out).name  # where it is written is not a setting
        assert long[name].steps == 245_760 and short[name].steps == 61_440
        assert long[name].out != short[name].out and other_seed[name].out != short[name].out
    assert short["scratch"].out != short["scratch-temporal"].out
    model.write_bytes(b"retrained weights")  # same path, new content: new agents
    assert agent_table.agent_configs(names, str(model), tmp_path, 61_440, 0)["scratch"].out != short["scratch"].out
    key = agent_table.agent_key
    assert key(short["scratch"], "f") == key(replace(short["scratch"], progress=False, log_dir="x"), "f")
    assert key(short["scratch"], "f") != key(replace(short["scratch"], gamma=0.99), "f")


def test_the_real_threshold_row_ends_episodes_at_the_models_real_calibration(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    names = ["bc-ppo", "bc-ppo-real-threshold"]
    configs = agent_table.agent_configs(names, str(model), tmp_path, 61_440, 0, real_threshold=0.05)
    assert configs["bc-ppo"].success_threshold is None and configs["bc-ppo-real-threshold"].success_threshold == 0.05
    assert configs["bc-ppo"].out != configs["bc-ppo-real-threshold"].out
    other = agent_table.agent_configs(names, str(model), tmp_path, 61_440, 0, real_threshold=0.07)
    assert other["bc-ppo-real-threshold"].out != configs["bc-ppo-real-threshold"].out  # the value is a setting
    with pytest.raises(ValueError, match="real-encoding threshold"):
        agent_table.agent_configs(names, str(model), tmp_path, 61_440, 0)


def test_the_temporal_success_row_ends_episodes_by_the_head(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    configs = agent_table.agent_configs(["bc-ppo", "bc-ppo-temporal-success"], str(model), tmp_path, 61_440, 0)
    row = configs["bc-ppo-temporal-success"]
    assert (row.success_metric, row.success_threshold) == ("temporal", 1.0)
    assert (configs["bc-ppo"].success_metric, configs["bc-ppo"].success_threshold) == (None, None)
    assert row.out != configs["bc-ppo"].out


def test_the_temporal_rows_pair_the_heads_reward_with_its_success_test(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    names = ["bc-ppo-temporal", "bc-ppo-temporal-both", "scratch-temporal", "scratch-temporal-success"]
    rows = agent_table.agent_configs(names, str(model), tmp_path, 61_440, 0)
    for name in ("bc-ppo-temporal-both", "scratch-temporal-success"):
        assert (rows[name].success_metric, rows[name].success_threshold) == ("temporal", 1.0)
    for name in ("bc-ppo-temporal", "scratch-temporal"):  # the same rewards with the model's calibrated test
        assert (rows[name].success_metric, rows[name].success_threshold) == (None, None)
    assert rows["bc-ppo-temporal-both"].reward == "demo+temporal" and rows["bc-ppo-temporal-both"].bc_data == "auto"
    assert rows["scratch-temporal-success"].reward == "temporal" and rows["scratch-temporal-success"].bc_data is None
    assert len({r.out for r in rows.values()}) == 4


def test_the_dagger_row_clones_then_distils_the_models_plan_recipe_with_no_rl(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    rows = agent_table.agent_configs(["bc", "bc-dagger-plan", "bc-dagger-fresh"], str(model), tmp_path, 61_440, 0)
    dagger, fresh = rows["bc-dagger-plan"], rows["bc-dagger-fresh"]
    assert (dagger.teacher, dagger.steps, dagger.bc_data, dagger.teacher_start) == ("plan", 0, "auto", "warm")
    assert (fresh.teacher, fresh.steps, fresh.teacher_start) == ("plan", 0, "zero")  # each label a fresh plan
    assert (rows["bc"].teacher, rows["bc"].steps) == (None, 0)  # the same clone, without the teacher
    assert len({dagger.out, fresh.out, rows["bc"].out}) == 3


def test_the_keypoint_rows_change_only_the_policy_net(tmp_path):
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    names = ["bc", "bc-ppo", "bc-dagger-plan", "bc-dagger-fresh", "bc-keypoints", "bc-ppo-keypoints", "bc-dagger-keypoints",
             "bc-dagger-fresh-keypoints"]
    rows = agent_table.agent_configs(names, str(model), tmp_path, 61_440, 0)
    for mlp, keypoints in (("bc", "bc-keypoints"), ("bc-ppo", "bc-ppo-keypoints"), ("bc-dagger-plan", "bc-dagger-keypoints"),
                           ("bc-dagger-fresh", "bc-dagger-fresh-keypoints")):
        assert (rows[mlp].policy_net, rows[keypoints].policy_net) == ("mlp", "keypoints")
        assert replace(rows[keypoints], policy_net="mlp", out=rows[mlp].out, log_dir=rows[mlp].log_dir) == rows[mlp]
    assert len({r.out for r in rows.values()}) == len(names)  # another net is another agent file


def test_main_trains_once_per_setting_and_labels_the_trained_steps(tmp_path, monkeypatch):
    """A re-run with another --ppo-steps trains a new agent instead of relabelling the old one."""
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    trained = []

    def fake_train(config):
        trained.append((config.out, config.steps))
        Path(config.out).write_bytes(b"agent")

    def fake_evaluate(path, **kwargs):
        return {"success_rate": 0.5, "success_ci95": [0.4, 0.6], "per_episode": [], "agent": str(path)}

    fake_model = SimpleNamespace(meta=SimpleNamespace(env_id="wm_gym/Wall-v1", train_info={}),
                                 config=SimpleNamespace(frameskip=5))
    monkeypatch.setattr(agent_table, "train_agent", fake_train)
    monkeypatch.setattr(agent_table, "evaluate_agent", fake_evaluate)
    monkeypatch.setattr(agent_table, "load_model", lambda name, device: fake_model)
    monkeypatch.setattr(agent_table, "expert_success", lambda *a: {"success_rate": 1.0, "success_ci95": [0.9, 1.0]})

    def run(steps):
        monkeypatch.setattr(sys, "argv", ["agent_table", "--model", str(model), "--agents", "scratch", "--episodes", "2",
                                          "--budgets", "default", "--ppo-steps", str(steps), "--out", str(tmp_path / "o")])
        agent_table.main()
        return json.loads((tmp_path / "o" / "table.json").read_text())["rows"]["scratch"]

    first, same, longer = run(100), run(100), run(200)
    assert [s for _, s in trained] == [100, 200]  # the second run reused the first agent
    assert first["agent"] == same["agent"] != longer["agent"]
    assert (first["imagined_steps"], longer["imagined_steps"]) == (100, 200)
    assert longer["50 steps"]["agent"] == longer["agent"] == trained[1][0]


def test_imagined_and_paired_columns_come_from_one_evaluation_per_agent_and_budget(tmp_path, monkeypatch):
    calls = []

    def fake_evaluate(path, **kwargs):
        calls.append(kwargs)
        result = {"success_rate": 0.5, "success_ci95": [0.4, 0.6], "per_episode": [], "agent": str(path)}
        if kwargs.get("imagined"):
            result["imagined"] = {t: {"imagined_success_rate": 0.25} for t in kwargs["imagined"]}
        if kwargs.get("paired"):
            result["paired"] = {"real_success_rate": 0.75}
        return result

    fake_model = SimpleNamespace(meta=SimpleNamespace(env_id="wm_gym/Wall-v1", train_info={}),
                                 config=SimpleNamespace(frameskip=5))
    monkeypatch.setattr(agent_table, "train_agent", lambda config: Path(config.out).write_bytes(b"agent"))
    monkeypatch.setattr(agent_table, "evaluate_agent", fake_evaluate)
    monkeypatch.setattr(agent_table, "load_model", lambda name, device: fake_model)
    monkeypatch.setattr(agent_table, "expert_success", lambda *a: {"success_rate": 1.0, "success_ci95": [0.9, 1.0]})
    model = tmp_path / "m.pt"
    model.write_bytes(b"weights")
    argv = ["agent_table", "--model", str(model), "--agents", "bc", "--episodes", "2", "--budgets", "default",
            "--out", str(tmp_path / "o"), "--imagined", "probe"]
    monkeypatch.setattr(sys, "argv", argv + ["--paired"])
    agent_table.main()
    assert [(c["imagined"], c["paired"]) for c in calls] == [(["probe"], True)]
    row = (tmp_path / "o" / "table.md").read_text().splitlines()[-1]
    assert row.endswith("| 0.250 | 0.750 |"), row
    monkeypatch.setattr(sys, "argv", argv[:-2] + ["--paired"])  # paired needs an imagined test
    with pytest.raises(SystemExit):
        agent_table.main()
