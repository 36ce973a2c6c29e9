"""Adversarial perturbations, dynamics fine-tuning, episode recording and the resumable online loop
(planners, fixed agents, and agents retrained in imagination each round)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from wm_gym.agents.online_agent import AgentRetrainer
from wm_gym.agents.train_agent import AgentConfig, load_agent, sidecar_path, train_agent
from wm_gym.cli import main
from wm_gym.data.collect import make_sim
from wm_gym.data.dataset import Episode
from wm_gym.online import OnlineConfig, run_online
from wm_gym.real_episodes import evaluate_policy
from wm_gym.train.adversarial import FGSM
from wm_gym.train.finetune import FinetuneConfig, finetune_dynamics
from wm_gym.world_model import WorldModel


# ----- FGSM ------------------------------------------------------------------------------------------------
def test_fgsm_on_a_linear_loss_steps_each_component_along_the_gradient_sign_from_its_random_start():
    g = torch.Generator().manual_seed(0)
    s, a = torch.randn(4, 1, 3, 2, generator=g), torch.randn(4, 6, generator=g)
    w_s, w_a = torch.randn(3, 2, generator=g), torch.randn(6, generator=g)
    eps_s, eps_a = torch.tensor([0.1, 0.3]), torch.full((6,), 0.02)
    fgsm = FGSM(feature_eps=eps_s, action_eps=eps_a, generator=torch.Generator().manual_seed(5))
    s_adv, a_adv = fgsm.perturb(lambda x, u: (x * w_s).sum() + (u * w_a).sum(), s, a)
    # by hand: δ₀ = U(−ε, ε) from the same generator stream, then clip(δ₀ + 1.25ε·sign(w), −ε, ε)
    g2 = torch.Generator().manual_seed(5)
    d_s, d_a = (torch.rand(s.shape, generator=g2) * 2 - 1) * eps_s, (torch.rand(a.shape, generator=g2) * 2 - 1) * eps_a
    want_s = torch.maximum(torch.minimum(d_s + 1.25 * eps_s * w_s.sign(), eps_s), -eps_s)
    want_a = torch.maximum(torch.minimum(d_a + 1.25 * eps_a * w_a.sign(), eps_a), -eps_a)
    torch.testing.assert_close(s_adv - s, want_s)
    torch.testing.assert_close(a_adv - a, want_a)
    assert torch.all((s_adv - s) * w_s.sign() >= -0.25 * eps_s - 1e-7)  # never against the gradient by more


def test_fgsm_stays_within_eps_on_a_nonlinear_loss_and_raises_it():
    g = torch.Generator().manual_seed(1)
    s, a = torch.randn(64, 2, 4, 3, generator=g), torch.rand(64, 10, generator=g) * 2 - 1
    fgsm = FGSM.from_data(s, a, seed=3)
    torch.testing.assert_close(fgsm.feature_eps, 0.05 * s.flatten(0, -2).std(0))
    torch.testing.assert_close(fgsm.action_eps, 0.02 * a.std(0))
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    loss = lambda x, u: ((net(x) - 1) ** 2).mean() + (u ** 3).mean()  # noqa: E731
    s_adv, a_adv = fgsm.perturb(loss, s, a)
    assert torch.all((s_adv - s).abs() <= fgsm.feature_eps + 1e-6)
    assert torch.all((a_adv - a).abs() <= fgsm.action_eps + 1e-6)
    assert (s_adv - s).abs().mean() > 0.5 * fgsm.feature_eps.mean()  # really perturbed, not a no-op
    assert loss(s_adv, a_adv) > loss(s, a)
    assert all(p.grad is None for p in net.parameters())  # crafting the attack leaves parameter grads alone


# ----- fine-tuning -------------------------------------------------------------------------------------------
@pytest.fixture()
def model(tiny_imagine_world):
    torch.set_num_threads(1)
    return WorldModel.load(tiny_imagine_world.nobank_path)


@pytest.fixture(scope="module")
def action_model_path(tiny_imagine_world, tmp_path_factory):
    """The tiny world's encoder with a briefly trained DINO-WM-style predictor (~3 s)."""
    from wm_gym.train.world_model import TrainConfig, train_world_model

    out = tmp_path_factory.mktemp("action") / "action.pt"
    train_world_model(TrainConfig(data=str(tiny_imagine_world.random_dir), out=str(out), preset="tiny", steps=20,
                                  latent="action", device="cpu", progress=False, log_dir=str(out.parent / "tb"),
                                  init_from=str(tiny_imagine_world.nobank_path)))
    return out


@pytest.mark.parametrize("latent,adversarial,max_ratio", [("rla", False, 0.995), ("action", False, 0.7),
                                                          ("action", True, 0.7)])
def test_finetune_lowers_the_one_step_error_and_trains_only_the_dynamics(tiny_imagine_world, action_model_path,
                                                                         latent, adversarial, max_ratio):
    torch.set_num_threads(1)
    model = WorldModel.load(tiny_imagine_world.nobank_path if latent == "rla" else action_model_path)
    prefix = "controller." if latent == "rla" else "predictor."
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = finetune_dynamics(model, [tiny_imagine_world.random_dir],
                             FinetuneConfig(steps=60, lr=3e-3, adversarial=adversarial, progress=False))
    # the rla controller sits behind a frozen latent decoder that bounds what it can fix; the predictor is free
    assert info["mse_after"] < max_ratio * info["mse_before"], info
    assert info["adversarial"] is adversarial and model.meta.train_info["finetune"][-1] == info
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(k.startswith(prefix) for k in changed), changed
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("encoder."))


@pytest.mark.parametrize("adversarial", [False, True])
def test_multi_step_finetune_lowers_the_rollout_error(tiny_imagine_world, action_model_path, adversarial):
    from wm_gym.train.feature_windows import FeatureWindows  # noqa: F401  (the windows the loss reads)

    torch.set_num_threads(1)
    model = WorldModel.load(action_model_path)
    info = finetune_dynamics(model, [tiny_imagine_world.random_dir],
                             FinetuneConfig(steps=40, lr=1e-3, horizon=3, adversarial=adversarial, progress=False))
    assert info["horizon"] == 3 and info["mse_after"] < info["mse_before"], info
    curve = model.meta.train_info["finetune"][-1]
    assert curve["steps"] == 40
    with pytest.raises(ValueError, match="horizon"):
        finetune_dynamics(model, [tiny_imagine_world.random_dir], FinetuneConfig(steps=1, horizon=0, progress=False))


def _probed(model, data_dir):
    """``model`` with a state probe fitted on ``data_dir``'s frames and true states."""
    from wm_gym.data.dataset import load_episodes
    from wm_gym.encoders.probe import StateProbe

    data = load_episodes(data_dir)
    frames = torch.from_numpy(np.concatenate(data.frames))
    states = torch.as_tensor(np.concatenate(data.states), dtype=torch.float32)
    with torch.no_grad():
        feats = model.encode(frames)
    model.state_probe = StateProbe(model.n_tokens, model.dim, states.shape[1]).fit(feats, states)
    return model


def test_the_probe_term_adds_the_weighted_probed_error_of_the_readable_numbers(tiny_imagine_world):
    from wm_gym.state_probe import readable_state_reader
    from wm_gym.train.finetune import rollout_error

    torch.set_num_threads(1)
    model = _probed(WorldModel.load(tiny_imagine_world.nobank_path), tiny_imagine_world.random_dir)
    dims = model.state_probe.bias.numel()
    model.meta.train_info["probe"] = {"r2_heldout_episodes": [0.95] + [0.1] * (dims - 1)}  # only the first is readable
    g = torch.Generator().manual_seed(0)
    s_hist = torch.randn(3, model.config.history, model.n_tokens, model.dim, generator=g)
    a = torch.rand(3, 2, model.config.action_dim, generator=g) * 2 - 1
    targets = torch.randn(3, 2, model.n_tokens, model.dim, generator=g)
    read = readable_state_reader(model)
    assert read(targets).shape == (3, 2, 1)
    with torch.no_grad():
        plain, _ = rollout_error(model, s_hist, a, targets)
        weighted, metrics = rollout_error(model, s_hist, a, targets, read, 2.5)
        preds = model.rollout(s_hist, a, scaled=True)
        by_hand = torch.stack([(model.state_probe(preds[:, t]) - model.state_probe(targets[:, t]))[:, 0] for t in range(2)])
    assert metrics["probe_error"] == pytest.approx(float(by_hand.pow(2).mean()), rel=1e-4)
    assert float(weighted) == pytest.approx(float(plain) + 2.5 * metrics["probe_error"], rel=1e-4)


def test_finetune_with_the_probe_weight_lowers_the_probed_error_more(tiny_imagine_world):
    from wm_gym.state_probe import readable_state_reader
    from wm_gym.train.finetune import feature_windows

    torch.set_num_threads(1)
    errors = {}
    for weight in (0.0, 10.0):
        model = _probed(WorldModel.load(tiny_imagine_world.nobank_path), tiny_imagine_world.random_dir)
        windows = feature_windows(model, [tiny_imagine_world.random_dir], progress=False)
        held = windows.sampler(np.arange(len(windows.lengths)), 256, horizon=2)(torch.Generator().manual_seed(5))
        read = readable_state_reader(model)

        def probed_error():
            with torch.no_grad():
                preds = model.rollout(held["s_hist"], held["actions"])
            return float((read(preds) - read(held["targets"])).pow(2).sum(-1).mean())

        before = probed_error()
        info = finetune_dynamics(model, [tiny_imagine_world.random_dir],
                                 FinetuneConfig(steps=60, lr=3e-3, horizon=2, probe_weight=weight, progress=False))
        errors[weight] = probed_error() / before
        assert info["probe_weight"] == weight
        if weight:  # the probed error on the fine-tune's own held-out windows is reported too
            assert info["probe_error_after"] < info["probe_error_before"], info
        else:
            assert "probe_error_after" not in info
    assert errors[10.0] < errors[0.0] and errors[10.0] < 1, errors


def test_the_probe_weight_needs_a_probe_and_a_sign(model, tiny_imagine_world, tmp_path):
    missing = tmp_path / "not-encoded"  # refused before any data is read
    with pytest.raises(ValueError, match="state probe"):
        finetune_dynamics(model, [missing], FinetuneConfig(steps=1, probe_weight=1.0, progress=False))
    with pytest.raises(ValueError, match="probe_weight"):
        finetune_dynamics(model, [missing], FinetuneConfig(steps=1, probe_weight=-1.0, progress=False))
    with pytest.raises(ValueError, match="horizon"):
        finetune_dynamics(model, [missing], FinetuneConfig(steps=1, horizon=0, progress=False))


def test_finetune_rejects_empty_and_mismatched_data(model, tiny_imagine_world, tmp_path):
    with pytest.raises(ValueError, match="nothing to fine-tune"):
        finetune_dynamics(model, [[]], FinetuneConfig(steps=1, progress=False))
    with pytest.raises(ValueError, match="is empty"):
        finetune_dynamics(model, [tmp_path], FinetuneConfig(steps=1, progress=False))
    ep = Episode(frames=np.zeros((11, 64, 64, 3), np.uint8), proprio=np.zeros((11, 2), np.float32),
                 states=np.zeros((11, 2)), success=np.zeros(11, bool), actions=np.zeros((10, 3), np.float32))
    with pytest.raises(ValueError, match="dims"):
        finetune_dynamics(model, [[ep]], FinetuneConfig(steps=1, progress=False))


def test_train_adversarial_flag_runs_the_dynamics_stages_on_perturbed_inputs(tiny_imagine_world, tmp_path):
    out = tmp_path / "adv.pt"
    code = main(["train", "--data", str(tiny_imagine_world.random_dir), "--out", str(out), "--preset", "tiny",
                 "--steps", "5", "--init-from", str(tiny_imagine_world.nobank_path), "--adversarial", "--device", "cpu",
                 "--log-dir", str(tmp_path / "tb"), "--json"])
    assert code == 0
    assert WorldModel.load(out).meta.train_info["adversarial"] is True


# ----- recording real episodes ---------------------------------------------------------------------------------
class FixedPolicy:
    """Action chunk = a fixed per-episode pattern; raises after ``fail_after`` calls (a simulated kill)."""

    def __init__(self, action_dim: int, fail_after: int | None = None):
        self.rng_actions = np.random.default_rng(0).uniform(-1, 1, (1000, action_dim)).astype(np.float32)
        self.calls, self.fail_after = 0, fail_after

    def predict(self, obs, deterministic=True):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        return self.rng_actions[: len(obs)], None


def test_recorded_episodes_replay_exactly_in_a_fresh_sim(model):
    episodes = {}
    result = evaluate_policy(FixedPolicy(model.config.action_dim), model, episodes=3, seed=5, max_steps=2,
                             record=lambda i, ep: episodes.__setitem__(i, ep))
    assert sorted(episodes) == [0, 1, 2]
    for i, ep in episodes.items():
        ep.check()
        assert ep.seed == 5 + i and ep.steps == result["per_episode"][i]["length"] * model.config.frameskip
        sim = make_sim(model.meta.env_id).unwrapped
        obs, _ = sim.reset(seed=ep.seed)
        frames = [obs["pixels"]] + [sim.step(a)[0]["pixels"] for a in ep.actions]
        np.testing.assert_array_equal(np.stack(frames), ep.frames)
        np.testing.assert_array_equal(ep.goal_pixels, sim.goal_pixels)


# ----- the online loop ------------------------------------------------------------------------------------------
def online_cfg(out, **kw) -> OnlineConfig:
    return OnlineConfig(out=str(out), rounds=2, episodes=3, max_steps=2, batch=1, seed=7,
                        finetune=FinetuneConfig(steps=4, progress=False), device="cpu", **kw)


def test_online_rounds_add_data_fine_tune_and_report(model, tmp_path):
    rounds = run_online(model, lambda m: FixedPolicy(m.config.action_dim), online_cfg(tmp_path / "run", eval_episodes=2))
    assert [r["round"] for r in rounds] == [0, 1]
    assert all(r["eval"]["episodes"] == 2 and r["eval"]["seed"] == 100_000 for r in rounds)
    assert all(r["new_data_mse_before"] > 0 and r["new_data_mse_after"] > 0 for r in rounds)
    for r, result in enumerate(rounds):
        shards = sorted((tmp_path / "run" / f"round_{r:02d}" / "episodes").glob("*.npz"))
        assert len(shards) == result["episodes_added"] == 3 and 0 <= result["success_rate"] <= 1
        assert result["sim_steps_added"] == sum(Episode.load_npz(p).steps for p in shards)
        assert result["finetune"]["episodes"] == 3 * (r + 1)  # aggregated: every round so far
        assert WorldModel.load(result["model"]).meta.train_info["finetune"][-1]["steps"] == 4
    folder = tmp_path / "run" / "round_00" / "episodes"  # an online round's folder fine-tunes like a dataset
    assert finetune_dynamics(model, [folder], FinetuneConfig(steps=2, progress=False))["episodes"] == 3
    seeds = [Episode.load_npz(p).seed for r in range(2)
             for p in sorted((tmp_path / "run" / f"round_{r:02d}" / "episodes").glob("*.npz"))]
    assert seeds == list(range(7, 13))  # fresh start/goal pairs each round
    summary = json.loads((tmp_path / "run" / "results.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1] and summary["base_eval"]["episodes"] == 2


def test_an_interrupted_round_resumes_without_losing_or_duplicating_trajectories(model, tmp_path):
    out = tmp_path / "run"
    # round 0 completes (3 episodes x 2 steps = 6 calls); round 1 is killed after its first episode
    with pytest.raises(KeyboardInterrupt):
        run_online(model, FixedPolicy(model.config.action_dim, fail_after=6 + 3), online_cfg(out))
    saved = sorted((out / "round_01" / "episodes").glob("*.npz"))
    assert len(saved) == 1 and not (out / "round_01" / "result.json").exists()
    before = {p.name: p.read_bytes() for p in saved}

    policy = FixedPolicy(model.config.action_dim)
    rounds = run_online(model, policy, online_cfg(out))
    assert policy.calls == 2 * 2  # only round 1's two missing episodes ran
    assert rounds[1]["resumed_episodes"] == 1 and rounds[1]["episodes_added"] == 3
    files = sorted(p.name for p in (out / "round_01" / "episodes").glob("*"))
    assert files == [f"episode_{i:06d}.npz" for i in range(3)]  # no duplicates, no temp files left
    assert all((out / "round_01" / "episodes" / n).read_bytes() == b for n, b in before.items())
    seeds = [Episode.load_npz(out / "round_01" / "episodes" / f).seed for f in files]
    assert seeds == [10, 11, 12]

    idle = FixedPolicy(model.config.action_dim, fail_after=0)  # a finished run does not act again
    assert [r["success_rate"] for r in run_online(model, idle, online_cfg(out))] == [r["success_rate"] for r in rounds]


def test_online_refuses_to_mix_runs_and_bad_settings(model, tmp_path):
    run_online(model, FixedPolicy(model.config.action_dim), online_cfg(tmp_path / "run", ))
    config = online_cfg(tmp_path / "run")
    config.seed = 8
    with pytest.raises(ValueError, match="other settings"):
        run_online(model, FixedPolicy(model.config.action_dim), config)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        run_online(model, FixedPolicy(model.config.action_dim), online_cfg(tmp_path / "other"))
    with pytest.raises(ValueError, match="rounds and episodes"):
        run_online(model, FixedPolicy(model.config.action_dim), OnlineConfig(out=str(tmp_path / "z"), rounds=0))


def test_cli_online_and_finetune(tiny_imagine_world, tmp_path, capsys):
    out = tmp_path / "ft.pt"
    assert main(["finetune", "--model", str(tiny_imagine_world.nobank_path), "--data", str(tiny_imagine_world.random_dir),
                 "--out", str(out), "--steps", "3", "--adversarial", "--device", "cpu", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["adversarial"] is True and line["steps"] == 3 and out.exists()
    assert main(["online", "--model", str(out), "--out", str(tmp_path / "run"), "--rounds", "1", "--episodes", "2",
                 "--max-steps", "1", "--planner", "gbp", "--gbp-steps", "2", "--horizon", "2", "--finetune-steps", "2",
                 "--device", "cpu", "--json"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["rounds"][0]["episodes_added"] == 2 and "mse_after" in line["rounds"][0]
    assert main(["online", "--model", "no-such-model", "--out", str(tmp_path / "r2"), "--json"]) == 2


@pytest.mark.parametrize("flags,lockstep", [(["--episodes", "500"], 200), (["--episodes", "30"], 30),
                                             (["--episodes", "500", "--batch", "300"], 300)])
def test_cli_online_runs_a_round_in_lockstep_batches_of_at_most_200_by_default(tiny_imagine_world, tmp_path,
                                                                             monkeypatch, flags, lockstep):
    seen = {}
    monkeypatch.setattr("wm_gym.online.run_online", lambda model, policy, config, trainer=None: seen.setdefault("c", config) and [])
    assert main(["online", "--model", str(tiny_imagine_world.nobank_path), "--out", str(tmp_path / "run"), *flags,
                 "--planner", "gbp", "--device", "cpu", "--json"]) == 0
    assert seen["c"].batch == lockstep


# ----- the agent-driven loop: act, fine-tune, retrain in imagination --------------------------------------------
RETRAIN = 256  # one PPO rollout of the tiny start agent (8 envs x 32 steps)


@pytest.fixture(scope="module")
def start_agent(tiny_imagine_world, tmp_path_factory):
    """An untrained tiny PPO agent on the tiny world (the 'offline' agent the loop starts from)."""
    out = tmp_path_factory.mktemp("start_agent") / "start.zip"
    train_agent(AgentConfig(model=str(tiny_imagine_world.path), out=str(out), steps=0, num_envs=8, n_steps=32,
                            batch_size=64, net_arch=[32, 32], device="cpu", progress=False, checkpoint_every=10**9,
                            log_dir=str(out.parent / "tb"), bc_data=None, log_std_init=0.0, critic_warmup=0))
    return out


@pytest.fixture()
def bank_model(tiny_imagine_world):
    torch.set_num_threads(1)
    return WorldModel.load(tiny_imagine_world.path)  # imagination needs the demo bank


class SpyRetrainer(AgentRetrainer):
    """The real retrainer, recording which agent files act and how often they are asked for actions.

    ``kill_before``/``kill_after``: the n-th retrain call (1-based) raises instead of retraining,
    or right after the retrained agent is saved (a simulated kill).
    """

    def __init__(self, kill_before: int | None = None, kill_after: int | None = None):
        super().__init__(device="cpu", progress=False)
        self.kill_before, self.kill_after = kill_before, kill_after
        self.loaded: list[Path] = []
        self.retrains = self.predicts = 0

    def load(self, path):
        self.loaded.append(Path(path))
        agent, meta = super().load(path)
        act = agent.predict

        def predict(obs, *args, **kwargs):
            self.predicts += 1
            return act(obs, *args, **kwargs)

        agent.predict = predict
        return agent, meta

    def retrain(self, model, start, out, steps):
        self.retrains += 1
        if self.retrains == self.kill_before:
            raise KeyboardInterrupt("simulated kill before retraining")
        info = super().retrain(model, start, out, steps)
        if self.retrains == self.kill_after:
            raise KeyboardInterrupt("simulated kill after the agent was saved")
        return info


def agent_cfg(out, start, **kw) -> OnlineConfig:
    return online_cfg(out, agent=str(start), retrain_steps=RETRAIN, **kw)


def params(agent_file) -> dict[str, torch.Tensor]:
    return load_agent(agent_file)[0].policy.state_dict()


def shard_bytes(out, r) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / f"round_{r:02d}" / "episodes").glob("*"))}


def test_agent_rounds_retrain_the_agent_on_each_model_and_act_with_it_next(bank_model, start_agent, tmp_path):
    out, trainer = tmp_path / "run", SpyRetrainer()
    rounds = run_online(bank_model, None, agent_cfg(out, start_agent, eval_episodes=1), trainer)
    agents = [out / f"round_{r:02d}" / "agent.zip" for r in range(2)]
    assert [r["agent"] for r in rounds] == [str(a) for a in agents]
    assert [r["acting_agent"] for r in rounds] == [str(start_agent), str(agents[0])]  # round 0: the offline agent
    # base_eval and round 0 act with the start agent; each round's eval and the next round with its retrained one
    assert trainer.loaded == [start_agent, start_agent, agents[0], agents[0], agents[1]]
    assert trainer.predicts == 2 * 3 * 2 + 3 * 1 * 2  # 2 rounds x 3 episodes x 2 steps, 3 evals x 1 x 2
    for r, agent in enumerate(agents):
        sb3, meta = load_agent(agent)
        assert sb3.num_timesteps == RETRAIN * (r + 1)  # warm-started: the steps add up over rounds
        assert meta["model"] == str(out / f"round_{r:02d}" / "model.pt") and meta["config"]["bc_data"] is None
        assert meta["config"]["seed"] == r + 1 and rounds[r]["retrain"]["steps"] == RETRAIN * (r + 1)
    before, after = params(start_agent), params(agents[0])
    assert any(not torch.equal(before[k], after[k]) for k in before)  # PPO really updated the policy
    assert all(r["eval"]["episodes"] == 1 for r in rounds) and (out / "base_eval.json").exists()
    steps = [sum(Episode.load_npz(p).steps for p in (out / f"round_{r:02d}" / "episodes").glob("*.npz"))
             for r in range(2)]
    assert [r["sim_steps_added"] for r in rounds] == steps
    assert [r["real_episodes_total"] for r in rounds] == [3, 6]
    assert [r["sim_steps_total"] for r in rounds] == [steps[0], steps[0] + steps[1]]
    assert not list(out.glob("round_*/retrain/*.zip"))  # published, checkpoints cleaned up


def test_an_interrupted_agent_run_resumes_each_step_once(bank_model, start_agent, tmp_path):
    out = tmp_path / "run"
    # kill 1: round 0's model is saved, its agent not yet trained
    with pytest.raises(KeyboardInterrupt):
        run_online(bank_model, None, agent_cfg(out, start_agent), SpyRetrainer(kill_before=1))
    r0 = out / "round_00"
    assert (r0 / "model.pt").exists() and not (r0 / "agent.zip").exists() and not (r0 / "result.json").exists()
    episodes, model_bytes = shard_bytes(out, 0), (r0 / "model.pt").read_bytes()
    model_mtime = (r0 / "model.pt").stat().st_mtime_ns

    # kill 2: resumes round 0 with a retrain only, then round 1 is killed right after its agent is saved
    trainer = SpyRetrainer(kill_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_online(bank_model, None, agent_cfg(out, start_agent), trainer)
    assert shard_bytes(out, 0) == episodes and len(episodes) == 3  # not re-collected
    assert (r0 / "model.pt").read_bytes() == model_bytes and (r0 / "model.pt").stat().st_mtime_ns == model_mtime
    assert trainer.predicts == 3 * 2  # round 0 acted not at all; round 1 ran its 3 episodes of 2 steps
    assert (out / "round_01" / "agent.zip").exists() and not (out / "round_01" / "result.json").exists()
    agent_bytes = (out / "round_01" / "agent.zip").read_bytes()

    # the last run only writes round 1's result: no acting, no fine-tuning, no retraining
    trainer = SpyRetrainer(kill_before=1)
    rounds = run_online(bank_model, None, agent_cfg(out, start_agent), trainer)
    assert trainer.retrains == 0 and trainer.predicts == 0
    assert (out / "round_01" / "agent.zip").read_bytes() == agent_bytes and rounds[1]["retrain"]["reused"] is True
    assert [r["episodes_added"] for r in rounds] == [3, 3] and [r["real_episodes_total"] for r in rounds] == [3, 6]
    assert rounds[0]["resumed_episodes"] == 3 and rounds[1]["resumed_episodes"] == 3
    assert rounds[1]["sim_steps_total"] == rounds[0]["sim_steps_added"] + rounds[1]["sim_steps_added"]
    assert rounds[1]["acting_agent"] == str(r0 / "agent.zip") and sidecar_path(out / "round_01" / "agent.zip").exists()
    assert load_agent(out / "round_01" / "agent.zip")[0].num_timesteps == 2 * RETRAIN

    # settings that decide the data must match on resume
    for changed in ({"retrain_steps": RETRAIN + 1}, {"agent": str(tmp_path / "other.zip")}):
        config = agent_cfg(out, start_agent)
        config.__dict__.update(changed)
        with pytest.raises(ValueError, match="other settings"):
            run_online(bank_model, None, config, SpyRetrainer())
    with pytest.raises(ValueError, match="other settings"):  # the same agent, fixed instead of retrained
        run_online(bank_model, load_agent(start_agent)[0], online_cfg(out, agent=str(start_agent)))


def test_agent_mode_needs_its_agent_and_trainer(bank_model, start_agent, tmp_path):
    with pytest.raises(ValueError, match="retrain_steps > 0 needs"):
        run_online(bank_model, None, agent_cfg(tmp_path / "a", start_agent))  # no trainer
    with pytest.raises(ValueError, match="retrain_steps > 0 needs"):
        run_online(bank_model, load_agent(start_agent)[0], agent_cfg(tmp_path / "b", start_agent), SpyRetrainer())
    with pytest.raises(ValueError, match="policy is None"):
        run_online(bank_model, None, online_cfg(tmp_path / "c"))


def test_cli_online_retrains_the_agent(tiny_imagine_world, start_agent, tmp_path, capsys):
    argv = ["online", "--model", str(tiny_imagine_world.path), "--agent", str(start_agent), "--retrain-steps",
            str(RETRAIN), "--out", str(tmp_path / "run"), "--rounds", "1", "--episodes", "2", "--max-steps", "1",
            "--finetune-steps", "2", "--device", "cpu", "--json"]
    assert main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rounds"][0]
    assert line["agent"] == str(tmp_path / "run" / "round_00" / "agent.zip") and line["real_episodes_total"] == 2
    assert load_agent(line["agent"])[0].num_timesteps == RETRAIN
    assert main(["online", "--retrain-steps", "5", "--out", str(tmp_path / "r2"), "--json"]) == 2
    assert "--agent" in capsys.readouterr().err
