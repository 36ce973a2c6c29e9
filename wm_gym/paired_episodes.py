"""The same episodes in imagination and in the real sim: does the world model rate a policy as the sim does?

``evaluate_in_imagination`` runs a policy from the demo bank's held-out starts and goals, ``evaluate_policy``
from the sim's own fresh draws, so two rates set side by side differ by the episodes as well as by the model
(PointMaze's held-out demos are 1-6 model steps long; the sim's draws are not). Here the real sim is placed at
each imagined episode's recorded start and goal, so the runs differ only by what imagination gets wrong, and
that is read episode by episode: which episodes the two agree on, and, for a model with a state probe, how far
the imagined state is from the real one after 1, 5, 10 ... model steps, and how far each moves per step.

The imagined goal is the demo's last frame, the real one the goal state it was recorded with (the demo ends
within the sim's success radius of it): the one difference left between the two runs.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from wm_gym.imagined_episodes import ImaginedRollout, imagined_rollout
from wm_gym.real_episodes import Budget, evaluate_policy
from wm_gym.state_probe import readable_state_dims
from wm_gym.world_model import WorldModel

#: Model steps after which the drift is reported.
DRIFT_STEPS = (1, 5, 10, 20, 50)


def compare_imagination_with_sim(policy, model: WorldModel, tests: Sequence[str], episodes: int | None = None,
                                 seed: int = 1000, budget: str | int | Budget | None = None, split: str = "heldout",
                                 deterministic: bool = True, action_space: str = "sim",
                                 real_policy=None, look: str | None = None,
                                 rollout: ImaginedRollout | None = None) -> dict[str, Any]:
    """Run ``policy`` in imagination from ``episodes`` demos of the bank's ``split`` (as ``evaluate_in_imagination``
    picks them with ``seed``), then in the real sim from the same recorded starts and goals, under the same
    ``budget``. ``real_policy``: what acts in the sim where it differs (a latent agent's grounded policy);
    ``look``: the sim drawn another way. ``rollout``: that imagined run, already made (``imagined_rollout`` with
    these settings; its probed states give the drift), so it is not run twice.

    Returns ``tests``: per imagined test, both rates on these episodes, their gap and how often they agree (both,
    imagined only, real only, neither); ``drift`` (models with a state probe): median distance between the probed
    imagined state and the real one after each of DRIFT_STEPS model steps, over the episodes still running in the
    sim, and the median distance each moves per model step."""
    bank = model.bank
    if bank is not None and bank.start_states.shape[1] == 0:
        raise ValueError("the bank's demos carry no sim states (a video bank), so the sim cannot be placed at them")
    run = rollout or imagined_rollout(policy, model, tests, episodes, seed, budget, split, deterministic,
                                      action_space, probe_states=model.state_probe is not None)
    placements = [(bank.start_states[m], bank.goal_states[m]) for m in run.demo_rows]
    fs = model.config.frameskip
    real_states: list[np.ndarray | None] = [None] * run.episodes

    def record(i: int, episode) -> None:
        real_states[i] = episode.states[::fs]  # at model-step times, the start first

    real = evaluate_policy(real_policy or policy, model, episodes=run.episodes, seed=seed, budget=run.budget,
                           deterministic=deterministic, record=record, placements=placements, look=look)
    real_success = np.array([e["success"] for e in real["per_episode"]], bool)  # by the budget's own checks
    result: dict[str, Any] = {"episodes": run.episodes, "split": split, "budget": run.budget.name,
                              "real_success_rate": real["success_rate"], "real_success_ci95": real["success_ci95"],
                              "tests": {test: _agreement(np.isfinite(run.first_success[test]), real_success)
                                        for test in run.checks},
                              "seconds_imagined": run.seconds, "seconds_real": real["seconds"]}
    if run.probed_states is not None:
        result["drift"] = state_drift(run.probed_states, real_states, readable_state_dims(model))
    return result


def _agreement(imagined: np.ndarray, real: np.ndarray) -> dict[str, Any]:
    return {"imagined_success_rate": float(imagined.mean()), "real_success_rate": float(real.mean()),
            "gap": float(imagined.mean() - real.mean()), "agree": float((imagined == real).mean()),
            "both": int((imagined & real).sum()), "imagined_only": int((imagined & ~real).sum()),
            "real_only": int((~imagined & real).sum()), "neither": int((~imagined & ~real).sum())}


def state_drift(imagined: np.ndarray, real: Sequence[np.ndarray], dims: np.ndarray,
                steps: Sequence[int] = DRIFT_STEPS) -> dict[str, Any]:
    """How far imagined states [E, T+1, S] are from the real ones (per episode [T_i+1, S], shorter where the sim
    ended the episode), on state numbers ``dims``: per model step t of ``steps``, the median distance over the
    episodes the sim ran that long; and the median distance each moves per model step (imagination that barely
    moves its object shows here)."""
    after, imagined_moves, real_moves = {}, [], []
    for t in steps:
        gaps = [np.linalg.norm(imagined[i, t, dims] - r[t, dims]) for i, r in enumerate(real)
                if len(r) > t and t < imagined.shape[1]]
        if gaps:
            after[str(t)] = {"median_distance": float(np.median(gaps)), "episodes": len(gaps)}
    for i, r in enumerate(real):
        n = min(len(r), imagined.shape[1])
        imagined_moves += list(np.linalg.norm(np.diff(imagined[i, :n][:, dims], axis=0), axis=-1))
        real_moves += list(np.linalg.norm(np.diff(r[:n][:, dims], axis=0), axis=-1))
    return {"state_numbers": dims.tolist(), "after_model_steps": after,
            "median_move_per_step": {"imagined": float(np.median(imagined_moves)) if imagined_moves else None,
                                     "real": float(np.median(real_moves)) if real_moves else None}}
