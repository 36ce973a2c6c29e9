"""Env ids and the short names the CLI uses. Importing ``wm_gym`` calls :func:`register_envs`.

Entry points are strings, so registering imports no simulator (MuJoCo, pymunk) until an env
is actually made.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym


@dataclass(frozen=True)
class SimSpec:
    env_id: str
    entry_point: str
    max_episode_steps: int
    vector_entry_point: str | None = None
    kwargs: tuple = ()


#: CLI short name -> registration. Episode lengths follow the DINO-WM data protocol.
SIMS: dict[str, SimSpec] = {
    "wall": SimSpec("wm_gym/Wall-v0", "wm_gym.envs.wall:WallEnv", 50, "wm_gym.envs.wall:WallVectorEnv"),
    "pointmaze": SimSpec("wm_gym/PointMaze-UMaze-v0", "wm_gym.envs.pointmaze:PointMazeEnv", 100),
    "pusht": SimSpec("wm_gym/PushT-v0", "wm_gym.envs.pusht:PushTEnv", 100),
    "dmc-reacher": SimSpec("wm_gym/DMC-reacher-easy-v0", "wm_gym.envs.dmc:DMCEnv", 100, kwargs=(("domain", "reacher"), ("task", "easy"))),
    "dmc-point_mass": SimSpec("wm_gym/DMC-point_mass-easy-v0", "wm_gym.envs.dmc:DMCEnv", 100, kwargs=(("domain", "point_mass"), ("task", "easy"))),
}


def resolve_env_id(name: str) -> str:
    """Map a short name ("wall") or a full id ("wm_gym/Wall-v0") to the registered id."""
    if name in SIMS:
        return SIMS[name].env_id
    for spec in SIMS.values():
        if name == spec.env_id:
            return name
    choices = ", ".join(list(SIMS) + [s.env_id for s in SIMS.values()])
    raise ValueError(f"unknown env {name!r}; expected one of: {choices}")


def sim_name(env_id_or_name: str) -> str:
    """The short name of a sim, from either form."""
    env_id = resolve_env_id(env_id_or_name)
    return next(name for name, spec in SIMS.items() if spec.env_id == env_id)


#: The imagination env: a world model (default: the shipped wall model) as a Gymnasium env.
IMAGINE_ID = "WMImagine-v0"


def register_envs() -> None:
    if IMAGINE_ID not in gym.registry:
        gym.register(id=IMAGINE_ID, entry_point="wm_gym.imagine.env:WMImagineEnv",
                     vector_entry_point="wm_gym.imagine.vector_env:WMImagineVectorEnv")
    for spec in SIMS.values():
        if spec.env_id in gym.registry:
            continue
        gym.register(
            id=spec.env_id,
            entry_point=spec.entry_point,
            vector_entry_point=spec.vector_entry_point,
            max_episode_steps=spec.max_episode_steps,
            kwargs=dict(spec.kwargs),
        )
