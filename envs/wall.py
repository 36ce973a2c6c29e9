"""Wall: a dot must find the door in a wall to reach a goal on the other side (DINO-WM's task).

Our own numpy simulator with DINO-WM's semantics. Coordinates are internal pixels of a
65×65 frame: ``x`` grows to the right (image columns), ``y`` grows downwards (image rows),
both in ``[0, 64]``. A vertical wall of width ``wall_width`` stands at ``x = wall_x`` with a
door (a gap in ``y``) centred at ``door_center``. The state is the dot position ``[x, y]``.
Images are ``image_size``² (64²) samples of that frame at the pixel centres a resize would
use; the dot is a Gaussian blob, the wall grey, the floor black, and the goal is never drawn.

The physics and the renderer are batched numpy functions over ``[B, 2]`` positions
(:func:`wall_step`, :func:`render_dots`, :func:`goal_reached`, :func:`sample_start_goal`);
:class:`WallEnv` (one sim) and :class:`WallVectorEnv` (``N`` sims in lockstep) both call them,
so there is exactly one implementation of the dynamics and the images.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .goal_env import GoalImageEnv
from .policies import CorrelatedRandomPolicy, Policy
from .row_seeds import reseed_rows
from .validation import check_action

#: Pixels moved per unit of action (DINO-WM: ``pos += 2 * action``).
STEP_SCALE = 2.0
#: Standard deviation of the rendered Gaussian dot, in internal pixels.
DOT_STD = 1.7
#: Success when the dot is strictly closer than this to the goal.
SUCCESS_RADIUS = 4.5
#: Sampled starts and goals keep at least this distance from the wall band.
SPAWN_CLEARANCE = 3.0

BACKGROUND_RGB = np.array([0.0, 0.0, 0.0])
WALL_RGB = np.array([128.0, 128.0, 128.0])
DOT_RGB = np.array([255.0, 48.0, 48.0])


@dataclass(frozen=True)
class WallGeometry:
    """The layout in internal pixels; frozen so it can key the cached background image."""

    wall_x: float = 32.0
    wall_width: float = 3.0
    door_center: float = 44.0
    door_width: float = 12.0
    extent: float = 64.0  # positions live in [0, extent]
    margin: float = 3.0  # the dot is clipped to [margin, extent - margin]

    def __post_init__(self) -> None:
        lo, hi = self.margin, self.extent - self.margin
        if not (self.wall_width > 0 and self.door_width > 0 and 0 <= self.margin < self.extent / 2):
            raise ValueError(f"wall_width and door_width must be > 0 and margin in [0, extent/2), got {self}")
        if not (lo + SPAWN_CLEARANCE < self.wall_lo and self.wall_hi + SPAWN_CLEARANCE < hi):
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

    def side(self, x: np.ndarray) -> np.ndarray:
        """-1 left of the wall's centre line, +1 right of it (0 on it); ``x`` is [B]."""
        return np.sign(np.asarray(x, np.float64) - self.wall_x)


# ----- batched physics -------------------------------------------------------------------------
def _sweep(pos: np.ndarray, delta: np.ndarray, geometry: WallGeometry) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Move ``pos`` [B, 2] by ``delta`` [B, 2] until the first contact with a solid wall piece.

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


def wall_step(pos: np.ndarray, action: np.ndarray, geometry: WallGeometry) -> np.ndarray:
    """One step for a batch of dots: ``pos`` [B, 2], ``action`` [B, 2] in [-1, 1] -> new pos [B, 2].

    The dot moves by ``STEP_SCALE * action``, clipped to the arena. A move that would enter the
    wall outside the door stops at the wall face, and the rest of the move slides along that
    face (so a dot pushed diagonally against the wall is not glued to it). The slide is swept
    again, so no move, however fast, ends inside or beyond a solid piece of wall.
    """
    pos = np.asarray(pos, np.float64)
    arena_lo, arena_hi = geometry.margin, geometry.extent - geometry.margin
    target = np.clip(pos + STEP_SCALE * np.asarray(action, np.float64), arena_lo, arena_hi)
    delta = target - pos
    contact, t, axis, hit = _sweep(pos, delta, geometry)
    rest = delta * (1.0 - t)[:, None]
    rest[np.flatnonzero(hit), axis[hit]] = 0.0
    return _sweep(contact, rest, geometry)[0]


def goal_reached(pos: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """bool [B]: the dot ``pos`` [B, 2] is strictly within ``SUCCESS_RADIUS`` of ``goal`` [B, 2]."""
    return np.linalg.norm(np.asarray(pos, np.float64) - np.asarray(goal, np.float64), axis=-1) < SUCCESS_RADIUS


def sample_start_goal(rng: np.random.Generator, geometry: WallGeometry) -> tuple[np.ndarray, np.ndarray]:
    """DINO-WM protocol: start and goal uniform in opposite halves, away from the wall band.

    The start side is a fair coin. Both vectors are float64 [2]. The single and the vector env
    call this with one generator per episode stream, which is what makes their seeds agree.
    """
    left = (geometry.margin, geometry.wall_lo - SPAWN_CLEARANCE)
    right = (geometry.wall_hi + SPAWN_CLEARANCE, geometry.extent - geometry.margin)
    y_range = (geometry.margin, geometry.extent - geometry.margin)
    start_side, goal_side = (left, right) if rng.random() < 0.5 else (right, left)
    start = np.array([rng.uniform(*start_side), rng.uniform(*y_range)])
    goal = np.array([rng.uniform(*goal_side), rng.uniform(*y_range)])
    return start, goal


# ----- batched rendering -----------------------------------------------------------------------
def _pixel_centers(extent: float, size: int) -> np.ndarray:
    """[size] internal coordinates of the pixel centres, as when resizing a (extent+1)² frame to size²."""
    return (np.arange(size) + 0.5) * (extent + 1) / size - 0.5


def _coverage(lo: float, hi: float, centers: np.ndarray, width: float) -> np.ndarray:
    """[S] fraction of each pixel [c - w/2, c + w/2] inside [lo, hi]: anti-aliased edges."""
    overlap = np.minimum(hi, centers + width / 2) - np.maximum(lo, centers - width / 2)
    return np.clip(overlap, 0.0, width) / width


@lru_cache(maxsize=16)
def _background(geometry: WallGeometry, size: int) -> np.ndarray:
    """float32 [size, size, 3]: the static scene (dark floor and grey wall), computed once."""
    centers = _pixel_centers(geometry.extent, size)
    width = (geometry.extent + 1) / size
    in_band = _coverage(geometry.wall_lo, geometry.wall_hi, centers, width)  # over columns (x)
    in_door = _coverage(geometry.door_lo, geometry.door_hi, centers, width)  # over rows (y)
    wall = (1.0 - in_door)[:, None] * in_band[None, :]
    image = (BACKGROUND_RGB * (1.0 - wall[..., None]) + WALL_RGB * wall[..., None]).astype(np.float32)
    image.flags.writeable = False
    return image


def render_dots(pos: np.ndarray, geometry: WallGeometry, size: int = 64) -> np.ndarray:
    """uint8 [B, size, size, 3]: each dot of ``pos`` [B, 2] as a Gaussian blob over the wall scene."""
    pos = np.asarray(pos, np.float64).reshape(-1, 2)
    centers = _pixel_centers(geometry.extent, size)
    gx = np.exp(-0.5 * ((centers[None, :] - pos[:, :1]) / DOT_STD) ** 2).astype(np.float32)  # [B, S] columns
    gy = np.exp(-0.5 * ((centers[None, :] - pos[:, 1:]) / DOT_STD) ** 2).astype(np.float32)  # [B, S] rows
    alpha = gy[:, :, None, None] * gx[:, None, :, None]  # [B, S, S, 1], separable Gaussian
    background = _background(geometry, size)
    image = background + alpha * (DOT_RGB.astype(np.float32) - background)  # alpha-blend, float32 for speed
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
        wall_x: float = 32.0,
        door_center: float = 44.0,
        door_width: float = 12.0,
        wall_width: float = 3.0,
        image_size: int = 64,
        render_mode: str | None = "rgb_array",
    ):
        self.geometry = WallGeometry(wall_x=wall_x, wall_width=wall_width, door_center=door_center, door_width=door_width)
        super().__init__(-np.ones(2), np.ones(2), image_size=image_size, render_mode=render_mode)
        self.pos = np.full(2, self.geometry.extent / 2)

    def _sample_start_goal(self) -> tuple[np.ndarray, np.ndarray]:
        return sample_start_goal(self.np_random, self.geometry)

    def _set_state(self, state: np.ndarray) -> None:
        self.pos = np.array(state, dtype=np.float64)

    def _get_state(self) -> np.ndarray:
        return self.pos.copy()

    def _get_proprio(self) -> np.ndarray:
        return self.pos.astype(np.float32)

    def _render_pixels(self) -> np.ndarray:
        return render_dots(self.pos[None], self.geometry, self.image_size)[0]

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
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int = 50,
        render_mode: str | None = "rgb_array",
        wall_x: float = 32.0,
        door_center: float = 44.0,
        door_width: float = 12.0,
        wall_width: float = 3.0,
        image_size: int = 64,
    ):
        if num_envs < 1 or max_episode_steps < 1:
            raise ValueError(f"num_envs and max_episode_steps must be >= 1, got {num_envs} and {max_episode_steps}")
        # One WallEnv defines the single spaces and validates geometry/render_mode, so both envs agree.
        template = WallEnv(wall_x, door_center, door_width, wall_width, image_size=image_size, render_mode=render_mode)
        self.geometry = template.geometry
        self.image_size = template.image_size
        self.render_mode = render_mode
        self.num_envs = int(num_envs)
        self.max_episode_steps = int(max_episode_steps)
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
        terminated = success & ~restarting
        truncated = (self.steps >= self.max_episode_steps) & ~restarting
        self._prev_done = terminated | truncated
        return self._obs(), terminated.astype(np.float64), terminated, truncated, self._info(success)

    def render(self) -> np.ndarray | None:
        """uint8 [N, H, W, 3], the current frames (the same as ``obs["pixels"]``)."""
        if self.render_mode is None:
            gym.logger.warn("render() called with render_mode=None")
            return None
        return render_dots(self.pos, self.geometry, self.image_size)

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
        self.goal_pixels[rows] = render_dots(goal, self.geometry, self.image_size)
        self.steps[rows] = 0

    def _given_states(self, name: str, value) -> np.ndarray:
        """[N, 2] from a user-given state of shape [2] (all rows) or [N, 2]."""
        arr = np.asarray(value, np.float64)
        if arr.shape not in ((2,), (self.num_envs, 2)) or not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} must be a finite array of shape (2,) or ({self.num_envs}, 2), got {arr.shape}")
        return np.broadcast_to(arr, (self.num_envs, 2))

    def _obs(self) -> dict[str, np.ndarray]:
        return {"pixels": render_dots(self.pos, self.geometry, self.image_size), "proprio": self.pos.astype(np.float32)}

    def _info(self, success: np.ndarray | None = None) -> dict[str, np.ndarray]:
        if success is None:
            success = goal_reached(self.pos, self.goal)
        return {"state": self.pos.copy(), "goal": self.goal.copy(), "is_success": success}
