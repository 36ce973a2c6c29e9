"""Reward functions on world-model features (batched torch).

Why: an imagination env only has the world model's features, not the simulator's state, so rewards
come from feature distances to a goal image or a demo video (RLA-WM's video-aligned rewards). A new task
is then "give a goal frame or a demo", with no handwritten reward code.

Every term maps (s_prev, s_next, target, t) with features [B, N, C] to a reward [B]; ``make_reward``
builds one from a name such as "demo+progress".
"""
from __future__ import annotations

from typing import Callable

from .distance import METRICS, check_metric, feature_distance
from .functions import (CombinedReward, DemoAlignedReward, GoalDistanceReward, ProgressReward, RewardTerm,
                        SeqDeltaAlignmentReward, TemporalProgressReward)

REWARDS = {
    "goal": GoalDistanceReward,
    "demo": DemoAlignedReward,
    "progress": ProgressReward,
    "seq-delta": SeqDeltaAlignmentReward,
    "temporal": TemporalProgressReward,
}


def make_reward(spec: str | RewardTerm, metric: str = "l1", scale: float | None = None,
                distance: Callable | None = None) -> RewardTerm:
    """Build a term from a name ("goal", "demo", "progress", "seq-delta", "temporal") or a "+"-joined combo
    (weights 1).

    scale=None keeps each term's default; a term object passes through unchanged. "temporal" needs
    ``distance``, a learned (s, goal) -> model steps function (a world model's ``temporal_distance.steps``).
    """
    if not isinstance(spec, str):
        if not callable(spec) or not hasattr(spec, "needs_demo"):
            raise ValueError(f"reward must be a name or a reward term, got {spec!r}")
        return spec
    check_metric(metric)  # also for "seq-delta" alone, which ignores it
    terms = []
    for name in spec.split("+"):
        name = name.strip()
        if name not in REWARDS:
            raise ValueError(f"unknown reward {name!r} in {spec!r}; valid names: {', '.join(REWARDS)}")
        cls = REWARDS[name]
        kwargs = {} if scale is None else {"scale": scale}
        if cls is TemporalProgressReward:
            if distance is None:
                raise ValueError("reward 'temporal' needs a temporal-distance head: this world model has none "
                                 "(fit one with `wm-gym train-distance`)")
            kwargs["distance"] = distance
        elif cls is not SeqDeltaAlignmentReward:  # the only term without a metric
            kwargs["metric"] = metric
        terms.append(cls(**kwargs))
    return terms[0] if len(terms) == 1 else CombinedReward([(1.0, term) for term in terms])


__all__ = ["METRICS", "feature_distance", "GoalDistanceReward", "DemoAlignedReward", "ProgressReward",
           "SeqDeltaAlignmentReward", "TemporalProgressReward", "CombinedReward", "RewardTerm", "REWARDS", "make_reward"]
