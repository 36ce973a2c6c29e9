"""Behaviour cloning from the demo bank, demo action labels, and the imagined success calibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3 import PPO, SAC

from wm_gym.agents.behavior_cloning import clone_into, demo_pairs
from wm_gym.calibrate import imagined_states, labelled_pairs
from wm_gym.data.dataset import load_episodes
from wm_gym.data.demo_bank import DemoBank
from wm_gym.imagine import WMImagineVectorEnv
from wm_gym.world_model import WorldModel


@pytest.fixture(scope="module")
def model(tiny_imagine_world):
    return WorldModel.load(tiny_imagine_world.path)


def test_bank_keeps_each_demos_action_chunks(tiny_imagine_world, model):
    data = load_episodes(tiny_imagine_world.expert_dir, cache=False)
    bank = model.bank
    fs = model.config.frameskip
    assert bank.actions is not None and bank.actions.shape == (len(bank), bank.frames.shape[1] - 1, 2 * fs)
    for m in range(len(bank)):
        steps = int(bank.lengths[m])
        np.testing.assert_array_equal(bank.actions[m, :steps].reshape(-1, 2), data.actions[m][: steps * fs])
        np.testing.assert_array_equal(bank.frames[m, : steps + 1], data.frames[m][: steps * fs + 1: fs])
    again = DemoBank.from_dict(bank.to_dict())
    np.testing.assert_array_equal(again.actions, bank.actions)


def test_demo_pairs_show_each_demo_frame_beside_the_demo_goal(model):
    obs, actions = demo_pairs(model)  # the model's bank, train split
    rows = model.bank.indices("train")
    assert len(obs) == len(actions) == int(model.bank.lengths[rows].sum())
    n = model.n_tokens * model.dim
    first = rows[0]
    frames = torch.from_numpy(np.ascontiguousarray(model.bank.frames[first]))
    feats = model.encode(frames)
    goal = feats[int(model.bank.lengths[first])]
    np.testing.assert_allclose(obs[0, :n], feats[0].flatten().numpy(), atol=1e-6)
    np.testing.assert_allclose(obs[0, n:], goal.flatten().numpy(), atol=1e-6)
    np.testing.assert_array_equal(actions[0], model.bank.actions[first, 0])


def test_demo_pairs_of_several_folders_are_each_folders_pairs_in_order(model, tiny_imagine_world):
    one = demo_pairs(model, tiny_imagine_world.expert_dir)
    both = demo_pairs(model, [tiny_imagine_world.expert_dir, tiny_imagine_world.expert_dir])
    for single, joined in zip(one, both):
        np.testing.assert_array_equal(joined, np.concatenate([single, single]))
    with pytest.raises(ValueError, match="empty list"):
        demo_pairs(model, [])


def test_demo_pairs_need_action_labels(model):
    video_bank = DemoBank.from_videos([model.bank.frames[0, :3]])
    with pytest.raises(ValueError, match="action labels"):
        demo_pairs(model, video_bank)


@pytest.mark.parametrize("algo", [PPO, SAC])
def test_cloning_fits_the_demo_actions(model, tiny_imagine_world, algo):
    torch.manual_seed(0)
    env = WMImagineVectorEnv(num_envs=2, model=tiny_imagine_world.path, device="cpu")
    from wm_gym.imagine.sb3_vec_env import WMImagineSB3VecEnv

    extra = {"buffer_size": 1000} if algo is SAC else {}
    agent = algo("MlpPolicy", WMImagineSB3VecEnv(env), seed=0, device="cpu", **extra)
    obs, actions = demo_pairs(model)
    before = np.mean((agent.predict(obs, deterministic=True)[0] - np.clip(actions, -1, 1)) ** 2)
    losses = clone_into(agent, obs, actions, epochs=40, lr=3e-3)
    after = np.mean((agent.predict(obs, deterministic=True)[0] - np.clip(actions, -1, 1)) ** 2)
    assert losses[-1] < 0.5 * losses[0]
    assert after < 0.5 * before


def test_cloning_noise_is_seeded_and_regularises(model, tiny_imagine_world):
    """Same seed and noise: the same policy; with noise the fit to the clean demos is looser than without."""
    from wm_gym.imagine.sb3_vec_env import WMImagineSB3VecEnv

    obs, actions = demo_pairs(model)

    def cloned(noise: float, seed: int = 0) -> tuple[PPO, list[float]]:
        torch.manual_seed(0)
        env = WMImagineSB3VecEnv(WMImagineVectorEnv(num_envs=2, model=tiny_imagine_world.path, device="cpu"))
        agent = PPO("MlpPolicy", env, seed=0, device="cpu")
        return agent, clone_into(agent, obs, actions, epochs=20, lr=3e-3, seed=seed, noise=noise)

    (a, losses_a), (b, losses_b), (clean, losses_clean) = cloned(1.0), cloned(1.0), cloned(0.0)
    assert losses_a == losses_b
    np.testing.assert_array_equal(a.predict(obs, deterministic=True)[0], b.predict(obs, deterministic=True)[0])
    assert losses_a[-1] > losses_clean[-1]  # the noisy inputs cannot be memorised as well


def test_imagined_calibration_pairs_use_open_loop_predictions(model, tiny_imagine_world):
    data = load_episodes(tiny_imagine_world.random_dir, cache=False)
    fs = model.config.frameskip
    start = model.encode(torch.from_numpy(data.frames[0][:1]))
    states = imagined_states(model, start, data.actions[0], 3)
    assert states.shape == (4, model.n_tokens, model.dim)
    torch.testing.assert_close(states[0], start[0])
    expected = model.rollout(start[None], torch.from_numpy(data.actions[0][: 3 * fs]).reshape(1, 3, -1))[0]
    torch.testing.assert_close(states[1:], expected)
    real = labelled_pairs(model, tiny_imagine_world.random_dir, max_episodes=2)
    imagined = labelled_pairs(model, tiny_imagine_world.random_dir, max_episodes=2, imagined=True)
    # imagined pairs include (k, k) (a positive by the sim's test) but never the real frame 0
    assert imagined["success"].sum() >= 2 * (len(data.frames[0]) // fs)
    assert not np.allclose(np.sort(real["distance"])[:5], np.sort(imagined["distance"])[:5])
