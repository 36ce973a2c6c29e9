"""The policy's network over world-model features: soft-argmax points, the keypoint net, and `--policy-net`."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import FlattenExtractor

from wm_gym.agents.behavior_cloning import clone_into, demo_pairs
from wm_gym.agents.policy_nets import TokenKeypoints, network_kwargs, soft_argmax
from wm_gym.agents.train_agent import AgentConfig, load_agent, sidecar_path, train_agent
from wm_gym.cli import main

torch.set_num_threads(1)


def test_soft_argmax_finds_a_peak_and_centres_a_flat_map():
    logits = torch.zeros(1, 2, 64)
    logits[0, 0, 2 * 8 + 5] = 100.0  # row 2, column 5 of an 8 x 8 grid
    points = soft_argmax(logits, 8)
    # linspace(-1, 1, 8)[k] = -1 + 2k/7: x from the column, y from the row
    np.testing.assert_allclose(points[0, 0].numpy(), [-1 + 10 / 7, -1 + 4 / 7], atol=1e-5)
    np.testing.assert_allclose(points[0, 1].numpy(), [0.0, 0.0], atol=1e-6)  # uniform: the grid's centre
    two = torch.full((1, 1, 64), -100.0)
    two[0, 0, [0, 63]] = 0.0  # two equal peaks at opposite corners: their midpoint
    np.testing.assert_allclose(soft_argmax(two, 8)[0, 0].numpy(), [0.0, 0.0], atol=1e-5)


def test_keypoints_read_the_grid_and_refuse_other_shapes():
    frames, tokens, dim = 4, 64, 3
    net = TokenKeypoints(spaces.Box(-1, 1, (frames * tokens * dim,)), frames, tokens, dim, channels=5)
    out = net(torch.randn(7, frames * tokens * dim))
    assert out.shape == (7, 15) == (7, net.features_dim)
    x, y = out[:, :10:2], out[:, 1:10:2]
    assert bool((x.abs() <= 1).all() and (y.abs() <= 1).all())  # points lie on the grid
    # the tokens are a grid: one token changed moves the maps near it, not those farther than the convs reach
    obs = torch.zeros(1, frames, tokens, dim)
    bumped = obs.clone()
    bumped[0, 0, 0] = 5.0  # the top-left token of the first frame
    maps = [net.conv(o.transpose(2, 3).reshape(1, frames * dim, 8, 8)) for o in (obs, bumped)]
    changed = (maps[0] - maps[1]).abs().amax(dim=(0, 1)) > 1e-6
    assert bool(changed[0, 0]) and not bool(changed[4:, :].any() or changed[:, 4:].any())  # 3 convs reach 3 cells
    with pytest.raises(ValueError, match="square token grid"):
        TokenKeypoints(spaces.Box(-1, 1, (4 * 12 * 3,)), 4, 12, 3)
    with pytest.raises(ValueError, match="expected observations"):
        TokenKeypoints(spaces.Box(-1, 1, (100,)), frames, tokens, dim)
    assert network_kwargs("mlp", frames, tokens, dim) == {}
    with pytest.raises(ValueError, match="policy_net must be one of mlp, keypoints"):
        network_kwargs("cnn", frames, tokens, dim)


@pytest.fixture(scope="module")
def agents(world, tmp_path_factory):
    """A cloned agent per policy net on the tiny world, trained as `wm-gym train-agent --steps 0` trains it."""
    folder = tmp_path_factory.mktemp("policy_nets")
    made = {}
    for net in ("mlp", "keypoints"):
        config = AgentConfig(model=str(world.path), out=str(folder / f"{net}.zip"), steps=0, num_envs=4, device="cpu",
                             bc_epochs=40, policy_net=net, log_dir=str(folder / "tb"), progress=False)
        train_agent(config)
        made[net] = folder / f"{net}.zip"
    return made


def test_policy_net_builds_that_net_and_it_survives_save_and_load(agents, model):
    mlp, _ = load_agent(agents["mlp"])
    keypoints, meta = load_agent(agents["keypoints"])
    assert isinstance(mlp.policy.features_extractor, FlattenExtractor)
    extractor = keypoints.policy.features_extractor
    assert isinstance(extractor, TokenKeypoints)
    assert (extractor.frames, extractor.tokens, extractor.dim) == (model.config.history + 1, model.n_tokens, model.dim)
    assert meta["config"]["policy_net"] == "keypoints"
    sizes = [sum(p.numel() for p in a.policy.parameters()) for a in (mlp, keypoints)]
    assert sizes[0] != sizes[1]
    obs, actions = demo_pairs(model)
    again, _ = load_agent(agents["keypoints"])  # a second load acts exactly as the first
    np.testing.assert_array_equal(keypoints.predict(obs, deterministic=True)[0], again.predict(obs, deterministic=True)[0])
    assert not np.allclose(mlp.predict(obs, deterministic=True)[0], keypoints.predict(obs, deterministic=True)[0])


def test_a_keypoint_policy_learns_its_demos(agents, model):
    agent, meta = load_agent(agents["keypoints"])
    losses = meta["bc_losses"]
    assert len(losses) == 40 and losses[-1] < 0.5 * losses[0]
    obs, actions = demo_pairs(model)
    fit = np.mean((agent.predict(obs, deterministic=True)[0] - np.clip(actions, -1, 1)) ** 2)
    assert fit < 0.5 * np.mean(np.clip(actions, -1, 1) ** 2)  # far better than answering zero
    assert clone_into(agent, obs, actions, epochs=1)[0] < losses[0]


def test_unknown_policy_net_is_refused_before_any_work(world, tmp_path):
    config = AgentConfig(model=str(world.path), out=str(tmp_path / "a.zip"), steps=0, policy_net="cnn", device="cpu")
    with pytest.raises(ValueError, match="policy_net must be one of mlp, keypoints"):
        train_agent(config)
    assert not (tmp_path / "a.zip").exists()


def test_cli_teacher_none_and_policy_net_override_the_models_recipe(world, tmp_path, capsys):
    from wm_gym.world_model import WorldModel

    model = WorldModel.load(world.path)
    model.meta.agent_defaults = {"teacher": "plan", "steps": 0, "bc_epochs": 2}  # a teacher this model cannot run
    model.save(tmp_path / "recipe.pt")
    rc = main(["train-agent", "--model", str(tmp_path / "recipe.pt"), "--out", str(tmp_path / "a.zip"),
               "--num-envs", "4", "--device", "cpu", "--json"])
    assert rc == 2 and "meta.plan_defaults" in capsys.readouterr().err  # the recipe's teacher needs a plan recipe
    rc = main(["train-agent", "--model", str(tmp_path / "recipe.pt"), "--out", str(tmp_path / "a.zip"),
               "--num-envs", "4", "--device", "cpu", "--teacher", "none", "--policy-net", "keypoints", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0 and result["model_recipe"] == {"steps": 0, "bc_epochs": 2}
    sidecar = json.loads(sidecar_path(tmp_path / "a.zip").read_text())
    assert sidecar["config"]["teacher"] is None and sidecar["dagger"] is None
    assert sidecar["config"]["policy_net"] == "keypoints"
