"""PushT with DINO-WM semantics on gym-pusht's pymunk physics.

gym-pusht supplies the physics (space, walls, T block, kinematic agent, the 10 Hz PD control
loop with 100 Hz sub-steps) and the coverage metric; this module only changes what DINO-WM
changes:

* action: relative, in [-1, 1]^2; the PD target is ``agent_xy + 100 * a`` (clipped to the
  workspace inside the walls), tracked for one control step;
* state (7): ``[agent_x, agent_y, block_x, block_y, block_angle, agent_vx, agent_vy]``, with the
  angle in [0, 2π); proprio (4): ``[agent_x, agent_y, agent_vx, agent_vy]``;
* pixels: 64 x 64 RGB with no goal T drawn (the goal is given as ``goal_pixels``);
* goal: the state reached by 25 steps of the "random" collection policy from the start;
* success: agent and block both within 20 px of the goal and the block angle within π/9.
  gym-pusht's coverage of the goal T is reported as ``info["coverage"]``.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # keep pygame's banner out of logs
import pygame  # noqa: E402
import pymunk  # noqa: E402
from gym_pusht.envs.pusht import PushTEnv as GymPushTEnv  # noqa: E402
from gym_pusht.envs.pymunk_override import DrawOptions  # noqa: E402
from shapely.geometry import box  # noqa: E402
from shapely.geometry.polygon import orient  # noqa: E402
from shapely.ops import unary_union  # noqa: E402

from .goal_env import GoalImageEnv  # noqa: E402
from .geometry import wrap_angle
from .policies import CorrelatedRandomPolicy, Policy  # noqa: E402

WORKSPACE = 512.0
AGENT_RADIUS = 15.0
#: PD targets stay where the whole agent is inside gym-pusht's walls (segments at 5 and 506 px,
#: radius 2). The agent is kinematic and walls do not stop it, so a target on the border would
#: park it half outside the image.
TARGET_LOW, TARGET_HIGH = 5.0 + 2.0 + AGENT_RADIUS, 506.0 - 2.0 - AGENT_RADIUS
#: Pixels of PD-target offset per unit of action (DINO-WM's relative-action scale).
ACTION_SCALE = 100.0
#: Random-policy steps from the start state to the goal state (DINO-WM's PushT eval protocol).
GOAL_STEPS = 25
POS_TOLERANCE = 20.0
ANGLE_TOLERANCE = np.pi / 9


def _tee_geometry() -> tuple[np.ndarray, np.ndarray]:
    """gym-pusht's T in its body frame: per-rectangle (min_xy, max_xy) [2, 2, 2] and centre of gravity [2].

    Read off a throwaway gym-pusht T so the policies' geometry cannot drift from the physics.
    """
    body, shapes = GymPushTEnv.add_tee(pymunk.Space(), (0, 0), 0)
    rects = [np.array([tuple(v) for v in shape.get_vertices()]) for shape in shapes]
    return np.array([[r.min(axis=0), r.max(axis=0)] for r in rects]), np.array(body.center_of_gravity)


TEE_RECTS, TEE_COG = _tee_geometry()


def _tee_outline(spacing: float = 10.0, inset: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """Points along the T's outer outline [N, 2] and their outward normals [N, 2], in the body frame.

    These are the places a pusher can touch; corners are skipped (``inset``) because a
    round pusher slips off them.
    """
    outline = orient(unary_union([box(*lo, *hi) for lo, hi in TEE_RECTS]), sign=1.0)
    corners = np.array(outline.exterior.coords)  # closed, counter-clockwise ring
    points, normals = [], []
    for a, b in zip(corners[:-1], corners[1:]):
        length = float(np.linalg.norm(b - a))
        steps = np.linspace(inset, length - inset, int((length - 2 * inset) // spacing) + 2)
        points += [a + (b - a) * t / length for t in steps]
        normals += [np.array([b[1] - a[1], a[0] - b[0]]) / length] * len(steps)
    return np.array(points), np.array(normals)


TEE_OUTLINE = _tee_outline()


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def block_to_world(state: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Points [..., 2] in the T's body frame -> workspace coordinates, for block pose ``state[2:5]``."""
    return state[2:4] + np.asarray(local) @ _rotation(state[4]).T


def tee_distance(state: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Distance [...] from workspace points to the T (0 inside), for block pose ``state[2:5]``."""
    local = (np.asarray(points) - state[2:4]) @ _rotation(state[4])
    lo, hi = TEE_RECTS[:, 0], TEE_RECTS[:, 1]  # [2 rects, 2]
    gap = np.maximum(np.maximum(lo - local[..., None, :], local[..., None, :] - hi), 0.0)
    return np.linalg.norm(gap, axis=-1).min(axis=-1)


class _PushTPhysics(GymPushTEnv):
    """gym-pusht's physics with an exact state setter and a drawing without the goal T."""

    def __init__(self):
        super().__init__(obs_type="state", render_mode="rgb_array")
        self._setup()

    def _set_state(self, state) -> None:
        """Place agent (and, with 7 numbers, its velocity) and block exactly, without a physics step.

        The space is rebuilt so no contact impulses cached from earlier steps leak into the
        next one (otherwise the same state could step differently). The angle is set before
        the position because pymunk rotates about the centre of gravity, which moves the
        body origin; gym-pusht keeps the other (legacy) order, which misplaces the block.
        """
        state = np.asarray(state, np.float64)
        self._setup()
        self.agent.position = tuple(state[0:2])
        self.agent.velocity = tuple(state[5:7]) if state.size >= 7 else (0.0, 0.0)
        self.block.angle = float(state[4])
        self.block.position = tuple(state[2:4])
        for body in (self.agent, self.block):
            self.space.reindex_shapes_for_body(body)  # refresh the shapes drawn and collided
        self._last_action = None

    def _draw(self) -> pygame.Surface:
        """gym-pusht's drawing minus the goal T: the goal must not leak into observations."""
        screen = pygame.Surface((int(WORKSPACE), int(WORKSPACE)))
        screen.fill((255, 255, 255))
        self.space.debug_draw(DrawOptions(screen))
        return screen


class PushTEnv(GoalImageEnv):
    """Push the T block to a goal pose with a circular pusher (DINO-WM's PushT)."""

    proprio_dim = 4
    state_dim = 7

    def __init__(self, image_size: int = 64, render_mode: str | None = "rgb_array"):
        super().__init__(action_low=[-1.0, -1.0], action_high=[1.0, 1.0], image_size=image_size, render_mode=render_mode)
        self._sim = _PushTPhysics()
        self._coverage: float | None = None

    @property
    def last_target(self) -> np.ndarray | None:
        """The PD target (workspace px) commanded by the last step; None right after a reset."""
        target = self._sim._last_action
        return None if target is None else np.array(target, np.float64)

    # ----- GoalImageEnv hooks --------------------------------------------------------------
    def _sample_start_goal(self) -> tuple[np.ndarray, np.ndarray]:
        self._sim.np_random = self.np_random  # gym-pusht's start distribution, from our seeded generator
        self._sim.reset()
        start = self._get_state()
        policy = self.policies["random"](self, self.np_random)
        # The policy sees state only: rendering 25 throwaway frames would double the reset cost.
        obs, info = {"proprio": self._get_proprio()}, {"state": start}
        policy.reset(obs, info)
        for _ in range(GOAL_STEPS):
            self._apply_action(policy(obs, info))
            obs, info = {"proprio": self._get_proprio()}, {"state": self._get_state()}
        return start, info["state"]

    def _set_state(self, state: np.ndarray) -> None:
        self._sim._set_state(state)
        self._sim.goal_pose = self.goal[2:5].copy()  # gym-pusht's coverage is measured against our goal
        self._coverage = None

    def _get_state(self) -> np.ndarray:
        agent, block = self._sim.agent, self._sim.block
        return np.array([*agent.position, *block.position, block.angle % (2 * np.pi), *agent.velocity], np.float64)

    def _get_proprio(self) -> np.ndarray:
        agent = self._sim.agent
        return np.array([*agent.position, *agent.velocity], np.float32)

    def _render_pixels(self) -> np.ndarray:
        # Area-averaging 512 -> 64 keeps the thin agent and T edges; gym-pusht's bilinear resize aliases them.
        small = pygame.transform.smoothscale(self._sim._draw(), (self.image_size, self.image_size))
        return np.frombuffer(pygame.image.tobytes(small, "RGB"), np.uint8).reshape(self.image_size, self.image_size, 3).copy()

    def _apply_action(self, action: np.ndarray) -> None:
        target = np.clip(np.array(self._sim.agent.position) + ACTION_SCALE * action.astype(np.float64), TARGET_LOW, TARGET_HIGH)
        *_, info = self._sim.step(target)
        self._coverage = float(info["coverage"])  # gym-pusht computes it anyway; reuse it for our info

    def _is_success(self, state: np.ndarray, goal: np.ndarray) -> bool:
        agent_ok = np.linalg.norm(state[0:2] - goal[0:2]) < POS_TOLERANCE
        block_ok = np.linalg.norm(state[2:4] - goal[2:4]) < POS_TOLERANCE
        angle_ok = abs(wrap_angle(state[4] - goal[4])) < ANGLE_TOLERANCE
        return bool(agent_ok and block_ok and angle_ok)

    def _extra_info(self) -> dict[str, Any]:
        if self._coverage is None:
            self._coverage = float(self._sim._get_coverage())
        return {"coverage": self._coverage}


# ----- data-collection policies --------------------------------------------------------------
def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v)
    return v / n if n > 1e-9 else np.zeros_like(v)


def _perp(v: np.ndarray) -> np.ndarray:
    """v rotated by +90° (in the same sense as a positive block angle)."""
    return np.array([-v[1], v[0]])


class BlockBiasedRandomPolicy(CorrelatedRandomPolicy):
    """Correlated random actions that, part of the time, steer at a random point on or near the T.

    Pure random motion in a 512 px arena rarely touches the block, so a world model trained
    on it never sees contact. Segments of random length either wander or chase an aim point
    fixed in the T's own frame, which keeps pushing the block as it moves.
    """

    push_prob = 0.6  # chance that a new segment chases the block
    switch_prob = 0.15  # per-step chance to start a new segment (mean length ~7 steps)
    aim_spread = 35.0  # px, spread of the aim point around the T's centre of gravity
    noise_weight = 0.35  # how much correlated noise is mixed into a chase

    def reset(self, obs, info):
        super().reset(obs, info)
        self._new_segment()

    def _new_segment(self) -> None:
        self.chasing = bool(self.rng.random() < self.push_prob)
        self.aim_local = TEE_COG + self.rng.normal(0.0, self.aim_spread, size=2)

    def __call__(self, obs, info):
        if self.rng.random() < self.switch_prob:
            self._new_segment()
        noise = super().__call__(obs, info)
        if not self.chasing:
            return noise
        state = info["state"]
        steer = (block_to_world(state, self.aim_local) - state[0:2]) / ACTION_SCALE
        return np.clip(steer + self.noise_weight * noise, self.low, self.high).astype(np.float32)


class NoisyExpertPolicy(Policy):
    """Scripted pusher: push the T where that best moves it toward its goal pose, then park the agent.

    Each step scores points on the T's outline by how far a push into the T there would
    carry that point toward where it sits in the goal pose (so one rule handles both
    translation and rotation), lines up behind the best point and pushes. Once the T is in
    place the agent goes around it to the goal agent position. Correlated noise keeps the
    data diverse: this is a data source, not a strong controller.
    """

    noise_sigma = 0.1  # over 60 episodes 0.08 gave ~65% success, 0.15 ~50%: diversity vs success
    noise_rho = 0.7
    push_speed = 0.4  # action magnitude while pushing: slow pushes keep the T controllable
    clearance = AGENT_RADIUS + 8.0  # px from the T's outline to the agent centre when lining up
    orbit_radius = 105.0  # px around the T's centre when going around it (the T reaches ~77 px)
    max_push_angle = np.deg2rad(50)  # pushes further than this from the inward normal just slide

    def reset(self, obs, info):
        self.noise = np.zeros_like(self.low)
        self.point: int | None = None  # index into TEE_OUTLINE of the point being pushed
        self.parking = False

    def __call__(self, obs, info):
        action = self._plan(info["state"], info["goal"])
        eps = self.rng.normal(0.0, self.noise_sigma, size=self.low.shape)
        self.noise = self.noise_rho * self.noise + np.sqrt(1 - self.noise_rho**2) * eps
        return np.clip(action + self.noise, self.low, self.high).astype(np.float32)

    def _plan(self, state: np.ndarray, goal: np.ndarray) -> np.ndarray:
        pos_err = np.linalg.norm(goal[2:4] - state[2:4])
        angle_err = abs(float(wrap_angle(goal[4] - state[4])))
        # Hysteresis: start parking well inside the success tolerance, keep parking while inside it.
        margin = (3.0, 0.05) if self.parking else (10.0, 0.2)
        self.parking = pos_err < POS_TOLERANCE - margin[0] and angle_err < ANGLE_TOLERANCE - margin[1]
        if self.parking:
            self.point = None
            return self._go_to(state, goal[0:2])

        local_points, local_normals = TEE_OUTLINE
        points, goal_points = block_to_world(state, local_points), block_to_world(goal, local_points)
        normals = local_normals @ _rotation(state[4]).T
        errors = goal_points - points
        unit_errors = errors / np.maximum(np.linalg.norm(errors, axis=1, keepdims=True), 1e-9)
        directions = unit_errors - normals  # halfway between the error and straight into the T
        directions /= np.maximum(np.linalg.norm(directions, axis=1, keepdims=True), 1e-9)
        pushable = np.einsum("ij,ij->i", directions, -normals) > np.cos(self.max_push_angle)
        gains = np.where(pushable, np.einsum("ij,ij->i", errors, directions), -np.inf)
        best = int(np.argmax(gains))
        if self.point is None or gains[self.point] < 0.7 * gains[best]:  # stick to a point unless much worse
            self.point = best

        point, direction = points[self.point], directions[self.point]
        rel = state[0:2] - point
        along, lateral = rel @ direction, rel @ _perp(direction)
        if -(self.clearance + 20) < along < 5 and abs(lateral) < 10:
            # Lined up behind the point: push through it, correcting sideways drift.
            return self.push_speed * direction - 0.5 * lateral * _perp(direction) / ACTION_SCALE
        return self._go_to(state, point - self.clearance * direction)

    def _go_to(self, state: np.ndarray, dest: np.ndarray) -> np.ndarray:
        """Head for ``dest``, circling the T when the straight path would hit it."""
        agent = state[0:2]
        path = agent + np.linspace(0.0, 1.0, 12)[:, None] * (dest - agent)
        gaps = tee_distance(state, path)
        # Blocked if the path cuts into the T deeper than the agent at dest would (dest may touch it).
        if gaps.min() >= min(AGENT_RADIUS + 2, gaps[-1]) - 1:
            return np.clip((dest - agent) / ACTION_SCALE, -1, 1)
        cog = block_to_world(state, TEE_COG)
        from_cog, to_dest = agent - cog, dest - cog
        side = np.sign(from_cog[0] * to_dest[1] - from_cog[1] * to_dest[0]) or 1.0  # turn the short way round
        waypoint = cog + self.orbit_radius * (_rotation(side * np.pi / 4) @ _unit(from_cog))
        return np.clip((waypoint - agent) / ACTION_SCALE, -1, 1)


PushTEnv.policies = {"random": BlockBiasedRandomPolicy, "noisy-expert": NoisyExpertPolicy}
