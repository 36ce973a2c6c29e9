"""World-model training: losses drop, resume is exact, DDP runs, bad files fail clearly, eval-wm reports."""
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from wm_gym.cli import main as cli_main
from wm_gym.data.collect import collect_dataset
from wm_gym.evaluate_wm import evaluate_world_model
from wm_gym.train.feature_windows import FeatureWindows
from wm_gym.train.loop import StageConfig, Trainer
from wm_gym.train.world_model import TrainConfig, labelled_episodes, train_world_model
from wm_gym.world_model import WorldModel


@pytest.fixture(scope="module")
def wall_data(tmp_path_factory) -> Path:
    return collect_dataset("wm_gym/Wall-v0", 16, tmp_path_factory.mktemp("wall") / "data", policy="noisy-expert", seed=0,
                           progress=False)


@pytest.fixture(scope="module")
def tiny_model(wall_data, tmp_path_factory) -> tuple[WorldModel, Path]:
    out = tmp_path_factory.mktemp("model") / "wm.pt"
    torch.set_num_threads(1)
    model = train_world_model(TrainConfig(data=str(wall_data), out=str(out), preset="tiny", device="cpu",
                                          progress=False, log_dir=str(out.parent / "tb")))
    return model, out


def _drop(curve: list[float]) -> float:
    return float(np.mean(curve[:10]) / np.mean(curve[-20:]))


def test_every_stage_loss_drops_and_model_round_trips(tiny_model):
    model, path = tiny_model
    losses = model.meta.train_info["final_loss"]
    assert set(losses) == {"encoder", "latent", "flow", "controller"}
    loaded = WorldModel.load(path)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert loaded.meta.sim == "wall" and loaded.config.action_dim == 10
    assert (path.parent / "tb").is_dir() and any((path.parent / "tb").iterdir())


def test_losses_actually_drop(wall_data, tmp_path):
    torch.set_num_threads(1)
    trainer_history = {}
    config = TrainConfig(data=str(wall_data), out=str(tmp_path / "m.pt"), preset="tiny", device="cpu", progress=False,
                      log_dir=str(tmp_path / "tb"))
    import wm_gym.train.world_model as twm

    original = twm.Trainer.run

    def spy(self, stage, *args, **kwargs):
        curve = original(self, stage, *args, **kwargs)
        trainer_history[stage.name] = curve
        return curve

    twm.Trainer.run = spy
    try:
        train_world_model(config)
    finally:
        twm.Trainer.run = original
    assert _drop(trainer_history["encoder"]) > 3
    assert _drop(trainer_history["latent"]) > 1.3
    assert _drop(trainer_history["flow"]) > 1.3
    assert _drop(trainer_history["controller"]) > 1.3


def test_rollout_shapes_and_gradient_wrt_actions(tiny_model, monkeypatch):
    model, _ = tiny_model
    monkeypatch.setattr(model, "precision", "fp32")  # compared with fp32 compositions below (auto is bf16 on CPUs with bf16 units)
    s = torch.randn(3, 1, model.n_tokens, model.dim)
    actions = torch.zeros(3, 4, 10, requires_grad=True)
    preds = model.rollout(s, actions)
    assert preds.shape == (3, 4, model.n_tokens, model.dim)
    preds[:, -1].pow(2).mean().backward()
    assert torch.isfinite(actions.grad).all() and actions.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"actions: expected shape \[B=3, A=10\]"):
        model.step(s, torch.zeros(3, 2))
    # Re-projection (decode → re-encode) is on by default for conv models and changes the prediction.
    assert model.reprojects
    raw = model.decode_latent(s[:, -1], model.controller(s, model.scale_actions(actions[:, 0].detach())))
    torch.testing.assert_close(model.step(s, actions[:, 0].detach()), model.project_to_frames(raw))
    assert not torch.allclose(raw, model.project_to_frames(raw))
    flow_a = model.step(s, actions[:, 0].detach(), mode="flow", noise=torch.zeros(3, 4, 8))
    flow_b = model.step(s, actions[:, 0].detach(), mode="flow", noise=torch.zeros(3, 4, 8))
    assert torch.equal(flow_a, flow_b)


def test_leakage_test_separates_real_from_cut_futures(tiny_model, wall_data):
    model, _ = tiny_model
    result = evaluate_world_model(model, wall_data, max_windows=64, transfer_pairs=8)
    leak = result["leakage"]
    assert leak["cut_mse"] > 1.5 * leak["real_mse"]
    assert result["probe_r2"] > 0.9
    assert set(result["mse_by_horizon"]) == {"1", "5", "10"}
    assert "predicted_motion_ratio" not in result  # no state probe, no motion read


def test_predicted_motion_ratio_is_1_for_the_true_future_0_for_copy_last_and_scales_with_the_motion(tiny_model,
                                                                                                     wall_data):
    from wm_gym.encoders.probe import StateProbe
    from wm_gym.evaluate_wm import predicted_motion_ratio

    model, _ = tiny_model
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(0)
    model.state_probe = StateProbe(model.n_tokens, model.dim, 2)
    model.state_probe.weight.copy_(torch.randn(model.n_tokens * model.dim, 2, generator=g))  # linear: motions scale
    last = torch.randn(16, model.n_tokens, model.dim, generator=g)
    targets = last[:, None] + torch.randn(16, 3, model.n_tokens, model.dim, generator=g)
    ratio = lambda preds: predicted_motion_ratio(model, last, preds, targets, (1, 3))  # noqa: E731
    assert ratio(targets) == {"1": pytest.approx(1.0, rel=1e-5), "3": pytest.approx(1.0, rel=1e-5)}
    assert ratio(last[:, None].expand_as(targets)) == {"1": 0.0, "3": 0.0}
    half = last[:, None] + 0.5 * (targets - last[:, None])
    assert ratio(half) == {"1": pytest.approx(0.5, rel=1e-5), "3": pytest.approx(0.5, rel=1e-5)}
    # eval-wm reports it for a model with a probe
    result = evaluate_world_model(model, wall_data, max_windows=16, transfer_pairs=4)
    assert set(result["predicted_motion_ratio"]) == {"1", "5", "10"}
    assert all(np.isfinite(v) and v >= 0 for v in result["predicted_motion_ratio"].values())


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)


def _toy_run(checkpoint: Path, fail_at: int | None) -> dict:
    torch.manual_seed(0)
    toy = _Toy()
    trainer = Trainer(modules={"toy": toy}, checkpoint=checkpoint, device=torch.device("cpu"), progress=False)
    trainer.load_checkpoint()
    w_true = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    calls = {"n": 0}

    def sample(gen):
        calls["n"] += 1
        if fail_at is not None and calls["n"] == fail_at:
            raise KeyboardInterrupt("simulated kill")
        x = torch.randn(8, 4, generator=gen)
        return x, x @ w_true.T

    def loss(batch):
        x, y = batch
        return ((toy.lin(x) - y) ** 2).mean(), {}

    trainer.run(StageConfig("fit", steps=40, lr=0.05, warmup=5, ckpt_every=10), toy, loss, sample)
    return {k: v.clone() for k, v in toy.state_dict().items()}


def test_resume_continues_bit_for_bit(tmp_path):
    straight = _toy_run(tmp_path / "a.state", fail_at=None)
    with pytest.raises(KeyboardInterrupt):
        _toy_run(tmp_path / "b.state", fail_at=27)       # killed after the step-20 checkpoint
    resumed = _toy_run(tmp_path / "b.state", fail_at=None)
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert not list(tmp_path.glob(".*.tmp"))              # atomic writes leave no temp files


def _train_cmd(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "wm_gym.cli", "train", "--data", str(data), "--out", str(out), "--preset", "tiny",
            "--stage-steps", "flow=300", "--checkpoint-every", "20", "--device", "cpu", "--log-dir",
            str(out.parent / "tb"), "--json", *extra]


def test_a_killed_train_resumes_to_the_same_weights_bit_for_bit(wall_data, tmp_path):
    """kill -9 a real `wm-gym train` in the middle of its flow stage (whose loss draws noise from torch's global
    generator), resume it, and compare with an uninterrupted run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    straight = tmp_path / "straight.pt"
    subprocess.run(_train_cmd(wall_data, straight), check=True, env=env, capture_output=True, timeout=600)
    killed = tmp_path / "killed.pt"
    state_file = killed.with_name(killed.name + ".train-state")
    proc = subprocess.Popen(_train_cmd(wall_data, killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed_at = None
    deadline = time.time() + 600
    while killed_at is None and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
        try:
            state = torch.load(state_file, weights_only=False)
        except (FileNotFoundError, EOFError, RuntimeError):
            continue
        if state["stage"] == "flow" and state["step"] >= 60:
            proc.kill()
            killed_at = state["step"]
    proc.wait()
    assert killed_at is not None and not killed.exists(), "the run finished before it could be killed mid-stage"
    subprocess.run(_train_cmd(wall_data, killed, "--resume"), check=True, env=env, capture_output=True, timeout=600)
    a, b = WorldModel.load(straight).state_dict(), WorldModel.load(killed).state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_flag_needs_a_state_and_completed_runs_skip(wall_data, tiny_model, tmp_path):
    with pytest.raises(FileNotFoundError, match="train-state"):
        train_world_model(TrainConfig(data=str(wall_data), out=str(tmp_path / "none.pt"), preset="tiny",
                                      device="cpu", progress=False, resume=True))
    model, path = tiny_model
    again = train_world_model(TrainConfig(data=str(wall_data), out=str(path), preset="tiny", device="cpu",
                                          progress=False, resume=True, log_dir=str(tmp_path / "tb")))
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_corrupt_and_foreign_files_raise_clear_errors(tiny_model, tmp_path):
    _, path = tiny_model
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        WorldModel.load(garbage)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        WorldModel.load(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="not a wm-gym world-model file"):
        WorldModel.load(foreign)
    ckpt = torch.load(path, weights_only=False)
    ckpt["version"] = 999
    future = tmp_path / "future.pt"
    torch.save(ckpt, future)
    with pytest.raises(ValueError, match="format version 999"):
        WorldModel.load(future)
    ckpt["version"] = 1
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("controller.")}
    torch.save(ckpt, future)
    with pytest.raises(ValueError, match="missing"):
        WorldModel.load(future)
    with pytest.raises(FileNotFoundError):
        WorldModel.load(tmp_path / "absent.pt")


def test_feature_windows_index_hand_case():
    feats = torch.arange(12, dtype=torch.float32).view(12, 1, 1)     # frame value = global index
    actions = [np.arange(5, dtype=np.float32)[:, None], np.arange(100, 106, dtype=np.float32)[:, None]]
    win = FeatureWindows.from_episodes(feats, [6, 6], actions, history=2, frameskip=2)
    assert win.starts([0, 1], horizon=1).tolist() == [2, 3, 8, 9]   # t ≥ (H-1)·fs and t + fs ≤ last frame
    batch = win.gather(torch.tensor([3, 8]), horizon=1)
    assert batch["s_hist"].flatten(1).tolist() == [[1, 3], [6, 8]]
    assert batch["targets"].flatten(1).tolist() == [[5], [10]]
    assert batch["actions"].flatten(1).tolist() == [[3, 4], [102, 103]]
    assert win.frame_rows([1]).tolist() == [6, 7, 8, 9, 10, 11]
    assert win.episode_of(np.array([0, 5, 6, 11])).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="no window fits"):
        win.starts([0], horizon=3)


def test_labelled_subset():
    subset = labelled_episodes(np.arange(100), 0.1, seed=0)
    assert len(subset) == 10 and len(set(subset)) == 10
    assert np.array_equal(subset, labelled_episodes(np.arange(100), 0.1, seed=0))
    with pytest.raises(ValueError, match="action_labels"):
        labelled_episodes(np.arange(10), 0.0, seed=0)


def test_cli_eval_wm_json(tiny_model, wall_data, tmp_path, capsys):
    _, path = tiny_model
    assert cli_main(["eval-wm", "--model", str(path), "--data", str(wall_data), "--windows", "32",
                     "--video", str(tmp_path / "vid"), "--device", "cpu", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("mse_by_horizon", "copy_last_mse_by_horizon"):
        assert set(result[key]) == {"1", "5", "10"}
    assert 0.0 <= result["probe_r2"] <= 1.0
    assert (tmp_path / "vid" / "imagined_vs_true.mp4").stat().st_size > 0
    assert (tmp_path / "vid" / "imagined_vs_true.png").stat().st_size > 0


def test_cli_eval_wm_precision_sets_the_rollouts_autocast(tiny_model, wall_data, capsys):
    _, path = tiny_model
    results = {}
    for precision in ("fp32", "bf16"):
        assert cli_main(["eval-wm", "--model", str(path), "--data", str(wall_data), "--windows", "16",
                         "--precision", precision, "--device", "cpu", "--json"]) == 0
        results[precision] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["fp32"]["precision"] == "fp32" and results["bf16"]["precision"] == "bf16"
    fp32, bf16 = (results[p]["mse_by_horizon"]["5"] for p in ("fp32", "bf16"))
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=0.1)  # bf16 really ran, and stays close
    with pytest.raises(SystemExit):
        cli_main(["eval-wm", "--model", str(path), "--data", str(wall_data), "--precision", "fp16"])


def test_torchrun_ddp_two_cpu_processes(wall_data, tmp_path):
    out = tmp_path / "ddp.pt"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "wm_gym.cli", "train", "--data", str(wall_data), "--out", str(out), "--preset", "tiny",
           "--steps", "20", "--device", "cpu", "--log-dir", str(tmp_path / "tb"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = WorldModel.load(out)
    assert model.meta.train_info["world_size"] == 2
    digests = model.meta.train_info["replica_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]  # both replicas hold the same weights


def test_init_from_reuses_encoder_and_latents_and_trains_dynamics(tiny_model, wall_data, tmp_path):
    base, path = tiny_model
    config = TrainConfig(data=str(wall_data), out=str(tmp_path / "labels10.pt"), preset="tiny", device="cpu",
                      progress=False, action_labels=0.1, init_from=str(path), log_dir=str(tmp_path / "tb"))
    model = train_world_model(config)
    for name in ("encoder", "latent_model"):
        for (key, a), (_, b) in zip(getattr(base, name).state_dict().items(), getattr(model, name).state_dict().items()):
            assert torch.equal(a, b), f"{name}.{key}"
    assert set(model.meta.train_info["final_loss"]) == {"flow", "controller"}
    assert model.meta.train_info["labelled_episodes"] == 2          # ceil(0.1 × 15 training episodes)
    with pytest.raises(ValueError, match="config"):
        train_world_model(TrainConfig(data=str(wall_data), out=str(tmp_path / "bad.pt"), preset="small",
                                      device="cpu", progress=False, init_from=str(path), steps=1,
                                      log_dir=str(tmp_path / "tb2")))


def test_cli_stage_steps_must_name_a_stage(tmp_path, capsys):
    from wm_gym.cli import _stage_steps, main

    from wm_gym.train.world_model import PRESETS, STAGES

    assert _stage_steps("flow=1000") == ("flow", 1000) and _stage_steps("reprojector=50") == ("reprojector", 50)
    assert all(tuple(preset.stages) == STAGES for preset in PRESETS.values())  # every stage can be named
    rc = main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--stage-steps", "bogus=3"])
    assert rc == 2 and "--stage-steps takes STAGE=N" in capsys.readouterr().err


# ----- a pixel decoder for encoders without one (DINOv2) -------------------------------------------------------
def test_fit_pixel_decoder_learns_frames_from_detached_features(tiny_model, wall_data):
    from wm_gym.data.dataset import load_episodes
    from wm_gym.encoders.pixel_decoder import fit_pixel_decoder

    model, _ = tiny_model
    frames = np.concatenate(load_episodes(wall_data).frames)[:128]
    feats = model.encode(torch.from_numpy(frames))
    decoder, losses = fit_pixel_decoder(feats, frames, steps=60, batch_size=16)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5])
    images = decoder.to_pixels(feats[:3])
    assert images.shape == (3, 64, 64, 3) and images.dtype == torch.uint8
    with pytest.raises(ValueError, match="uint8"):
        fit_pixel_decoder(feats, frames[:10], steps=1)
    with pytest.raises(ValueError, match="tokens must be"):
        decoder(feats[:, :5])


def test_eval_wm_video_for_a_dinov2_world_model(wall_data, tmp_path):
    from wm_gym.encoders import DinoV2Encoder
    from wm_gym.world_model import WorldModelConfig, WorldModelMeta

    torch.set_num_threads(1)
    encoder = DinoV2Encoder(None, image_size=56, allow_random_weights=True, seed=0)  # no weights download here
    config = WorldModelConfig(encoder="dinov2-vits14", encoder_config={"image_size": 56}, reproject=False,
                           latent_config={"n_latents": 2, "latent_dim": 4, "width": 32, "enc_depth": 1, "dec_depth": 1, "heads": 2},
                           flow_config={"width": 32, "depth": 1, "heads": 2},
                           controller_config={"width": 32, "depth": 1, "heads": 2})
    model = WorldModel(config, WorldModelMeta(sim="wall", env_id="wm_gym/Wall-v1", action_low=[-1, -1],
                                           action_high=[1, 1]), encoder=encoder)
    assert not hasattr(model.encoder, "decode")
    result = evaluate_world_model(model, wall_data, max_windows=8, transfer_pairs=4, video_dir=tmp_path / "media",
                                  pixel_decoder_steps=5)
    assert Path(result["video"]).stat().st_size > 0 and Path(result["png"]).stat().st_size > 0


# ----- bf16 autocast and torch.compile ----------------------------------------------------------------------------
@pytest.mark.parametrize("flags, expected", [("fpu avx2 avx512f avx512_bf16 avx512_vnni", True),  # AMD Zen 4/5
                                             ("fpu avx512f amx_bf16 amx_tile amx_int8", True),    # Intel with AMX
                                             ("fpu avx2 avx512f avx512_vnni", False),             # no bf16 units
                                             (None, False)])                                      # no cpuinfo
def test_auto_precision_finds_amx_and_avx512_bf16_units_in_cpuinfo(tmp_path, flags, expected):
    from wm_gym.device import cpu_has_bf16_units

    cpuinfo = tmp_path / "cpuinfo"
    if flags is not None:
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_bf16_units(str(cpuinfo)) is expected


def test_bf16_rollout_is_close_to_fp32_differentiable_and_returns_fp32(tiny_model, monkeypatch):
    from wm_gym import device

    model, _ = tiny_model
    g = torch.Generator().manual_seed(0)
    s = torch.randn(4, model.config.history, model.n_tokens, model.dim, generator=g)
    actions = (torch.rand(4, 3, model.config.action_dim, generator=g) * 2 - 1).requires_grad_(True)
    monkeypatch.setattr(device, "cpu_has_bf16_units", lambda: True)
    assert model.precision == "auto" and model.uses_bf16 and model.precision_in_use == "bf16"  # auto: bf16 with units
    monkeypatch.setattr(device, "cpu_has_bf16_units", lambda: False)
    assert not model.uses_bf16 and model.precision_in_use == "fp32"  # ... fp32 on a CPU without
    fp32 = model.rollout(s, actions)
    model.precision = "bf16"
    try:
        bf16 = model.rollout(s, actions)
        bf16.pow(2).mean().backward()
    finally:
        model.precision = "auto"
    assert bf16.dtype == torch.float32 and actions.grad is not None and torch.isfinite(actions.grad).all()
    assert not torch.equal(bf16, fp32)  # autocast really ran in bf16
    rel = ((bf16 - fp32) ** 2).mean() / (fp32 ** 2).mean()
    assert rel < 1e-2, float(rel)
    model.precision = "fp16"
    with pytest.raises(ValueError, match="precision"):
        model.rollout(s, actions)
    model.precision = "auto"


def test_compiled_dynamics_match_eager(tiny_model):
    import copy

    model = copy.deepcopy(tiny_model[0])
    g = torch.Generator().manual_seed(1)
    s = torch.randn(3, model.config.history, model.n_tokens, model.dim, generator=g)
    actions = torch.rand(3, 2, model.config.action_dim, generator=g) * 2 - 1
    eager = model.rollout(s, actions)
    torch.testing.assert_close(model.compile_dynamics(backend="eager").rollout(s, actions), eager)


def test_training_runs_with_bf16_autocast_and_torch_compile(tiny_model, wall_data, tmp_path):
    _, path = tiny_model
    model = train_world_model(TrainConfig(data=str(wall_data), out=str(tmp_path / "m.pt"), preset="tiny", steps=3,
                                          device="cpu", progress=False, log_dir=str(tmp_path / "tb"), init_from=str(path),
                                          precision="bf16", compile="eager"))
    assert all(np.isfinite(v) for v in model.meta.train_info["final_loss"].values())
    with pytest.raises(ValueError, match="precision"):
        train_world_model(TrainConfig(data=str(wall_data), out=str(tmp_path / "n.pt"), preset="tiny", steps=1,
                                      device="cpu", progress=False, init_from=str(path), precision="half"))


def test_fast_preset_trains_a_grouped_model_with_a_reprojector_and_round_trips(wall_data, tmp_path):
    out = tmp_path / "fast.pt"
    model = train_world_model(TrainConfig(data=str(wall_data), out=str(out), preset="fast", steps=2, device="cpu",
                                          progress=False))
    assert model.config.encoder_config["width"] == 16 and model.latent_model.decoder.group == 2
    assert model.latent_model.decoder.embed.pos.shape[2] == model.n_tokens // 4  # the decoder reads 2x2 groups
    assert model.controller.context.pos.shape[2] == model.n_tokens // 4  # so does the controller's context
    assert model.encoder.reprojector is not None and "reprojector" in model.meta.train_info["stage_seconds"]
    assert model.meta.train_info["reproject"]["checked"]  # it can re-project; training kept the better setting
    model.config.reproject = True
    assert model.reprojects
    loaded = WorldModel.load(out)
    assert loaded.encoder.identity() == model.encoder.identity()
    frames = torch.zeros(2, 64, 64, 3, dtype=torch.uint8)
    torch.testing.assert_close(loaded.project_to_frames(loaded.encode(frames)),  # the reprojector re-projects
                               loaded.normalize(loaded.encoder.reproject(loaded.encoder(frames))), atol=1e-4, rtol=1e-4)
    s = loaded.encode(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))[:, None]
    assert loaded.step(s, torch.zeros(2, loaded.config.action_dim)).shape == (2, loaded.n_tokens, loaded.dim)


# ----- re-projection is kept only where it lowers the held-out open-loop error ---------------------------------
def test_training_checks_reprojection_and_keeps_the_better_setting(tiny_model, wall_data, monkeypatch):
    from wm_gym.data.dataset import load_episodes
    from wm_gym.train.world_model import choose_reprojection

    model, _ = tiny_model
    monkeypatch.setattr(model.config, "reproject", model.config.reproject)  # restored for later tests
    report = model.meta.train_info["reproject"]
    assert report["checked"] and report["chosen"] == model.config.reproject
    assert report["chosen"] == (report["mse_with"] <= report["mse_without"])

    data = load_episodes(wall_data)
    feats = model.normalize(model.encode(torch.from_numpy(np.concatenate(data.frames)))).half()
    windows = FeatureWindows.from_data(feats, data, model.config.history, model.config.frameskip)
    episodes = np.arange(4)
    model.config.reproject = True
    honest = choose_reprojection(model, windows, episodes)
    # a snap that throws every prediction far away must be switched off, whatever it did before
    monkeypatch.setattr(type(model), "project_to_frames", lambda self, s: s + 10.0)
    model.config.reproject = True
    broken = choose_reprojection(model, windows, episodes)
    assert not broken["chosen"] and not model.config.reproject and broken["mse_with"] > 50 > honest["mse_with"]
    assert broken["mse_without"] == pytest.approx(honest["mse_without"])  # the snap-free rollout is untouched
    # a model with no labels decides by rolling out the latent actions of the real frames: the same verdict
    model.config.reproject = True
    by_latents = choose_reprojection(model, windows, episodes, latent=True)
    assert by_latents["by"] == "latent actions" and not by_latents["chosen"] and by_latents["mse_with"] > 50
    assert by_latents["mse_without"] < 50
    # a model that does not re-project (or cannot) is left as it is, unchecked
    assert choose_reprojection(model, windows, episodes) == {"chosen": False, "checked": False}


def test_concat_episodes_keeps_every_episode_and_refuses_other_sims(wall_data, tmp_path):
    from wm_gym.data.dataset import concat_episodes, load_episodes

    random = collect_dataset("wm_gym/Wall-v0", 3, tmp_path / "random", max_steps=10, seed=7, progress=False)
    a, b = load_episodes(wall_data), load_episodes(random)
    both = concat_episodes([a, b], [str(wall_data), str(random)])
    assert len(both) == len(a) + len(b) and both.meta["episodes"] == len(a) + len(b)
    assert both.meta["policy"] == ["noisy-expert", "random"] and both.meta["sources"] == [str(wall_data), str(random)]
    np.testing.assert_array_equal(both.frames[len(a) + 1], b.frames[1])
    np.testing.assert_array_equal(both.actions[len(a) + 2], b.actions[2])
    np.testing.assert_array_equal(both.seeds, np.concatenate([a.seeds, b.seeds]))
    assert both.labelled.all() and concat_episodes([a]) is a
    other = load_episodes(collect_dataset("wm_gym/Wall-v1", 1, tmp_path / "v1", max_steps=10, progress=False))
    with pytest.raises(ValueError, match="differ in env_id"):
        concat_episodes([a, other])
    with pytest.raises(ValueError, match="no dataset"):
        concat_episodes([])


def test_train_on_two_datasets_reads_both(wall_data, tmp_path, capsys):
    """`wm-gym train --data A --data B` trains on the episodes of both: the training split counts them, the
    features come from each folder's own cache, and the model records both folders."""
    from wm_gym.cli import main
    from wm_gym.data.dataset import load_episodes

    random = collect_dataset("wm_gym/Wall-v0", 8, tmp_path / "random", seed=7, progress=False)
    out = tmp_path / "both.pt"
    main(["train", "--data", str(wall_data), "--data", str(random), "--out", str(out), "--preset", "tiny",
          "--device", "cpu", "--stage-steps", "encoder=2", "--stage-steps", "latent=2", "--stage-steps", "flow=2",
          "--stage-steps", "controller=2", "--log-dir", str(tmp_path / "tb"), "--json"])
    model = WorldModel.load(out)
    total = len(load_episodes(wall_data)) + len(load_episodes(random))
    info = model.meta.train_info
    assert info["episodes"] == total and info["train_episodes"] + len(info["val_episodes"]) == total
    assert model.meta.dataset == f"{wall_data.resolve()} + {random.resolve()}"
    assert any((random / ".cache").glob("features-*")) and any((wall_data / ".cache").glob("features-*"))
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "none.pt"), "--preset", "tiny"])
