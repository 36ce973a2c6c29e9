"""DeepMind Control Suite reacher-easy and point_mass-easy as goal-image envs.

The physics and the control step are dm_control's own (``suite.load(domain, task)``, one
``env.step`` = 0.02 s, actions in the dm_control action spec ``[-1, 1]²``). This module only
replaces how the episode starts and what counts as success:

* **reacher** — the goal is a random arm configuration (shoulder uniform in ``[-π, π)``, wrist
  uniform in its ±160° range) whose fingertip lies in dm_control's own target annulus
  (0.05–0.20 m from the base); the target sphere is put at that fingertip, so ``goal_pixels``
  shows the arm reaching it. The start is another random configuration at rest.
  Success = dm_control's "at target": finger-to-target distance ≤ target radius + finger
  radius (0.05 + 0.01).
* **point_mass** — goal and start are uniform in the arena (the slide-joint range, 2 cm
  inside it), the start within ``max_goal_distance`` of the goal (default 0.15 m: the mass
  is slow, terminal speed 0.1 m/s, so farther goals cannot be reached in a 100-step episode).
  The target sphere moves to the goal. Success = dm_control's "at target": mass-to-target
  distance ≤ target radius (0.015).
* In both, starts that already satisfy success are redrawn.
* ``standard_task=True``: dm_control's own task episode instead (the ``task`` budget, 1,000 steps):
  the start and the target are drawn by the suite's own ``initialize_episode`` (reacher: random arm,
  target at angle U[0, 2π), radius U[0.05, 0.20]; point_mass: mass uniform over the whole arena,
  target fixed at the centre), nothing redrawn. The goal image shows the body at the target:
  point_mass the mass at rest on it; reacher the arm, at rest, in the joint angles that put the
  fingertip on it (two-link inverse kinematics; of the two elbow solutions, the one nearer the
  start in joint space).
* ``info["task_reward"]``: dm_control's own reward for the step (``task.get_reward``), whose sum
  over a task episode is the return the suite's benchmarks report.

State = ``[qpos (2), qvel (2), target_xy (2)]``; proprio = ``[qpos, qvel]``.

Pixels: dm_control's top-down ``fixed`` camera, which frames the whole 0.6 x 0.6 m arena. The
target sphere is never drawn (it would show the goal). At 64 x 64 a pixel is ~1 cm, so the
bodies are drawn thicker than their collision size (the point mass at 2.5 cm radius instead of
1 cm, the arm links at 1.8 cm instead of 1 cm, the fingertip at 2.2 cm): both models disable
contacts and have compiled inertias, and the sizes are swapped in only while the scene is
built, so physics, rewards and success are untouched. Pass ``thick_bodies=False`` for the
stock look.
"""
from __future__ import annotations

import math

import mujoco
import numpy as np

from .goal_env import GoalImageEnv
from .geometry import wrap_angle
from .mujoco_cleanup import close_at_exit
from .policies import CorrelatedRandomPolicy, Policy

SUPPORTED = (("reacher", "easy"), ("point_mass", "easy"))
#: Geom radii used only while drawing (see the module docstring).
RENDER_RADII = {
    "reacher": {"arm": 0.018, "hand": 0.018, "finger": 0.022},
    "point_mass": {"pointmass": 0.025},
}
#: dm_control reacher draws its targets 0.05-0.20 m from the base; our goals keep to that annulus.
REACHER_TARGET_RADII = (0.05, 0.20)
#: Hidden geom group (dm_control and MuJoCo draw groups 0-2 by default).
_HIDDEN_GROUP = 5

class DMCEnv(GoalImageEnv):
    """Goal-image dm_control env; ``domain`` in {"reacher", "point_mass"}, ``task`` "easy"."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}
    policies: dict = {}  # filled at the bottom of this module

    def __init__(
        self,
        domain: str = "reacher",
        task: str = "easy",
        image_size: int = 64,
        render_mode: str | None = "rgb_array",
        camera: str = "fixed",
        seed: int = 0,
        max_goal_distance: float | None = 0.15,
        thick_bodies: bool = True,
        standard_task: bool = False,
    ):
        if (domain, task) not in SUPPORTED:
            raise ValueError(f"unsupported dm_control task {domain}-{task}; expected one of: {', '.join(f'{d}-{t}' for d, t in SUPPORTED)}")
        from dm_control import suite

        self.domain, self.task = domain, task
        self.proprio_dim, self.state_dim = 4, 6
        # No time limit: episodes are cut by the Gymnasium TimeLimit, and dm_control must never
        # auto-reset (re-randomise) the physics under us after its own 1000 steps.
        self._env = suite.load(domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
        self._env.reset()  # initialise the task once (target size etc.); we set states ourselves
        self.physics = self._env.physics
        spec = self._env.action_spec()
        super().__init__(spec.minimum, spec.maximum, image_size, render_mode)

        model = self.physics.model.ptr
        self._geom = {name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name) for name in ("target", "finger", "pointmass")}
        self._target = self._geom["target"]
        size = self.physics.named.model.geom_size
        if domain == "reacher":
            # dm_control Reacher.get_reward: "at target" iff finger_to_target_dist <= target + finger radius.
            self.success_radius = float(size["target", 0] + size["finger", 0])
            self.link_lengths = (float(self.physics.named.model.body_pos["hand", "x"]), float(self.physics.named.model.body_pos["finger", "x"]))
            self.wrist_range = tuple(float(v) for v in self.physics.named.model.jnt_range["wrist"])
        else:
            # dm_control PointMass.get_reward: "at target" iff mass_to_target_dist <= target radius.
            self.success_radius = float(size["target", 0])
            lo, hi = self.physics.named.model.jnt_range["root_x"]
            self.arena = (float(lo) + 0.02, float(hi) - 0.02)
        self.max_goal_distance = max_goal_distance
        self.standard_task = bool(standard_task)

        # Rendering: one renderer, dm_control's camera, visual-only tweaks swapped in per frame.
        model.vis.quality.shadowsize = 512  # 2048 by default: 3x slower at 64 px, same image
        vis = model.vis.global_
        vis.offwidth, vis.offheight = max(vis.offwidth, self.image_size), max(vis.offheight, self.image_size)
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(model, self.image_size, self.image_size)
        self._camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        if self._camera_id < 0:
            raise ValueError(f"{domain} has no camera {camera!r}")
        radii = RENDER_RADII[domain] if thick_bodies else {}
        self._render_radii = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, n): r for n, r in radii.items()}
        close_at_exit(self)

    # ----- geometry ------------------------------------------------------------------------
    def fingertip(self, qpos) -> np.ndarray:
        """Reacher fingertip (x, y) for joint angles ``qpos = [shoulder, wrist]``."""
        q1, q2 = float(qpos[0]), float(qpos[1])
        l1, l2 = self.link_lengths
        return np.array([l1 * math.cos(q1) + l2 * math.cos(q1 + q2), l1 * math.sin(q1) + l2 * math.sin(q1 + q2)])

    def effector_xy(self, state) -> np.ndarray:
        """The point that must reach the target: fingertip (reacher) or mass (point_mass)."""
        state = np.asarray(state, np.float64)
        return self.fingertip(state[:2]) if self.domain == "reacher" else state[:2].copy()

    def reach(self, target, near) -> np.ndarray:
        """Reacher joint angles [shoulder, wrist] whose fingertip is at ``target`` (x, y): of the two elbow
        solutions the one nearer ``near`` (joint angles) in joint space, the shoulder difference wrapped."""
        (l1, l2), (x, y) = self.link_lengths, (float(target[0]), float(target[1]))
        cos_wrist = np.clip((x * x + y * y - l1 * l1 - l2 * l2) / (2 * l1 * l2), -1.0, 1.0)
        solutions = []
        for wrist in (math.acos(cos_wrist), -math.acos(cos_wrist)):
            shoulder = wrap_angle(math.atan2(y, x) - math.atan2(l2 * math.sin(wrist), l1 + l2 * math.cos(wrist)))
            solutions.append(np.array([shoulder, wrist]))
        cost = lambda q: abs(wrap_angle(q[0] - near[0])) + abs(q[1] - near[1])  # noqa: E731
        return min(solutions, key=cost)

    def goal_from_state(self, state) -> np.ndarray:
        """A state's own position as the target: a state carries its episode's target in [4:6], which is
        not where that state is, so a state cannot serve as a goal unchanged."""
        goal = np.asarray(state, np.float64).copy()
        goal[4:6] = self.effector_xy(goal)
        return goal

    # ----- sampling --------------------------------------------------------------------------
    def _random_arm(self) -> np.ndarray:
        return np.array([self.np_random.uniform(-np.pi, np.pi), self.np_random.uniform(*self.wrist_range)])

    def _sample_start_goal(self):
        if self.standard_task:
            return self._task_start_goal()
        if self.domain == "reacher":
            lo, hi = REACHER_TARGET_RADII
            while True:
                q_goal = self._random_arm()
                target = self.fingertip(q_goal)
                if lo <= np.linalg.norm(target) <= hi:
                    break
            goal = np.concatenate([q_goal, np.zeros(2), target])
            while True:
                start = np.concatenate([self._random_arm(), np.zeros(2), target])
                if not self._is_success(start, goal):
                    return start, goal
        lo, hi = self.arena
        target = self.np_random.uniform(lo, hi, size=2)
        goal = np.concatenate([target, np.zeros(2), target])
        while True:
            xy = self.np_random.uniform(lo, hi, size=2)
            far = self.max_goal_distance is not None and np.linalg.norm(xy - target) > self.max_goal_distance
            start = np.concatenate([xy, np.zeros(2), target])
            if not far and not self._is_success(start, goal):
                return start, goal

    def _task_start_goal(self):
        """dm_control's own episode start (its ``initialize_episode``, seeded from ours) and the goal state
        that shows its target (see the module docstring)."""
        self._env.task._random = np.random.RandomState(int(self.np_random.integers(2**31)))
        with self.physics.reset_context():
            self._env.task.initialize_episode(self.physics)
        start = self._get_state()
        target = start[4:6]
        q_goal = self.reach(target, start[:2]) if self.domain == "reacher" else target
        return start, np.concatenate([q_goal, np.zeros(2), target])

    # ----- GoalImageEnv hooks ----------------------------------------------------------------
    def _set_state(self, state):
        state = np.asarray(state, np.float64)
        with self.physics.reset_context():  # mj_resetData, then our values, then mj_forward
            self.physics.data.qpos[:] = state[0:2]
            self.physics.data.qvel[:] = state[2:4]
            self.physics.model.geom_pos[self._target, :2] = state[4:6]

    def _get_state(self):
        d = self.physics.data
        return np.concatenate([d.qpos, d.qvel, self.physics.model.geom_pos[self._target, :2]]).astype(np.float64)

    def _get_proprio(self):
        d = self.physics.data
        return np.concatenate([d.qpos, d.qvel]).astype(np.float32)

    def _render_pixels(self):
        if self._renderer is None:
            raise RuntimeError("DMCEnv is closed")
        model = self.physics.model.ptr
        saved_group = int(model.geom_group[self._target])
        saved_radii = {g: float(model.geom_size[g, 0]) for g in self._render_radii}
        try:
            model.geom_group[self._target] = _HIDDEN_GROUP  # no goal marker in observations
            for g, r in self._render_radii.items():
                model.geom_size[g, 0] = r
            self._renderer.update_scene(self.physics.data.ptr, camera=self._camera_id)
        finally:
            model.geom_group[self._target] = saved_group
            for g, r in saved_radii.items():
                model.geom_size[g, 0] = r
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0  # not in view from above
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0  # barely visible, doubles the cost
        return self._renderer.render()

    def _apply_action(self, action):
        self._env.step(np.asarray(action, np.float64))

    def _is_success(self, state, goal):
        goal = np.asarray(goal, np.float64)
        return bool(np.linalg.norm(self.effector_xy(state) - goal[4:6]) <= self.success_radius)

    def _extra_info(self):
        return {"distance": float(np.linalg.norm(self.effector_xy(self._get_state()) - self.goal[4:6])),
                "task_reward": float(self._env.task.get_reward(self.physics))}

    def close(self):
        if getattr(self, "_renderer", None) is not None:
            self._renderer.close()
            self._renderer = None
        super().close()


# ----- collection policies -------------------------------------------------------------------
class DMCRandomPolicy(CorrelatedRandomPolicy):
    """Correlated random torques/forces (dm_control actions are in [-1, 1]²).

    Over a 100-step episode the reacher fingertip travels ~0.8 m; the point mass is slow
    (terminal speed 0.1 m/s) and moves ~0.1 m, which is what full force can do in 2 s.
    """

    rho = 0.95
    sigma = 1.0


class DMCExpertPolicy(Policy):
    """PD control toward the goal plus Gaussian noise.

    reacher: joint-space PD toward the goal angles (shoulder error wrapped to [-π, π)).
    point_mass: Cartesian PD toward the target.
    """

    noise_std: float = 0.3
    gains = {"reacher": (4.0, 0.3), "point_mass": (30.0, 3.0)}

    def __call__(self, obs, info):
        state, goal = info["state"], info["goal"]
        kp, kd = self.gains[self.env.domain]
        if self.env.domain == "reacher":
            err = np.array([wrap_angle(goal[0] - state[0]), goal[1] - state[1]])
        else:
            err = goal[4:6] - state[0:2]
        action = kp * err - kd * state[2:4] + self.rng.normal(0.0, self.noise_std, size=2)
        return np.clip(action, self.low, self.high).astype(np.float32)


DMCEnv.policies = {"random": DMCRandomPolicy, "noisy-expert": DMCExpertPolicy}
