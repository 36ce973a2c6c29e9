"""Imagination environments: a world model as a Gymnasium env (single, batched, SB3 VecEnv)."""
from wm_gym.imagine.config import ImagineConfig
from wm_gym.imagine.env import WMImagineEnv
from wm_gym.imagine.vector_env import WMImagineVectorEnv


def make_sb3_vec_env(*args, **kwargs):
    """See :func:`wm_gym.imagine.sb3_vec_env.make_sb3_vec_env` (imported lazily: SB3 is heavy)."""
    from wm_gym.imagine.sb3_vec_env import make_sb3_vec_env as make

    return make(*args, **kwargs)


__all__ = ["ImagineConfig", "WMImagineEnv", "WMImagineVectorEnv", "make_sb3_vec_env"]
