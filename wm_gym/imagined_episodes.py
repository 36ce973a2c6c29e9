"""A policy's success in imagination, under a real-sim budget: the number to set beside its real success.

``real_episodes.evaluate_policy`` runs a policy in the sim; this runs it in the world model, from
the demo bank's held-out starts and goals (``split``), for as many model steps as the budget gives
and checking success when the budget checks it (``dino-wm``: every 5 chunks). What counts as
success in imagination is the ``test``, since imagination has no sim state:

* ``calibrated``: the model's own success threshold (``wm-gym calibrate`` on imagined features);
* ``real``: the threshold calibrated on real encodings (predicted frames blurrier than real ones
  then read as farther away, so it under-rates);
* ``temporal``: the temporal head reads < 1 model step to go (``wm-gym train-distance``);
* ``probe``: the sim's own success test on the states a linear probe reads from the imagined frame
  and from the goal (``wm-gym calibrate --probe``, on data with states).

A test whose imagined success is far from the real one says the imagination cannot be trusted to
rate that policy; one within a few points says it can.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from wm_gym.data.collect import make_sim
from wm_gym.imagine.vector_env import WMImagineVectorEnv, split_observation
from wm_gym.real_episodes import Budget, sim_budget, wilson_interval
from wm_gym.state_probe import probed_success
from wm_gym.world_model import WorldModel

IMAGINED_TESTS = ("calibrated", "real", "temporal", "probe")
#: The temporal test: fewer than this many model steps to go.
TEMPORAL_STEPS = 1.0


def success_test(model: WorldModel, test: str) -> tuple[str, float | None]:
    """(distance metric, threshold) of an imagined success ``test`` (``("probe", None)``: no threshold, the sim's
    own test); ValueError where the model lacks what the test needs."""
    if test == "probe":
        if model.state_probe is None:
            raise ValueError("the probe test needs a state probe: `wm-gym calibrate --probe` on a dataset with states")
        return "probe", None
    if test == "temporal":
        if model.temporal_distance is None:
            raise ValueError("the temporal test needs a temporal-distance head: `wm-gym train-distance`")
        return "temporal", TEMPORAL_STEPS
    if test not in ("calibrated", "real"):
        raise ValueError(f"test must be one of {', '.join(IMAGINED_TESTS)}, got {test!r}")
    threshold = model.meta.success_threshold if test == "calibrated" else model.meta.train_info.get(
        "real_success_threshold")
    if threshold is None or model.meta.success_metric is None:
        raise ValueError(f"the {test!r} test needs a calibrated model: `wm-gym calibrate`")
    return model.meta.success_metric, float(threshold)


def evaluate_in_imagination(policy, model: WorldModel, episodes: int | None = None, seed: int = 1000,
                            budget: str | int | Budget | None = None, test: str = "real", split: str = "heldout",
                            deterministic: bool = True, action_space: str = "sim") -> dict[str, Any]:
    """Success of ``policy`` (SB3's ``predict`` on imagination observations) on distinct demos of the bank's
    ``split``: all of them, or ``episodes`` drawn without replacement (``seed``). One batch, run for the budget's
    model steps; success is latched at the budget's checks. Imagination is deterministic, so a demo run twice
    would count twice for one outcome: more episodes than demos is an error. ``action_space``: what the policy
    answers, real action chunks (``sim``) or the standardised latent actions a latent agent was trained on
    (``latent``; in imagination it needs no grounding)."""
    return evaluate_in_imagination_by_test(policy, model, (test,), episodes, seed, budget, split, deterministic,
                                           action_space)[test]


def evaluate_in_imagination_by_test(policy, model: WorldModel, tests: Sequence[str], episodes: int | None = None,
                                    seed: int = 1000, budget: str | int | Budget | None = None,
                                    split: str = "heldout", deterministic: bool = True,
                                    action_space: str = "sim") -> dict[str, dict[str, Any]]:
    """:func:`evaluate_in_imagination` under several success ``tests`` at once, {test: its result}: one imagined
    rollout serves them all, since a test only reads the states the budget checks (the agent table asks for two
    or more per agent and budget)."""
    return rollout_results(imagined_rollout(policy, model, tests, episodes, seed, budget, split, deterministic,
                                            action_space), model.config.frameskip)


def rollout_results(run: ImaginedRollout, frameskip: int) -> dict[str, dict[str, Any]]:
    """{test: its imagined success rate, interval and settings} of one imagined rollout."""
    results = {}
    for test, (metric, threshold) in run.checks.items():
        first = run.first_success[test]
        wins = int(np.isfinite(first).sum())
        results[test] = {
            "imagined_success_rate": wins / run.episodes, "imagined_success_ci95": list(wilson_interval(wins, run.episodes)),
            "test": test, "metric": metric, "threshold": threshold, "split": run.split, "episodes": run.episodes,
            "action_space": run.action_space, "budget": run.budget.name, "model_steps": run.steps,
            "checked_every": run.every,
            "success_at_sim_steps": {str(k): float((first * frameskip <= k).mean()) for k in run.budget.report_at},
            "seconds": run.seconds, "tests_in_rollout": list(run.checks)}
    return results


@dataclass
class ImaginedRollout:
    """One imagined run of a policy: which demos it started from, and what each test saw, episode by episode."""

    demo_rows: np.ndarray                # [E] the bank rows the episodes started from (their starts and goals)
    split: str                           # the bank split they were drawn from
    action_space: str                    # what the policy answered: sim | latent
    budget: Budget
    steps: int                           # model steps run
    every: int                           # model steps between success checks
    checks: dict[str, tuple[str, float | None]]  # test -> (metric, threshold)
    first_success: dict[str, np.ndarray]  # test -> [E] model step of the first checked success (inf: none)
    probed_states: np.ndarray | None     # [E, steps + 1, S] the state probe's reading of each imagined frame
    seconds: float

    @property
    def episodes(self) -> int:
        return len(self.demo_rows)


def imagined_rollout(policy, model: WorldModel, tests: Sequence[str], episodes: int | None = None, seed: int = 1000,
                     budget: str | int | Budget | None = None, split: str = "heldout", deterministic: bool = True,
                     action_space: str = "sim", probe_states: bool = False) -> ImaginedRollout:
    """Run ``policy`` in the model from ``episodes`` distinct demos of the bank's ``split`` (drawn by ``seed``)
    for the budget's model steps, latching each test's success at the budget's checks. ``probe_states``: also
    read every imagined frame (the start's included) through the model's state probe."""
    if not tests:
        raise ValueError(f"give at least one test of {', '.join(IMAGINED_TESTS)}")
    if probe_states and model.state_probe is None:
        raise ValueError("reading imagined states needs a state probe: `wm-gym calibrate --probe` on data with states")
    rows = model.bank.indices(split) if model.bank is not None else []
    if not len(rows):
        raise ValueError("imagined episodes start from the model's demo bank, and this model has none")
    episodes = len(rows) if episodes is None else episodes
    if not 1 <= episodes <= len(rows):
        raise ValueError(f"episodes must be in [1, {len(rows)}] (the bank's {split!r} demos, each run once), "
                         f"got {episodes}")
    picks = np.random.default_rng(seed).permutation(rows)[:episodes]
    fs = model.config.frameskip
    budget = sim_budget(budget, model.meta.env_id or model.meta.sim, fs)
    if budget.to_end:
        raise ValueError("a task budget is scored by the sim's task reward, which imagination does not have")
    checks = {test: success_test(model, test) for test in dict.fromkeys(tests)}  # (metric, threshold) per test
    steps, every = -(-budget.sim_steps // fs), max(budget.check_every // fs, 1)
    # the tests read the checked states below; the env's own success test is off (threshold 0), so its per-step
    # distance is the cheapest one (feature L1, no head)
    env = WMImagineVectorEnv(num_envs=episodes, model=model, split=split, horizon=steps, success_threshold=0.0,
                             success_metric="l1", render_mode=None, action_space=action_space)
    sim = make_sim(model.meta.env_id, model.meta.image_size).unwrapped if "probe" in checks else None
    started = time.perf_counter()
    obs, _ = env.reset(seed=seed, options={"demo_index": picks})
    probed = [_probe(model, obs)] if probe_states else None
    first = {test: np.full(episodes, np.inf) for test in checks}  # model step of each episode's first checked success
    for t in range(1, steps + 1):
        obs, _, _, _, info = env.step(policy.predict(obs, deterministic=deterministic)[0])
        seen = info.get("final_obs", obs)  # the state before any autoreset (only the last step resets)
        if probed is not None:
            probed.append(_probe(model, seen))
        if t % every:
            continue
        history, goal = split_observation(model, torch.as_tensor(seen, device=model.device))
        for test, (metric, threshold) in checks.items():
            if threshold is None:
                passed = probed_success(model.state_probe, sim, history[:, -1], goal)
            else:
                with torch.no_grad():
                    passed = (model.goal_distance(history[:, -1], goal, metric) < threshold).cpu().numpy()
            first[test][passed & np.isinf(first[test])] = t
    if sim is not None:
        sim.close()
    return ImaginedRollout(demo_rows=picks, split=split, action_space=action_space, budget=budget, steps=steps, every=every, checks=checks,
                           first_success=first, probed_states=None if probed is None else np.stack(probed, 1),
                           seconds=round(time.perf_counter() - started, 1))


@torch.no_grad()
def _probe(model: WorldModel, obs: np.ndarray) -> np.ndarray:
    """[E, S]: the state probe's reading of the newest frame of each policy observation."""
    history, _ = split_observation(model, torch.as_tensor(obs, device=model.device))
    return model.state_probe(history[:, -1]).float().cpu().numpy()
