"""Retrain an imagination agent on each online round's fine-tuned world model (the Dreamer step).

:func:`wm_gym.online.run_online` owns the loop (act in the real sim, fine-tune the dynamics)
but may not import ``agents/``; it is handed an :class:`AgentRetrainer`, which loads agents
and continues their RL. Retraining is :func:`~wm_gym.agents.train_agent.train_agent`'s own
resume: the previous agent is copied in as the checkpoint, so PPO continues from its weights,
optimiser state and step count (no behaviour cloning) for ``retrain_steps`` more imagined steps,
in the new model's WMImagine env and with the settings the previous agent was trained with.

A latent-action agent (``train-agent --action-space latent``) acts through a grounding map,
:func:`~wm_gym.agents.evaluate.real_policy`: ``grounding`` if given, else the one its sidecar
records. Retraining keeps its action space, and records ``grounding`` (or its old one) with it.

The agent is trained in ``OUT/round_RR/retrain/`` (its checkpoints, TensorBoard log and curve
stay there) and published as ``OUT/round_RR/agent.json`` and then ``agent.zip``, so an existing
``agent.zip`` always has its sidecar and a kill mid-training resumes from the last checkpoint.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from wm_gym.agents.evaluate import real_policy
from wm_gym.agents.train_agent import AgentConfig, checkpoint_path, load_agent, sidecar_path, train_agent
from wm_gym.io import atomic_path

STAGING = "retrain"  # sub-folder of the round where the agent is trained before it is published


@dataclass
class AgentRetrainer:
    """Warm-started RL in imagination, one call per online round (see the module docstring)."""

    device: str = "auto"         # world model (imagination) device
    progress: bool = True
    grounding: str | None = None  # latent-action agents: the grounding file (None: the one each sidecar records)

    def load(self, path: Path) -> tuple[Any, dict[str, Any]]:
        """(the SB3 agent at ``path``, its sidecar): :func:`~wm_gym.agents.train_agent.load_agent`."""
        return load_agent(path)

    def policy(self, path: Path, model) -> Any:
        """The agent at ``path`` as a policy answering real action chunks on ``model``: a sim-action agent as
        it is, a latent-action one through its grounding map."""
        agent, meta = self.load(path)
        return real_policy(agent, meta, model, self.grounding, name=str(path))[0]

    def retrain(self, model: Path, start: Path, out: Path, steps: int) -> dict[str, Any]:
        """Continue ``start``'s RL on the world model file ``model`` for ``steps`` more imagined agent steps;
        publish the agent as ``out`` (+ sidecar)."""
        if steps < 1:
            raise ValueError(f"retraining needs steps >= 1, got {steps}")
        staged = out.parent / STAGING / out.name
        ckpt = checkpoint_path(staged)
        info: dict[str, Any] = {}
        if ckpt.exists() or not staged.exists():  # else training ended and only publishing was interrupted
            if not ckpt.exists():  # else an interrupted retrain left a later checkpoint: continue from that
                with atomic_path(ckpt) as tmp:
                    shutil.copyfile(start, tmp)
            info = train_agent(self.config(model, start, staged, steps))
        _publish(staged, out)
        return {**info, "out": str(out), "started_from": str(start)}

    def config(self, model: Path, start: Path, staged: Path, steps: int) -> AgentConfig:
        """The previous agent's training settings, on the new model, ``steps`` further, one seed on (and with
        ``grounding``, when given, as the grounding it records)."""
        agent, meta = load_agent(start)
        known = {f.name for f in fields(AgentConfig)}
        previous = {k: v for k, v in meta.get("config", {}).items() if k in known}
        return AgentConfig(**{**previous, "model": str(model), "out": str(staged),
                              "steps": int(agent.num_timesteps) + steps, "seed": previous.get("seed", 0) + 1,
                              "resume": True, "bc_data": None, "device": self.device, "progress": self.progress,
                              "log_dir": str(staged.parent / "tb"),
                              "grounding": self.grounding or previous.get("grounding")})


def _publish(staged: Path, out: Path) -> None:
    """Move the trained agent next to the round's model: sidecar first, so ``out`` marks a complete pair."""
    if sidecar_path(staged).exists():
        os.replace(sidecar_path(staged), sidecar_path(out))
    os.replace(staged, out)
