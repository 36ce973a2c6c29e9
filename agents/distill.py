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
0.635 (the teacher 0.980); on `wall`, where PPO works, 0.745 against BC + PPO's 0.845. Labels that the
state alone decides (``start="zero"``: plans not warm-started) fit far better (loss 0.145 against
0.35) and train an MLP agent no better (0.860), a keypoint one (agents/policy_nets.py) better: 0.925;
labels from plans whose every predicted frame weighs alike (the recipe's ``decay=1``: a plan that stops on the
goal, not one that swings through it and back by the horizon's end) 0.985, 0.920, 0.965 and 0.960 over four training
seeds (0.958 pooled), `pointmaze`'s agent recipe.
"""
from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_gym.agents.behavior_cloning import clone_into
from wm_gym.agents.planners import Planner, PlannerConfig, load_prior, make_planner
from wm_gym.io import atomic_torch_save
from wm_gym.world_model import WorldModel

#: Recipe entries that say how the recipe runs in the real sim, not how it plans: a teacher replans every step.
REAL_RUN_SETTINGS = ("mpc", "execute", "seed")


#: Where a teacher's plan for a state starts: ``warm`` (MPC's: its plan for the state before, shifted; the recipe
#: as it runs) | ``zero`` (the zero plan, or the prior's where cheaper: the state alone decides).
TEACHER_STARTS = ("warm", "zero")


def recipe_teacher(model: WorldModel, seed: int = 0, start: str = "warm") -> Planner:
    """The model's `wm-gym plan` recipe as a teacher that replans at every step (MPC, one chunk executed):
    its label for a state is the first chunk of a plan made from that state, started as ``start`` says.

    ``zero`` (the planner's ``warm_start=False``) makes a label depend on the state alone. Why: MPC starts each plan
    from the one before, which began as a random plan, and the recipe's 30 Adam steps leave much of that start in the
    first chunk. On `pointmaze`, two MPC teachers that differ only in their random stream answer the same imagined
    states with first chunks correlated -0.07; two zero-start teachers, 0.93. A student sees the state, not the
    teacher's memory, so it can only learn the part of a label the state decides."""
    if start not in TEACHER_STARTS:
        raise ValueError(f"a teacher's plans start {' or '.join(TEACHER_STARTS)}, got {start!r}")
    recipe = dict(model.meta.plan_defaults)
    if not recipe:
        raise ValueError("teacher 'plan' distils the model's `wm-gym plan` recipe (meta.plan_defaults), and this model "
                         "has none: examples/train_zoo.py writes one for the sims whose planner works (its `plan` "
                         "entry)")
    planning = {f.name for f in fields(PlannerConfig)} - set(REAL_RUN_SETTINGS) - {"warm_start"}
    config = PlannerConfig(mpc=True, execute=1, seed=seed, warm_start=start == "warm",
                           **{k: v for k, v in recipe.items() if k in planning})
    prior = recipe.get("prior")
    return make_planner(recipe.get("planner", "gbp"), model, config,
                        prior=load_prior(prior, model.device.type, model) if prior and prior != "none" else None)


def dagger(agent, teacher, env, rounds: int, horizon: int, epochs: int, seed: int = 0,
           progress: bool = False, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """``rounds`` of DAgger on the imagination vector env ``env`` (episodes of at least ``horizon`` steps that do
    not end at success); refits ``agent`` in place. Returns the labels' count, each round's seconds and the
    student-teacher disagreement (mean squared action gap on the round's states, before the refit).

    ``checkpoint``: a file that keeps, after every round, the labels so far and the refit policy (written
    atomically); if it exists, DAgger goes on from its last finished round (more ``rounds`` than it holds
    extend a finished run). Each round reseeds the teacher, so a resumed run labels as an unbroken one."""
    if rounds < 1 or horizon < 1:
        raise ValueError(f"DAgger needs rounds >= 1 and horizon >= 1, got {rounds} and {horizon}")
    observations: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    history: list[dict[str, Any]] = []
    settings = {"horizon": horizon, "episodes": env.num_envs, "seed": seed,
                "teacher": f"{type(teacher).__name__}({getattr(teacher, 'config', '')})"}
    if checkpoint is not None and Path(checkpoint).is_file():
        observations, labels, history = _resume(agent, Path(checkpoint), settings)
        if len(history) > rounds:
            raise ValueError(f"{checkpoint} holds {len(history)} DAgger rounds, more than the {rounds} asked for")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=rounds * horizon, initial=min(len(history), rounds) * horizon, desc="DAgger in imagination",
                   unit="step")
    for r in range(len(history), rounds):
        started = time.perf_counter()
        teacher.reset()
        if hasattr(teacher, "generator"):  # a planner's random stream, as an unbroken run would have it at round r
            teacher.generator.manual_seed(teacher.config.seed + r)
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
        observations, labels = [np.concatenate(observations)], [np.concatenate(labels)]  # once: the refit and the file
        losses = clone_into(agent, observations[0], labels[0], epochs=epochs, seed=seed + r)
        history.append({"round": r, "driver": "teacher" if r == 0 else "student", "labels": len(labels[0]),
                        "action_gap": round(float(np.mean(gaps)), 5), "fit_loss": round(losses[-1], 5),
                        "seconds_planning": round(planned, 1),
                        "seconds_fit": round(time.perf_counter() - started - planned, 1)})
        if checkpoint is not None:
            atomic_torch_save({"settings": settings, "history": history, "policy": agent.policy.state_dict(),
                               "observations": observations[0], "labels": labels[0]}, checkpoint)
    if bar is not None:
        bar.close()
    return {"rounds": history, "labels": sum(len(o) for o in observations),
            "seconds_per_plan": round(teacher.seconds_per_plan, 4)}


def _resume(agent, checkpoint: Path, settings: dict[str, Any]) -> tuple[list, list, list]:
    """(observations, labels, rounds) of a DAgger checkpoint, its policy loaded into ``agent``; a checkpoint made
    with other settings, or not one at all, is refused rather than mixed in."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        saved, history = state["settings"], state["history"]
    except Exception as err:  # truncated file, another format: nothing to go on from
        raise ValueError(f"{checkpoint} is not a DAgger checkpoint ({err}); delete it to start over") from err
    if saved != settings:
        changed = sorted(k for k in settings if saved.get(k) != settings[k])
        raise ValueError(f"{checkpoint} was made with other DAgger settings ({', '.join(changed)} differ); delete it "
                         "or train with the same teacher, episodes, horizon and seed")
    try:
        agent.policy.load_state_dict(state["policy"])
    except RuntimeError as err:  # another net_arch, another model's observation size
        raise ValueError(f"{checkpoint} holds a policy of another shape than this agent's: {err}") from err
    return [state["observations"]], [state["labels"]], list(history)
