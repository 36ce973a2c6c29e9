"""The same episodes in imagination and in the real sim (wm_gym/paired_episodes.py, evaluate --imagined T --paired)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wm_gym.encoders.probe import StateProbe
from wm_gym.imagined_episodes import evaluate_in_imagination_by_test, imagined_rollout
from wm_gym.paired_episodes import compare_imagination_with_sim, state_drift
from wm_gym.real_episodes import evaluate_policy
from wm_gym.state_probe import readable_state_dims
from wm_gym.world_model import WorldModel

torch.set_num_threads(1)


class Push:
    """A policy that pushes every chunk the same way (so real and imagined states move)."""

    def __init__(self, model: WorldModel):
        self.action = np.full(model.config.action_dim, 0.8, np.float32)

    def predict(self, obs, deterministic=True):
        return np.tile(self.action, (len(obs), 1)), None


def test_drift_is_the_median_distance_after_each_step_and_the_median_move_per_step():
    imagined = np.zeros((2, 4, 3))
    imagined[0, :, 0] = [0, 1, 2, 3]
    imagined[1, :, 1] = [0, 2, 4, 6]
    real = [np.zeros((4, 3)), np.zeros((2, 3))]  # the sim ended episode 1 after one step
    real[0][:, 0] = [0, 1, 1, 1]
    real[0][:, 2] = 100.0  # a number outside dims: read by nothing
    drift = state_drift(imagined, real, np.array([0, 1]), steps=(1, 3, 9))
    # step 1: |(1,0)-(1,0)| = 0 and |(0,2)-(0,0)| = 2 -> median 1; step 3: episode 0 only, |3-1| = 2; step 9: none
    assert drift["after_model_steps"] == {"1": {"median_distance": 1.0, "episodes": 2},
                                          "3": {"median_distance": 2.0, "episodes": 1}}
    # moves while the sim ran: imagined [1, 1, 1] and [2] -> 1; real [1, 0, 0] and [0] -> 0
    assert drift["median_move_per_step"] == {"imagined": 1.0, "real": 0.0}
    assert drift["state_numbers"] == [0, 1]


def test_the_sim_is_placed_at_given_starts_and_goals(world):
    model = WorldModel.load(world.path)
    bank = model.bank
    placements = [(bank.start_states[m], bank.goal_states[m]) for m in (3, 1)]
    seen = {}
    evaluate_policy(Push(model), model, episodes=2, seed=7, max_steps=2, placements=placements,
                    record=lambda i, episode: seen.__setitem__(i, episode))
    for i, (start, goal) in enumerate(placements):
        assert np.allclose(seen[i].states[0], start) and np.allclose(seen[i].goal, goal)
    unplaced = {}
    evaluate_policy(Push(model), model, episodes=1, seed=7, max_steps=1,
                    record=lambda i, episode: unplaced.__setitem__(i, episode))
    assert not np.allclose(unplaced[0].states[0], placements[0][0])  # the sim's own draw otherwise
    with pytest.raises(ValueError, match="3 episodes"):
        evaluate_policy(Push(model), model, episodes=3, placements=placements)


def test_paired_runs_agree_with_each_run_alone_and_read_the_drift_off_the_probe(world):
    model = WorldModel.load(world.path)
    dims = len(model.bank.start_states[0])
    model.state_probe = StateProbe(model.n_tokens, model.dim, dims)
    model.state_probe.bias.copy_(torch.arange(dims, dtype=torch.float32) + 0.5)  # reads the same state everywhere
    heldout = len(model.bank.indices("heldout"))
    paired = compare_imagination_with_sim(Push(model), model, ["calibrated", "real"], budget=20, seed=3)
    assert paired["episodes"] == heldout
    # each test's imagined rate is the imagined evaluation's, on the same demos
    alone = evaluate_in_imagination_by_test(Push(model), model, ["calibrated", "real"], budget=20, seed=3)
    run = imagined_rollout(Push(model), model, ["calibrated"], budget=20, seed=3)
    for test, row in paired["tests"].items():
        assert row["imagined_success_rate"] == alone[test]["imagined_success_rate"]
        assert row["both"] + row["imagined_only"] + row["real_only"] + row["neither"] == heldout
        assert row["agree"] == pytest.approx((row["both"] + row["neither"]) / heldout)
        assert row["gap"] == pytest.approx(row["imagined_success_rate"] - row["real_success_rate"])
    # the real rate is the sim's, run from those demos' recorded starts and goals
    states = {}
    placements = [(model.bank.start_states[m], model.bank.goal_states[m]) for m in run.demo_rows]
    real = evaluate_policy(Push(model), model, episodes=heldout, seed=3, budget=20, placements=placements,
                           record=lambda i, episode: states.__setitem__(i, episode.states[::model.config.frameskip]))
    assert paired["real_success_rate"] == real["success_rate"] == paired["tests"]["real"]["real_success_rate"]
    # a probe that reads one state everywhere: imagination never moves, and its distance to the real state is
    # that state's distance to the real one
    drift = paired["drift"]
    assert drift["state_numbers"] == list(range(dims)) and drift["median_move_per_step"]["imagined"] == 0.0
    constant = model.state_probe.bias.numpy()
    expected = np.median([np.linalg.norm(constant - s[1]) for s in states.values() if len(s) > 1])
    assert drift["after_model_steps"]["1"]["median_distance"] == pytest.approx(expected, rel=1e-5)
    assert drift["median_move_per_step"]["real"] > 0.0  # the pushed dot moved


def test_no_probe_no_drift_and_readable_numbers_follow_the_probes_r2(world):
    model = WorldModel.load(world.path)
    paired = compare_imagination_with_sim(Push(model), model, ["calibrated"], episodes=2, budget=10)
    assert "drift" not in paired and set(paired["tests"]) == {"calibrated"}
    with pytest.raises(ValueError, match="state probe"):
        readable_state_dims(model)
    with pytest.raises(ValueError, match="state probe"):
        imagined_rollout(Push(model), model, ["calibrated"], episodes=2, budget=10, probe_states=True)
    model.state_probe = StateProbe(model.n_tokens, model.dim, 4)
    model.meta.train_info["probe"] = {"r2_heldout_episodes": [0.999, 0.95, -0.7, 0.2]}
    assert readable_state_dims(model).tolist() == [0, 1]  # positions read, velocities not
    model.meta.train_info["probe"] = {"r2_heldout_episodes": [0.5, -0.7, 0.2, 0.1]}
    with pytest.raises(ValueError, match="reads no state number"):
        readable_state_dims(model)


def test_a_bank_without_states_cannot_place_the_sim(world):
    model = WorldModel.load(world.path)
    bank = model.bank
    bank.start_states, bank.goal_states = np.zeros((len(bank), 0)), np.zeros((len(bank), 0))  # a video bank
    with pytest.raises(ValueError, match="no sim states"):
        compare_imagination_with_sim(Push(model), model, ["calibrated"], episodes=2, budget=10)
