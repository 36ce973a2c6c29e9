"""Adversarial World Modeling (MISSION.md document D): FGSM with a random start on the inputs.

Planning drives the dynamics into inputs it never saw in training; gradient planners then
follow a loss surface that is sharp where the data is thin. Training on worst-case nearby
inputs (with the *clean* targets) smooths that surface:

    δ₀ ~ U(−ε, ε)                                  (random start, per component)
    δ  = clip(δ₀ + 1.25·ε·sign(∇_δ L(x + δ₀)), −ε, ε)
    train on L(x + δ)

with ε = factor × the per-component standard deviation of each input: factor 0.05 for the
visual history features and 0.02 for the action inputs (the action "embedding" here is the
action chunk scaled to [−1, 1], which is what the dynamics embed). ``wm-gym train
--adversarial`` applies it to every dynamics stage; ``wm-gym finetune --adversarial`` to a
trained model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

VISUAL_FACTOR = 0.05
ACTION_FACTOR = 0.02
STEP_FACTOR = 1.25


@dataclass
class FGSM:
    """Perturbs (s_hist, a) within ε before the loss; ε tensors broadcast against the inputs."""

    feature_eps: Tensor   # [C] (or scalar): ε of each feature channel
    action_eps: Tensor    # [A] (or scalar): ε of each action component
    generator: torch.Generator | None = None

    @classmethod
    def from_data(cls, features: Tensor, actions: Tensor, visual_factor: float = VISUAL_FACTOR,
                  action_factor: float = ACTION_FACTOR, seed: int = 0) -> "FGSM":
        """ε from samples: features [..., C] and (scaled) action chunks [..., A]."""
        f_std = features.float().flatten(0, -2).std(0)
        a_std = actions.float().flatten(0, -2).std(0)
        return cls(visual_factor * f_std, action_factor * a_std, torch.Generator().manual_seed(seed))

    @classmethod
    def from_windows(cls, windows, episodes, scale_actions: Callable[[Tensor], Tensor], seed: int = 0) -> "FGSM":
        """ε from 2,048 random training windows of a ``FeatureWindows`` (actions scaled as the dynamics see them)."""
        probe = windows.sampler(episodes, 2048, device=windows.features.device)(torch.Generator().manual_seed(seed))
        return cls.from_data(probe["s_hist"], scale_actions(probe["actions"][:, 0]), seed=seed)

    def perturb(self, loss_fn: Callable[[Tensor, Tensor], Tensor], s_hist: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """The adversarial (s_hist, a): one signed-gradient step of 1.25ε from a random start, kept in the ε-box."""
        eps = [self.feature_eps.to(s_hist), self.action_eps.to(a)]
        inputs = [s_hist.detach(), a.detach()]
        deltas = [((torch.rand(x.shape, generator=self.generator) * 2 - 1).to(x) * e).requires_grad_(True)
                  for x, e in zip(inputs, eps)]
        with torch.enable_grad():
            loss = loss_fn(*(x + d for x, d in zip(inputs, deltas)))
            grads = torch.autograd.grad(loss, deltas)
        out = []
        for x, d, g, e in zip(inputs, deltas, grads, eps):
            step = d.detach() + STEP_FACTOR * e * g.sign()
            out.append(x + torch.maximum(torch.minimum(step, e), -e))
        return out[0], out[1]

    def loss(self, loss_fn: Callable[[Tensor, Tensor], tuple[Tensor, dict]], s_hist: Tensor, a: Tensor
             ) -> tuple[Tensor, dict]:
        """``loss_fn`` evaluated on the adversarial inputs (its targets stay clean)."""
        s_adv, a_adv = self.perturb(lambda s, u: loss_fn(s, u)[0], s_hist, a)
        return loss_fn(s_adv, a_adv)
