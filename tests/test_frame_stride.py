"""Every-k-th-frame collection (`wm-gym collect --frame-stride k`): the frames a model of frameskip k reads,
rendered and stored alone, give the same training windows, demos, calibration pairs and fine-tuning windows
as a full collection at those frames."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wm_gym.data.collect import collect_dataset, make_sim, rollout
from wm_gym.data.dataset import load_episodes
from wm_gym.data.demo_bank import DemoBank
from wm_gym.data.windows import WindowDataset
from wm_gym.train.feature_windows import FeatureWindows

K = 5  # the zoo models' frameskip


@pytest.fixture(scope="module")
def wall_pair(world, tmp_path_factory):
    """The tiny world's sim: 6 random episodes of 20 steps, every frame and every 5th (same seed), on the
    native vector env."""
    from tests.conftest import TINY_WORLD_SIM

    root = tmp_path_factory.mktemp("stride")
    full = collect_dataset(TINY_WORLD_SIM, 6, root / "full", seed=3, progress=False, max_steps=20)
    strided = collect_dataset(TINY_WORLD_SIM, 6, root / "strided", seed=3, progress=False, max_steps=20, frame_stride=K)
    return load_episodes(full, cache=False), load_episodes(strided, cache=False), full, strided


def test_strided_collection_keeps_every_kth_frame_and_every_action(wall_pair):
    full, strided, _, root = wall_pair
    assert strided.frame_stride == K and full.frame_stride == 1
    np.testing.assert_array_equal(strided.lengths, full.lengths)  # sim steps
    for e in range(len(full)):
        assert len(strided.frames[e]) == 20 // K + 1
        for name in ("frames", "proprio", "states", "success"):
            np.testing.assert_array_equal(getattr(strided, name)[e], getattr(full, name)[e][::K], err_msg=name)
        np.testing.assert_array_equal(strided.actions[e], full.actions[e])
        np.testing.assert_allclose(strided.rewards[e], full.rewards[e].reshape(-1, K).sum(1))  # summed per frame gap
    meta = json.loads((root / "meta.json").read_text())
    assert (meta["frame_stride"], meta["episode_length"], meta["total_steps"], meta["frames_per_episode"]) == (K, 20, 120, 5)


def test_strided_dataset_is_a_plain_minari_dataset_of_action_chunks(wall_pair):
    import minari

    _, strided, _, root = wall_pair
    dataset = minari.MinariDataset(root / "minari")
    episode = next(dataset.iterate_episodes())
    assert episode.actions.shape == (20 // K, 2 * K) and episode.observations["pixels"].shape[0] == 20 // K + 1
    np.testing.assert_array_equal(episode.actions.reshape(20, 2), strided.actions[0])


@pytest.mark.parametrize("stride", [1, K])
def test_strided_rollout_renders_only_the_kept_frames(stride, monkeypatch):
    env = make_sim("wm_gym/PushT-v1", 32)
    sim = env.unwrapped
    renders = []
    original = type(sim)._render_pixels
    monkeypatch.setattr(type(sim), "_render_pixels", lambda self: renders.append(1) or original(self))
    episode = rollout(env, "random", 0, 0, 20, frame_stride=stride)
    assert len(renders) == 2 + 20 // stride  # the goal image, the reset frame, then one per kept frame
    assert episode.frames.shape[0] == 20 // stride + 1 and episode.actions.shape == (20, 2) and not sim.skip_pixels
    if stride == K:  # the same episode as a full rollout at those frames
        full = rollout(env, "random", 0, 0, 20)
        np.testing.assert_array_equal(episode.frames, full.frames[::K])
        np.testing.assert_array_equal(episode.states, full.states[::K])
        np.testing.assert_array_equal(episode.actions, full.actions)


def test_pixel_windows_are_the_full_collections_at_those_frames(wall_pair):
    full, strided, _, _ = wall_pair
    a = WindowDataset(full, history=2, horizon=1, frameskip=K, stride=K)
    b = WindowDataset(strided, history=2, horizon=1, frameskip=K)
    assert len(a) == len(b) > 0
    for i in range(len(a)):
        x, y = a[i], b[i]
        assert x.keys() == y.keys()
        for key in x:
            assert torch.equal(x[key], y[key]), key
    assert len(WindowDataset(full, history=2, horizon=1, frameskip=K)) > len(b)  # a full collection starts anywhere


def test_feature_windows_are_the_full_collections_at_those_frames(wall_pair):
    full, strided, _, _ = wall_pair
    encode = lambda data: torch.from_numpy(np.concatenate(data.frames)).float().mean(-1).reshape(-1, 16, 256)  # noqa: E731
    a = FeatureWindows.from_data(encode(full), full, history=2, frameskip=K)
    b = FeatureWindows.from_data(encode(strided), strided, history=2, frameskip=K)
    episodes = np.arange(len(full))
    starts_a, starts_b = a.starts(episodes, 2), b.starts(episodes, 2)
    # the full collection's starts on a stored frame (sim step a multiple of K), in the same order
    ep_a = a.episode_of(starts_a)
    on_grid = (starts_a - a.frame_offsets[ep_a]) % K == 0
    mapped = b.frame_offsets[ep_a[on_grid]] + (starts_a[on_grid] - a.frame_offsets[ep_a[on_grid]]) // K
    np.testing.assert_array_equal(mapped, starts_b)
    x, y = a.gather(torch.as_tensor(starts_a[on_grid]), 2), b.gather(torch.as_tensor(starts_b), 2)
    for key in ("s_hist", "targets", "actions"):
        assert torch.equal(x[key], y[key]), key
    assert x["actions"].shape[-1] == K * 2


def test_demo_bank_and_calibration_pairs_match_a_full_collection(model, tmp_path):
    from tests.conftest import TINY_WORLD_SIM
    from wm_gym.calibrate import labelled_pairs

    full = collect_dataset(TINY_WORLD_SIM, 4, tmp_path / "full", policy="noisy-expert", seed=5, progress=False)
    strided = collect_dataset(TINY_WORLD_SIM, 4, tmp_path / "strided", policy="noisy-expert", seed=5, progress=False,
                              frame_stride=K)
    a, b = DemoBank.from_dataset(full, K, seed=0), DemoBank.from_dataset(strided, K, seed=0)
    for name in ("frames", "lengths", "heldout", "start_states", "goal_states", "actions"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    x, y = labelled_pairs(model, full), labelled_pairs(model, strided)
    for name in x:
        np.testing.assert_allclose(x[name], y[name], rtol=1e-6, err_msg=name)


def test_finetuning_mixes_strided_data_with_every_frame_episodes(model, wall_pair):
    from wm_gym.train.finetune import feature_windows

    full, _, full_dir, strided_dir = wall_pair
    a, b = feature_windows(model, [full_dir], progress=False), feature_windows(model, [strided_dir], progress=False)
    assert a.frame_step == K and b.frame_step == 1
    mixed = feature_windows(model, [strided_dir, [full.episode(0), full.episode(1)]], progress=False)
    # the every-frame episodes are cut to every 5th frame: the strided set's first two episodes again
    assert mixed.frame_step == 1 and np.array_equal(mixed.lengths, np.r_[b.lengths, b.lengths[:2]])
    n = int(b.lengths[:2].sum())
    # (a dataset's features come through its fp16 cache, episodes' straight from the encoder)
    torch.testing.assert_close(mixed.features[-n:].float(), b.features[:n].float(), atol=0.02, rtol=0.01)
    assert torch.equal(mixed.actions[-n:], b.actions[:n])


def test_strided_data_trains_a_model(wall_pair, tmp_path):
    from wm_gym.train.world_model import TrainConfig, train_world_model

    _, _, _, strided_dir = wall_pair
    config = TrainConfig(data=str(strided_dir), out=str(tmp_path / "m.pt"), preset="tiny", steps=3, device="cpu",
                         progress=False, precision="fp32", history=2)
    model = train_world_model(config)
    assert model.config.frameskip == K and (tmp_path / "m.pt").is_file()


def test_stride_errors(wall_pair, tmp_path):
    from tests.conftest import TINY_WORLD_SIM
    from wm_gym.train.world_model import TrainConfig, train_world_model

    _, strided, full_dir, strided_dir = wall_pair
    with pytest.raises(ValueError, match="must divide the episode length"):
        collect_dataset(TINY_WORLD_SIM, 1, tmp_path / "a", progress=False, max_steps=12, frame_stride=5)
    with pytest.raises(ValueError, match="frame_stride must be an integer"):
        collect_dataset(TINY_WORLD_SIM, 1, tmp_path / "b", progress=False, max_steps=10, frame_stride=0)
    with pytest.raises(ValueError, match="other settings"):  # a finished full collection is never re-used as strided
        collect_dataset(TINY_WORLD_SIM, 6, full_dir, seed=3, progress=False, max_steps=20, frame_stride=K)
    with pytest.raises(ValueError, match="every 5th frame"):
        strided.frame_step(2)
    with pytest.raises(ValueError, match="frameskip must be a multiple"):
        train_world_model(TrainConfig(data=str(strided_dir), out=str(tmp_path / "m.pt"), preset="tiny", steps=1,
                                      device="cpu", progress=False, frameskip=2))
    assert not (tmp_path / "m.pt").exists()


def test_collect_cli_takes_frame_stride(tmp_path, capsys):
    from wm_gym.cli import main

    rc = main(["collect", "--env", "wall", "--episodes", "2", "--out", str(tmp_path / "d"), "--max-steps", "10",
               "--frame-stride", "5", "--json"])
    assert rc in (0, None)
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["steps"] == 20 and load_episodes(tmp_path / "d").frames[0].shape[0] == 3


def test_temporal_head_and_grounding_read_the_same_model_steps(model, wall_pair):
    from wm_gym.grounding import dataset_triples
    from wm_gym.train.temporal_distance import encode_episodes

    _, _, full_dir, strided_dir = wall_pair
    a, b = (encode_episodes(model, [d], imagined=True, progress=False) for d in (full_dir, strided_dir))
    np.testing.assert_array_equal(a[1], b[1])  # model steps per episode
    for x, y in ((a[0], b[0]), (a[2], b[2])):  # real and imagined features
        torch.testing.assert_close(x.float(), y.float(), atol=0.02, rtol=0.01)
    x, y = dataset_triples(model, full_dir, 1.0)[0], dataset_triples(model, strided_dir, 1.0)[0]
    assert torch.equal(x.chunks, y.chunks) and np.array_equal(x.episodes, y.episodes)
    torch.testing.assert_close(x.s_t, y.s_t)
