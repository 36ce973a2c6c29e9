"""PointMaze U-maze: the gymnasium-robotics MuJoCo ball-in-a-maze, seen from a fixed camera above.

The physics is gymnasium-robotics' ``PointMaze_UMaze-v3`` unchanged (a force-actuated ball,
``dt = 0.01`` s per step, velocity clipped to ±5 m/s before every step); this module only
replaces its goal sampling, success test and rendering with the DINO-WM protocol:

* state = proprio = ``[x, y, vx, vy]`` (MuJoCo world coordinates, metres and m/s);
* start and goal are drawn uniformly over the free cells of the maze (a continuous position
  inside the cell, at least :data:`WALL_CLEARANCE` away from every wall), each with a
  velocity uniform in ``[-5, 5]²``; a start already within the success radius of the goal
  is redrawn;
* action = force in ``[-1, 1]²`` (gear 100 in the model);
* success = ``‖xy − goal_xy‖ < 0.5``.

Pixels come from one orthographic top-down camera that frames the whole U-maze; the red goal
sphere of gymnasium-robotics is made fully transparent, so observations never show the goal.

Maze geometry (U_MAZE, cell size 1 m, x to the right, y up in the image)::

    row 0   # # # # #        free cells (row, col): (1,1) (1,2) (1,3)
    row 1   # . . . #                               (2,3)
    row 2   # # # . #                               (3,1) (3,2) (3,3)
    row 3   # . . . #        cell (row, col) has centre x = col - 2, y = 2 - row
    row 4   # # # # #
"""
from __future__ import annotations

import contextlib
import io
import math
import sys
from collections import deque

import mujoco
import numpy as np

from .goal_env import GoalImageEnv
from .mujoco_cleanup import close_at_exit
from .policies import CorrelatedRandomPolicy, Policy

#: DINO-WM success radius on the ball position (metres).
SUCCESS_RADIUS = 0.5
#: The underlying env clips the ball velocity to ±MAX_SPEED before each step.
MAX_SPEED = 5.0
#: Sampled starts/goals keep the ball centre this far from every wall (the drawn ball has
#: radius 0.2, the collision sphere 0.1), so sampled frames never show the ball inside a wall.
WALL_CLEARANCE = 0.2
#: Width (= height) of the square the top-down camera shows, in metres; the maze is 5 x 5, so
#: this keeps all free space plus 0.3 m of the outer walls.
VIEW_EXTENT = 4.6


def _load_robotics_pointmaze():
    """Import gymnasium-robotics quietly (its import prints an unrelated Adroit notice)."""
    if "gymnasium_robotics" in sys.modules:
        from gymnasium_robotics.envs.maze.maps import U_MAZE
        from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv as RoboticsPointMaze
    else:
        with contextlib.redirect_stderr(io.StringIO()):
            from gymnasium_robotics.envs.maze.maps import U_MAZE
            from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv as RoboticsPointMaze
    return RoboticsPointMaze, U_MAZE


class PointMazeEnv(GoalImageEnv):
    """Goal-image PointMaze on the U-maze; see the module docstring for the protocol."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 100}
    proprio_dim = 4
    state_dim = 4
    policies: dict = {}  # filled at the bottom of this module

    def __init__(self, image_size: int = 64, render_mode: str | None = "rgb_array", random_start_velocity: bool = True):
        RoboticsPointMaze, u_maze = _load_robotics_pointmaze()
        # continuing_task=False: the robotics env never moves its goal by itself; we only use
        # its MuJoCo model/data and its step (velocity clip + force actuation).
        self._robotics = RoboticsPointMaze(maze_map=u_maze, continuing_task=False, render_mode=None)
        self._point = self._robotics.point_env
        self.model: mujoco.MjModel = self._point.model
        self.data: mujoco.MjData = self._point.data
        self.maze = self._robotics.maze
        self.random_start_velocity = bool(random_start_velocity)
        super().__init__(self._point.action_space.low, self._point.action_space.high, image_size, render_mode)

        # Maze layout: 1 = wall, anything else is free.
        self.maze_map = np.array([[1 if c == 1 else 0 for c in row] for row in self.maze.maze_map], dtype=np.int64)
        self.free_cells: list[tuple[int, int]] = [tuple(map(int, rc)) for rc in np.argwhere(self.maze_map == 0)]
        walls = np.argwhere(self.maze_map == 1)
        centers = np.array([self.cell_center(rc) for rc in walls])
        half = self.maze.maze_size_scaling / 2
        self._wall_lo, self._wall_hi = centers - half, centers + half

        # Hide the goal sphere of gymnasium-robotics: alpha 0 geoms/sites are never drawn.
        self.model.site_rgba[self._robotics.target_site_id, 3] = 0.0

        # One renderer and one fixed orthographic top-down camera for the env's lifetime.
        vis = self.model.vis.global_
        vis.offwidth, vis.offheight = max(vis.offwidth, self.image_size), max(vis.offheight, self.image_size)
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(self.model, self.image_size, self.image_size)
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._camera.orthographic = 1
        self._camera.lookat[:] = (0.0, 0.0, 0.0)
        self._camera.elevation = -90.0
        self._camera.azimuth = 90.0  # +x to the right, +y up in the image
        # An orthographic free camera shows 2·distance·tan(fovy/2) metres vertically.
        self._camera.distance = (VIEW_EXTENT / 2) / math.tan(math.radians(self.model.vis.global_.fovy) / 2)
        close_at_exit(self)

    # ----- maze geometry -------------------------------------------------------------------
    def cell_center(self, rowcol) -> np.ndarray:
        """(x, y) of the centre of maze cell (row, col)."""
        return np.asarray(self.maze.cell_rowcol_to_xy(np.asarray(rowcol)), np.float64)

    def cell_of(self, xy) -> tuple[int, int]:
        """The (row, col) of the maze cell that contains point ``xy``."""
        r, c = self.maze.cell_xy_to_rowcol(np.asarray(xy, np.float64))
        return int(r), int(c)

    def is_free(self, rowcol) -> bool:
        r, c = rowcol
        return 0 <= r < self.maze_map.shape[0] and 0 <= c < self.maze_map.shape[1] and self.maze_map[r, c] == 0

    def wall_clearance(self, xy) -> np.ndarray:
        """Distance from point(s) ``xy`` [..., 2] to the nearest wall block (0 inside a wall)."""
        p = np.asarray(xy, np.float64)[..., None, :]
        gap = np.maximum(np.maximum(self._wall_lo - p, p - self._wall_hi), 0.0)
        return np.linalg.norm(gap, axis=-1).min(axis=-1)

    def _sample_position(self) -> np.ndarray:
        cell = self.free_cells[self.np_random.integers(len(self.free_cells))]
        center, half = self.cell_center(cell), self.maze.maze_size_scaling / 2
        while True:
            xy = center + self.np_random.uniform(-half, half, size=2)
            if self.wall_clearance(xy) >= WALL_CLEARANCE:
                return xy

    def _sample_state(self, random_velocity: bool) -> np.ndarray:
        xy = self._sample_position()
        vel = self.np_random.uniform(-MAX_SPEED, MAX_SPEED, size=2) if random_velocity else np.zeros(2)
        return np.concatenate([xy, vel])

    # ----- GoalImageEnv hooks ----------------------------------------------------------------
    def _sample_start_goal(self):
        goal = self._sample_state(True)
        while True:  # a start that already counts as success would end the episode at once
            start = self._sample_state(self.random_start_velocity)
            if not self._is_success(start, goal):
                return start, goal

    def _set_state(self, state):
        state = np.asarray(state, np.float64)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[:] = state[:2]
        self.data.qvel[:] = state[2:4]
        mujoco.mj_forward(self.model, self.data)

    def _get_state(self):
        return np.concatenate([self.data.qpos, self.data.qvel]).astype(np.float64)

    def _get_proprio(self):
        return self._get_state().astype(np.float32)

    def _render_pixels(self):
        if self._renderer is None:
            raise RuntimeError("PointMazeEnv is closed")
        self._renderer.update_scene(self.data, camera=self._camera)
        self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0  # never in view from above
        return self._renderer.render()

    def _apply_action(self, action):
        # The gymnasium-robotics step: clip velocity to ±5, set ctrl, one mj_step of 0.01 s.
        self._point.step(np.asarray(action, np.float64))

    def _is_success(self, state, goal):
        return bool(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal)[:2]) < SUCCESS_RADIUS)

    def _extra_info(self):
        return {"distance": float(np.linalg.norm(self.data.qpos[:2] - self.goal[:2]))}

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if getattr(self, "_robotics", None) is not None:
            self._robotics.close()
            self._robotics = None
        super().close()


# ----- collection policies -------------------------------------------------------------------
class PointMazeRandomPolicy(CorrelatedRandomPolicy):
    """Correlated random forces; ρ close to 1 keeps a direction long enough to cross cells."""

    rho = 0.95
    sigma = 1.0


class PointMazeExpertPolicy(Policy):
    """BFS over maze cells to the goal cell, waypoints on the cell borders, a velocity
    controller, plus Gaussian noise.

    Each step: BFS on the 4-connected free cells gives the cell path to the goal cell; the
    borders ("portals") between consecutive path cells are sampled at a few points. The ball
    heads straight for the goal when nothing blocks the way, otherwise for the farthest portal
    it can reach in a straight line (keeping ``los_clearance`` from the walls), at the point
    of that portal that shortens the way to the next one, so it cuts corners. A P controller
    tracks the desired velocity (full speed, slowing before corners and coming to rest at the
    goal, so it stays there when an episode runs on past success); noise is added on top.
    """

    noise_std: float = 0.3
    #: Clearance a straight segment needs from the walls to count as free (collision radius 0.1).
    los_clearance: float = 0.12
    portal_samples: int = 9
    speed: float = MAX_SPEED
    #: Speed at which the ball passes an intermediate waypoint, and the planned deceleration
    #: (full force gives ~24 m/s²).
    corner_speed: float = 2.0
    brake: float = 15.0
    velocity_gain: float = 2.0

    def reset(self, obs, info):
        self._path_cache: dict = {}
        self._portal_cache: dict = {}

    def _cell_path(self, start, goal) -> list[tuple[int, int]]:
        key = (start, goal)
        if key not in self._path_cache:
            env = self.env
            parent = {start: None}
            queue = deque([start])
            while queue:
                cell = queue.popleft()
                if cell == goal:
                    break
                for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                    nxt = (cell[0] + dr, cell[1] + dc)
                    if nxt not in parent and env.is_free(nxt):
                        parent[nxt] = cell
                        queue.append(nxt)
            path, cell = [], goal if goal in parent else start
            while cell is not None:
                path.append(cell)
                cell = parent[cell]
            self._path_cache[key] = path[::-1]
        return self._path_cache[key]

    def _portal(self, a, b) -> np.ndarray:
        """Points [portal_samples, 2] on the border between adjacent cells ``a`` and ``b``."""
        if (a, b) not in self._portal_cache:
            ca, cb = self.env.cell_center(a), self.env.cell_center(b)
            along = np.array([-(cb - ca)[1], (cb - ca)[0]]) / np.linalg.norm(cb - ca)
            half = self.env.maze.maze_size_scaling / 2 - self.los_clearance
            self._portal_cache[(a, b)] = (ca + cb) / 2 + np.linspace(-half, half, self.portal_samples)[:, None] * along
        return self._portal_cache[(a, b)]

    def _visible(self, xy, points) -> np.ndarray:
        """Which of ``points`` [n, 2] the ball at ``xy`` reaches in a straight line."""
        # A ball already pressed against a wall may slide along it: never ask for more room
        # than it has now.
        need = min(self.los_clearance, float(self.env.wall_clearance(xy))) - 1e-9
        steps = np.linspace(0.0, 1.0, 100)[None, :, None]  # ≤ 5 cm apart on a 5 m segment
        segments = xy + steps * (points[:, None, :] - xy)
        return np.all(self.env.wall_clearance(segments) >= need, axis=1)

    def target(self, xy, goal_xy) -> tuple[np.ndarray, bool]:
        """The point to head for and whether it is the goal itself."""
        env = self.env
        xy, goal_xy = np.asarray(xy, np.float64), np.asarray(goal_xy, np.float64)
        here, there = env.cell_of(xy), env.cell_of(goal_xy)
        if not env.is_free(here):  # numerically inside a wall: head for the nearest free cell
            here = min(env.free_cells, key=lambda c: np.linalg.norm(env.cell_center(c) - xy))
        cells = self._cell_path(here, there)
        portals = [self._portal(cells[i], cells[i + 1]) for i in range(len(cells) - 1)]
        visible = self._visible(xy, np.concatenate([goal_xy[None], *portals]))
        if visible[0]:
            return goal_xy, True
        visible = visible[1:].reshape(len(portals), self.portal_samples)
        for i in range(len(portals) - 1, -1, -1):  # farthest reachable portal first
            if visible[i].any():
                after = goal_xy if i == len(portals) - 1 else portals[i + 1].mean(axis=0)
                points = portals[i][visible[i]]
                cost = np.linalg.norm(points - xy, axis=1) + np.linalg.norm(after - points, axis=1)
                return points[np.argmin(cost)], False
        return (portals[0].mean(axis=0), False) if portals else (goal_xy, True)

    def __call__(self, obs, info):
        state, goal = info["state"], info["goal"]
        xy, vel = state[:2], state[2:4]
        wp, is_goal = self.target(xy, goal[:2])
        delta = wp - xy
        dist = float(np.linalg.norm(delta))
        # Arrive at the goal at rest (collection runs whole episodes past success) and pass
        # intermediate waypoints at corner speed.
        arrive = 0.0 if is_goal else self.corner_speed
        speed = min(self.speed, math.sqrt(arrive**2 + 2 * self.brake * dist))
        v_des = delta / max(dist, 1e-6) * speed
        action = self.velocity_gain * (v_des - vel) + self.rng.normal(0.0, self.noise_std, size=2)
        return np.clip(action, self.low, self.high).astype(np.float32)


PointMazeEnv.policies = {"random": PointMazeRandomPolicy, "noisy-expert": PointMazeExpertPolicy}
