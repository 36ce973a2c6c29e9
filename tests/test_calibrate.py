"""Success calibration (precision/recall, threshold choice, calibrate_success) and the DemoBank."""
from __future__ import annotations

import zlib

import numpy as np
import pytest

from wm_gym.calibrate import best_threshold, calibrate_success, labelled_pairs, precision_recall
from wm_gym.data.demo_bank import DemoBank
from wm_gym.data.dataset import load_episodes
from wm_gym.envs.wall import WALL_V0, render_dots
from wm_gym.world_model import WorldModel

T, F = True, False


# ----- precision, recall, threshold ------------------------------------------------------------------------
def test_precision_recall_hand_cases():
    distance = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    success = np.array([T, F, T, F, T])
    pr = precision_recall(distance, success, 0.5)       # predicted: 0.1, 0.2, 0.3 -> 2 of 3 right, 2 of 3 found
    assert pr["precision"] == pytest.approx(2 / 3) and pr["recall"] == pytest.approx(2 / 3)
    assert pr["f1"] == pytest.approx(2 / 3)
    pr = precision_recall(distance, success, 0.15)      # predicted: 0.1 only
    assert pr["precision"] == 1.0 and pr["recall"] == pytest.approx(1 / 3) and pr["f1"] == pytest.approx(0.5)
    pr = precision_recall(distance, success, 0.1)       # strict "<": nothing predicted
    assert pr == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    pr = precision_recall(distance, success, 10.0)      # everything predicted
    assert pr["precision"] == pytest.approx(3 / 5) and pr["recall"] == 1.0


def test_best_threshold_separates_a_clean_split():
    distance = np.array([0.1, 0.2, 0.8, 0.9])
    success = np.array([T, T, F, F])
    threshold = best_threshold(distance, success)
    assert 0.2 < threshold < 0.8
    assert precision_recall(distance, success, threshold) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    # order does not matter, and a noisy case picks the F1-best cut
    perm = np.array([3, 0, 2, 1])
    assert best_threshold(distance[perm], success[perm]) == pytest.approx(threshold)
    noisy_d = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    noisy_y = np.array([T, T, F, T, F, F])
    assert 0.4 < best_threshold(noisy_d, noisy_y) < 0.5   # F1 0.857 there, 0.8 at the (0.2, 0.3) cut
    # all positives: the threshold takes all of them
    assert best_threshold(np.array([0.3, 0.4]), np.array([T, T])) > 0.4


def test_best_threshold_needs_a_positive():
    with pytest.raises(ValueError, match="no successful pairs"):
        best_threshold(np.array([0.1, 0.2, 0.3]), np.array([F, F, F]))


# ----- calibrate_success on the tiny world model ---------------------------------------------------------
def test_calibrate_success_writes_the_threshold(tiny_imagine_world):
    model = WorldModel.load(tiny_imagine_world.path)
    model.meta.success_threshold, model.meta.success_metric = None, "l1"
    report = calibrate_success(model, tiny_imagine_world.random_dir, metric="l2")
    assert report["threshold"] > 0 and report["metric"] == "l2"
    assert 0.0 <= report["precision"] <= 1.0 and 0.0 <= report["recall"] <= 1.0
    for kind in ("imagined", "real"):
        assert 0 < report[kind]["positives"] <= report[kind]["pairs"]
    assert report["threshold"] == report["imagined"]["threshold"]
    assert model.meta.success_threshold == report["threshold"] and model.meta.success_metric == "l2"
    assert model.meta.train_info["real_success_threshold"] == report["real"]["threshold"]
    # the report is held-out: recomputing precision/recall on the odd episodes gives the same numbers
    pairs = labelled_pairs(model, tiny_imagine_world.random_dir, "l2", imagined=True)
    odd = pairs["episode"] % 2 == 1
    again = precision_recall(pairs["distance"][odd], pairs["success"][odd], report["threshold"])
    assert again["precision"] == pytest.approx(report["precision"]) and again["recall"] == pytest.approx(report["recall"])
    assert best_threshold(pairs["distance"][~odd], pairs["success"][~odd]) == pytest.approx(report["threshold"])
    # the saved model carries the fixture's l1 calibration
    assert WorldModel.load(tiny_imagine_world.path).meta.success_threshold == pytest.approx(
        tiny_imagine_world.calibration["threshold"])


def test_labelled_pairs_labels_come_from_the_sim(tiny_imagine_world):
    model = WorldModel.load(tiny_imagine_world.path)
    pairs = labelled_pairs(model, tiny_imagine_world.random_dir, max_episodes=2)
    data = load_episodes(tiny_imagine_world.random_dir, cache=False)
    n = len(range(0, len(data.frames[0]), model.config.frameskip))   # 11 model-step frames per episode
    per_episode = n * (n - 1) // 2 + n                                  # frame pairs + each frame vs the goal image
    assert len(pairs["distance"]) == 2 * per_episode
    assert set(pairs["episode"].tolist()) == {0, 1}
    assert np.all(pairs["distance"] >= 0) and pairs["success"].dtype == bool
    assert pairs["success"].any() and not pairs["success"].all()


def test_calibrating_on_another_sims_data_raises(tiny_imagine_world):
    model = WorldModel.load(tiny_imagine_world.path)
    model.meta.env_id = "wm_gym/PointMaze-UMaze-v0"
    with pytest.raises(ValueError, match="collected in 'wm_gym/Wall-v0'"):
        calibrate_success(model, tiny_imagine_world.random_dir)
    assert model.meta.success_threshold == pytest.approx(tiny_imagine_world.calibration["threshold"])  # untouched


# ----- DemoBank ----------------------------------------------------------------------------------------------
def video(n: int, start=(10.0, 10.0), end=(50.0, 44.0)) -> np.ndarray:
    return render_dots(np.linspace(start, end, n), WALL_V0)  # the tiny models' sim


def test_from_videos_pads_with_the_last_frame_and_records_lengths():
    short, long = video(3), video(5, start=(12.0, 30.0))
    bank = DemoBank.from_videos([short, long])
    assert bank.frames.shape == (2, 5, 64, 64, 3) and bank.frames.dtype == np.uint8
    assert bank.lengths.tolist() == [2, 4] and bank.lengths.dtype == np.int64
    np.testing.assert_array_equal(bank.frames[0, :3], short)
    np.testing.assert_array_equal(bank.frames[0, 3], short[-1])
    np.testing.assert_array_equal(bank.frames[0, 4], short[-1])
    np.testing.assert_array_equal(bank.frames[1], long)
    assert not bank.heldout.any() and bank.start_states.shape == (2, 0)
    skipped = DemoBank.from_videos([video(5), video(7)], frameskip=2)   # frames 0, 2, 4 (and 6)
    assert skipped.lengths.tolist() == [2, 3]
    np.testing.assert_array_equal(skipped.frames[1], video(7)[::2])
    np.testing.assert_array_equal(skipped.frames[0, 3], video(5)[4])


def test_from_videos_rejects_bad_videos():
    with pytest.raises(ValueError, match="at least 2 frames"):
        DemoBank.from_videos([video(3), video(1)])
    with pytest.raises(ValueError, match="at least 2 frames"):
        DemoBank.from_videos([video(3)], frameskip=3)
    with pytest.raises(ValueError, match="uint8"):
        DemoBank.from_videos([video(3).astype(np.float32)])
    with pytest.raises(ValueError, match="same frame size"):
        DemoBank.from_videos([video(3), video(3)[:, :32, :32]])


def test_to_dict_from_dict_round_trip_is_bit_exact(tiny_imagine_world):
    bank = DemoBank.from_dataset(tiny_imagine_world.expert_dir, 5, heldout_fraction=0.25, seed=0)
    assert bank.start_states.shape == (12, 2) and bank.goal_states.shape == (12, 2)
    back = DemoBank.from_dict(bank.to_dict())
    for name in ("frames", "lengths", "heldout", "start_states", "goal_states"):
        a, b = getattr(bank, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert back.frames.flags.writeable
    saved = WorldModel.load(tiny_imagine_world.path).bank    # and through the model file
    for name in ("frames", "lengths", "heldout", "start_states", "goal_states"):
        np.testing.assert_array_equal(getattr(saved, name), getattr(bank, name), err_msg=name)


def test_from_dataset_cuts_each_demo_at_its_first_success(tiny_imagine_world):
    bank = DemoBank.from_dataset(tiny_imagine_world.expert_dir, 5, heldout_fraction=0.0)
    data = load_episodes(tiny_imagine_world.expert_dir, cache=False)
    for e in range(len(bank)):
        hit = np.flatnonzero(data.success[e])
        end = min(int(np.ceil(hit[0] / 5)) * 5, 50) if len(hit) else 50
        end = max(end, 5)
        assert bank.lengths[e] == end // 5
        np.testing.assert_array_equal(bank.frames[e, : end // 5 + 1], data.frames[e][: end + 1 : 5])
        np.testing.assert_array_equal(bank.start_states[e], data.states[e][0])


def test_a_bank_costs_its_compressed_size_in_the_model_file_and_older_files_still_load(tiny_imagine_world, tmp_path):
    rng = np.random.default_rng(0)  # incompressible frames: half their bytes are above 127
    noise = [rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8) for _ in range(20)]
    bank = DemoBank.from_videos(noise)
    stream = len(zlib.compress(bank.frames.tobytes(), 6))
    model = WorldModel.load(tiny_imagine_world.path)
    model.bank = None
    model.save(tmp_path / "without.pt")
    model.bank = bank
    model.save(tmp_path / "with.pt")
    grew = (tmp_path / "with.pt").stat().st_size - (tmp_path / "without.pt").stat().st_size
    assert grew < stream + 20_000            # pickled as bytes (protocol 2) it grew ~1.5x the stream
    np.testing.assert_array_equal(WorldModel.load(tmp_path / "with.pt").bank.frames, bank.frames)
    older = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in bank.to_dict().items()}  # numpy arrays ...
    older["frames"] = zlib.compress(bank.frames.tobytes(), 6)                                # ... and bytes
    np.testing.assert_array_equal(DemoBank.from_dict(older).frames, bank.frames)


def test_corrupt_bank_bytes_raise_value_error(tiny_imagine_world):
    d = DemoBank.from_videos([video(3), video(4)]).to_dict()
    with pytest.raises(ValueError, match="corrupt"):
        DemoBank.from_dict({**d, "frames": b"definitely not zlib"})
    with pytest.raises(ValueError, match="corrupt"):
        DemoBank.from_dict({**d, "frames": d["frames"][: len(d["frames"]) // 2]})
    with pytest.raises(ValueError, match="corrupt"):
        DemoBank.from_dict({**d, "frames": zlib.compress(b"\x00" * 100)})   # valid zlib, wrong size
    with pytest.raises(ValueError, match="corrupt"):
        DemoBank.from_dict({k: v for k, v in d.items() if k != "shape"})
    with pytest.raises(ValueError, match="lengths"):
        DemoBank.from_dict({**d, "lengths": np.array([2, 9])})             # longer than the frames


def test_indices_and_heldout_fraction():
    videos = [video(3, start=(10.0, 10.0 + i)) for i in range(10)]
    none = DemoBank.from_videos(videos)
    assert none.indices("train").tolist() == list(range(10)) and none.indices("all").tolist() == list(range(10))
    with pytest.raises(ValueError, match="no 'heldout' demos"):
        none.indices("heldout")
    with pytest.raises(ValueError, match="split must be"):
        none.indices("test")
    for fraction, expected in ((0.2, 2), (0.25, 2), (0.35, 4), (0.5, 5), (1.0, 10)):
        bank = DemoBank.from_videos(videos, heldout_fraction=fraction, seed=3)
        assert bank.heldout.sum() == expected == round(fraction * 10), fraction
        held, train = bank.indices("heldout"), bank.indices("train") if expected < 10 else np.array([], int)
        assert sorted(held.tolist() + train.tolist()) == list(range(10))
    a = DemoBank.from_videos(videos, heldout_fraction=0.3, seed=3)
    b = DemoBank.from_videos(videos, heldout_fraction=0.3, seed=3)
    np.testing.assert_array_equal(a.heldout, b.heldout)
    assert any(not np.array_equal(a.heldout, DemoBank.from_videos(videos, heldout_fraction=0.3, seed=s).heldout)
               for s in range(4, 10))
    everything = DemoBank.from_videos(videos, heldout_fraction=1.0)
    with pytest.raises(ValueError, match="no 'train' demos"):
        everything.indices("train")
