"""The linear state probe (encoders/probe.StateProbe, wm_gym/state_probe.py, calibrate --probe, evaluate --imagined probe)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wm_gym.cli import main
from wm_gym.data.collect import make_sim
from wm_gym.encoders.probe import StateProbe
from wm_gym.imagined_episodes import evaluate_in_imagination
from wm_gym.state_probe import fit_state_probe, probed_success
from wm_gym.world_model import WorldModel

torch.set_num_threads(1)


def test_a_probe_recovers_a_linear_state_and_refuses_bad_input():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(400, 4, 3, generator=g)
    truth = torch.randn(12, 2, generator=g)
    states = feats.reshape(400, -1) @ truth + torch.tensor([1.5, -2.0])
    probe = StateProbe(4, 3, 2).fit(feats, states, ridge=1e-6)
    assert torch.allclose(probe(feats), states.float(), atol=1e-3)
    assert torch.allclose(probe(feats[:5] + 0), probe(feats)[:5])  # rows are independent
    with pytest.raises(ValueError, match="one length"):
        probe.fit(feats, states[:10])
    with pytest.raises(ValueError, match="finite"):
        probe.fit(feats, states.index_fill(0, torch.tensor([3]), float("nan")))


def test_probed_success_is_the_sims_own_test_on_probed_states(world):
    model = WorldModel.load(world.path)
    sim = make_sim(model.meta.env_id).unwrapped
    n, c = model.n_tokens, model.dim
    probe = StateProbe(n, c, sim.state_dim)
    s, goal = torch.zeros(3, n, c), torch.zeros(3, n, c)
    goal[1] += 1.0  # row 1's goal has other features
    probe.weight[:, 0] = 1.0  # the first state number: the sum of the z-scored features
    probe.bias.copy_(torch.as_tensor(sim.goal_from_state(np.zeros(sim.state_dim)), dtype=torch.float32) + 10)
    assert probed_success(probe, sim, s, goal).tolist() == [True, False, True]  # row 1: n·c units away
    with pytest.raises(ValueError, match="calibrate --probe"):
        probed_success(None, sim, s, goal)


def test_calibrate_probe_fits_saves_and_serves_the_imagined_probe_test(world, tmp_path, capsys):
    out = tmp_path / "probed.pt"
    rc = main(["calibrate", "--model", str(world.path), "--data", str(world.random_dir), "--probe", "--out", str(out),
               "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["probe"]
    model = WorldModel.load(out)
    assert model.state_probe is not None and model.config.probe_state_dim == len(report["r2_heldout_episodes"])
    assert report["episodes"] == 12 and report["real"]["pairs"] > 0 and report["imagined"]["positives"] > 0
    assert np.isfinite(report["r2_heldout_episodes"]).all()  # (the tiny encoder reads the dot poorly: R² < 0;
    # PointMaze's `pointmaze` reads the ball at R² 0.999, docs/results.md)
    model.save(tmp_path / "half.pt", half=True)  # the probe stays fp32 in a half file
    half = WorldModel.load(tmp_path / "half.pt")
    assert torch.equal(half.state_probe.weight, model.state_probe.weight)
    # the probe test in imagination: a probe that reads the same state everywhere calls every check a success
    model.state_probe.weight.zero_()
    result = evaluate_in_imagination(RandomPolicy(model), model, budget="dino-wm", test="probe")
    assert result["imagined_success_rate"] == 1.0 and result["success_at_sim_steps"]["50"] == 1.0
    with pytest.raises(ValueError, match="calibrate --probe"):
        evaluate_in_imagination(RandomPolicy(model), WorldModel.load(world.path), test="probe")
    fit_state_probe(model, world.random_dir, max_episodes=2)  # two episodes are the least: one to fit, one to check
    with pytest.raises(ValueError, match="has 1"):
        fit_state_probe(model, world.random_dir, max_episodes=1)


class RandomPolicy:
    def __init__(self, model):
        self.rng, self.a = np.random.default_rng(0), model.config.action_dim

    def predict(self, obs, deterministic=True):
        return self.rng.uniform(-1, 1, (len(obs), self.a)).astype(np.float32), None
