"""Evaluate an SB3 agent from ``wm-gym train-agent`` in the REAL simulator.

The harness itself (lockstep batches, φ observations, the sim's own success, videos) is
:func:`wm_gym.real_episodes.evaluate_policy`; this adds loading the agent and its world model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from wm_gym.real_episodes import evaluate_policy

__all__ = ["evaluate_agent", "evaluate_policy"]


def evaluate_agent(agent: str | Path, env: str | None = None, model: str | None = None, episodes: int = 50,
                   seed: int = 1000, device: str = "auto", **kwargs: Any) -> dict[str, Any]:
    """Load an agent from ``wm-gym train-agent`` (and its world model) and evaluate it in the real sim."""
    from wm_gym.agents.train_agent import load_agent
    from wm_gym.zoo import load_model

    sb3_agent, meta = load_agent(agent)
    model_name = model or meta.get("model")
    if model_name is None:
        raise ValueError(f"{agent} has no sidecar naming its world model; pass model= (zoo name or file)")
    if meta.get("task", "goal") != "goal":
        raise ValueError(f"{agent} was trained on task {meta.get('task')!r}; real-sim evaluation needs task 'goal'")
    wm = load_model(model_name, device)
    result = evaluate_policy(sb3_agent, wm, env, episodes=episodes, seed=seed, **kwargs)
    return {"agent": str(agent), "model": str(model_name), **result}
