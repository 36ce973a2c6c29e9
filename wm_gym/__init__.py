"""wm-gym: world models as Gymnasium imagination environments, and the real sims to test in.

``import wm_gym`` registers every env id (Gymnasium 1.x has no plugin entry points).
"""
from wm_gym.envs import register_envs

register_envs()

__version__ = "0.1.0"
