"""Input checks shared by every sim and by imagination, so bad actions fail the same way everywhere."""
from __future__ import annotations

import numpy as np
from gymnasium import spaces


def describe_box(space: spaces.Box) -> str:
    """A short human description such as "shape (2,) in [-1, 1]"."""
    low, high = np.unique(space.low), np.unique(space.high)
    if low.size == 1 and high.size == 1:
        bounds = f"[{low[0]:g}, {high[0]:g}]"
    else:
        bounds = f"[{space.low.tolist()}, {space.high.tolist()}]"
    return f"shape {space.shape} in {bounds}"


def check_action(action, space: spaces.Box, *, batch: int | None = None) -> np.ndarray:
    """Validate an action against a Box and return it as float32, clipped to the bounds.

    Out-of-bounds values are clipped (as SB3 does); a wrong shape, a non-numeric dtype or a
    NaN/inf raises ``ValueError`` naming the expected shape and bounds. With ``batch`` the
    action must have shape ``(batch, *space.shape)``.
    """
    expected = space.shape if batch is None else (batch, *space.shape)
    what = describe_box(space) if batch is None else f"shape {expected} (batch of {describe_box(space)})"
    arr = np.asarray(action)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"action must be a numeric array of {what}, got dtype {arr.dtype}")
    if arr.shape != expected:
        raise ValueError(f"action must have {what}, got shape {arr.shape}")
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"action must be finite (no NaN or inf) with {what}, got {arr.tolist()}")
    return np.clip(arr, space.low, space.high)
