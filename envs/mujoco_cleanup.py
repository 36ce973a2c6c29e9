"""Close MuJoCo renderers at interpreter exit, before MuJoCo terminates the EGL display.

``mujoco.egl`` registers ``eglTerminate`` with atexit when the first GL context is made;
atexit runs handlers last-in first-out, so registering ours after a renderer exists makes it
run first and every GL context is freed cleanly (no "Exception ignored in __del__" noise).
"""
from __future__ import annotations

import atexit
import weakref
from typing import Any

_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()
_REGISTERED = False


def _close_live() -> None:
    for env in list(_LIVE):
        try:
            env.close()
        except Exception:  # interpreter shutdown: never raise from here
            pass


def close_at_exit(env: Any) -> None:
    """Call ``env.close()`` at exit unless it was closed (and collected) before."""
    global _REGISTERED
    _LIVE.add(env)
    if not _REGISTERED:
        atexit.register(_close_live)
        _REGISTERED = True
