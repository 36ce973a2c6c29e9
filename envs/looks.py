"""The named looks of the sims: how a scene is drawn, never how it moves.

stable-worldmodel measured DINO-WM on PushT falling from 94 % to 10 % success when only the
background colour changes. These looks change one factor each (a colour, the agent's drawn size,
a distractor texture) so that the drop, and what adapting on unlabelled video of the new look buys
back, can be measured. The sims take ``look=NAME`` (``collect --look``, ``evaluate --look``); the
physics, spawns and success tests never read it. Plain constants: ``envs.registration`` lists the
names without importing a sim.
"""
from __future__ import annotations

from dataclasses import dataclass

#: Floor textures a :class:`WallLook` can lay over the floor.
TEXTURES = ("none", "checker", "noise")


@dataclass(frozen=True)
class WallLook:
    """How the Wall scene is drawn. ``None`` colours are the version's palette; ``dot_std`` None is the
    physics' own dot width (``envs.wall.DOT_STD``). ``texture`` lays a fixed pattern over the floor:
    ``"checker"`` (8 squares across) or ``"noise"`` (seeded grey noise), ± ``texture_contrast`` grey levels."""

    floor: tuple[float, float, float] | None = None
    wall: tuple[float, float, float] | None = None
    dot: tuple[float, float, float] | None = None
    dot_std: float | None = None
    texture: str = "none"
    texture_contrast: float = 40.0

    def __post_init__(self) -> None:
        for name in ("floor", "wall", "dot"):
            rgb = getattr(self, name)
            if rgb is not None and (len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb)):
                raise ValueError(f"{name} must be an RGB triple in [0, 255], got {rgb!r}")
        if self.dot_std is not None and not self.dot_std > 0:
            raise ValueError(f"dot_std must be > 0, got {self.dot_std}")
        if self.texture not in TEXTURES:
            raise ValueError(f"texture must be one of {', '.join(TEXTURES)}, got {self.texture!r}")


#: Wall's looks, one factor changed each.
WALL_LOOKS: dict[str, WallLook] = {
    "default": WallLook(),
    "blue-floor": WallLook(floor=(90.0, 140.0, 220.0)),      # the background colour
    "green-walls": WallLook(wall=(40.0, 150.0, 60.0)),        # the wall colour
    "big-dot": WallLook(dot_std=2.6),                         # the agent's drawn size (physics: 1.7)
    "checker-floor": WallLook(texture="checker"),             # a distractor texture
}

#: PushT's looks: the background colour drawn behind everything (stable-worldmodel's factor).
PUSHT_LOOKS: dict[str, tuple[int, int, int]] = {"default": (255, 255, 255), "blue-background": (90, 140, 220)}
#: PointMaze-v1's looks are camera views (``envs.pointmaze`` maps each name to its camera): the
#: default close view, and DINO-WM's own far view in which the ball is 2-3 px wide at 64 px.
POINTMAZE_LOOKS: tuple[str, ...] = ("default", "dino-wm-view")


def make_look(look: "str | WallLook | None") -> WallLook:
    """A :class:`WallLook` from a name of :data:`WALL_LOOKS`, a look, or None (the default)."""
    if look is None or isinstance(look, WallLook):
        return look or WALL_LOOKS["default"]
    if look not in WALL_LOOKS:
        raise ValueError(f"unknown Wall look {look!r}; choose one of {', '.join(WALL_LOOKS)}")
    return WALL_LOOKS[look]
