"""The shipped world models: small checkpoints inside the package, loaded by name, offline.

``gym.make("WMImagine-v0")`` with no ``model`` uses :data:`DEFAULT`. Each entry is produced by
``examples/train_zoo.py`` (re-runnable; see README "Zoo").
"""
from __future__ import annotations

from pathlib import Path

ZOO_DIR = Path(__file__).resolve().parent
#: name -> file in this folder, with what it was trained on.
MODELS: dict[str, str] = {
    "wall": "wall.pt",            # `fast` preset, Wall-v1: the default (agents as good as the `small` model's, ~6x
                                  # faster imagination on CPUs; docs/results.md, issue 29)
    "pointmaze": "pointmaze.pt",  # `fast` preset, history 3, PointMaze-v1 (its close view; random + expert data)
    "pusht": "pusht.pt",          # `fast` preset, history 3, PushT-v1 (collected on the "train" goal split)
    "dmc-point_mass": "dmc-point_mass.pt",  # `small` preset, history 3, dm_control point_mass-easy (2,400-demo bank)
    "dmc-reacher": "dmc-reacher.pt",        # `small` preset, history 3, dm_control reacher-easy (2,000-demo bank)
}
DEFAULT = "wall"
#: Agents ship beside the models as NAME.zip (SB3, with its .json sidecar; written by
#: ``agents.train_agent.export_agent``) and load by NAME: a model's recipe names them, e.g. `wall`'s
#: ``plan_defaults["prior"] = "wall-prior"``, the policy prior of `wm-gym plan --model wall` (issue 28), and
#: `dmc-reacher`'s "dmc-reacher-prior" (the keypoint net cloned from its bank).


def available() -> list[str]:
    """Zoo names whose file is present in this install."""
    return [name for name, file in MODELS.items() if (ZOO_DIR / file).is_file()]


def resolve_model(name_or_path: str | Path) -> Path:
    """A zoo name ("wall") or a file path → the model file; anything else raises ValueError."""
    text = str(name_or_path)
    if text in MODELS:
        path = ZOO_DIR / MODELS[text]
        if not path.is_file():
            raise ValueError(f"zoo model {text!r} is not shipped in this install ({path} missing); "
                             f"available: {', '.join(available()) or 'none'}")
        return path
    path = Path(text).expanduser()
    if path.is_file():
        return path
    raise ValueError(f"unknown model {text!r}: not a zoo name ({', '.join(MODELS)}) and no such file")


def available_agents() -> list[str]:
    """Zoo agent names shipped in this install."""
    return sorted(p.stem for p in ZOO_DIR.glob("*.zip"))


def resolve_agent(name_or_path: str | Path) -> Path:
    """A zoo agent name ("wall-prior") or a path → the agent file (a path is returned as given: its loader says
    when it is missing)."""
    text = str(name_or_path)
    if Path(text).suffix == "" and "/" not in text and "\\" not in text:
        path = ZOO_DIR / f"{text}.zip"
        if not path.is_file():
            raise ValueError(f"no zoo agent {text!r} in this install; available: {', '.join(available_agents()) or 'none'} "
                             "(or give the agent's .zip path)")
        return path
    return Path(text).expanduser()


def load_model(name_or_path, device="auto"):
    """Load a world model by zoo name or path onto ``device`` ("auto" → cuda when present)."""
    from wm_gym.device import resolve_device
    from wm_gym.world_model import WorldModel

    if isinstance(name_or_path, WorldModel):
        return name_or_path.to(resolve_device(device))
    return WorldModel.load(resolve_model(name_or_path), device=resolve_device(device))
