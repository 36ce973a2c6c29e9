"""Env ids and the short names the CLI uses. Importing ``wm_gym`` calls :func:`register_envs`.

Entry points are strings, so registering imports no simulator (MuJoCo, pymunk) until an env
is actually made.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym

from .looks import POINTMAZE_LOOKS, PUSHT_LOOKS, WALL_LOOKS


#: The trajectory sets of a sim with recorded goals (SimSpec.goal_splits): "eval" is held out from collection.
GOAL_SPLITS = ("train", "eval", "all")


@dataclass(frozen=True)
class SimSpec:
    env_id: str
    entry_point: str
    max_episode_steps: int
    vector_entry_point: str | None = None
    kwargs: tuple = ()
    #: True when the sim cuts starts and goals from recorded trajectories split into "train" and "eval"
    #: (its ``goal_split`` option): collection then resets from "train", evaluation from "eval".
    goal_splits: bool = False
    #: The named looks its ``look`` option takes (colours, sizes, textures; never the physics); () = none.
    looks: tuple[str, ...] = ()
    #: Revision of the sim's default drawing. Datasets record it, so frames drawn by an older default
    #: view are never mixed with today's (PointMaze-v1 moved to a close camera at revision 2).
    view: int = 1
    #: Sim steps of the sim's own task episode (its ``standard_task`` option: the suite's own starts and
    #: targets, rewards summed to the end; the ``task`` budget), or None where the sim has no such task.
    task_steps: int | None = None


#: CLI short name -> the current version's registration. Episode lengths follow the DINO-WM data protocol.
#: Wall, PointMaze and PushT are at v1, DINO-WM's evaluation protocol parameter by parameter
#: (``docs/protocol.md``).
SIMS: dict[str, SimSpec] = {
    "wall": SimSpec("wm_gym/Wall-v1", "wm_gym.envs.wall:WallEnv", 50, "wm_gym.envs.wall:WallVectorEnv", (("version", 1),),
                    looks=tuple(WALL_LOOKS)),
    "pointmaze": SimSpec("wm_gym/PointMaze-UMaze-v1", "wm_gym.envs.pointmaze:PointMazeEnv", 100, kwargs=(("version", 1),),
                         looks=POINTMAZE_LOOKS, view=2),
    "pusht": SimSpec("wm_gym/PushT-v1", "wm_gym.envs.pusht:PushTEnv", 100, kwargs=(("version", 1),), goal_splits=True,
                     looks=tuple(PUSHT_LOOKS)),
    "dmc-reacher": SimSpec("wm_gym/DMC-reacher-easy-v0", "wm_gym.envs.dmc:DMCEnv", 100,
                           kwargs=(("domain", "reacher"), ("task", "easy")), task_steps=1000),
    "dmc-point_mass": SimSpec("wm_gym/DMC-point_mass-easy-v0", "wm_gym.envs.dmc:DMCEnv", 100,
                              kwargs=(("domain", "point_mass"), ("task", "easy")), task_steps=1000),
}

#: Earlier versions, still registered (by full id only) so that models trained on them keep working.
OLDER_VERSIONS: dict[str, tuple[SimSpec, ...]] = {
    "wall": (SimSpec("wm_gym/Wall-v0", "wm_gym.envs.wall:WallEnv", 50, "wm_gym.envs.wall:WallVectorEnv", (("version", 0),),
                     looks=tuple(WALL_LOOKS)),),
    "pointmaze": (SimSpec("wm_gym/PointMaze-UMaze-v0", "wm_gym.envs.pointmaze:PointMazeEnv", 100, kwargs=(("version", 0),)),),
    "pusht": (SimSpec("wm_gym/PushT-v0", "wm_gym.envs.pusht:PushTEnv", 100, kwargs=(("version", 0),),
                      looks=tuple(PUSHT_LOOKS)),),
}

#: Every registered id -> (short name, registration).
_BY_ID: dict[str, tuple[str, SimSpec]] = {
    **{spec.env_id: (name, spec) for name, specs in OLDER_VERSIONS.items() for spec in specs},
    **{spec.env_id: (name, spec) for name, spec in SIMS.items()},
}


def resolve_env_id(name: str) -> str:
    """Map a short name ("wall", the current version) or any registered id ("wm_gym/Wall-v0") to the id."""
    if name in SIMS:
        return SIMS[name].env_id
    if name in _BY_ID:
        return name
    choices = ", ".join(list(SIMS) + list(_BY_ID))
    raise ValueError(f"unknown env {name!r}; expected one of: {choices}")


def sim_name(env_id_or_name: str) -> str:
    """The short name of a sim, from either form (every version of a sim has the same name)."""
    return _BY_ID[resolve_env_id(env_id_or_name)][0]


def sim_spec(env_id_or_name: str) -> SimSpec:
    """The registration of a short name (its current version) or of any registered id."""
    return _BY_ID[resolve_env_id(env_id_or_name)][1]


#: The imagination env: a world model (default: the shipped wall model) as a Gymnasium env.
IMAGINE_ID = "WMImagine-v0"
#: Its twin: the model's real sim with the same observation (φ features) and action (chunks).
REAL_ID = "wm_gym/WMReal-v0"


def register_envs() -> None:
    if IMAGINE_ID not in gym.registry:
        gym.register(id=IMAGINE_ID, entry_point="wm_gym.imagine.env:WMImagineEnv",
                     vector_entry_point="wm_gym.imagine.vector_env:WMImagineVectorEnv")
    if REAL_ID not in gym.registry:
        gym.register(id=REAL_ID, entry_point="wm_gym.imagine.real_sim:make_real_env")
    for _, spec in _BY_ID.values():
        if spec.env_id in gym.registry:
            continue
        gym.register(
            id=spec.env_id,
            entry_point=spec.entry_point,
            vector_entry_point=spec.vector_entry_point,
            max_episode_steps=spec.max_episode_steps,
            kwargs=dict(spec.kwargs),
        )
