"""Wall: a dot must find the door in a wall to reach a goal on the other side (DINO-WM's task).

Our own numpy simulator. Coordinates are internal pixels of a 65×65 frame: ``x`` grows to the
right (image columns), ``y`` grows downwards (image rows), both in ``[0, 64]``. A vertical wall
stands at ``x = wall_x`` with a door (a gap in ``y``) centred at ``door_center``. The state is
the dot position ``[x, y]``. Images are ``image_size``² (64²) samples of that frame at the pixel
centres a resize would use; the dot is a Gaussian blob and the goal is never drawn.

Two versions share this module (``WallGeometry.version``):

* **v1** (``wm_gym/Wall-v1``, the default): DINO-WM's ``DotWall`` parameter by parameter
  (``env/wall/`` in its public code; ``docs/protocol.md`` has the table). The wall is solid on
  ``x ∈ [29, 35]``, the door spans ``y ∈ [door_center ± 4]`` (centre 30), border walls stand at
  4 and 60. ``pos += 2·a``; a move that meets a wall stops at the contact point and is pushed
  0.5 px back (no sliding), exactly as DINO-WM's ``check_wall_intersect``. Starts and goals are
  in opposite rooms, ``x ∈ [7.4, 25.6]`` / ``[38.4, 56.6]``, ``y ∈ [7.4, 56.6]``. White floor,
  black walls, red dot hidden behind walls.
* **v0** (``wm_gym/Wall-v0``): wm-gym's first Wall (3 px wall, 12 px door at y = 44, the dot
  slides along walls). Kept because it costs one branch and old models were trained on it.

The physics and the renderer are batched numpy functions over ``[B, 2]`` positions
(:func:`wall_step`, :func:`render_dots`, :func:`goal_reached`, :func:`sample_start_goal`);
:class:`WallEnv` (one sim) and :class:`WallVectorEnv` (``N`` sims in lockstep) both call them,
so there is exactly one implementation of the dynamics and the images.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .goal_env import GoalImageEnv
from .looks import WALL_LOOKS, WallLook, make_look
from .policies import CorrelatedRandomPolicy, Policy
from .row_seeds import reseed_rows
from .validation import check_action

#: Pixels moved per unit of action (DINO-WM: ``pos += 2 * action``).
STEP_SCALE = 2.0
#: Standard deviation of the rendered Gaussian dot, in internal pixels (DINO-WM ``dot_std``).
DOT_STD = 1.7
#: Success when the dot is strictly closer than this to the goal (DINO-WM ``eval_state``).
SUCCESS_RADIUS = 4.5
#: v0: sampled starts and goals keep at least this distance from the wall band.
SPAWN_CLEARANCE = 3.0
#: v1: DINO-WM keeps starts and goals ``2 * dot_std`` from the walls (its ``padding``).
SPAWN_PADDING = 2.0 * DOT_STD
#: v1: a move that meets a wall ends this far back from the contact point (DINO-WM's fixed "noise").
PUSH_BACK = 0.5
#: v1: DINO-WM's last resort after clamping a pushed-back dot into its room.
CLAMP_INSET = 0.3


@dataclass(frozen=True)
class WallGeometry:
    """The layout in internal pixels and the physics version; frozen so it can key the cached background.

    The defaults are v1 (DINO-WM). :data:`WALL_V0` holds wm-gym v0's layout.
    """

    version: int = 1            # 1: DINO-WM's physics, spawn and look; 0: wm-gym v0 (sliding)
    wall_x: float = 32.0
    wall_width: float = 6.0     # solid on [wall_x - w/2, wall_x + w/2]
    door_center: float = 30.0   # DINO-WM ``fix_door_location``
    door_width: float = 8.0     # DINO-WM ``2 * door_space``
    extent: float = 64.0        # positions live in [0, extent]
    margin: float = 4.0         # v1: border walls at margin and extent - margin; v0: the dot is clipped there

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise ValueError(f"version must be 0 or 1, got {self.version}")
        lo, hi = self.margin, self.extent - self.margin
        if not (self.wall_width > 0 and self.door_width > 0 and 0 <= self.margin < self.extent / 2):
            raise ValueError(f"wall_width and door_width must be > 0 and margin in [0, extent/2), got {self}")
        (left_lo, left_hi), (right_lo, right_hi), _ = self.spawn_ranges()
        if not (left_lo < left_hi and right_lo < right_hi):  # starts and goals need room in both rooms
            raise ValueError(f"the wall band [{self.wall_lo}, {self.wall_hi}] leaves no room on one side in [{lo}, {hi}]")
        if not (self.door_lo < hi and self.door_hi > lo):
            raise ValueError(f"the door [{self.door_lo}, {self.door_hi}] is outside the reachable y range [{lo}, {hi}]")

    @property
    def wall_lo(self) -> float:
        return self.wall_x - self.wall_width / 2

    @property
    def wall_hi(self) -> float:
        return self.wall_x + self.wall_width / 2

    @property
    def door_lo(self) -> float:
        return self.door_center - self.door_width / 2

    @property
    def door_hi(self) -> float:
        return self.door_center + self.door_width / 2

    def solid_boxes(self) -> tuple[np.ndarray, np.ndarray]:
        """The two wall pieces above and below the door as boxes: (lo [2, 2], hi [2, 2]) over (box, xy)."""
        lo = np.array([[self.wall_lo, -1.0], [self.wall_lo, self.door_hi]])
        hi = np.array([[self.wall_hi, self.door_lo], [self.wall_hi, self.extent + 1.0]])
        return lo, hi

    def spawn_ranges(self) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float]]:
        """(left room x, right room x, y) ranges that starts and goals are drawn from."""
        if self.version == 1:  # DINO-WM generate_random_state: border_padding = border + 2·dot_std
            pad = self.margin + SPAWN_PADDING
            return ((pad, self.wall_lo - SPAWN_PADDING), (self.wall_hi + SPAWN_PADDING, self.extent - pad),
                    (pad, self.extent - pad))
        return ((self.margin, self.wall_lo - SPAWN_CLEARANCE), (self.wall_hi + SPAWN_CLEARANCE, self.extent - self.margin),
                (self.margin, self.extent - self.margin))

    def side(self, x: np.ndarray) -> np.ndarray:
        """-1 left of the wall's centre line, +1 right of it (0 on it); ``x`` is [B]."""
        return np.sign(np.asarray(x, np.float64) - self.wall_x)


#: wm-gym v0's Wall: a 3 px wall with a 12 px door at y = 44, the dot clipped to [3, 61].
WALL_V0 = WallGeometry(version=0, wall_width=3.0, door_center=44.0, door_width=12.0, margin=3.0)
#: DINO-WM's Wall (the default).
WALL_V1 = WallGeometry()


def make_geometry(version: int = 1, **layout: float | None) -> WallGeometry:
    """The version's layout with any of ``wall_x``, ``wall_width``, ``door_center``, ``door_width`` overridden (None keeps it)."""
    base = {0: WALL_V0, 1: WALL_V1}.get(version)
    if base is None:
        raise ValueError(f"version must be 0 or 1, got {version}")
    return dataclasses.replace(base, **{k: float(v) for k, v in layout.items() if v is not None})


# ----- batched physics -------------------------------------------------------------------------
def _sweep(pos: np.ndarray, delta: np.ndarray, geometry: WallGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """v0: move ``pos`` [B, 2] by ``delta`` [B, 2] until the first contact with a solid wall piece.

    Segment-vs-box slab test against the open interior of each box, so a dot resting on a face
    can slide along it or leave it, but any move that would enter a box stops at its face.
    Returns (end [B, 2], fraction of delta travelled [B], contact axis [B], hit [B]); at a
    contact the blocked coordinate is set exactly to the face, so rounding can't leak inside.
    """
    lo, hi = geometry.solid_boxes()
    p, d = pos[:, None, :], delta[:, None, :]  # [B, 1, 2] against boxes [K, 2]
    moving = d != 0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_lo, t_hi = (lo - p) / d, (hi - p) / d  # [B, K, 2]
    inside = (p > lo) & (p < hi)
    t_in = np.where(moving, np.minimum(t_lo, t_hi), np.where(inside, -np.inf, np.inf))
    t_out = np.where(moving, np.maximum(t_lo, t_hi), np.where(inside, np.inf, -np.inf))
    t_enter, t_exit = t_in.max(-1), t_out.min(-1)  # [B, K]
    t_enter = np.where((t_enter >= 0) & (t_enter < 1) & (t_enter < t_exit), t_enter, np.inf)

    rows = np.arange(len(pos))
    box = t_enter.argmin(-1)  # first box touched, [B]
    t = t_enter[rows, box]
    hit = np.isfinite(t)
    axis = t_in[rows, box].argmax(-1)  # the slab entered last is the face touched
    face = np.where(delta[rows, axis] > 0, lo[box, axis], hi[box, axis])
    t = np.where(hit, t, 1.0)
    end = np.where(hit[:, None], pos + t[:, None] * delta, pos + delta)
    end[rows[hit], axis[hit]] = face[hit]
    return end, t, axis, hit


def _slide_step(pos: np.ndarray, action: np.ndarray, geometry: WallGeometry) -> np.ndarray:
    """v0: clip the target to the arena; a move into the wall stops at its face and slides along it."""
    arena_lo, arena_hi = geometry.margin, geometry.extent - geometry.margin
    target = np.clip(pos + STEP_SCALE * action, arena_lo, arena_hi)
    delta = target - pos
    contact, t, axis, hit = _sweep(pos, delta, geometry)
    rest = delta * (1.0 - t)[:, None]
    rest[np.flatnonzero(hit), axis[hit]] = 0.0
    return _sweep(contact, rest, geometry)[0]


def _crossing(p1: np.ndarray, p2: np.ndarray, line, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the segments p1→p2 [B, 2] meet the line ``coord[axis] = line`` (scalar or [B]).

    Returns (meets [B], the other coordinate there [B]). "Meets" is DINO-WM's test
    ``sign(p1 - line) · sign(p2 - line) <= 0.1``, so touching the line counts. A segment
    parallel to the line (measure zero; DINO-WM divides by zero there) meets it at p1.
    """
    other = 1 - axis
    meets = np.sign(p1[:, axis] - line) * np.sign(p2[:, axis] - line) <= 0.1
    d = p2[:, axis] - p1[:, axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        at = p1[:, other] + (line - p1[:, axis]) * (p2[:, other] - p1[:, other]) / d
    return meets, np.where(d == 0, p1[:, other], at)


def _dino_wm_step(pos: np.ndarray, action: np.ndarray, geometry: WallGeometry) -> np.ndarray:
    """v1: DINO-WM's ``DotWall._calculate_next_position`` for a batch, check by check.

    1. Inside the door, a move across the door's top (or bottom) edge line within the wall's
       x-span hits the wall piece beyond it: it ends at the contact + (0.5, ∓0.5).
    2. Otherwise the dot's room has a left and a right vertical wall (the border and the
       middle wall, whose door lets a crossing pass) and the top and bottom borders. The first
       of the vertical and horizontal contacts (nearest to the start) stops the move, pushed
       0.5 px back towards the start along its normal and +0.5 px along the other axis (DINO-WM's
       fixed "noise"), then clamped into the room (0.3 px inside if it lands on a wall line).
    """
    g = geometry
    p1 = np.asarray(pos, np.float64)
    p2 = p1 + STEP_SCALE * np.asarray(action, np.float64)
    border_lo, border_hi = g.margin, g.extent - g.margin
    in_door = lambda y: (y >= g.door_lo) & (y <= g.door_hi)  # noqa: E731
    up, down = p2[:, 1] > p1[:, 1], p2[:, 1] < p1[:, 1]

    # 1. the door's edges, from inside the door
    _, x_top = _crossing(p1, p2, g.door_hi, axis=1)
    _, x_bot = _crossing(p1, p2, g.door_lo, axis=1)
    in_span = lambda x: (x >= g.wall_lo) & (x <= g.wall_hi)  # noqa: E731
    hit_top = up & (p2[:, 1] > g.door_hi) & (p1[:, 1] < g.door_hi) & in_span(x_top)
    hit_bot = ~hit_top & down & (p2[:, 1] < g.door_lo) & (p1[:, 1] > g.door_lo) & in_span(x_bot)
    door_edge = np.where(hit_top[:, None], np.stack([x_top + PUSH_BACK, np.full_like(x_top, g.door_hi - PUSH_BACK)], -1),
                         np.stack([x_bot + PUSH_BACK, np.full_like(x_bot, g.door_lo + PUSH_BACK)], -1))

    # 2. the room's walls
    left_room = g.wall_x > p1[:, 0]
    left_wall = np.where(left_room, border_lo, g.wall_hi)   # the middle wall (with its door) on the right room's left
    right_wall = np.where(left_room, g.wall_lo, border_hi)
    meets_l, y_l = _crossing(p1, p2, left_wall, axis=0)
    meets_r, y_r = _crossing(p1, p2, right_wall, axis=0)
    block_l = meets_l & ~(~left_room & in_door(y_l))
    block_r = ~block_l & meets_r & ~(left_room & in_door(y_r))
    v_hit = block_l | block_r
    v_point = np.stack([np.where(block_l, left_wall, right_wall), np.where(block_l, y_l, y_r)], -1)
    meets_t, x_t = _crossing(p1, p2, border_lo, axis=1)
    meets_b, x_b = _crossing(p1, p2, border_hi, axis=1)
    h_hit = meets_t | meets_b
    h_point = np.stack([np.where(meets_t, x_t, x_b), np.where(meets_t, border_lo, border_hi)], -1)
    use_v = v_hit & (~h_hit | (np.linalg.norm(p1 - v_point, axis=-1) < np.linalg.norm(p1 - h_point, axis=-1)))
    use_h = h_hit & ~use_v
    v_noise = np.stack([PUSH_BACK * np.sign(p1[:, 0] - v_point[:, 0]), np.full(len(p1), PUSH_BACK)], -1)
    h_noise = np.stack([np.full(len(p1), PUSH_BACK), PUSH_BACK * np.sign(p1[:, 1] - h_point[:, 1])], -1)
    pushed = np.where(use_v[:, None], v_point + v_noise, h_point + h_noise)
    x = np.clip(pushed[:, 0], left_wall, right_wall)
    y = np.clip(pushed[:, 1], border_lo, border_hi)
    x = np.where(x <= left_wall, left_wall + CLAMP_INSET, np.where(x >= right_wall, right_wall - CLAMP_INSET, x))
    y = np.where(y <= border_lo, border_lo + CLAMP_INSET, np.where(y >= border_hi, border_hi - CLAMP_INSET, y))
    room = np.where((use_v | use_h)[:, None], np.stack([x, y], -1), p2)
    return np.where((hit_top | hit_bot)[:, None], door_edge, room)


def wall_step(pos: np.ndarray, action: np.ndarray, geometry: WallGeometry) -> np.ndarray:
    """One step for a batch of dots: ``pos`` [B, 2], ``action`` [B, 2] in [-1, 1] -> new pos [B, 2].

    The dot moves by ``STEP_SCALE * action``. v1 stops a move at the first wall it meets and
    pushes it back (:func:`_dino_wm_step`); v0 clips it to the arena and lets it slide along the
    wall face (:func:`_slide_step`). No move, however fast, ends inside a solid piece of wall.
    """
    pos, action = np.asarray(pos, np.float64), np.asarray(action, np.float64)
    return _dino_wm_step(pos, action, geometry) if geometry.version == 1 else _slide_step(pos, action, geometry)


def goal_reached(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """bool [B]: the dot ``pos`` [B, 2] is strictly within ``SUCCESS_RADIUS`` of ``goal`` [B, 2]."""
    return np.linalg.norm(np.asarray(pos, np.float64) - np.asarray(goal, np.float64), axis=-1) < SUCCESS_RADIUS


def sample_start_goal(rng: np.random.Generator, geometry: WallGeometry) -> tuple[np.ndarray, np.ndarray]:
    """Start and goal uniform in opposite rooms; which room starts is a fair coin.

    Both vectors are float64 [2]. v1 draws in DINO-WM's order (left x, right x, start y, goal
    y, then the coin that swaps the rooms). The single and the vector env call this with one
    generator per episode stream, which is what makes their seeds agree.
    """
    left, right, y_range = geometry.spawn_ranges()
    if geometry.version == 1:
        start_x, goal_x = rng.uniform(*left), rng.uniform(*right)
        start_y, goal_y = rng.uniform(*y_range), rng.uniform(*y_range)
        if rng.uniform() < 0.5:
            start_x, goal_x = goal_x, start_x
        return np.array([start_x, start_y]), np.array([goal_x, goal_y])
    start_side, goal_side = (left, right) if rng.random() < 0.5 else (right, left)
    start = np.array([rng.uniform(*start_side), rng.uniform(*y_range)])
    goal = np.array([rng.uniform(*goal_side), rng.uniform(*y_range)])
    return start, goal


# ----- batched rendering -----------------------------------------------------------------------
#: v0's palette: black floor, grey wall, red dot drawn over the wall.
PALETTE_V0 = dict(floor=(0.0, 0.0, 0.0), wall=(128.0, 128.0, 128.0), dot=(255.0, 48.0, 48.0))
#: v1's palette (DINO-WM ``channels_to_img``): white floor, black walls, red dot hidden behind walls.
PALETTE_V1 = dict(floor=(255.0, 255.0, 255.0), wall=(0.0, 0.0, 0.0), dot=(255.0, 0.0, 0.0))


@lru_cache(maxsize=16)
def _texture(texture: str, contrast: float, size: int) -> np.ndarray:
    """float32 [size, size, 1] grey offsets of the floor pattern (the same for every frame)."""
    if texture == "checker":
        cells = (np.arange(size) * 8 // size)  # 8 squares across, whatever the image size
        pattern = np.where((cells[:, None] + cells[None, :]) % 2 == 0, 1.0, -1.0)
    elif texture == "noise":
        pattern = np.random.default_rng(0).uniform(-1.0, 1.0, (size, size))
    else:
        pattern = np.zeros((size, size))
    out = (contrast * pattern)[..., None].astype(np.float32)
    out.flags.writeable = False
    return out


def _pixel_centers(extent: float, size: int) -> np.ndarray:
    """[size] internal coordinates of the pixel centres, as when resizing a (extent+1)² frame to size²."""
    return (np.arange(size) + 0.5) * (extent + 1) / size - 0.5


def _coverage(lo: float, hi: float, centers: np.ndarray, width: float) -> np.ndarray:
    """[S] fraction of each pixel [c - w/2, c + w/2] inside [lo, hi]: anti-aliased edges."""
    overlap = np.minimum(hi, centers + width / 2) - np.maximum(lo, centers - width / 2)
    return np.clip(overlap, 0.0, width) / width


@lru_cache(maxsize=16)
def _wall_mask(geometry: WallGeometry, size: int) -> np.ndarray:
    """float32 [size, size, 1]: how much of each pixel is wall, computed once per layout.

    v0 draws the solid band itself. v1 draws what DINO-WM's ``_render_walls`` draws on its
    65-px grid, i.e. every whole pixel i with wall_lo <= i <= wall_hi outside the door rows
    door_lo <= j <= door_hi, plus the 1-px border lines at ``margin`` and ``extent - margin``;
    a pixel index i covers [i - 0.5, i + 0.5].
    """
    g, centers, width = geometry, _pixel_centers(geometry.extent, size), (geometry.extent + 1) / size
    grow = 0.5 if g.version == 1 else 0.0
    in_band = _coverage(g.wall_lo - grow, g.wall_hi + grow, centers, width)  # over columns (x)
    in_door = _coverage(g.door_lo - grow, g.door_hi + grow, centers, width)  # over rows (y)
    wall = (1.0 - in_door)[:, None] * in_band[None, :]
    if g.version == 1:
        border = np.zeros_like(centers)
        for line in (g.margin, g.extent - g.margin):
            border = np.maximum(border, _coverage(line - 0.5, line + 0.5, centers, width))
        wall = np.maximum(wall, np.maximum(border[:, None], border[None, :]))
    mask = wall[..., None].astype(np.float32)
    mask.flags.writeable = False
    return mask


def render_dots(pos: np.ndarray, geometry: WallGeometry, size: int = 64, look: WallLook | None = None) -> np.ndarray:
    """uint8 [B, size, size, 3]: each dot of ``pos`` [B, 2] as a Gaussian blob in the wall scene.

    v1 scales each blob to a peak of 1 over the grid (DINO-WM normalises by the image maximum).
    ``look`` changes the colours, the blob's width or the floor's texture (default: the version's look).
    """
    pos = np.asarray(pos, np.float64).reshape(-1, 2)
    look = look or WALL_LOOKS["default"]
    palette = PALETTE_V1 if geometry.version == 1 else PALETTE_V0
    floor, wall_rgb, dot = (np.asarray(getattr(look, k) or palette[k], np.float32) for k in ("floor", "wall", "dot"))
    if look.texture != "none":  # a per-pixel floor [S, S, 3]; the formulas below broadcast over it
        floor = np.clip(floor + _texture(look.texture, look.texture_contrast, size), 0.0, 255.0)
    centers = _pixel_centers(geometry.extent, size)
    dot_std = look.dot_std or DOT_STD
    gx = np.exp(-0.5 * ((centers[None, :] - pos[:, :1]) / dot_std) ** 2).astype(np.float32)  # [B, S] columns
    gy = np.exp(-0.5 * ((centers[None, :] - pos[:, 1:]) / dot_std) ** 2).astype(np.float32)  # [B, S] rows
    if geometry.version == 1:
        gx /= gx.max(1, keepdims=True)
        gy /= gy.max(1, keepdims=True)
    alpha = gy[:, :, None, None] * gx[:, None, :, None]  # [B, S, S, 1], separable Gaussian
    wall = _wall_mask(geometry, size)
    background = floor + wall * (wall_rgb - floor)
    if geometry.version == 1:  # walls cover the dot
        image = background + alpha * (1.0 - wall) * (dot - floor)
    else:  # the dot is drawn over the wall
        image = background + alpha * (dot - background)
    image += 0.5  # round to nearest on the cast below (all values are >= 0)
    return image.astype(np.uint8)


# ----- collection policies ---------------------------------------------------------------------
class WallRandomPolicy(CorrelatedRandomPolicy):
    """Correlated random walk, persistent enough that many 50-step episodes pass the door.

    Tuned on the fraction of 50-step episodes whose dot changes side: ≈ 15-17 % here, against
    3-5 % for white noise (rho=0). A larger sigma gains a few points (≈ 20 %) but saturates
    most actions at ±1, which starves a world model of small actions; the door (12 of 58 px)
    caps what any undirected walk reaches. Checked in test_random_policy_crosses_door.
    """

    rho = 0.95
    sigma = 1.0


def expert_waypoint(pos: np.ndarray, goal: np.ndarray, geometry: WallGeometry) -> np.ndarray:
    """[B, 2] where an expert heads next from ``pos`` [B, 2] towards ``goal`` [B, 2].

    Same side as the goal: the goal. Otherwise, once level with the door (with some slack
    from its edges): a point just beyond the door on the goal's side, reached in a straight
    line through the gap; before that: the door's mouth on the dot's own side.
    """
    pos, goal = np.asarray(pos, np.float64), np.asarray(goal, np.float64)
    side, goal_side = geometry.side(pos[:, 0]), geometry.side(goal[:, 0])
    offset = geometry.wall_width / 2 + SPAWN_CLEARANCE
    level = np.abs(pos[:, 1] - geometry.door_center) < max(geometry.door_width / 2 - 1.5, 0.5)
    door_y = np.full(len(pos), geometry.door_center)
    own_side = np.where(side == 0, -goal_side, side)  # on the centre line: count it as the far side
    through = np.stack([geometry.wall_x + goal_side * offset, door_y], -1)
    mouth = np.stack([geometry.wall_x + own_side * offset, door_y], -1)
    waypoint = np.where(level[:, None], through, mouth)
    return np.where((side == goal_side)[:, None], goal, waypoint)


class WallExpertPolicy(Policy):
    """Head for the door, go through it, then for the goal; Gaussian noise on every action."""

    noise_std: float = 0.3

    def __call__(self, obs: dict[str, Any], info: dict[str, Any]) -> np.ndarray:
        pos = np.asarray(info["state"], np.float64)
        target = expert_waypoint(pos[None], np.asarray(info["goal"])[None], self.env.geometry)[0]
        direction = (target - pos) / STEP_SCALE
        direction /= max(1.0, np.abs(direction).max())  # keep the heading when saturating
        action = direction + self.rng.normal(0.0, self.noise_std, size=2)
        return np.clip(action, self.low, self.high).astype(np.float32)


# ----- the single env --------------------------------------------------------------------------
class WallEnv(GoalImageEnv):
    """One dot, one wall with a door; obs pixels uint8 [64, 64, 3], proprio = state = [x, y]."""

    proprio_dim = 2
    state_dim = 2
    policies = {"random": WallRandomPolicy, "noisy-expert": WallExpertPolicy}

    def __init__(
        self,
        version: int = 1,
        wall_x: float | None = None,
        door_center: float | None = None,
        door_width: float | None = None,
        wall_width: float | None = None,
        image_size: int = 64,
        render_mode: str | None = "rgb_array",
        look: str | WallLook | None = None,
    ):
        self.geometry = make_geometry(version, wall_x=wall_x, wall_width=wall_width, door_center=door_center,
                                      door_width=door_width)
        self.look = make_look(look)
        super().__init__(-np.ones(2), np.ones(2), image_size=image_size, render_mode=render_mode)
        self.pos = np.full(2, self.geometry.extent / 2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Options as :class:`GoalImageEnv`, plus ``door_center``: move the door from this episode on.

        DINO-WM evaluates each episode with the door of the trajectory it was drawn from; the
        door stays where it was put until the next ``door_center`` option.
        """
        options = dict(options or {})
        door_center = options.pop("door_center", None)
        if door_center is not None:
            self.geometry = dataclasses.replace(self.geometry, door_center=float(door_center))
        return super().reset(seed=seed, options=options)

    def _sample_start_goal(self) -> tuple[np.ndarray, np.ndarray]:
        return sample_start_goal(self.np_random, self.geometry)

    def _set_state(self, state: np.ndarray) -> None:
        self.pos = np.array(state, dtype=np.float64)

    def _get_state(self) -> np.ndarray:
        return self.pos.copy()

    def _get_proprio(self) -> np.ndarray:
        return self.pos.astype(np.float32)

    def _render_pixels(self) -> np.ndarray:
        return render_dots(self.pos[None], self.geometry, self.image_size, self.look)[0]

    def _apply_action(self, action: np.ndarray) -> None:
        self.pos = wall_step(self.pos[None], action[None], self.geometry)[0]

    def _is_success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        return bool(goal_reached(state[None], goal[None])[0])


# ----- the natively batched vector env ---------------------------------------------------------
class WallVectorEnv(VectorEnv):
    """``num_envs`` Wall sims stepped together as [N, ...] arrays (no per-env Python loop in step).

    Autoreset is NEXT_STEP, as in Gymnasium's ``CartPoleVectorEnv``: a row that terminated or
    truncated is reset at the start of the following ``step`` (its action is ignored, reward 0,
    terminated/truncated False, obs = the fresh start).

    Seeding: every row owns its own generator. ``reset(seed=s)`` gives row ``i`` the generator
    of ``WallEnv().reset(seed=s + i)`` (the rule of ``SyncVectorEnv``), and each autoreset of a
    row draws from it like a later ``WallEnv.reset()`` would, so row ``i`` replays exactly the
    episodes of a single ``WallEnv`` seeded with ``s + i``. A list of per-row seeds is accepted
    too; ``seed=None`` keeps the rows' generators (fresh entropy on the first reset).

    ``terminate_on_success=False`` keeps a row going after success (reported in ``info`` only), so
    that every row runs exactly ``max_episode_steps``: dataset collection records whole episodes.
    ``skip_pixels``: as :attr:`GoalImageEnv.skip_pixels` (no rendering, ``obs["pixels"] = None``).
    """

    skip_pixels: bool = False

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 50,
        render_mode: str | None = "rgb_array",
        version: int = 1,
        wall_x: float | None = None,
        door_center: float | None = None,
        door_width: float | None = None,
        wall_width: float | None = None,
        image_size: int = 64,
        terminate_on_success: bool = True,
        look: str | WallLook | None = None,
    ):
        if num_envs < 1 or max_episode_steps < 1:
            raise ValueError(f"num_envs and max_episode_steps must be >= 1, got {num_envs} and {max_episode_steps}")
        # One WallEnv defines the single spaces and validates geometry/render_mode, so both envs agree.
        template = WallEnv(version, wall_x, door_center, door_width, wall_width, image_size=image_size,
                           render_mode=render_mode, look=look)
        self.geometry, self.look = template.geometry, template.look
        self.image_size = template.image_size
        self.render_mode = render_mode
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
        self.terminate_on_success = bool(terminate_on_success)
        self.single_observation_space = template.observation_space
        self.single_action_space = template.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)

        n = self.num_envs
        self.pos = np.zeros((n, 2))  # [N, 2] dot positions
        self.goal = np.zeros((n, 2))  # [N, 2]
        self.goal_pixels = np.zeros((n, self.image_size, self.image_size, 3), np.uint8)  # [N, H, W, 3]
        self.steps = np.zeros(n, np.int64)  # [N] steps into the current episode
        self._prev_done = np.zeros(n, bool)  # [N] rows to reset at the next step
        self._row_rngs: list[np.random.Generator | None] = [None] * n
        self._needs_reset = True

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None):
        """Start new episodes in every row; options ``start_state``/``goal_state``: [2] or [N, 2]."""
        reseed_rows(self._row_rngs, seed)
        super().reset(seed=int(seed) if isinstance(seed, (int, np.integer)) else None)
        options = options or {}
        self._restart(np.arange(self.num_envs), options.get("start_state"), options.get("goal_state"))
        self._prev_done[:] = False
        self._needs_reset = False
        return self._obs(), self._info()

    def step(self, actions):
        """actions [N, 2] in [-1, 1] -> (obs, reward [N], terminated [N], truncated [N], info)."""
        if self._needs_reset:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_action(actions, self.single_action_space, batch=self.num_envs)
        self.pos = wall_step(self.pos, actions, self.geometry)
        self.steps += 1
        restarting = self._prev_done
        if restarting.any():
            self._restart(np.flatnonzero(restarting))
        success = goal_reached(self.pos, self.goal)
        reward = (success & ~restarting).astype(np.float64)  # the single env's: 1 on success
        terminated = success & ~restarting & self.terminate_on_success
        truncated = (self.steps >= self.max_episode_steps) & ~restarting
        self._prev_done = terminated | truncated
        return self._obs(), reward, terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        """uint8 [N, H, W, 3], the current frames (the same as ``obs["pixels"]``)."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None")
            return None
        return render_dots(self.pos, self.geometry, self.image_size, self.look)

    # ----- helpers ---------------------------------------------------------------------------
    def _restart(self, rows: np.ndarray, start_state=None, goal_state=None) -> None:
        """New episodes in ``rows`` [R]: sample start/goal from each row's generator, render goals.

        Sampling happens even when states are given, exactly as ``GoalImageEnv.reset`` does, so
        the generators stay in step with the single env's.
        """
        starts, goals = zip(*(sample_start_goal(self._row_rngs[i], self.geometry) for i in rows))
        start, goal = np.stack(starts), np.stack(goals)  # [R, 2] each
        if start_state is not None:
            start = self._given_states("start_state", start_state)[rows]
        if goal_state is not None:
            goal = self._given_states("goal_state", goal_state)[rows]
        self.pos[rows] = start
        self.goal[rows] = goal
        self.goal_pixels[rows] = render_dots(goal, self.geometry, self.image_size, self.look)
        self.steps[rows] = 0

    def _given_states(self, name: str, value) -> np.ndarray:
        """[N, 2] from a user-given state of shape [2] (all rows) or [N, 2]."""
        arr = np.asarray(value, np.float64)
        if arr.shape not in ((2,), (self.num_envs, 2)) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be a finite array of shape (2,) or ({self.num_envs}, 2), got {arr.shape}")
        return np.broadcast_to(arr, (self.num_envs, 2))

    def _obs(self) -> dict[str, np.ndarray]:
        pixels = None if self.skip_pixels else render_dots(self.pos, self.geometry, self.image_size, self.look)
        return {"pixels": pixels, "proprio": self.pos.astype(np.float32)}

    def _info(self, success: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if success is None:
            success = goal_reached(self.pos, self.goal)
        return {"state": self.pos.copy(), "goal": self.goal.copy(), "is_success": success}
