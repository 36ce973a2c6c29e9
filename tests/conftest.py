import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import wm_gym  # noqa: E402,F401  (registers the env ids)
