"""ImagineConfig: everything that defines an imagination env, in one frozen, validated place.

``WMImagineVectorEnv(num_envs, config)`` takes it; ``gym.make("WMImagine-v0", **kwargs)`` and
the env's own keyword arguments build one from the same field names, so a bad value fails at
construction, named, whichever way the env is made.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from wm_gym.rewards.distance import METRICS
from wm_gym.world_model import STEP_MODES, WorldModel
from wm_gym.zoo import DEFAULT

TASKS = ("goal", "demo")
ACTION_SPACES = ("sim", "latent")
SPLITS = ("train", "heldout", "all")


@dataclass(frozen=True)
class ImagineConfig:
    model: str | Path | WorldModel = DEFAULT  # zoo name, model file or a loaded WorldModel
    task: str = "goal"                   # the policy sees the goal ("goal") or the demo's next frame ("demo")
    reward: Any = "demo"                 # a rewards/ spec ("goal", "demo", "progress", "seq-delta", "temporal", or
                                         # "+"-joined like "demo+progress") or a callable
    metric: str = "l1"                   # feature distance of the reward: l1 | l2 | cosine
    scale: float | None = None           # reward scale (default: the reward's own, 5 for RLA-WM's demo reward)
    horizon: int | None = None           # agent steps per episode (default: the sim's episode length / frameskip)
    split: str = "train"                 # demo-bank rows episodes start from: train | heldout | all
    actions: str = "sim"                 # "sim": real action chunks; "latent": standardised latent actions z
    mode: str = "controller"             # action chunk → z: the deterministic controller or the flow sampler
    flow_steps: int | None = None        # Euler steps of the flow sampler (default: the model's)
    success_threshold: float | None = None  # feature distance that ends an episode (default: the model's calibrated one)
    success_metric: str | None = None    # the distance success_threshold applies to: l1 | l2 | cosine | temporal (model
                                         # steps to go, needs the head; a success test without labels); default: the
                                         # model's calibrated metric
    demos: Any = None                    # episodes' demos: None (the model's bank), a DemoBank, a dataset folder or videos
    device: str = "auto"                 # where imagination runs: auto | cpu | cuda

    def __post_init__(self) -> None:
        if self.success_metric not in (None, *METRICS, "temporal"):
            raise ValueError(f"success_metric must be one of {(*METRICS, 'temporal')} or None, got {self.success_metric!r}")
        for name, value, allowed in (("task", self.task, TASKS), ("metric", self.metric, METRICS),
                                     ("split", self.split, SPLITS), ("action_space", self.actions, ACTION_SPACES),
                                     ("mode", self.mode, STEP_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        for name, value in (("horizon", self.horizon), ("flow_steps", self.flow_steps)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale!r}")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> "ImagineConfig":
        """The env's keyword arguments (``action_space=`` is the public name of ``actions``) → a config."""
        if "action_space" in kwargs:
            kwargs["actions"] = kwargs.pop("action_space")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown imagination env argument(s) {unknown}; valid: action_space, "
                            f"{', '.join(sorted(known - {'actions'}))}")
        return cls(**kwargs)
