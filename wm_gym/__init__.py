"""wm-gym: world models as Gymnasium imagination environments, and the real sims to test in.

``import wm_gym`` registers every env id (Gymnasium 1.x has no plugin entry points).

MuJoCo sims render headless by default (``MUJOCO_GL=egl``: Mesa on CPU, the GPU when present);
set ``MUJOCO_GL`` before importing to choose another backend.
"""
import os

os.environ.setdefault("MUJOCO_GL", "egl")

from wm_gym.envs import register_envs  # noqa: E402

register_envs()

__version__ = "0.1.0"
