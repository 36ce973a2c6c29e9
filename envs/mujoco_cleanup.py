"""Close MuJoCo renderers at interpreter exit, before anything terminates the EGL display.

Two libraries register ``eglTerminate`` with atexit on the one EGL display: ``mujoco.egl``
when the first GL context is made, and ``dm_control`` when it is first imported (a DMC env
imports it in its constructor, so after a PointMaze env has made its renderer). atexit runs
handlers last-in first-out, and a GL context freed after the display is terminated raises
``EGLError`` in ``__del__`` at exit. So every env that owns a renderer moves our hook to the
end of the atexit queue when it is made: it then runs before every ``eglTerminate``
registered up to that point, and each GL context is freed while the display is alive.
"""
from __future__ import annotations

import atexit
import weakref
from typing import Any

_LIVE: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _close_live() -> None:
    for env in list(_LIVE):
        try:
            env.close()
        except Exception:  # interpreter shutdown: never raise from here
            pass


def close_at_exit(env: Any) -> None:
    """Call ``env.close()`` at exit (unless it was collected before), ahead of every EGL teardown
    registered so far; call it after the env's renderer exists."""
    _LIVE.add(env)
    atexit.unregister(_close_live)  # re-register: atexit is LIFO, so the newest handler runs first
    atexit.register(_close_live)
