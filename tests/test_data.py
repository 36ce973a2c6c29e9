"""Episode datasets: collection round trip, determinism, resume, windows, video, bad input."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

import wm_gym  # noqa: F401  (registers the envs)
from wm_gym.data import (
    WindowDataset, collect_dataset, episode_seeds, ingest_videos, load_episodes, minari_path, split_episodes,
)
from wm_gym.data import collect as collect_mod
from wm_gym.envs.policies import make_policy

EPISODES, STEPS, SEED = 4, 12, 3


@pytest.fixture(scope="module")
def wall_dir(tmp_path_factory) -> Path:
    return collect_dataset("wall", EPISODES, tmp_path_factory.mktemp("wall") / "ds", seed=SEED, max_steps=STEPS, progress=False)


@pytest.fixture(scope="module")
def wall(wall_dir):
    return load_episodes(wall_dir)


def reference_rollout(index: int) -> dict[str, np.ndarray]:
    """Episode ``index`` replayed independently of collect.py, from the sim contract alone."""
    env = gym.make("wm_gym/Wall-v1")
    sim = env.unwrapped
    reset_seed, rng = episode_seeds(SEED, index)
    obs, info = sim.reset(seed=reset_seed)
    policy = make_policy(env, "random", rng)
    policy.reset(obs, info)
    out = {k: [] for k in ("frames", "proprio", "states", "success", "actions")}
    for t in range(STEPS + 1):
        out["frames"].append(obs["pixels"])
        out["proprio"].append(obs["proprio"])
        out["states"].append(info["state"])
        out["success"].append(info["is_success"])
        if t == STEPS:
            break
        action = policy(obs, info)
        out["actions"].append(action)
        obs, _, _, _, info = sim.step(action)  # the unwrapped sim: success does not end the episode
    ref = {k: np.stack(v) if k != "success" else np.array(v) for k, v in out.items()}
    ref.update(goal=sim.goal.copy(), goal_pixels=sim.goal_pixels.copy(), seed=reset_seed)
    env.close()
    return ref


def assert_same(a, b) -> None:
    """Two EpisodeData hold identical arrays."""
    assert len(a) == len(b)
    for name in ("frames", "proprio", "states", "success", "actions", "rewards"):
        for x, y in zip(getattr(a, name), getattr(b, name)):
            np.testing.assert_array_equal(x, y, err_msg=name)
    np.testing.assert_array_equal(a.goals, b.goals)
    np.testing.assert_array_equal(a.goal_pixels, b.goal_pixels)
    np.testing.assert_array_equal(a.seeds, b.seeds)


# ----- round trip ------------------------------------------------------------------------------
def test_round_trip_is_bit_exact(wall, wall_dir):
    assert len(wall) == EPISODES
    for i in range(EPISODES):
        ref = reference_rollout(i)
        assert wall.frames[i].dtype == np.uint8 and wall.frames[i].shape == (STEPS + 1, 64, 64, 3)
        assert wall.actions[i].dtype == np.float32 and wall.actions[i].shape == (STEPS, 2)
        assert wall.proprio[i].dtype == np.float32 and wall.proprio[i].shape == (STEPS + 1, 2)
        assert wall.states[i].dtype == np.float64 and wall.states[i].shape == (STEPS + 1, 2)
        assert wall.success[i].dtype == bool and wall.success[i].shape == (STEPS + 1,)
        np.testing.assert_array_equal(wall.frames[i], ref["frames"])  # bit-exact: storage is lossless
        np.testing.assert_array_equal(wall.actions[i], ref["actions"])
        np.testing.assert_array_equal(wall.proprio[i], ref["proprio"])
        np.testing.assert_array_equal(wall.states[i], ref["states"])
        np.testing.assert_array_equal(wall.success[i], ref["success"])
        np.testing.assert_array_equal(wall.goals[i], ref["goal"])
        np.testing.assert_array_equal(wall.goal_pixels[i], ref["goal_pixels"])
        assert wall.seeds[i] == ref["seed"]
        # the comparison is not vacuous: the dot moves and the frames have real content
        assert len(np.unique(wall.frames[i])) > 2 and not np.array_equal(wall.frames[i][0], wall.frames[i][-1])
    assert len(set(wall.seeds.tolist())) == EPISODES
    assert not np.array_equal(wall.states[0], wall.states[1])

    meta = json.loads((wall_dir / "meta.json").read_text())
    assert meta["env_id"] == "wm_gym/Wall-v1" and meta["sim"] == "wall" and meta["policy"] == "random"
    assert meta["seed"] == SEED and meta["episodes"] == EPISODES and meta["episode_length"] == STEPS
    assert meta["image_size"] == 64 and meta["has_actions"] is True and meta["has_goals"] is True
    assert meta["action_low"] == [-1.0, -1.0] and meta["action_high"] == [1.0, 1.0]
    assert not (wall_dir / ".staging").exists()


def test_minari_can_read_it_losslessly(wall, wall_dir):
    import minari

    ds = minari.MinariDataset(minari_path(wall_dir))
    assert ds.total_episodes == EPISODES and ds.total_steps == EPISODES * STEPS
    assert json.loads((minari_path(wall_dir) / "metadata.json").read_text())["jpeg_encoding"] is False
    ep = ds[2]
    np.testing.assert_array_equal(ep.observations["pixels"], wall.frames[2])
    np.testing.assert_array_equal(ep.actions, wall.actions[2])
    np.testing.assert_array_equal(ep.infos["state"], wall.states[2])
    np.testing.assert_array_equal(ep.infos["goal_pixels"][0], wall.goal_pixels[2])
    assert ep.truncations[-1] and not ep.terminations.any()


def test_cache_matches_and_mmap(wall, wall_dir):
    assert (wall_dir / ".cache").is_dir()
    assert_same(load_episodes(wall_dir, cache=False), wall)
    mapped = load_episodes(wall_dir, mmap=True)
    assert isinstance(mapped.frames[0].base, np.memmap) or isinstance(mapped.frames[0], np.memmap)
    assert_same(mapped, wall)


# ----- determinism and resume ------------------------------------------------------------------
def test_workers_give_identical_data(wall, tmp_path):
    out = collect_dataset("wm_gym/Wall-v1", EPISODES, tmp_path / "w2", seed=SEED, max_steps=STEPS, workers=2, progress=False)
    assert_same(load_episodes(out, cache=False), wall)


def test_resume_after_interrupt(wall, tmp_path, monkeypatch):
    out = tmp_path / "resume"
    real = collect_mod.vector_rollouts  # Wall collects on its vector env; blocks of one episode here
    monkeypatch.setattr(collect_mod, "VECTOR_BLOCK", 1)
    calls: list[int] = []

    def interrupted(env, policy, seed, block, steps, frame_stride):
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if Ctrl-C hit during the third episode
        calls.extend(block)
        return real(env, policy, seed, block, steps, frame_stride)

    monkeypatch.setattr(collect_mod, "vector_rollouts", interrupted)
    with pytest.raises(KeyboardInterrupt):
        collect_dataset("wall", EPISODES, out, seed=SEED, max_steps=STEPS, progress=False)
    assert sorted(p.name for p in (out / ".staging").glob("episode_*.npz")) == ["episode_000000.npz", "episode_000001.npz"]
    assert not (out / "meta.json").exists()
    with pytest.raises(ValueError, match="unfinished"):
        load_episodes(out)
    with pytest.raises(ValueError, match="other settings"):
        collect_dataset("wall", EPISODES, out, policy="noisy-expert", seed=SEED, max_steps=STEPS, progress=False)
    # a damaged shard is detected and collected again
    (out / ".staging" / "episode_000001.npz").write_bytes(b"not a zip")

    calls.clear()
    monkeypatch.setattr(collect_mod, "vector_rollouts", lambda *a: (calls.extend(a[3]), real(*a))[1])
    collect_dataset("wall", EPISODES, out, seed=SEED, max_steps=STEPS, progress=False)
    assert calls == [1, 2, 3]  # only what was missing
    assert not (out / ".staging").exists()
    assert_same(load_episodes(out), wall)  # nothing lost, duplicated or reordered

    calls.clear()
    assert collect_dataset("wall", EPISODES, out, seed=SEED, max_steps=STEPS, progress=False) == out
    assert calls == []  # complete: returns at once
    for bad in ({"seed": SEED + 1}, {"policy": "noisy-expert"}, {"max_steps": STEPS + 1}, {"episodes": EPISODES + 1}):
        kwargs = dict(env="wall", episodes=EPISODES, out=out, seed=SEED, max_steps=STEPS, progress=False) | bad
        with pytest.raises(ValueError, match="other settings"):
            collect_dataset(**kwargs)


# ----- windows and splits ----------------------------------------------------------------------
def test_windows_shapes_and_action_indexing(wall):
    ds = WindowDataset(wall, history=2, horizon=1, frameskip=3)
    span = 2 * 3
    assert len(ds) == EPISODES * (STEPS - span + 1)
    assert ds.action_dim == 6
    item = ds[0]
    assert item["frames"].shape == (3, 64, 64, 3) and item["frames"].dtype == torch.uint8
    assert item["actions"].shape == (2, 6) and item["actions"].dtype == torch.float32
    assert item["proprio"].shape == (3, 2) and item["states"].shape == (3, 2)
    for i in range(len(ds)):
        item = ds[i]
        e, s = int(item["episode"]), int(item["start"])
        for k in range(3):
            np.testing.assert_array_equal(item["frames"][k].numpy(), wall.frames[e][s + 3 * k])
            np.testing.assert_array_equal(item["states"][k].numpy(), wall.states[e][s + 3 * k].astype(np.float32))
        for k in range(2):  # the three sim actions that lead from window frame k to frame k + 1
            a = wall.actions[e]
            expected = np.concatenate([a[s + 3 * k], a[s + 3 * k + 1], a[s + 3 * k + 2]])
            np.testing.assert_array_equal(item["actions"][k].numpy(), expected)
    # a hand-picked window: episode 1, starting at step 2 (the index runs over episodes, then starts)
    item = ds[1 * (STEPS - span + 1) + 2]
    assert (int(item["episode"]), int(item["start"])) == (1, 2)
    np.testing.assert_array_equal(item["actions"][1].numpy(), wall.actions[1][5:8].reshape(-1))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=5)))
    assert batch["frames"].shape == (5, 3, 64, 64, 3) and batch["actions"].shape == (5, 2, 6)


def test_windows_subset_stride_and_too_short(wall):
    ds = WindowDataset(wall, history=1, horizon=1, frameskip=5, episodes=[3, 1], stride=4)
    assert sorted(set(ds.index[:, 0].tolist())) == [1, 3]
    assert sorted(set(ds.index[:, 1].tolist())) == [0, 4]  # starts 0, 4 (8 would need step 13 > 12)
    with pytest.raises(ValueError, match="no window fits"):
        WindowDataset(wall, history=3, horizon=1, frameskip=5)  # spans 15 steps > 12
    with pytest.raises(ValueError, match="episode indices"):
        WindowDataset(wall, episodes=[EPISODES])


def test_split_by_episode():
    train, val = split_episodes(100, 0.2, seed=7)
    assert len(val) == 20 and len(train) == 80
    assert not set(train) & set(val) and sorted(set(train) | set(val)) == list(range(100))
    again = split_episodes(100, 0.2, seed=7)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(val, again[1])
    assert not np.array_equal(val, split_episodes(100, 0.2, seed=8)[1])
    assert len(split_episodes(3, 0.01)[1]) == 1 and len(split_episodes(1, 0.5)[0]) == 1
    with pytest.raises(ValueError):
        split_episodes(10, 1.0)


# ----- video -----------------------------------------------------------------------------------
def write_square_video(path: Path, n: int, height: int, width: int, step: int) -> None:
    import imageio.v3 as iio

    frames = np.zeros((n, height, width, 3), np.uint8)
    for t in range(n):
        x = width // 2 - 30 + step * t  # a white square moving to the right, inside the center crop
        frames[t, height // 2 - 8: height // 2 + 8, x: x + 16] = 255
    iio.imwrite(path, frames, fps=10)


def test_video_ingestion(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    write_square_video(folder / "a.mp4", 20, 64, 96, 2)
    write_square_video(folder / "b.mp4", 14, 80, 80, 3)
    (folder / "notes.txt").write_text("ignored")
    out = ingest_videos(folder, tmp_path / "vds", image_size=32, progress=False)
    data = load_episodes(out)
    assert len(data) == 2 and not data.has_actions and data.actions is None and data.goals is None
    assert [f.shape for f in data.frames] == [(20, 32, 32, 3), (14, 32, 32, 3)]
    assert data.proprio[0].shape == (20, 0) and data.states[1].shape == (14, 0)
    # Where the square should land: a.mp4 is center-cropped from 96 to 64 columns (left edge
    # 48 - 30 + 2t becomes 2 + 2t) and halved; b.mp4 is 80x80, uncropped, scaled by 0.4.
    # Centroid index of a 16-pixel square with left edge x0, scaled by f: (x0 + 8) * f - 0.5.
    for frames, expect in zip(data.frames, (lambda t: (2 + 2 * t + 8) * 0.5 - 0.5, lambda t: (10 + 3 * t + 8) * 0.4 - 0.5)):
        bright = frames.mean(axis=3) > 128
        assert all(b.sum() > 10 for b in bright)  # the square survived cropping and resizing
        xs = np.array([np.nonzero(b)[1].mean() for b in bright])
        ys = np.array([np.nonzero(b)[0].mean() for b in bright])
        np.testing.assert_allclose(xs, [expect(t) for t in range(len(frames))], atol=1.0)  # moves right, in place
        np.testing.assert_allclose(ys, 15.5, atol=1.0)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["has_actions"] is False and meta["videos"] == ["a.mp4", "b.mp4"]

    windows = WindowDataset(data, history=3, horizon=1, frameskip=2)
    assert len(windows) == (19 - 6 + 1) + (13 - 6 + 1)
    item = windows[0]
    assert "actions" not in item and item["frames"].shape == (4, 32, 32, 3)

    strided = load_episodes(ingest_videos(folder, tmp_path / "vds2", image_size=32, fps_stride=2, progress=False))
    assert [f.shape[0] for f in strided.frames] == [10, 7]
    np.testing.assert_array_equal(strided.frames[0], data.frames[0][::2])


# ----- bad input -------------------------------------------------------------------------------
def test_bad_input(wall_dir, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_episodes(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_episodes(tmp_path / "empty")
    with pytest.raises(ValueError, match="unknown env"):
        collect_dataset("walll", 1, tmp_path / "x", progress=False)
    with pytest.raises(ValueError, match="unknown policy"):
        collect_dataset("wall", 1, tmp_path / "y", policy="telepathy", progress=False)
    assert not (tmp_path / "y").exists()

    # a corrupt HDF5 file: the stale cache copied along must not hide it
    load_episodes(wall_dir)  # make sure the load cache exists
    broken = tmp_path / "broken"
    shutil.copytree(wall_dir, broken)
    assert (broken / ".cache" / "frames.npy").exists()
    (broken / "minari" / "main_data.hdf5").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ValueError, match="corrupt"):
        load_episodes(broken)

    bad_meta = tmp_path / "bad_meta"
    shutil.copytree(wall_dir, bad_meta)
    (bad_meta / "meta.json").write_text("{ not json")
    with pytest.raises(ValueError, match="corrupt"):
        load_episodes(bad_meta)
    meta = json.loads((wall_dir / "meta.json").read_text())
    (bad_meta / "meta.json").write_text(json.dumps(dict(meta, format_version=999)))
    with pytest.raises(ValueError, match="version"):
        load_episodes(bad_meta)
    (bad_meta / "meta.json").write_text(json.dumps(dict(meta, episodes=0)))
    with pytest.raises(ValueError, match="empty"):
        load_episodes(bad_meta)

    videos = tmp_path / "novideos"
    videos.mkdir()
    with pytest.raises(ValueError, match="no .mp4"):
        ingest_videos(videos, tmp_path / "v1", progress=False)
    (videos / "bad.mp4").write_text("this is not a video")
    with pytest.raises(ValueError, match="cannot read video"):
        ingest_videos(videos, tmp_path / "v2", progress=False)
    assert not (tmp_path / "v2").exists()


def test_relative_output_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Minari mishandles relative paths; the writer must not
    out = collect_dataset("wall", 1, "rel/ds", max_steps=3, progress=False)
    assert out == Path("rel/ds") and len(load_episodes(out).frames[0]) == 4
