"""Reward terms r(s_prev, s_next, target, t) -> [B] on world-model features [B, N, C].

Goal-type terms (GoalDistance, Progress, SeqDelta) take target = goal features [B, N, C] or [N, C];
handed a demo sequence [B, T+1, N, C] they use its last frame as the goal, so one CombinedReward can mix
goal and demo terms. DemoAligned takes target = demo sequence [B, T+1, N, C] and the step index t.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from .distance import COS_EPS, check_metric, check_pair, feature_distance

Step = int | Tensor | None


class RewardTerm(Protocol):
    needs_demo: bool  # True when target must be a demo sequence [B, T+1, N, C]

    def __call__(self, s_prev: Tensor, s_next: Tensor, target: Tensor, t: Step = None) -> Tensor: ...


def _positive(scale: float) -> float:
    """A non-positive scale would silently flip or kill the reward, so refuse it."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    return float(scale)


def _check_states(s_prev: Tensor, s_next: Tensor) -> None:
    check_pair(s_next, s_prev)
    if s_prev.dim() != 3:
        raise ValueError(f"s_prev must be [B, N, C], got shape {tuple(s_prev.shape)}")


def _goal(target: Tensor) -> Tensor:
    """Goal features from a goal [B, N, C] / [N, C] or a demo [B, T+1, N, C] (its last frame)."""
    return target[:, -1] if target.dim() == 4 else target


class GoalDistanceReward:
    """r = -scale * d(s_next, goal): dense "be near the goal" reward."""

    needs_demo = False

    def __init__(self, metric: str = "l1", scale: float = 1.0):
        check_metric(metric)
        self.metric, self.scale = metric, _positive(scale)

    def __call__(self, s_prev: Tensor, s_next: Tensor, target: Tensor, t: Step = None) -> Tensor:
        _check_states(s_prev, s_next)
        return -self.scale * feature_distance(s_next, _goal(target), self.metric)


class DemoAlignedReward:
    """RLA-WM video-aligned reward: follow the demo frame by frame, not just reach its end.

    r_t = -scale * d(s_next, demo[t+1]), t = step index before the step, t+1 clamped to [0, T].
    """

    needs_demo = True

    def __init__(self, metric: str = "l1", scale: float = 5.0):
        check_metric(metric)
        self.metric, self.scale = metric, _positive(scale)

    def __call__(self, s_prev: Tensor, s_next: Tensor, target: Tensor, t: Step = None) -> Tensor:
        _check_states(s_prev, s_next)
        B = s_next.shape[0]
        if target.dim() != 4 or target.shape[0] != B:
            raise ValueError(f"DemoAlignedReward needs a demo sequence [B={B}, T+1, N, C], "
                             f"got shape {tuple(target.shape)}")
        if t is None:
            raise ValueError("DemoAlignedReward needs the step index t (int or LongTensor [B])")
        t = torch.as_tensor(t, device=target.device)
        if t.is_floating_point() or t.dtype == torch.bool or t.dim() > 1 or (t.dim() == 1 and len(t) != B):
            raise ValueError(f"t must be an int or an integer tensor [B={B}], got {t.dtype} {tuple(t.shape)}")
        idx = (t.long() + 1).clamp(0, target.shape[1] - 1).expand(B)
        frame = target[torch.arange(B, device=target.device), idx]  # [B, N, C]
        return -self.scale * feature_distance(s_next, frame, self.metric)


class ProgressReward:
    """r = scale * (d(s_prev, goal) - d(s_next, goal)): positive when the step got closer.

    Potential-based shaping: sums to d(s_0, goal) - d(s_T, goal) over an episode, so it cannot be farmed.
    """

    needs_demo = False

    def __init__(self, metric: str = "l1", scale: float = 1.0):
        check_metric(metric)
        self.metric, self.scale = metric, _positive(scale)

    def __call__(self, s_prev: Tensor, s_next: Tensor, target: Tensor, t: Step = None) -> Tensor:
        _check_states(s_prev, s_next)
        goal = _goal(target)
        return self.scale * (feature_distance(s_prev, goal, self.metric) - feature_distance(s_next, goal, self.metric))


class TemporalProgressReward:
    """r = scale * (k(s_prev, goal) - k(s_next, goal)), k a learned temporal distance in model steps.

    Progress like :class:`ProgressReward`, but measured in steps to go (:mod:`wm_gym.temporal_distance`):
    it keeps its slope far from the goal, where feature distances saturate, and counts the way round a
    wall as the way. ``distance`` maps (s [B, N, C], goal) to steps [B], e.g. a world model's
    ``temporal_distance.steps``. Potential-based, so it sums to k(s_0) - k(s_T) and cannot be farmed.
    """

    needs_demo = False

    def __init__(self, distance: Callable[[Tensor, Tensor], Tensor], scale: float = 1.0):
        if not callable(distance):
            raise ValueError(f"distance must be callable (s, goal) -> steps, got {distance!r}")
        self.distance, self.scale = distance, _positive(scale)

    def __call__(self, s_prev: Tensor, s_next: Tensor, target: Tensor, t: Step = None) -> Tensor:
        _check_states(s_prev, s_next)
        goal = _goal(target)
        check_pair(s_next, goal)
        return self.scale * (self.distance(s_prev, goal) - self.distance(s_next, goal))


class SeqDeltaAlignmentReward:
    """Olaf-World Seq-Δ: reward moving the features in the direction of the goal, whatever the step size.

    r = scale * cos(vec(s_next - s_prev), vec(goal - s_prev)), vec flattens tokens*channels per batch row
    (cos with eps 1e-8, so a zero step gets r = 0).
    """

    needs_demo = False

    def __init__(self, scale: float = 1.0):
        self.scale = _positive(scale)

    def __call__(self, s_prev: Tensor, s_next: Tensor, target: Tensor, t: Step = None) -> Tensor:
        _check_states(s_prev, s_next)
        goal = _goal(target)
        check_pair(s_prev, goal)
        step, to_goal = (s_next - s_prev).flatten(1), (goal - s_prev).flatten(1)
        return self.scale * F.cosine_similarity(step, to_goal, dim=-1, eps=COS_EPS)


class CombinedReward:
    """r = sum_i w_i * r_i: mix terms (e.g. demo tracking + goal progress) under one callable."""

    def __init__(self, terms: list[tuple[float, RewardTerm]]):
        if not terms:
            raise ValueError("CombinedReward needs at least one (weight, term) pair")
        self.terms = [(float(w), term) for w, term in terms]
        self.needs_demo = any(term.needs_demo for _, term in self.terms)

    def __call__(self, s_prev: Tensor, s_next: Tensor, target: Tensor, t: Step = None) -> Tensor:
        return sum(w * term(s_prev, s_next, target, t) for w, term in self.terms)
