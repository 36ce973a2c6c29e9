"""Video first, end to end: ingest videos and frame folders (resumably, labels optional), train without
labels, and Seq-Δ-REPA as a real latent-stage loss."""
import json
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from wm_gym.cli import main as cli_main
from wm_gym.data.dataset import load_episodes
from wm_gym.data.video import VideoSource, ingest_videos
from wm_gym.data.windows import WindowDataset
from wm_gym.latent_actions.autoencoder import LatentActionAutoencoder, LatentActionConfig
from wm_gym.train.feature_windows import FeatureWindows
from wm_gym.train.loop import Trainer
from wm_gym.train.world_model import StageLosses, TrainConfig, latent_window_sampler, train_world_model
from wm_gym.world_model import WorldModel

EPISODES, FRAMES, SIDE = 5, 12, 96


def moving_square(n: int, side: int, step: int) -> np.ndarray:
    """uint8 [n, side, side, 3]: a white square moving right by ``step`` pixels a frame."""
    frames = np.zeros((n, side, side, 3), np.uint8)
    for t in range(n):
        x = side // 4 + step * t
        frames[t, side // 2 - 8: side // 2 + 8, x: x + 16] = 255
    return frames


def write_videos(folder: Path, episodes: int = EPISODES) -> Path:
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    for e in range(episodes):
        iio.imwrite(folder / f"ep{e}.mp4", moving_square(FRAMES, SIDE, 2 + e % 3), fps=10)
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    return write_videos(tmp_path_factory.mktemp("videos") / "clips")


@pytest.fixture(scope="module")
def video_data(videos, tmp_path_factory) -> Path:
    return ingest_videos(videos, tmp_path_factory.mktemp("video_data") / "ds", progress=False)


def assert_same_frames(a, b) -> None:
    assert len(a) == len(b)
    for fa, fb in zip(a.frames, b.frames):
        np.testing.assert_array_equal(fa, fb)


# ----- 1. ingest --------------------------------------------------------------------------------
def test_ingested_mp4s_load_without_actions(video_data):
    data = load_episodes(video_data)
    assert len(data) == EPISODES and [f.shape for f in data.frames] == [(FRAMES, 64, 64, 3)] * EPISODES
    assert not data.has_actions and data.actions is None and not data.labelled.any()
    assert data.meta["episode_names"] == [f"ep{e}" for e in range(EPISODES)]
    assert not (video_data / ".staging").exists()


def test_frame_folders_at_any_resolution_in_natural_order(tmp_path):
    from PIL import Image

    root = tmp_path / "mixed"
    clip = moving_square(11, 80, 3)[:, :, :, :]  # 80x80 frames, saved as 50x80 crops below
    for name, suffix in (("pngs", ".png"), ("jpgs", ".jpg")):
        (root / name).mkdir(parents=True)
        for t in range(11):  # frame_2 must come before frame_10
            Image.fromarray(clip[t, 15:65]).save(root / name / f"frame_{t}{suffix}")
    write_videos(root, episodes=1)
    out = ingest_videos(root, tmp_path / "ds", image_size=32, progress=False)
    data = load_episodes(out)
    assert data.meta["episode_names"] == ["ep0", "jpgs", "pngs"]
    assert [f.shape for f in data.frames] == [(FRAMES, 32, 32, 3), (11, 32, 32, 3), (11, 32, 32, 3)]
    xs = [np.nonzero(f.mean(-1) > 128)[1].mean() for f in data.frames[2]]
    assert np.all(np.diff(xs) > 0)  # the square keeps moving right: frames are in time order
    # one frame folder given directly is one episode
    single = load_episodes(ingest_videos(root / "pngs", tmp_path / "single", image_size=32, progress=False))
    np.testing.assert_array_equal(single.frames[0], data.frames[2])


def test_a_killed_ingest_resumes_without_duplicates(videos, video_data, tmp_path, monkeypatch):
    out = tmp_path / "ds"
    real = VideoSource.read
    reads: list[str] = []

    def killed_after_two(self, *args):
        if len(reads) == 2:
            raise KeyboardInterrupt  # as if the process were killed while reading the third video
        reads.append(self.name)
        return real(self, *args)

    monkeypatch.setattr(VideoSource, "read", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        ingest_videos(videos, out, progress=False)
    assert sorted(p.name for p in (out / ".staging").glob("episode_*.npz")) == ["episode_000000.npz", "episode_000001.npz"]
    assert not (out / "meta.json").exists()
    with pytest.raises(ValueError, match="unfinished"):
        load_episodes(out)
    with pytest.raises(ValueError, match="other settings"):
        ingest_videos(videos, out, image_size=32, progress=False)

    (out / ".staging" / "episode_000001.npz").write_bytes(b"half a file")  # a damaged shard is read again
    reads.clear()
    monkeypatch.setattr(VideoSource, "read", lambda self, *a: (reads.append(self.name), real(self, *a))[1])
    assert ingest_videos(videos, out, progress=False) == out
    assert reads == ["ep1", "ep2", "ep3", "ep4"]  # only what was missing
    assert not (out / ".staging").exists()
    assert_same_frames(load_episodes(out), load_episodes(video_data))  # nothing lost, duplicated or reordered

    reads.clear()
    assert ingest_videos(videos, out, progress=False) == out and reads == []  # complete: returns at once


def test_labels_attach_actions_to_the_named_episodes_only(videos, tmp_path):
    acts = {"ep1": np.random.default_rng(1).uniform(-1, 1, (FRAMES - 1, 2)).astype(np.float32),
            "ep3": np.random.default_rng(3).uniform(-1, 1, (FRAMES + 4, 2)).astype(np.float32)}  # longer: cut to T
    np.savez(tmp_path / "labels.npz", **acts)
    data = load_episodes(ingest_videos(videos, tmp_path / "npz", labels=tmp_path / "labels.npz", progress=False))
    assert data.has_actions and data.action_dim == 2 and data.labelled.tolist() == [False, True, False, True, False]
    np.testing.assert_array_equal(data.actions[1], acts["ep1"])
    np.testing.assert_array_equal(data.actions[3], acts["ep3"][:FRAMES - 1])
    assert np.isnan(data.actions[0]).all() and np.isnan(data.actions[4]).all()  # unlabelled: loud if ever used
    windows = WindowDataset(data, history=1, horizon=1, frameskip=2, episodes=np.flatnonzero(data.labelled))
    assert all(np.isfinite(windows[i]["actions"].numpy()).all() for i in range(len(windows)))

    (tmp_path / "labels.json").write_text(json.dumps({k: v.tolist() for k, v in acts.items()}))
    from_json = load_episodes(ingest_videos(videos, tmp_path / "json", labels=tmp_path / "labels.json", progress=False))
    np.testing.assert_array_equal(from_json.actions[1], data.actions[1])
    assert from_json.meta["labels"] == data.meta["labels"]  # the digest is of the content, not the file format

    np.savez(tmp_path / "typo.npz", ep9=acts["ep1"])
    with pytest.raises(ValueError, match="not among the inputs: ep9"):
        ingest_videos(videos, tmp_path / "typo", labels=tmp_path / "typo.npz", progress=False)
    np.savez(tmp_path / "short.npz", ep0=acts["ep1"][:5])
    with pytest.raises(ValueError, match="labels for episode 'ep0' have 5 rows"):
        ingest_videos(videos, tmp_path / "short", labels=tmp_path / "short.npz", progress=False)
    assert not (tmp_path / "short").exists()  # failed before any episode was kept


def test_bad_input_raises_clear_errors(videos, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .mp4"):
        ingest_videos(tmp_path / "empty", tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="does not exist"):
        ingest_videos(tmp_path / "missing", tmp_path / "b", progress=False)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a video"):
        ingest_videos(tmp_path / "notes.txt", tmp_path / "c", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.mp4").write_text("this is not a video")
    with pytest.raises(ValueError, match="cannot read video .*broken.mp4"):
        ingest_videos(tmp_path / "bad", tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.png").write_text("not an image")
    (tmp_path / "frames" / "1.png").write_text("not an image")
    with pytest.raises(ValueError, match="cannot read frame image"):
        ingest_videos(tmp_path / "frames", tmp_path / "e", progress=False)
    with pytest.raises(ValueError, match="episode name 'ep0'"):
        ingest_videos([videos / "ep0.mp4", videos / "ep0.mp4"], tmp_path / "f", progress=False)
    (tmp_path / "labels.json").write_text("{ not json")
    with pytest.raises(ValueError, match="cannot read labels file"):
        ingest_videos(videos, tmp_path / "g", labels=tmp_path / "labels.json", progress=False)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        ingest_videos(videos, tmp_path / "full", progress=False)


def test_cli_ingest(videos, tmp_path, capsys):
    assert cli_main(["ingest", str(videos / "ep0.mp4"), str(videos / "ep1.mp4"), "--out", str(tmp_path / "ds"),
                     "--image-size", "32", "--max-frames", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 2 and result["frames"] == 16 and result["image_size"] == 32
    assert result["labelled_episodes"] == 0
    assert cli_main(["ingest", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----- 2. training without labels -------------------------------------------------------------
def tiny(data: Path, out: Path, **kwargs) -> TrainConfig:
    """The tiny preset, 10 steps a stage, 2 sim steps per model step (12-frame clips)."""
    return TrainConfig(data=str(data), out=str(out), preset="tiny", steps=10, frameskip=2, device="cpu",
                       progress=False, log_dir=str(out.parent / "tb"), **kwargs)


def test_action_free_data_trains_every_stage_it_can_and_says_what_it_skipped(video_data, tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "wm.pt"
    with pytest.warns(UserWarning, match="skipped the controller"):
        code = cli_main(["train", "--data", str(video_data), "--out", str(out), "--preset", "tiny", "--steps", "10",
                         "--frameskip", "2", "--device", "cpu", "--log-dir", str(tmp_path / "tb"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["train_info"]["controller"] == "skipped: no action labels"
    assert set(result["train_info"]["final_loss"]) == {"encoder", "latent", "flow"}
    model = WorldModel.load(out)
    info = model.meta.train_info
    assert info["controller"] == "skipped: no action labels" and info["flow"].startswith("z-prior")
    assert info["labelled_episodes"] == 0 and model.meta.sim == "" and model.latent_model.repa is None
    assert info["reproject"]["chosen"] == model.config.reproject  # decided without labels (latent rollouts)
    s = torch.randn(2, 1, model.n_tokens, model.dim)
    assert model.flow.sample(s, torch.zeros(2, model.config.action_dim)).isfinite().all()  # the z-prior samples


def test_a_model_trained_on_ingested_video_fits_its_temporal_head_on_that_video(video_data, tmp_path):
    """Ingested data records no sim (None) and its model records "": the two are the same "no sim"."""
    from wm_gym.data.collect import collect_dataset
    from wm_gym.data.dataset import load_episodes_for
    from wm_gym.temporal_distance import TemporalDistanceConfig
    from wm_gym.train.temporal_distance import encode_episodes, fit_temporal_distance

    with pytest.warns(UserWarning, match="skipped the controller"):
        model = train_world_model(tiny(video_data, tmp_path / "wm.pt"))
    assert load_episodes_for(video_data, model.meta.env_id) is not None
    report = fit_temporal_distance(model, [video_data], TemporalDistanceConfig(steps=20, batch_size=16),
                                   progress=False)  # the default imagined fraction: no labels needed
    assert report["episodes"] == len(load_episodes_for(video_data, "")) and model.temporal_distance is not None
    # the imagined copies of unlabelled episodes are latent-action rollouts of their real frames
    features, lengths, imagined, rolled = encode_episodes(model, [video_data], imagined=True, progress=False)
    assert list(rolled) == list(range(len(lengths))) and imagined.shape == features.shape
    first = features[:lengths[0]].float()
    expected = model.latent_rollout(first[None].to(model.device))[0].cpu()
    torch.testing.assert_close(imagined[:lengths[0]][0].float(), first[0])
    torch.testing.assert_close(imagined[1:lengths[0]].float(), expected, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(imagined[1:lengths[0]].float(), first[1:], atol=1e-4)  # the model's own states
    sim_data = collect_dataset("wm_gym/Wall-v0", 2, tmp_path / "sim", progress=False)
    with pytest.raises(ValueError, match="collected in 'wm_gym/Wall-v0' but the model is for 'video with no sim'"):
        load_episodes_for(sim_data, model.meta.env_id)
    with pytest.raises(ValueError, match="video with no sim .wm-gym ingest. but the model is for 'wm_gym/Wall-v0'"):
        load_episodes_for(video_data, "wm_gym/Wall-v0")


def test_a_model_learned_from_video_alone_is_grounded_in_the_labelled_datas_action_size(video_data, tmp_path):
    """The model has no sim action (its 1-number placeholder); ``ground``'s labelled data brings 2-number ones."""
    from wm_gym.data.collect import collect_dataset
    from wm_gym.grounding import GroundingConfig, fit_dataset_grounding

    with pytest.warns(UserWarning, match="skipped the controller"):
        model = train_world_model(tiny(video_data, tmp_path / "wm.pt"))
    assert model.meta.action_low == [] and model.config.action_dim == 2      # frameskip 2 × placeholder 1
    labelled = collect_dataset("wm_gym/Wall-v0", 4, tmp_path / "labelled", max_steps=12, progress=False)
    grounding, report = fit_dataset_grounding(model, labelled, GroundingConfig(labelled_fraction=1.0, epochs=2))
    assert grounding.action_dim == 4                                          # 2 sim steps × 2 numbers
    assert grounding.low.tolist() == [-1.0] * 4 and grounding.high.tolist() == [1.0] * 4
    assert report["triples"] == 4 * 6
    with pytest.raises(ValueError, match="needs action labels"):                # the video itself has none
        fit_dataset_grounding(model, video_data, GroundingConfig(labelled_fraction=1.0, epochs=1))


def test_runs_that_need_labels_fail_clearly_before_training(video_data, tmp_path):
    with pytest.raises(ValueError, match="has no actions; latent='action' needs action labels"):
        train_world_model(tiny(video_data, tmp_path / "a.pt", latent="action"))
    with pytest.raises(ValueError, match="--adversarial .* needs action labels"):
        train_world_model(tiny(video_data, tmp_path / "b.pt", adversarial=True))
    assert not (tmp_path / "a.pt").exists() and not (tmp_path / "b.pt").exists()


def test_mixed_data_trains_the_controller_on_labelled_episodes_only(videos, tmp_path):
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "labels.npz", **{f"ep{e}": rng.uniform(-1, 1, (FRAMES - 1, 2)) for e in (0, 2, 4)})
    data = ingest_videos(videos, tmp_path / "ds", labels=tmp_path / "labels.npz", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # labels exist: no "skipped" warning
        model = train_world_model(tiny(data, tmp_path / "wm.pt"))
    info = model.meta.train_info
    train_eps = sorted(set(range(EPISODES)) - set(info["val_episodes"]))
    assert info["labelled_episodes"] == len({0, 2, 4} & set(train_eps))  # NaN rows would have raised
    assert set(info["final_loss"]) == {"encoder", "latent", "flow", "controller"} and "controller" not in info
    assert model.config.sim_action_dim == 2 and model.config.action_dim == 4


# ----- 3. Seq-Δ-REPA in the latent stage --------------------------------------------------------
def test_latent_windows_are_consecutive_frames_h_model_steps_apart():
    lengths = [30, 25]
    features = torch.arange(55, dtype=torch.float32)[:, None, None].expand(55, 2, 3)  # frame i holds the value i
    windows = FeatureWindows.from_episodes(features, lengths, None, history=2, frameskip=3)
    sample = latent_window_sampler(windows, np.array([0, 1]), batch_size=64, steps=4, max_h=2)
    gen = torch.Generator().manual_seed(0)
    gaps = set()
    for _ in range(10):
        s_seq = sample(gen)["s_seq"]
        assert s_seq.shape == (64, 5, 2, 3)
        idx = s_seq[:, :, 0, 0].long()
        step = idx.diff(dim=1)
        assert (step == step[:, :1]).all()  # evenly spaced
        gaps |= set(step[:, 0].tolist())
        episode = np.searchsorted([0, 30], idx.numpy(), side="right") - 1
        assert (episode == episode[:, :1]).all()  # never across episodes
    assert gaps == {3, 6}  # h ∈ {1, 2} model steps of frameskip 3


def test_an_episode_shorter_than_the_window_still_trains_the_reconstruction():
    """Episode 1 (7 frames, frameskip 2) fits 3 pairs at gap 1 and 1 at gap 2, not the 4-step window: it gives
    windows of as many pairs as fit, NaN-padded, and its frames get a reconstruction gradient."""
    lengths = [30, 7]
    features = torch.arange(37, dtype=torch.float32)[:, None, None].expand(37, 2, 3).contiguous()  # frame i holds i
    windows = FeatureWindows.from_episodes(features, lengths, None, history=1, frameskip=2)
    sample = latent_window_sampler(windows, np.array([0, 1]), batch_size=512, steps=4, max_h=2)
    gen, short_rows = torch.Generator().manual_seed(0), 0
    for _ in range(8):
        s_seq = sample(gen)["s_seq"]
        first = s_seq[:, 0, 0, 0]
        short = first >= 30                                         # windows that start in episode 1
        short_rows += int(short.sum())
        real = torch.isfinite(s_seq[:, :, 0, 0])
        gap = s_seq[:, 1, 0, 0] - first
        assert set(gap.tolist()) <= {2.0, 4.0}
        assert real[~short].all()                                   # episode 0 fits the whole window
        for row in torch.nonzero(short).flatten().tolist():               # episode 1: 3 pairs at gap 2, 1 at gap 4
            n = int(real[row].sum()) - 1
            assert n == {2.0: 3, 4.0: 1}[gap[row].item()] and real[row, : n + 1].all() and not real[row, n + 1:].any()
            assert s_seq[row, n, 0, 0] <= 36 and s_seq[row, : n + 1, 0, 0].tolist() == \
                [first[row].item() + gap[row].item() * i for i in range(n + 1)]
    assert short_rows > 0
    # the old sampler (FeatureWindows.sampler over the 4-step window) never drew episode 1 at all
    with pytest.raises(ValueError, match="no window fits"):
        FeatureWindows.from_episodes(features[30:], [7], None, 1, 2).sampler(np.array([0]), 8, horizon=4)

    # the loss: a batch drawn from episode 1 alone trains on it, with and without Seq-Δ-REPA
    torch.manual_seed(0)
    only_short = latent_window_sampler(windows, np.array([1]), batch_size=6, steps=4, max_h=1)
    s_seq = only_short(torch.Generator().manual_seed(1))["s_seq"]
    assert s_seq.shape == (6, 5, 2, 3) and torch.isnan(s_seq[:, 4]).all() and torch.isfinite(s_seq[:, :4]).all()
    for weight in (0.0, 0.5):
        model = LatentActionAutoencoder(LatentActionConfig(n_tokens=2, dim=3, n_latents=2, latent_dim=4, width=16,
                                                           enc_depth=1, dec_depth=1, heads=2, repa_weight=weight,
                                                           repa_hidden=8))
        loss, metrics = StageLosses(SimpleNamespace(latent_model=model)).latent({"s_seq": s_seq})
        loss.backward()
        assert math.isfinite(loss.item()) and metrics["recon_mse"] > 0
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.decoder.parameters())
        assert sum(p.grad.abs().sum() for p in model.decoder.parameters()) > 0


def test_without_repa_the_latent_pairs_are_the_old_samplers_bit_for_bit():
    """steps=1 (repa_weight=0): the same generator draws give the same RLA pairs as FeatureWindows.sampler did."""
    from dataclasses import replace

    lengths = [30, 7, 12]
    features = torch.randn(49, 2, 3, generator=torch.Generator().manual_seed(3)).half()
    windows = FeatureWindows.from_episodes(features, lengths, None, history=2, frameskip=3)
    episodes = np.array([0, 1, 2])
    old = [replace(windows, history=1, frame_step=h * 3).sampler(episodes, 32, horizon=1, with_actions=False)
           for h in (1, 2)]
    new = latent_window_sampler(windows, episodes, batch_size=32, steps=1, max_h=2)
    g_old, g_new = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    for _ in range(6):
        b = old[int(torch.randint(2, (1,), generator=g_old))](g_old)
        assert torch.equal(new(g_new)["s_seq"], torch.cat([b["s_hist"], b["targets"]], dim=1))


def test_repa_weight_adds_a_logged_term_and_changes_the_encoder_gradient():
    config = dict(n_tokens=8, dim=8, n_latents=2, latent_dim=4, width=16, enc_depth=1, dec_depth=1, heads=2,
                  repa_hidden=16)
    s_seq = torch.randn(4, 5, 8, 8, generator=torch.Generator().manual_seed(1))
    results = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)  # the same encoder and decoder weights; the head is built last
        model = LatentActionAutoencoder(LatentActionConfig(**config, repa_weight=weight))
        loss, metrics = StageLosses(SimpleNamespace(latent_model=model)).latent({"s_seq": s_seq})
        loss.backward()
        results[weight] = (model, loss.item(), metrics, [p.grad.clone() for p in model.encoder.parameters()])
    (off, loss0, m0, g0), (on, loss1, m1, g1) = results[0.0], results[1.0]
    assert off.repa is None and on.repa is not None  # weight 0 builds no head
    assert "repa" not in m0 and m1["repa"] > 0
    assert loss1 != pytest.approx(loss0) and loss1 == pytest.approx(loss0 + m1["repa"], rel=1e-5)
    assert any(not torch.allclose(a, b) for a, b in zip(g0, g1))


def test_training_with_repa_logs_it_in_the_latent_stage(video_data, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    logged: dict[str, set] = {}
    real = Trainer._log

    def spy(self, stage, step, metrics):
        logged.setdefault(stage, set()).update(metrics)
        return real(self, stage, step, metrics)

    monkeypatch.setattr(Trainer, "_log", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-labels note
        model = train_world_model(tiny(video_data, tmp_path / "wm.pt", repa_weight=0.5, repa_window=16))
    assert "repa" in logged["latent"] and {"recon_l1", "recon_mse"} <= logged["latent"]
    assert model.latent_model.repa is not None
    assert model.meta.train_info["repa_window"] == 2  # 12-frame clips at frameskip 2, gap up to 2: cut from 16
    assert WorldModel.load(tmp_path / "wm.pt").latent_model.repa is not None


def test_sim_actions_cannot_drive_a_skipped_controller():
    """A model whose controller was skipped (no labels) refuses sim-action rollouts with a clear message."""
    import torch

    from wm_gym.world_model import WorldModel, WorldModelConfig

    model = WorldModel(WorldModelConfig(encoder_config={"grid": 4, "dim": 8, "width": 8, "image_size": 16},
                                        latent_config={"n_latents": 2, "latent_dim": 4, "width": 16},
                                        flow_config={"width": 16, "depth": 1}, controller_config={"width": 16, "depth": 1}))
    s_hist = torch.zeros(2, 1, model.n_tokens, model.dim)
    actions = torch.zeros(2, 1, model.config.action_dim)
    assert model.rollout(s_hist, actions).shape == (2, 1, model.n_tokens, model.dim)  # trained (default): runs
    model.meta.train_info["controller"] = "skipped: no action labels"
    assert not model.controller_trained
    with pytest.raises(ValueError, match="controller was not trained"):
        model.rollout(s_hist, actions)
    assert model.rollout(s_hist, actions, mode="flow").shape == (2, 1, model.n_tokens, model.dim)  # the flow still runs


# ----- 4. eval-wm on a model learned from video alone -------------------------------------------
def test_eval_wm_of_a_label_free_model_rolls_out_through_latent_actions(video_data, tmp_path):
    """Sim data has labels, the model has no controller: the action-driven open loop is skipped (said so), and
    the latent open loop is hand-checkable: z from the real pair, applied to the model's own previous state."""
    from wm_gym.data.collect import collect_dataset
    from wm_gym.evaluate_wm import evaluate_world_model, latent_open_loop

    with pytest.warns(UserWarning, match="skipped the controller"):
        model = train_world_model(tiny(video_data, tmp_path / "wm.pt"))
    model.config.reproject = True  # so that the check below also sees snap() between steps
    sim = collect_dataset("wm_gym/Wall-v0", 3, tmp_path / "sim", max_steps=12, progress=False)
    result = evaluate_world_model(model, sim, horizons=(1, 2, 3))
    assert result["open_loop"].startswith("skipped: the model's controller was not trained")
    assert "mse_by_horizon" not in result and "transfer" not in result
    assert set(result["latent_open_loop"]["mse_by_horizon"]) == {"1", "2", "3"}

    data = load_episodes(sim)
    feats = model.encode(torch.from_numpy(np.concatenate(data.frames))).cpu()
    windows = FeatureWindows.from_data(feats, data, model.config.history, model.config.frameskip)
    got = latent_open_loop(model, windows, np.arange(3), (1, 2), np.random.default_rng(0), max_windows=4)
    t = torch.as_tensor(np.random.default_rng(0).choice(windows.starts(np.arange(3), 2), size=4, replace=False))
    s0, s1, s2 = (feats[t + k * windows.frame_step].float() for k in range(3))
    with torch.no_grad():
        one = model.decode_latent(s0, model.latent_action(s0, s1))
        two = model.decode_latent(model.snap(one), model.latent_action(s1, s2))
    assert got["mse_by_horizon"]["1"] == pytest.approx(float(((one - s1) ** 2).mean()), rel=1e-5)
    assert got["mse_by_horizon"]["2"] == pytest.approx(float(((two - s2) ** 2).mean()), rel=1e-5)
    assert got["copy_last_mse_by_horizon"]["2"] == pytest.approx(float(((s0 - s2) ** 2).mean()), rel=1e-5)
