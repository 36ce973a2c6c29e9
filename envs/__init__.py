"""Real simulators (numpy, MuJoCo, pymunk). This package never imports torch."""
from .registration import SIMS, register_envs, resolve_env_id, sim_name, sim_spec
from .validation import check_action

__all__ = ["SIMS", "register_envs", "resolve_env_id", "sim_name", "sim_spec", "check_action"]
