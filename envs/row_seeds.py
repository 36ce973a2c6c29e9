"""Per-row seeds of a batched env, the rule of Gymnasium's ``SyncVectorEnv``.

Shared by the natively batched Wall sim and the imagination env, so that in both row ``i`` of
``reset(seed=s)`` replays a single env seeded ``s + i``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from gymnasium.utils import seeding


def row_seeds(seed: int | Sequence[int | None] | None, num_envs: int) -> list[int | None]:
    """``seed + i`` for an int, the list itself (checked for length) for a list, all None for None."""
    if seed is None:
        return [None] * num_envs
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(num_envs)]
    seeds = list(seed)
    if len(seeds) != num_envs:
        raise ValueError(f"seed list must have num_envs={num_envs} entries, got {len(seeds)}")
    return seeds


def reseed_rows(row_rngs: list[np.random.Generator | None], seed: int | Sequence[int | None] | None) -> None:
    """Give each row its generator for ``reset(seed=...)``; rows without a seed keep theirs (fresh if none)."""
    for i, row_seed in enumerate(row_seeds(seed, len(row_rngs))):
        if row_seed is not None or row_rngs[i] is None:
            row_rngs[i] = seeding.np_random(row_seed)[0]
