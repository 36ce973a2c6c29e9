"""PointMaze U-maze: a force-actuated MuJoCo ball in a maze, seen from a fixed camera above.

Two versions share this module (:class:`PointMazeProtocol`, chosen by ``version``):

* **v1** (``wm_gym/PointMaze-UMaze-v1``, the default): DINO-WM's PointMaze parameter by parameter
  (``env/pointmaze/`` in its public code). The physics is **our build of D4RL's maze2d MuJoCo
  model** (:func:`d4rl_maze_xml`), because gymnasium-robotics' model puts the maze in another
  coordinate frame (see below). Each env step clips the ball velocity to ±5 once and then takes
  5 MuJoCo substeps of 0.01 s (D4RL's ``frame_skip=5``: 0.05 s per step). Start and goal are
  drawn exactly as DINO-WM's evaluation draws them: independently, each a position uniform over
  the free space kept 0.2 from every wall along each axis (rejection sampling from
  ``[0.5, 3.1]²``) plus a
  velocity uniform in ``[-5.2262554, 5.2262554]²``, from ``np.random.RandomState(seed)``, so
  ``reset(seed=s)`` gives the start/goal pair DINO-WM evaluates with seed ``s`` (its 50 pairs use
  ``s = 99·n + 1``). A start may already lie within the success radius of the goal, as in
  DINO-WM. **The one deliberate difference is the view**: an orthographic camera straight down on
  the maze's free space (3.4 m across, so the drawn ball, 0.4 m wide, spans about 7.5 px of a
  64 px image). DINO-WM's own view, mujoco-py's default free camera turned top-down, shows the
  whole arena at 224 px; at 64 px its ball is 2-3 px wide, too small for a 64 px world model to
  track (issue 26). It stays available as the look ``dino-wm-view``.
* **v0** (``wm_gym/PointMaze-UMaze-v0``): wm-gym's first PointMaze, kept unchanged because zoo
  models were trained on it: gymnasium-robotics' ``PointMaze_UMaze-v3`` physics (one 0.01 s
  MuJoCo step per env step, velocity clipped to ±5 before it), start and goal drawn per free
  cell (a cell uniformly, then a point in it ≥ 0.2 from every wall, velocity uniform in
  ``[-5, 5]²``, a start within the success radius of the goal redrawn), an orthographic camera.

Shared by both: state = proprio = ``[x, y, vx, vy]`` (ball joint positions in metres and
velocities in m/s); action = force in ``[-1, 1]²`` (gear 100 on a 4.19 kg ball: ~24 m/s²);
success = ``‖xy − goal_xy‖ < 0.5``; observations never show the goal.

The maze (both versions)::

    row 0   # # # # #        free cells (row, col): (1,1) (1,2) (1,3)
    row 1   # . . . #                               (2,3)
    row 2   # # # . #                               (3,1) (3,2) (3,3)
    row 3   # . . . #
    row 4   # # # # #

Coordinate frames (:class:`MazeFrame`, cells are 1 m):

* v1, D4RL grid coordinates: cell (row, col) has its centre at ``x = row - 0.2, y = col - 0.2``
  (D4RL puts wall (row, col) at world ``(row + 1, col + 1)`` and the ball's body at world
  ``(1.2, 1.2)``, and the state is the joint position). The free cells span ``[0.3, 3.3]``;
  the centre of the 0.1 m collision sphere stays in ``[0.4, 3.2]``.
  In the image x grows to the right and y downwards, so the free space reads as a "U".
* v0, gymnasium-robotics: the maze centred on the origin, cell (row, col) at
  ``x = col - 2, y = 2 - row``; x to the right, y up in the image.

The two frames differ by a rotation of 90° and a shift (and the walls' z-span: D4RL
[-0.2, 0.2], gymnasium-robotics [0, 0.4]); otherwise the two MuJoCo models agree (D4RL's
``point_maze`` and gymnasium-robotics' ``point.xml``: timestep, integrator, mass, damping,
gear, contacts), so v0 and v1 differ in substeps, sampling and camera, not in the ball.
"""
from __future__ import annotations

import contextlib
import io
import math
import sys
from collections import deque
from dataclasses import dataclass

import mujoco
import numpy as np

from .goal_env import GoalImageEnv
from .looks import POINTMAZE_LOOKS
from .mujoco_cleanup import close_at_exit
from .policies import CorrelatedRandomPolicy, Policy

#: DINO-WM success radius on the ball position (metres).
SUCCESS_RADIUS = 0.5
#: Both versions clip the ball velocity to ±MAX_SPEED (per component) at the start of each env step.
MAX_SPEED = 5.0
#: Sampled starts/goals keep the ball centre this far from every wall (the drawn ball has radius
#: 0.2, the collision sphere 0.1). v0 measures it as a Euclidean distance, v1 per axis (DINO-WM's
#: rectangles).
WALL_CLEARANCE = 0.2
#: v0: width (= height) of the square the orthographic camera shows, in metres; the maze is
#: 5 x 5, so this keeps all free space plus 0.3 m of the outer walls.
VIEW_EXTENT = 4.6
#: Side of a maze cell in metres (both versions).
CELL_SIZE = 1.0
#: The U-maze, 1 = wall. gymnasium-robotics' ``U_MAZE`` and D4RL's ``U_MAZE`` string have these cells.
U_MAZE = ((1, 1, 1, 1, 1), (1, 0, 0, 0, 1), (1, 1, 1, 0, 1), (1, 0, 0, 0, 1), (1, 1, 1, 1, 1))


@dataclass(frozen=True)
class MazeFrame:
    """Where maze cell (row, col) lies in state coordinates: ``xy = origin + row·row_axis + col·col_axis``.

    The axes are signed unit vectors along x or y, so the map is a rotation/reflection plus a shift.
    """

    origin: tuple[float, float]
    row_axis: tuple[float, float]
    col_axis: tuple[float, float]

    def cell_center(self, rowcol) -> np.ndarray:
        """(x, y) of the centre of cell ``rowcol`` = (row, col)."""
        r, c = rowcol
        return np.asarray(self.origin) + r * np.asarray(self.row_axis, np.float64) + c * np.asarray(self.col_axis, np.float64)

    def cell_of(self, xy) -> tuple[int, int]:
        """The (row, col) of the cell that contains point ``xy``."""
        d = np.asarray(xy, np.float64) - np.asarray(self.origin)
        return (math.floor(float(d @ np.asarray(self.row_axis)) / CELL_SIZE + 0.5),
                math.floor(float(d @ np.asarray(self.col_axis)) / CELL_SIZE + 0.5))


#: gymnasium-robotics: maze centred on the origin, rows go down (-y), columns go right (+x).
CENTRED_FRAME = MazeFrame(origin=(-2.0, 2.0), row_axis=(0.0, -1.0), col_axis=(1.0, 0.0))
#: D4RL grid coordinates: x is the row, y the column, shifted by D4RL's ball body offset
#: (wall world position ``index + 1`` minus ball body position 1.2, per axis).
D4RL_FRAME = MazeFrame(origin=(-0.2, -0.2), row_axis=(1.0, 0.0), col_axis=(0.0, 1.0))


@dataclass(frozen=True)
class TopDownCamera:
    """A fixed camera looking straight down (azimuth 90°, elevation -90°: +x to the right, +y up)."""

    #: World point at the image centre.
    lookat: tuple[float, float, float]
    #: Orthographic: metres shown across the image. None: a perspective camera (the model's
    #: ``fovy``, 45°) at distance ``model.stat.extent``, as mujoco-py sets up its default camera.
    view_extent: float | None
    #: Flip the image upside down: mujoco-py's ``sim.render`` returns OpenGL's bottom-up rows and
    #: DINO-WM keeps them, so its images show +y downwards.
    flip_rows: bool


@dataclass(frozen=True)
class PointMazeProtocol:
    """Everything that differs between the PointMaze versions; the rest of the module is shared."""

    #: 0 or 1, the ``version`` argument of :class:`PointMazeEnv`.
    version: int
    #: "gymnasium-robotics" (its ``PointMaze_UMaze-v3`` model and step) or "d4rl" (:func:`d4rl_maze_xml`).
    model: str
    #: MuJoCo steps of ``model.opt.timestep`` (0.01 s) per env step, after one velocity clip.
    substeps: int
    #: Maze cells in state coordinates.
    frame: MazeFrame
    #: "per-cell" (v0: cell first, Euclidean clearance, starts that already succeed redrawn) or
    #: "dino-wm" (v1: uniform over the free area, per-axis clearance, independent start and goal).
    sampler: str
    #: Sampled start and goal velocities are uniform in ``[-spawn_speed, spawn_speed]²``.
    spawn_speed: float
    camera: TopDownCamera

    @property
    def dt(self) -> float:
        """Seconds per env step (the MuJoCo timestep of both models is 0.01 s)."""
        return 0.01 * self.substeps


#: wm-gym v0: gymnasium-robotics physics, one substep, per-cell sampling, orthographic view.
POINTMAZE_V0 = PointMazeProtocol(
    version=0, model="gymnasium-robotics", substeps=1, frame=CENTRED_FRAME, sampler="per-cell",
    spawn_speed=MAX_SPEED, camera=TopDownCamera(lookat=(0.0, 0.0, 0.0), view_extent=VIEW_EXTENT, flip_rows=False))
#: v1's view: orthographic, centred on the maze (world (3, 3): the free cells span world
#: [1.5, 4.5]), 3.4 m across (the free space plus 0.2 m of wall on each side), rows flipped
#: like DINO-WM's so that the maze reads the same way up.
CLOSE_VIEW = TopDownCamera(lookat=(3.0, 3.0, 0.0), view_extent=3.4, flip_rows=True)
#: DINO-WM's view: mujoco-py's default free camera (``lookat`` = median geom position, (3, 3, 0)
#: for the U-maze; distance ``stat.extent``; perspective) turned top-down, rows bottom-up.
DINO_WM_VIEW = TopDownCamera(lookat=(3.0, 3.0, 0.0), view_extent=None, flip_rows=True)
#: v1's looks (``look`` option, names in :data:`envs.looks.POINTMAZE_LOOKS`): the camera only;
#: physics, sampling and success never change.
VIEWS: dict[str, TopDownCamera] = {"default": CLOSE_VIEW, "dino-wm-view": DINO_WM_VIEW}
assert tuple(VIEWS) == POINTMAZE_LOOKS
#: DINO-WM: D4RL maze2d physics with ``frame_skip=5`` and DINO-WM's start/goal sampler
#: (``point_maze_wrapper.py``; the speed bound is its ``STATE_RANGES`` for vx, vy); the close view.
POINTMAZE_V1 = PointMazeProtocol(
    version=1, model="d4rl", substeps=5, frame=D4RL_FRAME, sampler="dino-wm",
    spawn_speed=5.2262554, camera=CLOSE_VIEW)
#: The protocol of each ``version``.
PROTOCOLS = {0: POINTMAZE_V0, 1: POINTMAZE_V1}
#: v1: DINO-WM draws x and y uniformly in this range (the free cells span [0.3, 3.3], less the
#: clearance), then rejects points closer than WALL_CLEARANCE, per axis, to a wall.
DINO_WM_SPAWN_RANGE = (0.5, 3.1)


def d4rl_maze_xml(layout=U_MAZE) -> str:
    """MJCF of D4RL's maze2d ``point_maze`` model (DINO-WM ``env/pointmaze/maze_model.py``) for ``layout``.

    Physics: timestep 0.01 s, zero gravity, Euler integrator (damping integrated implicitly),
    20 solver iterations; joints damped 1 and unlimited; geoms of density 1000 (the ball, a
    0.1 m sphere, weighs 4.19 kg), friction (.5 .1 .1), margin 0.002 and frictionless contacts
    (condim 1); two slide joints driven by motors of gear 100 with ctrl in [-1, 1]. Wall (row,
    col) is a 1 x 1 x 0.4 m box at world (row + 1, col + 1, 0); the ball's body sits at world
    (1.2, 1.2, 0), so its joint positions are the D4RL grid coordinates of :data:`D4RL_FRAME`.
    Looks: checker ground, tan walls, the ball drawn as a green 0.2 m site. D4RL's target site is
    left out: DINO-WM moves it out of view every step, and we never draw the goal.
    """
    walls = "\n".join(
        f'    <geom name="wall_{r}_{c}" type="box" material="wall" pos="{r + 1.0} {c + 1.0} 0" size="0.5 0.5 0.2"/>'
        for r, row in enumerate(layout) for c, cell in enumerate(row) if cell == 1)
    return f"""<mujoco model="point_maze">
  <compiler inertiafromgeom="true" angle="radian" coordinate="local"/>
  <option timestep="0.01" gravity="0 0 0" iterations="20" integrator="Euler"/>
  <default>
    <joint damping="1" limited="false"/>
    <geom friction=".5 .1 .1" density="1000" margin="0.002" condim="1" contype="2" conaffinity="1"/>
  </default>
  <asset>
    <texture name="groundplane" type="2d" builtin="checker" rgb1="0.2 0.3 0.4" rgb2="0.1 0.2 0.3" width="100" height="100"/>
    <material name="groundplane" texture="groundplane" texrepeat="20 20"/>
    <material name="wall" rgba=".7 .5 .3 1"/>
  </asset>
  <visual>
    <headlight ambient=".4 .4 .4" diffuse=".8 .8 .8" specular="0.1 0.1 0.1"/>
    <map znear=".01"/>
    <quality shadowsize="2048"/>
  </visual>
  <worldbody>
    <geom name="ground" type="plane" size="40 40 0.25" pos="0 0 -0.1" contype="1" conaffinity="0" material="groundplane"/>
    <body name="particle" pos="1.2 1.2 0">
      <geom name="particle_geom" type="sphere" size="0.1" rgba="0 0 1 0" contype="1"/>
      <site name="particle_site" pos="0 0 0" size="0.2" rgba="0.3 0.6 0.3 1"/>
      <joint name="ball_x" type="slide" pos="0 0 0" axis="1 0 0"/>
      <joint name="ball_y" type="slide" pos="0 0 0" axis="0 1 0"/>
    </body>
{walls}
  </worldbody>
  <actuator>
    <motor joint="ball_x" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
    <motor joint="ball_y" ctrlrange="-1 1" ctrllimited="true" gear="100"/>
  </actuator>
</mujoco>
"""


def _load_robotics_pointmaze():
    """Import gymnasium-robotics quietly (its import prints an unrelated Adroit notice)."""
    if "gymnasium_robotics" not in sys.modules:
        with contextlib.redirect_stderr(io.StringIO()):
            import gymnasium_robotics.envs.maze.point_maze  # noqa: F401
    from gymnasium_robotics.envs.maze.point_maze import PointMazeEnv as RoboticsPointMaze
    return RoboticsPointMaze


class PointMazeEnv(GoalImageEnv):
    """Goal-image PointMaze on the U-maze; see the module docstring for both versions' protocol.

    Seeding: v0 draws starts and goals from ``self.np_random``. v1 draws each pair from
    ``np.random.RandomState(seed % 2**32)``, with ``seed`` the one given to ``reset`` or else
    a number drawn from ``self.np_random``, so seeded resets reproduce DINO-WM's pairs and
    unseeded ones continue deterministically.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}
    proprio_dim = 4
    state_dim = 4
    policies: dict = {}  # filled at the bottom of this module

    def __init__(self, image_size: int = 64, render_mode: str | None = "rgb_array", random_start_velocity: bool = True,
                 version: int = 1, look: str | None = None):
        if version not in PROTOCOLS:
            raise ValueError(f"version must be one of {sorted(PROTOCOLS)}, got {version!r}")
        self.protocol = PROTOCOLS[version]
        if look not in (None, "default") and (version != 1 or look not in VIEWS):
            choices = ", ".join(VIEWS) if version == 1 else "none (v0 has one look)"
            raise ValueError(f"unknown PointMaze-v{version} look {look!r}; choose one of {choices}")
        self.look = look or "default"
        self.camera = VIEWS[self.look] if version == 1 else self.protocol.camera
        self.version = int(version)
        self.frame = self.protocol.frame
        self.random_start_velocity = bool(random_start_velocity)
        self._robotics = None
        if self.protocol.model == "gymnasium-robotics":
            # continuing_task=False: the robotics env never moves its goal by itself; we only use
            # its MuJoCo model/data and its point step (velocity clip + force actuation).
            robotics_env = _load_robotics_pointmaze()
            self._robotics = robotics_env(maze_map=[list(r) for r in U_MAZE], continuing_task=False, render_mode=None)
            point = self._robotics.point_env
            self.model: mujoco.MjModel = point.model
            self.data: mujoco.MjData = point.data
            action_low, action_high = point.action_space.low, point.action_space.high
            # Hide the goal sphere of gymnasium-robotics: alpha 0 geoms/sites are never drawn.
            self.model.site_rgba[self._robotics.target_site_id, 3] = 0.0
        else:
            self.model = mujoco.MjModel.from_xml_string(d4rl_maze_xml(U_MAZE))
            self.data = mujoco.MjData(self.model)
            action_low, action_high = self.model.actuator_ctrlrange.T
        super().__init__(action_low, action_high, image_size, render_mode)
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.protocol.dt)}
        self._reset_seed: int | None = None

        # Maze layout: 1 = wall, 0 = free.
        self.maze_map = np.array(U_MAZE, dtype=np.int64)
        self.free_cells: list[tuple[int, int]] = [tuple(map(int, rc)) for rc in np.argwhere(self.maze_map == 0)]
        centers = np.array([self.cell_center(rc) for rc in np.argwhere(self.maze_map == 1)])
        self._wall_lo, self._wall_hi = centers - CELL_SIZE / 2, centers + CELL_SIZE / 2

        # One renderer and one fixed top-down camera for the env's lifetime.
        vis = self.model.vis.global_
        vis.offwidth, vis.offheight = max(vis.offwidth, self.image_size), max(vis.offheight, self.image_size)
        self._renderer: mujoco.Renderer | None = mujoco.Renderer(self.model, self.image_size, self.image_size)
        cam = self.camera
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FREE
        self._camera.lookat[:] = cam.lookat
        self._camera.elevation = -90.0
        self._camera.azimuth = 90.0  # +x to the right, +y up in the rendered frame
        if cam.view_extent is None:
            self._camera.distance = self.model.stat.extent
        else:
            # An orthographic free camera shows 2·distance·tan(fovy/2) metres vertically.
            self._camera.orthographic = 1
            self._camera.distance = (cam.view_extent / 2) / math.tan(math.radians(self.model.vis.global_.fovy) / 2)
        close_at_exit(self)

    # ----- maze geometry -------------------------------------------------------------------
    def cell_center(self, rowcol) -> np.ndarray:
        """(x, y) of the centre of maze cell (row, col)."""
        return self.frame.cell_center(rowcol)

    def cell_of(self, xy) -> tuple[int, int]:
        """The (row, col) of the maze cell that contains point ``xy``."""
        return self.frame.cell_of(xy)

    def is_free(self, rowcol) -> bool:
        r, c = rowcol
        return 0 <= r < self.maze_map.shape[0] and 0 <= c < self.maze_map.shape[1] and self.maze_map[r, c] == 0

    def _wall_gaps(self, xy) -> np.ndarray:
        """Per-axis gap [..., walls, 2] from point(s) ``xy`` [..., 2] to each wall block (0 inside)."""
        p = np.asarray(xy, np.float64)[..., None, :]
        return np.maximum(np.maximum(self._wall_lo - p, p - self._wall_hi), 0.0)

    def wall_clearance(self, xy) -> np.ndarray:
        """Euclidean distance from point(s) ``xy`` [..., 2] to the nearest wall block (0 inside a wall)."""
        return np.linalg.norm(self._wall_gaps(xy), axis=-1).min(axis=-1)

    def wall_clearance_per_axis(self, xy) -> np.ndarray:
        """Chebyshev (max-per-axis) distance from ``xy`` [..., 2] to the nearest wall block.

        ``≥ c`` exactly when the 2c x 2c square around the point touches no wall: DINO-WM's
        spawn rectangles are the points with this clearance ≥ 0.2.
        """
        return self._wall_gaps(xy).max(axis=-1).min(axis=-1)

    # ----- start/goal sampling -------------------------------------------------------------
    def _sample_state_per_cell(self, random_velocity: bool) -> np.ndarray:
        """v0: a free cell uniformly, a point in it ≥ WALL_CLEARANCE from walls, velocity in [-5, 5]²."""
        cell = self.free_cells[self.np_random.integers(len(self.free_cells))]
        center, half = self.cell_center(cell), CELL_SIZE / 2
        while True:
            xy = center + self.np_random.uniform(-half, half, size=2)
            if self.wall_clearance(xy) >= WALL_CLEARANCE:
                break
        speed = self.protocol.spawn_speed
        vel = self.np_random.uniform(-speed, speed, size=2) if random_velocity else np.zeros(2)
        return np.concatenate([xy, vel])

    def _sample_state_dino_wm(self, rs: np.random.RandomState, random_velocity: bool) -> np.ndarray:
        """v1: DINO-WM's draw order: x, y until clear of the walls, then vx, vy (one scalar each)."""
        lo, hi = DINO_WM_SPAWN_RANGE
        while True:
            xy = np.array([rs.uniform(lo, hi), rs.uniform(lo, hi)])
            if self.wall_clearance_per_axis(xy) >= WALL_CLEARANCE:
                break
        speed = self.protocol.spawn_speed
        vel = np.array([rs.uniform(-speed, speed), rs.uniform(-speed, speed)])
        return np.concatenate([xy, vel if random_velocity else np.zeros(2)])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._reset_seed = seed  # v1 draws its start/goal pair from RandomState(seed)
        return super().reset(seed=seed, options=options)

    # ----- GoalImageEnv hooks ----------------------------------------------------------------
    def _sample_start_goal(self):
        if self.protocol.sampler == "dino-wm":
            seed = self._reset_seed if self._reset_seed is not None else int(self.np_random.integers(2**32))
            rs = np.random.RandomState(int(seed) % 2**32)
            start = self._sample_state_dino_wm(rs, self.random_start_velocity)
            return start, self._sample_state_dino_wm(rs, True)
        goal = self._sample_state_per_cell(True)
        while True:  # v0: a start that already counts as success would end the episode at once
            start = self._sample_state_per_cell(self.random_start_velocity)
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
        pixels = self._renderer.render()
        return np.ascontiguousarray(pixels[::-1]) if self.camera.flip_rows else pixels

    def _apply_action(self, action):
        if self._robotics is not None:
            # v0, the gymnasium-robotics step: clip velocity to ±5, set ctrl, one mj_step of 0.01 s.
            self._robotics.point_env.step(np.asarray(action, np.float64))
            return
        # v1, the D4RL step: clip the velocity once, then `substeps` MuJoCo steps with the same ctrl.
        self.data.qvel[:] = np.clip(self.data.qvel, -MAX_SPEED, MAX_SPEED)
        mujoco.mj_forward(self.model, self.data)
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, nstep=self.protocol.substeps)

    def _is_success(self, state, goal):
        return bool(np.linalg.norm(np.asarray(state)[:2] - np.asarray(goal)[:2]) < SUCCESS_RADIUS)

    def _extra_info(self):
        return {"distance": float(np.linalg.norm(self.data.qpos[:2] - self.goal[:2]))}

    def close(self):
        if self._renderer is not None:
            # mujoco.Renderer.close frees its GL objects in whatever GL context is current; make
            # it its own, or closing (or garbage-collecting) one env blanks another env's images.
            gl_context = getattr(self._renderer, "_gl_context", None)
            if gl_context is not None:
                gl_context.make_current()
            self._renderer.close()
            self._renderer = None
        if getattr(self, "_robotics", None) is not None:
            self._robotics.close()
            self._robotics = None
        super().close()

    def __del__(self):  # dropped without close(): free the renderer in its own GL context (see close)
        with contextlib.suppress(Exception):
            self.close()


# ----- collection policies -------------------------------------------------------------------
class PointMazeRandomPolicy(CorrelatedRandomPolicy):
    """Correlated random forces; ρ close to 1 keeps a direction long enough to cross cells.

    ρ is :attr:`rho_per_substep` per 0.01 s, so one direction lasts ~0.2 s in both versions
    (ρ = 0.95 per v0 step, 0.95⁵ ≈ 0.77 per v1 step). With v0's ρ per 5x longer step, the v1 ball
    sits pressed into the dead ends for seconds and the corridor cells get half as much data.
    """

    rho_per_substep = 0.95
    sigma = 1.0

    def __init__(self, env, rng):
        super().__init__(env, rng)
        self.rho = self.rho_per_substep ** env.protocol.substeps


@dataclass(frozen=True)
class ExpertTuning:
    """Gains of :class:`PointMazeExpertPolicy`, per version (v1 steps are 5x longer)."""

    #: Std of the Gaussian noise added to each action.
    noise_std: float
    #: Action per m/s of velocity error. A full action changes the speed by ~24·dt m/s in one step,
    #: so the loop is stable while gain·24·dt < 2 (v0: 0.48, v1: 0.48 with gain 0.4).
    velocity_gain: float
    #: Speed at which the ball passes an intermediate waypoint, and the planned deceleration
    #: (full force gives ~24 m/s²).
    corner_speed: float
    brake: float


#: The expert's tuning by PointMaze version.
EXPERT_TUNING = {
    0: ExpertTuning(noise_std=0.3, velocity_gain=2.0, corner_speed=2.0, brake=15.0),
    1: ExpertTuning(noise_std=0.3, velocity_gain=0.4, corner_speed=2.0, brake=15.0),
}


class PointMazeExpertPolicy(Policy):
    """BFS over maze cells to the goal cell, waypoints on the cell borders, a velocity
    controller, plus Gaussian noise.

    Each step: BFS on the 4-connected free cells gives the cell path to the goal cell; the
    borders ("portals") between consecutive path cells are sampled at a few points. The ball
    heads straight for the goal when nothing blocks the way, otherwise for the farthest portal
    it can reach in a straight line (keeping ``los_clearance`` from the walls), at the point
    of that portal that shortens the way to the next one, so it cuts corners. A P controller
    tracks the desired velocity (full speed, slowing before corners and coming to rest at the
    goal, so it stays there when an episode runs on past success); noise is added on top. The
    gains depend on the env's version (:data:`EXPERT_TUNING`).
    """

    #: Clearance a straight segment needs from the walls to count as free (collision radius 0.1).
    los_clearance: float = 0.12
    portal_samples: int = 9
    speed: float = MAX_SPEED

    def __init__(self, env, rng):
        super().__init__(env, rng)
        self.tuning = EXPERT_TUNING[env.version]

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
            half = CELL_SIZE / 2 - self.los_clearance
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
        tuning = self.tuning
        arrive = 0.0 if is_goal else tuning.corner_speed
        speed = min(self.speed, math.sqrt(arrive**2 + 2 * tuning.brake * dist))
        v_des = delta / max(dist, 1e-6) * speed
        action = tuning.velocity_gain * (v_des - vel) + self.rng.normal(0.0, tuning.noise_std, size=2)
        return np.clip(action, self.low, self.high).astype(np.float32)


PointMazeEnv.policies = {"random": PointMazeRandomPolicy, "noisy-expert": PointMazeExpertPolicy}
