"""Behaviour-cloning warm start from an offline demo dataset, before RL in imagination.

Pure PPO in imagination starts from a random policy, far from any demo, where feature
distances saturate and the reward barely varies. Cloning the demos' action chunks first puts
the policy where the video-aligned reward is informative; PPO then improves it in imagination.
Only the offline dataset is used: the same demos the imagination env is built from.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from wm_gym.data.demo_bank import DemoBank
from wm_gym.imagine.vector_env import policy_observation
from wm_gym.world_model import WorldModel


@torch.no_grad()
def demo_pairs(model: WorldModel, demos: DemoBank | str | Path | list[str | Path] | None = None,
               split: str = "train", action_space: str = "sim") -> tuple[np.ndarray, np.ndarray]:
    """(observations [M, (H+1)·N·C], targets [M, A]) at every step of every demo before its end.

    ``demos``: a DemoBank, a dataset folder, a list of folders (their pairs concatenated), or None
    for the model's own bank. The goal shown is the demo's last frame, as in the imagination env.
    Targets are the demo's action chunks (``action_space="sim"``), or its latent actions
    z = latent_action(s_t, s_{t+1}) flattened to [M, K·d] in the model's units (``"latent"``): those
    need no action labels, so latent agents clone action-free video too.
    """
    if action_space not in ("sim", "latent"):
        raise ValueError(f"action_space must be 'sim' or 'latent', got {action_space!r}")
    if isinstance(demos, (list, tuple)):
        if not demos:
            raise ValueError("behaviour cloning got an empty list of demo folders")
        obs, actions = zip(*(demo_pairs(model, folder, action_space=action_space) for folder in demos))
        return np.concatenate(obs), np.concatenate(actions)
    bank = demos if isinstance(demos, DemoBank) else (
        model.bank if demos is None else DemoBank.from_dataset(demos, model.config.frameskip, heldout_fraction=0.0))
    if bank is None:
        raise ValueError("behaviour cloning needs demos: a dataset folder, or a model with a demo bank")
    if action_space == "sim" and bank.actions is None:
        raise ValueError("behaviour cloning needs demos with action labels (a dataset from `wm-gym collect`, or a "
                         "model whose demo bank was built from one); latent agents clone action-free demos")
    if action_space == "sim" and bank.actions.shape[-1] != model.config.action_dim:
        raise ValueError(f"demo action chunks have {bank.actions.shape[-1]} numbers, the model takes {model.config.action_dim}")
    obs, actions = [], []
    for m in bank.indices("all" if demos is not None else split):
        steps = int(bank.lengths[m])
        frames = np.ascontiguousarray(bank.frames[m, : steps + 1])
        feats = model.encode(torch.from_numpy(frames))
        back = torch.arange(model.config.history - 1, -1, -1)  # history frames before each step, oldest first
        history = feats[(torch.arange(steps)[:, None] - back).clamp_min(0)]  # [T, H, N, C]; start repeated, as at reset
        obs.append(policy_observation(history, feats[-1:].expand(steps, -1, -1)))
        actions.append(bank.actions[m, :steps] if action_space == "sim" else
                       model.latent_action(feats[:steps], feats[1:steps + 1]).flatten(1).float().cpu().numpy())
    return np.concatenate(obs), np.concatenate(actions).astype(np.float32)


def clone_into(agent, observations: np.ndarray, actions: np.ndarray, epochs: int = 30, batch_size: int = 256,
               lr: float = 1e-3, seed: int = 0, noise: float = 0.0) -> list[float]:
    """Fit the SB3 policy's deterministic action to the demos by MSE; returns the loss per epoch.

    ``noise`` adds Gaussian noise of that std (normalised feature units) to every observation
    seen in training: a few hundred demos × thousands of features are easy to memorise, and the
    noise makes the policy act alike on all states near a demo's (with the v0 `fast` Wall model, noise 1
    raised real Wall success from 0.90 to 0.94; on PointMaze it lowered it, so it is off by default).
    """
    policy = agent.policy
    actions = np.clip(actions, agent.action_space.low, agent.action_space.high)
    if hasattr(policy, "actor"):  # SAC: the actor outputs tanh-squashed actions in [-1, 1]
        actions = policy.scale_action(actions)
        predict = lambda o: policy.actor(o, deterministic=True)  # noqa: E731
    else:  # PPO: the Gaussian's mean, in action units
        predict = lambda o: policy.get_distribution(o).distribution.mean  # noqa: E731
    obs = torch.as_tensor(observations, device=policy.device)
    target = torch.as_tensor(actions, dtype=torch.float32, device=policy.device)
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(epochs):
        order, total = torch.randperm(len(obs), generator=generator), 0.0
        for idx in order.split(batch_size):
            x = obs[idx]
            if noise > 0:
                x = x + noise * torch.randn(x.shape, generator=generator).to(x.device)
            loss = torch.nn.functional.mse_loss(predict(x), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        losses.append(total / len(obs))
    return losses
