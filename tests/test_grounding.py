"""Grounding (latent action → real action chunk) and latent-action agents: fit, file, training, real-sim use."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wm_gym.agents.evaluate import evaluate_agent
from wm_gym.agents.train_agent import AgentConfig, load_agent, sidecar_path, train_agent
from wm_gym.cli import build_parser, main
from wm_gym.grounding import (GroundedPolicy, Grounding, GroundingConfig, Triples, current_features,
                              fit_dataset_grounding, fit_grounding, latent_space_id, split_train_val_test, unit_mse)
from wm_gym.imagine.vector_env import policy_observation
from wm_gym.world_model import WorldModel

torch.set_num_threads(1)


# ----- the map itself, on hand-made data with a known answer ----------------------------------------------
N, C, K, D, A = 4, 3, 2, 4, 4  # tokens, channels, latent tokens, latent channels, chunk size
_g = torch.Generator().manual_seed(0)
MOVE = torch.randn(N * C, A, generator=_g)     # s_{t+1} = s_t + MOVE·a: a known, invertible effect of an action
PROJECT = torch.randn(N * C, K * D, generator=_g)  # the stub latent-action encoder: z = PROJECT^T (s_{t+1} − s_t)


def synthetic(m: int, seed: int, low: torch.Tensor, high: torch.Tensor) -> Triples:
    gen = torch.Generator().manual_seed(seed)
    s_t = torch.randn(m, N, C, generator=gen)
    a = low + torch.rand(m, A, generator=gen) * (high - low)
    s_next = s_t + (a @ MOVE.T).view(m, N, C)
    z = ((s_next - s_t).flatten(1) @ PROJECT).view(m, K, D)
    return Triples(s_t, z, a, np.arange(m) // 10)


def test_grounding_maps_a_latent_back_to_the_action_that_produced_it():
    low, high = torch.tensor([-1.0, -2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 3.0, 1.0])
    grounding, report = fit_grounding(synthetic(600, 1, low, high), low, high,
                                      GroundingConfig(hidden=64, epochs=100, batch_size=64))
    test = synthetic(200, 2, low, high)  # fresh states and actions
    unit_error = ((grounding(test.s_t, test.z) - test.chunks) / (high - low)).abs().mean()
    assert unit_error < 0.05, "the fitted map should recover the action within a few % of its range"
    unfitted = Grounding(N, C, K, D, low, high, hidden=64)
    assert ((unfitted(test.s_t, test.z) - test.chunks) / (high - low)).abs().mean() > 0.2
    assert report["test_mse"] < 0.05 * report["baseline_mse"]  # far better than answering the mean action
    assert report["train_triples"] + report["val_triples"] + report["test_triples"] == 600
    assert report["val_triples"] == report["test_triples"] == 60  # 6 of 60 episodes each


def test_the_reported_error_is_on_episodes_selection_never_saw():
    """Scrambling the test episodes' actions changes the reported error and nothing else: neither the
    fit nor the choice of epoch read them."""
    low, high = -torch.ones(A), torch.ones(A)
    triples = synthetic(300, 1, low, high)  # 30 episodes of 10 triples
    config = GroundingConfig(hidden=32, epochs=40, patience=5, val_fraction=0.2, test_fraction=0.2)
    grounding, report = fit_grounding(triples, low, high, config)
    train, val, test = (set(report[f"{k}_episodes"]) for k in ("train", "val", "test"))
    assert len(val) == len(test) == 6 and len(train) == 18
    assert not (train & val or train & test or val & test) and train | val | test == set(range(30))
    is_test = np.isin(triples.episodes, sorted(test))
    assert report["test_mse"] == pytest.approx(unit_mse(grounding, triples.subset(np.flatnonzero(is_test))))
    scrambled = Triples(triples.s_t, triples.z, triples.chunks.clone(), triples.episodes)
    scrambled.chunks[torch.as_tensor(is_test)] = -scrambled.chunks[torch.as_tensor(is_test)]
    again, other = fit_grounding(scrambled, low, high, config)
    assert other["best_epoch"] == report["best_epoch"] and other["val_mse"] == report["val_mse"]
    assert all(torch.equal(a, b) for a, b in zip(grounding.state_dict().values(), again.state_dict().values()))
    # the same map, scored on the scrambled actions it never saw
    assert other["test_mse"] == pytest.approx(unit_mse(grounding, scrambled.subset(np.flatnonzero(is_test))))
    assert other["test_mse"] > report["test_mse"] + 0.1


def test_three_way_split_hand_cases():
    for n, (val, test) in {1: (0, 0), 2: (1, 0), 3: (1, 1), 10: (1, 1), 30: (3, 3)}.items():
        train_i, val_i, test_i = split_train_val_test(n, 0.1, 0.1, seed=0)
        assert (len(train_i), len(val_i), len(test_i)) == (n - val - test, val, test), n
        assert sorted(np.concatenate([train_i, val_i, test_i]).tolist()) == list(range(n))
    assert [len(p) for p in split_train_val_test(10, 0.0, 0.0, seed=0)] == [10, 0, 0]
    with pytest.raises(ValueError, match="sum below 1"):
        GroundingConfig(val_fraction=0.5, test_fraction=0.5)


def test_grounded_chunks_stay_within_the_action_bounds():
    low, high = torch.tensor([-1.0, -2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 3.0, 1.0])
    grounding, _ = fit_grounding(synthetic(200, 1, low, high), low, high, GroundingConfig(hidden=32, epochs=5))
    wild = synthetic(50, 3, low, high)
    chunks = grounding(wild.s_t, 100 * wild.z)  # latents far outside anything seen
    assert bool(((chunks >= low) & (chunks <= high)).all())
    assert grounding.to_unit(torch.tensor([[5.0, -9.0, 3.0, 0.0]])).tolist() == [[1.0, -1.0, 1.0, 0.0]]
    with pytest.raises(ValueError, match=r"z: expected shape \[B=50, K=2, d=4\]"):
        grounding(wild.s_t, wild.z[:, :1])


def test_policy_observations_give_back_the_newest_history_frame():
    model = SimpleNamespace(n_tokens=N, dim=C, config=SimpleNamespace(history=3))
    history, goal = torch.randn(5, 3, N, C), torch.randn(5, N, C)
    obs = policy_observation(history, goal)
    torch.testing.assert_close(current_features(obs, model), history[:, -1])
    with pytest.raises(ValueError, match="observations"):
        current_features(obs[:, :-1], model)


# ----- on a tiny Wall world model and its dataset ------------------------------------------------------------


def z_shape(model: WorldModel) -> tuple[int, int]:
    """(K, d) of the model's latent actions."""
    return model.latent_model.config.n_latents, model.latent_model.config.latent_dim


@pytest.fixture(scope="module")
def grounding_file(world, model, tmp_path_factory):
    out = tmp_path_factory.mktemp("grounding") / "g.pt"
    _, report = fit_dataset_grounding(model, world.random_dir, GroundingConfig(labelled_fraction=0.5, epochs=30),
                                      out=out, model_name=str(world.path))
    return out, report


def test_labelled_fraction_limits_the_episodes_used(world, model, grounding_file, tmp_path):
    out, report = grounding_file
    assert report["labelled_available"] == 12 and report["n_episodes"] == 6 and len(set(report["episodes"])) == 6
    assert report["triples"] == 6 * 10  # Wall-v0: 50 sim steps = 10 model steps per episode
    assert report["train_triples"] + report["val_triples"] + report["test_triples"] == report["triples"]
    assert Grounding.load(out, model).info["episodes"] == report["episodes"]  # recorded in the file
    # only labelled episodes are candidates: a dataset that labels 4 of its 12 gives 2 at fraction 0.5
    data = tmp_path / "partly-labelled"
    shutil.copytree(world.random_dir, data)
    meta = json.loads((data / "meta.json").read_text())
    (data / "meta.json").write_text(json.dumps({**meta, "labelled_episodes": [0, 5, 7, 9]}))
    _, partial = fit_dataset_grounding(model, data, GroundingConfig(labelled_fraction=0.5, epochs=1))
    assert partial["labelled_available"] == 4 and partial["n_episodes"] == 2 and set(partial["episodes"]) < {0, 5, 7, 9}
    _, one = fit_dataset_grounding(model, data, GroundingConfig(labelled_fraction=0.01, epochs=1))
    assert one["n_episodes"] == 1 and one["triples"] == 10  # at least one episode


def test_grounding_file_round_trips_and_belongs_to_its_model(model, grounding_file, tmp_path):
    out, _ = grounding_file
    loaded = Grounding.load(out, model)
    s_t, z = torch.randn(3, model.n_tokens, model.dim), torch.randn(3, *z_shape(model))
    assert loaded.latent_space == latent_space_id(model)
    torch.testing.assert_close(loaded(s_t, z), Grounding.load(out)(s_t, z))
    other = WorldModel(model.config, model.meta)  # same shapes, other weights: another latent space
    with pytest.raises(ValueError, match="another world model's latent space.*wm-gym ground"):
        Grounding.load(out, other)
    (tmp_path / "bad.pt").write_bytes(b"not a file")
    with pytest.raises(ValueError, match="not a readable grounding file"):
        Grounding.load(tmp_path / "bad.pt")
    with pytest.raises(FileNotFoundError):
        Grounding.load(tmp_path / "missing.pt")


def latent_config(world, out, **kwargs) -> AgentConfig:
    base = dict(model=str(world.path), out=str(out), steps=128, num_envs=8, n_steps=16, batch_size=64, device="cpu",
                progress=False, checkpoint_every=10**9, log_dir=str(out.parent / "tb"), action_space="latent",
                bc_data="auto", bc_epochs=8)
    return AgentConfig(**{**base, **kwargs})


@pytest.fixture(scope="module")
def latent_agent(world, grounding_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent_agent") / "latent.zip"
    result = train_agent(latent_config(world, out, grounding=str(grounding_file[0])))
    return out, result


def test_a_latent_agent_trains_on_cloned_demo_latents_and_says_so(latent_agent, model):
    out, result = latent_agent
    agent, meta = load_agent(out)
    k_d = int(np.prod(z_shape(model)))
    assert result["action_space"] == "latent" and result["steps"] == 128
    assert meta["action_space"] == "latent" and meta["config"]["action_space"] == "latent"
    assert agent.action_space.shape == (k_d,) and len(meta["latent_mean"]) == len(meta["latent_std"]) == k_d
    assert min(meta["latent_std"]) > 0
    assert len(meta["bc_losses"]) == 8 and meta["bc_losses"][-1] < 0.5 * meta["bc_losses"][0]  # cloned the demos' z


def test_latent_agents_clone_demos_without_action_labels(world, model, tmp_path):
    video_model = WorldModel.load(world.path)
    video_model.bank.actions = None  # a bank built from video
    video_model.save(tmp_path / "video.pt")
    train_agent(latent_config(world, tmp_path / "v.zip", model=str(tmp_path / "video.pt"), steps=0, bc_epochs=2))
    assert len(json.loads(sidecar_path(tmp_path / "v.zip").read_text())["bc_losses"]) == 2
    train_agent(latent_config(world, tmp_path / "s.zip", model=str(tmp_path / "video.pt"), steps=0,
                              action_space="sim", bc_epochs=2))
    assert json.loads(sidecar_path(tmp_path / "s.zip").read_text())["bc_losses"] == []  # nothing to clone


def test_a_latent_agent_acts_in_the_real_sim_through_its_grounding(latent_agent, grounding_file, model):
    out, _ = latent_agent
    result = evaluate_agent(out, episodes=4, seed=1000, max_steps=3, device="cpu")  # the recorded grounding
    assert result["action_space"] == "latent" and result["grounding"] == str(grounding_file[0])
    assert result["episodes"] == 4 and 0.0 <= result["success_rate"] <= 1.0 and result["env"] == "wm_gym/Wall-v0"
    imagined = evaluate_agent(out, episodes=2, seed=1000, max_steps=3, device="cpu", imagined="calibrated")["imagined"]
    assert imagined["action_space"] == "latent" and imagined["model_steps"] == 3  # its own z, no grounding needed
    # the adapter's chunks are the grounding of (newest features, un-standardised z)
    agent, meta = load_agent(out)
    grounding = Grounding.load(grounding_file[0], model)
    policy = GroundedPolicy(agent, grounding, model, meta["latent_mean"], meta["latent_std"])
    obs = policy_observation(torch.randn(3, 1, model.n_tokens, model.dim), torch.randn(3, model.n_tokens, model.dim))
    chunks, _ = policy.predict(obs, deterministic=True)
    a, _ = agent.predict(obs, deterministic=True)
    z = torch.as_tensor(a * np.asarray(meta["latent_std"], np.float32) + np.asarray(meta["latent_mean"], np.float32))
    expected = grounding(torch.as_tensor(obs[:, :model.n_tokens * model.dim]).view(3, model.n_tokens, model.dim),
                         z.view(3, *z_shape(model)))
    np.testing.assert_allclose(chunks, expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    assert chunks.shape == (3, model.config.action_dim) and np.all(np.abs(chunks) <= 1.0)


def test_grounding_errors_are_clear(world, latent_agent, grounding_file, tmp_path):
    out, _ = latent_agent
    bare = tmp_path / "bare.zip"
    shutil.copy(out, bare)
    meta = json.loads(sidecar_path(out).read_text())
    sidecar_path(bare).write_text(json.dumps({**meta, "grounding": None}))
    with pytest.raises(ValueError, match="acts in latent actions.*wm-gym ground .*--grounding"):
        evaluate_agent(bare, episodes=1, max_steps=1, device="cpu")
    assert evaluate_agent(bare, episodes=1, max_steps=1, device="cpu", grounding=grounding_file[0])["episodes"] == 1
    sim_agent = tmp_path / "sim.zip"
    train_agent(latent_config(world, sim_agent, action_space="sim", steps=0, bc_data=None))
    with pytest.raises(ValueError, match="only for latent-action agents"):
        evaluate_agent(sim_agent, episodes=1, max_steps=1, device="cpu", grounding=grounding_file[0])
    with pytest.raises(ValueError, match="only with action_space='latent'"):
        train_agent(latent_config(world, tmp_path / "x.zip", action_space="sim", grounding=str(grounding_file[0])))


# ----- CLI ----------------------------------------------------------------------------------------------------
def run(*argv: str) -> tuple[int, dict | None, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(argv))
    lines = out.getvalue().strip().splitlines()
    return rc, (json.loads(lines[-1]) if rc == 0 and lines else None), err.getvalue()


def test_cli_ground_train_latent_agent_and_evaluate(world, tmp_path):
    g, agent = tmp_path / "g.pt", tmp_path / "a.zip"
    rc, report, _ = run("ground", "--model", str(world.path), "--data", str(world.expert_dir), "--out", str(g),
                        "--labelled-fraction", "0.25", "--epochs", "5", "--device", "cpu", "--json")
    assert rc == 0 and report["n_episodes"] == 3 and report["out"] == str(g) and g.is_file()
    rc, trained, _ = run("train-agent", "--model", str(world.path), "--out", str(agent), "--action-space", "latent",
                         "--steps", "64", "--num-envs", "8", "--n-steps", "8", "--batch-size", "64", "--bc-epochs", "2",
                         "--device", "cpu", "--log-dir", str(tmp_path / "tb"), "--json")
    assert rc == 0 and trained["action_space"] == "latent"
    rc, _, err = run("evaluate", "--agent", str(agent), "--episodes", "2", "--max-steps", "2", "--device", "cpu",
                     "--json")
    assert rc == 2 and "wm-gym ground" in err
    rc, result, _ = run("evaluate", "--agent", str(agent), "--grounding", str(g), "--episodes", "2", "--max-steps", "2",
                        "--device", "cpu", "--json")
    assert rc == 0 and result["episodes"] == 2 and result["action_space"] == "latent"


def test_cli_ground_defaults_equal_the_config_and_help_explains(capsys):
    args = vars(build_parser().parse_args(["ground", "--data", "D", "--out", "G.pt"]))
    for field in dataclasses.fields(GroundingConfig):
        assert args[field.name] == field.default, f"ground --{field.name.replace('_', '-')}"
    with pytest.raises(SystemExit):
        main(["ground", "--help"])
    help_text = capsys.readouterr().out
    assert all(o in help_text for o in ("--model", "--data", "--labelled-fraction", "--out", "--seed", "--json"))
    assert build_parser().parse_args(["train-agent", "--out", "a.zip"]).action_space == "sim"
