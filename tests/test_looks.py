"""Sim looks (issue 27, item 4): a changed look redraws the scene and leaves the physics alone."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import wm_gym  # noqa: F401  (registers the ids)
from wm_gym.data.collect import collect_dataset, make_sim
from wm_gym.data.dataset import load_episodes
from wm_gym.envs.looks import WALL_LOOKS, WallLook
from wm_gym.envs.wall import DOT_STD, WALL_V1, WallEnv, WallVectorEnv, render_dots

CHANGED = [name for name in WALL_LOOKS if name != "default"]


def run(env: gym.Env, seed: int, steps: int = 12):
    """(frames, states, rewards, success) of a fixed action sequence."""
    obs, info = env.reset(seed=seed)
    actions = np.random.default_rng(seed).uniform(-1, 1, (steps, 2)).astype(np.float32)
    frames, states, rewards, success = [obs["pixels"]], [info["state"]], [], [info["is_success"]]
    for a in actions:
        obs, r, _, _, info = env.step(a)
        frames.append(obs["pixels"]), states.append(info["state"]), rewards.append(r), success.append(info["is_success"])
    return np.stack(frames), np.stack(states), np.array(rewards), np.array(success)


@pytest.mark.parametrize("look", CHANGED)
def test_a_look_changes_the_frames_and_nothing_else(look):
    base = run(WallEnv(), seed=3)
    changed_env = WallEnv(look=look)
    changed = run(changed_env, seed=3)
    for a, b in zip(base[1:], changed[1:]):  # states, rewards, success: bit for bit
        np.testing.assert_array_equal(a, b)
    assert np.abs(base[0].astype(int) - changed[0].astype(int)).max() > 20  # the frames do differ
    assert not np.array_equal(WallEnv().reset(seed=3)[0]["pixels"], changed_env.goal_pixels)  # so does the goal


def test_look_colours_are_drawn_where_they_belong():
    """Hand-checked pixels: a floor pixel far from the dot and a wall pixel take the look's colours."""
    pos = np.array([[12.0, 50.0]])
    blue, green = (render_dots(pos, WALL_V1, 64, WALL_LOOKS[n])[0] for n in ("blue-floor", "green-walls"))
    default = render_dots(pos, WALL_V1, 64)[0]
    floor_px, wall_px = (16, 50), (10, 32)  # (row, col): open floor; the middle wall above the door
    assert blue[floor_px].tolist() == [90, 140, 220] and default[floor_px].tolist() == [255, 255, 255]
    assert green[wall_px].tolist() == [40, 150, 60] and default[wall_px].tolist() == [0, 0, 0]
    assert blue[wall_px].tolist() == [0, 0, 0]  # one factor at a time


def test_big_dot_draws_a_wider_blob_on_the_same_spot():
    pos = np.array([[20.0, 30.0]])
    small, big = render_dots(pos, WALL_V1, 64)[0], render_dots(pos, WALL_V1, 64, WALL_LOOKS["big-dot"])[0]
    red = lambda img: (img[..., 0] > 200) & (img[..., 1] < 200)  # noqa: E731
    assert red(big).sum() > 1.5 * red(small).sum()
    assert np.unravel_index(np.argmin(big[..., 1]), big.shape[:2]) == np.unravel_index(np.argmin(small[..., 1]),
                                                                                     small.shape[:2])
    assert WALL_LOOKS["big-dot"].dot_std > DOT_STD


def test_checker_floor_is_a_fixed_pattern_that_follows_no_state():
    frames = render_dots(np.array([[12.0, 12.0], [50.0, 50.0]]), WALL_V1, 64, WALL_LOOKS["checker-floor"])
    corner = (slice(20, 24), slice(44, 48))  # far from both dots
    np.testing.assert_array_equal(frames[0][corner], frames[1][corner])
    values = {tuple(frames[1][r, c]) for r in range(8, 56, 8) for c in range(8, 28, 8)}  # the left room's floor
    assert len(values) == 2  # two shades of the floor


def test_the_vector_env_draws_the_same_look():
    single = WallEnv(look="blue-floor")
    vec = WallVectorEnv(2, look="blue-floor")
    obs, _ = vec.reset(seed=[5, 6])
    for row, seed in enumerate((5, 6)):
        np.testing.assert_array_equal(obs["pixels"][row], single.reset(seed=seed)[0]["pixels"])
        np.testing.assert_array_equal(vec.goal_pixels[row], single.goal_pixels)


def test_bad_looks_raise():
    with pytest.raises(ValueError, match="unknown Wall look 'purple'"):
        WallEnv(look="purple")
    with pytest.raises(ValueError, match="has no look options"):
        make_sim("dmc-reacher", look="blue-floor")
    with pytest.raises(ValueError, match="has the looks default, dino-wm-view"):
        make_sim("pointmaze", look="blue-floor")
    with pytest.raises(ValueError, match="has the looks default, blue-floor"):
        make_sim("wall", look="purple")
    with pytest.raises(ValueError, match="RGB triple"):
        WallLook(floor=(0, 0, 300))
    with pytest.raises(ValueError, match="texture must be one of"):
        WallLook(texture="marble")
    with pytest.raises(ValueError, match="dot_std must be > 0"):
        WallLook(dot_std=0)


def test_collect_with_a_look_records_it_and_keeps_the_physics(tmp_path):
    base = load_episodes(collect_dataset("wall", 2, tmp_path / "base", max_steps=10, progress=False))
    blue_dir = collect_dataset("wall", 2, tmp_path / "blue", max_steps=10, look="blue-floor", progress=False, workers=2)
    blue = load_episodes(blue_dir)
    assert blue.meta["look"] == "blue-floor" and base.meta["look"] is None
    for e in range(2):
        np.testing.assert_array_equal(base.actions[e], blue.actions[e])
        np.testing.assert_array_equal(base.states[e], blue.states[e])
        assert not np.array_equal(base.frames[e], blue.frames[e])
        np.testing.assert_array_equal(blue.frames[e][0], make_sim("wall", look="blue-floor").unwrapped.reset(
            seed=int(blue.seeds[e]))[0]["pixels"])
    default = load_episodes(collect_dataset("wall", 2, tmp_path / "default", max_steps=10, look="default",
                                            progress=False))
    assert default.meta["look"] is None and all(np.array_equal(a, b) for a, b in zip(default.frames, base.frames))
    with pytest.raises(ValueError, match="look"):  # a resumed collection never mixes looks
        collect_dataset("wall", 2, blue_dir, max_steps=10, look="green-walls", progress=False)


def test_evaluate_in_a_changed_look_shows_the_policy_that_look(tiny_imagine_world):
    """The harness's sims draw the look: the first observation (φ of the start frame) differs, the outcome's
    physics does not (a policy that ignores its observation ends in the same states)."""
    from tests.conftest import RecordingPolicy
    from wm_gym.real_episodes import evaluate_policy

    from wm_gym.world_model import WorldModel

    model = WorldModel.load(tiny_imagine_world.path)
    looks = {}
    for look in (None, "blue-floor"):
        policy = RecordingPolicy(model.config.action_dim)
        result = evaluate_policy(policy, model, None, episodes=2, seed=4, max_steps=2, look=look)
        looks[look] = (policy.seen[0], result)
    assert not np.allclose(looks[None][0], looks["blue-floor"][0])
    assert looks["blue-floor"][1]["look"] == "blue-floor" and "look" not in looks[None][1]
    assert [r["length"] for r in looks[None][1]["per_episode"]] == [r["length"] for r in looks["blue-floor"][1]["per_episode"]]


def test_pusht_background_changes_the_frames_and_nothing_else():
    from wm_gym.envs.looks import PUSHT_LOOKS
    from wm_gym.envs.pusht import PushTEnv

    base, blue = run(PushTEnv(), seed=2, steps=6), run(make_sim("pusht", look="blue-background").unwrapped, seed=2, steps=6)
    for a, b in zip(base[1:], blue[1:]):
        np.testing.assert_array_equal(a, b)
    white = (base[0][0] == 255).all(-1)  # open background in the default look
    assert white.mean() > 0.3
    assert (blue[0][0][white] == PUSHT_LOOKS["blue-background"]).all(-1).mean() > 0.95  # drawn in the new colour
    with pytest.raises(ValueError, match="unknown PushT look"):
        PushTEnv(look="purple")


# ----- adapting a model to a new look: feature alignment (wm-gym align) --------------------------------------
def test_look_alignment_maps_the_new_looks_statistics_onto_the_old():
    """On synthetic features: a new look = the old one mixed by a per-token matrix and shifted. After the fit the
    aligned new features have the old mean and covariance per token; fitting a look onto itself is the identity."""
    import torch

    from wm_gym.encoders.look_alignment import LookAlignment

    gen = torch.Generator().manual_seed(0)
    old = torch.randn(4000, 3, 4, generator=gen) * torch.tensor([1.0, 2.0, 0.5, 1.5]) + 3.0
    mix = torch.randn(3, 4, 4, generator=gen) + 2 * torch.eye(4)
    new = torch.einsum("bnc,ncd->bnd", torch.randn(4000, 3, 4, generator=gen) * torch.tensor([1.0, 2.0, 0.5, 1.5]),
                       mix) - 7.0
    aligned = LookAlignment(3, 4).fit(old, new, ridge=0.0)(new)
    cov = lambda x: torch.einsum("bnc,bnd->ncd", x - x.mean(0), x - x.mean(0)) / (len(x) - 1)  # noqa: E731
    torch.testing.assert_close(aligned.mean(0), old.mean(0), atol=1e-4, rtol=0)
    torch.testing.assert_close(cov(aligned), cov(old).float(), atol=1e-3, rtol=1e-3)
    same = LookAlignment(3, 4).fit(old, old, ridge=0.0)
    torch.testing.assert_close(same(old), old, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(LookAlignment(3, 4)(old), old)  # unfitted: the identity
    with pytest.raises(ValueError, match="must be \\[B, 3, 4\\]"):
        LookAlignment(3, 4).fit(old, new[:, :2])
    with pytest.raises(ValueError, match="finite"):
        LookAlignment(3, 4).fit(old, new * float("nan"))


def test_align_cli_writes_a_model_that_reads_the_new_look_as_the_old(tiny_imagine_world, tmp_path):
    """`wm-gym align` on unlabelled episodes of two looks: the aligned model encodes a new-look frame closer to the
    old-look frame of the same state than the original model does; it saves and loads with its alignment, evaluates
    in the new look, and imagination refuses it."""
    import torch

    from wm_gym.cli import main as cli_main
    from wm_gym.imagine import ImagineConfig, WMImagineVectorEnv
    from wm_gym.world_model import WorldModel

    old = collect_dataset("wm_gym/Wall-v0", 6, tmp_path / "old", max_steps=20, progress=False)
    new = collect_dataset("wm_gym/Wall-v0", 6, tmp_path / "new", max_steps=20, seed=9, look="blue-floor",
                          progress=False)
    out = tmp_path / "aligned.pt"
    assert cli_main(["align", "--model", str(tiny_imagine_world.path), "--old", str(old), "--new", str(new), "--look",
                     "blue-floor", "--out", str(out), "--device", "cpu", "--json"]) == 0
    base, aligned = WorldModel.load(tiny_imagine_world.path), WorldModel.load(out)
    assert aligned.config.look_alignment == "blue-floor" and base.look_alignment is None
    assert aligned.meta.train_info["look_alignment"]["new_frames"] == 6 * 21
    positions = np.array([[10.0, 12.0], [40.0, 50.0], [20.0, 40.0]])
    from wm_gym.envs.wall import WALL_V0

    white = torch.from_numpy(render_dots(positions, WALL_V0, 64))
    blue = torch.from_numpy(render_dots(positions, WALL_V0, 64, WALL_LOOKS["blue-floor"]))
    gap = lambda model: float((model.encode(blue) - base.encode(white)).abs().mean())  # noqa: E731
    assert gap(aligned) < 0.5 * gap(base)
    with pytest.raises(ValueError, match="aligned to read look 'blue-floor'"):
        WMImagineVectorEnv(2, config=ImagineConfig(model=str(out), device="cpu"))
    with pytest.raises(ValueError, match="already aligned"):
        from wm_gym.look_adaptation import align_model
        align_model(aligned, old, new, "again")


def test_datasets_record_the_view_and_refuse_frames_of_an_older_one(tmp_path):
    """PointMaze-v1's default camera changed (revision 2): a dataset collected before it records no
    view (= 1) and must not be resumed or matched as if its frames were today's."""
    import json

    from wm_gym.data.dataset import META_FILE

    root = collect_dataset("pointmaze", 1, tmp_path / "pm", max_steps=5, progress=False)
    meta = json.loads((root / META_FILE).read_text())
    assert meta["view"] == 2
    assert collect_dataset("pointmaze", 1, root, max_steps=5, progress=False) == root  # same settings: reused
    meta.pop("view")  # what a collection from before the close view holds
    (root / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="view: existing 1 vs requested 2"):
        collect_dataset("pointmaze", 1, root, max_steps=5, progress=False)
    wall = json.loads((collect_dataset("wall", 1, tmp_path / "wall", max_steps=5, progress=False) / META_FILE).read_text())
    assert wall["view"] == 1
    dino_view = load_episodes(collect_dataset("pointmaze", 1, tmp_path / "far", max_steps=5, look="dino-wm-view",
                                              progress=False))
    assert dino_view.meta["look"] == "dino-wm-view"
    close_view = load_episodes(root)
    np.testing.assert_array_equal(dino_view.states[0], close_view.states[0])
    assert not np.array_equal(dino_view.frames[0], close_view.frames[0])
