"""Distil a planner into a policy, in imagination: DAgger with the world model as the only simulator.

Where the model plans well but PPO in imagination cannot learn (an imagined success test too
blurred to pay for reaching and holding the goal: PointMaze-v1's planner 0.98, its PPO agents
0.69-0.79 under ``dino-wm``), the planner itself is the teacher. Each round rolls imagined
episodes from the demo bank's starts, asks the teacher, replanning at every step, what it would
do in every visited state, and refits the policy to all labels so far (Ross et al. 2011). Round 0
follows the teacher, so the first labels lie on its own paths; later rounds follow the student,
so the labels cover the states the student reaches, including its own mistakes. Episodes run
the whole ``horizon`` past any success, so the teacher also shows how to stay on the goal.

No real step is taken: the teacher plans with the world model, the states are imagined. The
student is the SB3 policy ``train_agent`` built, so everything that reads agents reads it.
Measured (docs/results.md, issue 26): on `pointmaze` 0.865 under ``dino-wm`` against cloning's
0.635 (the teacher 0.980); on `wall`, where PPO works, 0.745 against BC + PPO's 0.845.
"""
from __future__ import annotations

import time
from dataclasses import fields
from typing import Any

import numpy as np

from wm_gym.agents.behavior_cloning import clone_into
from wm_gym.agents.planners import Planner, PlannerConfig, load_prior, make_planner
from wm_gym.world_model import WorldModel

#: Recipe entries that say how the recipe runs in the real sim, not how it plans: a teacher replans every step.
REAL_RUN_SETTINGS = ("mpc", "execute", "seed")


def recipe_teacher(model: WorldModel, seed: int = 0) -> Planner:
    """The model's `wm-gym plan` recipe as a teacher that replans at every step (MPC, one chunk executed):
    its label for a state is the first chunk of a plan made from that state."""
    recipe = dict(model.meta.plan_defaults)
    if not recipe:
        raise ValueError("teacher 'plan' distils the model's `wm-gym plan` recipe (meta.plan_defaults), and this model "
                         "has none: examples/train_zoo.py writes one for the sims whose planner works (its `plan` "
                         "entry)")
    planning = {f.name for f in fields(PlannerConfig)} - set(REAL_RUN_SETTINGS)
    config = PlannerConfig(mpc=True, execute=1, seed=seed, **{k: v for k, v in recipe.items() if k in planning})
    prior = recipe.get("prior")
    return make_planner(recipe.get("planner", "gbp"), model, config,
                        prior=load_prior(prior, model.device.type, model) if prior and prior != "none" else None)


def dagger(agent, teacher: Planner, env, rounds: int, horizon: int, epochs: int, seed: int = 0,
           progress: bool = False) -> dict[str, Any]:
    """``rounds`` of DAgger on the imagination vector env ``env`` (episodes of at least ``horizon`` steps that do
    not end at success); refits ``agent`` in place. Returns the labels' count, each round's seconds and the
    student-teacher disagreement (mean squared action gap on the round's states, before the refit)."""
    if rounds < 1 or horizon < 1:
        raise ValueError(f"DAgger needs rounds >= 1 and horizon >= 1, got {rounds} and {horizon}")
    observations: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rounds * horizon, desc="DAgger in imagination", unit="step")
    for r in range(rounds):
        started = time.perf_counter()
        teacher.reset()
        obs, _ = env.reset(seed=seed + r)
        gaps = []
        for _ in range(horizon):
            label = teacher.predict(obs)[0]
            own = agent.predict(obs, deterministic=True)[0]
            observations.append(obs.copy())
            labels.append(label)
            gaps.append(float(np.mean((own - label) ** 2)))
            obs = env.step(label if r == 0 else own)[0]
            if bar is not None:
                bar.update(1)
        planned = time.perf_counter() - started
        losses = clone_into(agent, np.concatenate(observations), np.concatenate(labels), epochs=epochs, seed=seed + r)
        history.append({"round": r, "driver": "teacher" if r == 0 else "student",
                        "labels": sum(len(x) for x in labels),
                        "action_gap": round(float(np.mean(gaps)), 5), "fit_loss": round(losses[-1], 5),
                        "seconds_planning": round(planned, 1),
                        "seconds_fit": round(time.perf_counter() - started - planned, 1)})
    if bar is not None:
        bar.close()
    return {"rounds": history, "labels": sum(len(o) for o in observations),
            "seconds_per_plan": round(teacher.seconds_per_plan, 4)}
