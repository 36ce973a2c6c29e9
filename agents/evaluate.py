"""Evaluate an SB3 agent from ``wm-gym train-agent`` in the REAL simulator.

The harness itself (lockstep batches, φ observations, the sim's own success, videos) is
:func:`wm_gym.real_episodes.evaluate_policy`; this adds loading the agent and its world model.
A latent-action agent acts through a grounding map (``wm-gym ground``): it is wrapped in a
:class:`~wm_gym.grounding.GroundedPolicy`, whose ``predict`` answers real action chunks, so the
harness runs it like any other policy.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from wm_gym.real_episodes import evaluate_policy

__all__ = ["evaluate_agent", "evaluate_policy", "real_policy"]


def evaluate_agent(agent: str | Path, env: str | None = None, model: str | None = None, episodes: int = 50,
                   seed: int = 1000, device: str = "auto", grounding: str | Path | None = None,
                   imagined: str | Sequence[str] | None = None, paired: bool = False, **kwargs: Any) -> dict[str, Any]:
    """Load an agent from ``wm-gym train-agent`` (and its world model) and evaluate it in the real sim.

    ``grounding``: for a latent-action agent, the ``wm-gym ground`` file that maps its z to real
    action chunks (default: the one recorded when it was trained). ``imagined``: also run it in the
    model, on the bank's held-out demos under the same budget, with that imagined success test
    (:mod:`wm_gym.imagined_episodes`), reported as ``imagined`` (several tests: one imagined run read by each,
    reported per test); a latent-action agent acts there in its own latent actions, with no grounding.
    ``paired``: also run the real sim from those imagined episodes' own starts and goals and compare them episode
    by episode (:mod:`wm_gym.paired_episodes`), reported as ``paired``.
    """
    from wm_gym.agents.train_agent import load_agent
    from wm_gym.zoo import load_model

    sb3_agent, meta = load_agent(agent)
    model_name = model or meta.get("model")
    if model_name is None:
        raise ValueError(f"{agent} has no sidecar naming its world model; pass model= (zoo name or file)")
    if meta.get("task", "goal") != "goal":
        raise ValueError(f"{agent} was trained on task {meta.get('task')!r}; real-sim evaluation needs task 'goal'")
    tests = [imagined] if isinstance(imagined, str) else list(imagined or [])
    if paired and not tests:
        raise ValueError("paired compares imagined episodes with real ones: give the imagined success test too")
    wm = load_model(model_name, device)
    policy, grounding = real_policy(sb3_agent, meta, wm, grounding, name=str(agent))
    if tests:  # fails on a model without the test before the real episodes run
        from wm_gym.imagined_episodes import success_test

        for test in tests:
            success_test(wm, test)
    result = evaluate_policy(policy, wm, env, episodes=episodes, seed=seed, **kwargs)
    if tests:
        from wm_gym.imagined_episodes import imagined_rollout, rollout_results

        steps = kwargs.get("max_steps")  # the real run's budget, in sim steps where given as agent steps
        budget = kwargs.get("budget") if steps is None else steps * wm.config.frameskip
        action_space = meta.get("action_space", "sim")
        run = imagined_rollout(sb3_agent, wm, tests, seed=seed, budget=budget, action_space=action_space,
                               probe_states=paired and wm.state_probe is not None)
        by_test = rollout_results(run, wm.config.frameskip)
        result["imagined"] = by_test[imagined] if isinstance(imagined, str) else by_test
        if paired:  # the real sim from the same imagined episodes' starts and goals
            from wm_gym.paired_episodes import compare_imagination_with_sim

            result["paired"] = compare_imagination_with_sim(sb3_agent, wm, tests, seed=seed, budget=budget,
                                                            action_space=action_space, real_policy=policy,
                                                            look=kwargs.get("look"), rollout=run)
    return {"agent": str(agent), "model": str(model_name), "action_space": meta.get("action_space", "sim"),
            **({"grounding": str(grounding)} if grounding else {}), **result}


def real_policy(sb3_agent, meta: dict[str, Any], model, grounding: str | Path | None = None, name: str = "the agent"):
    """(a policy that answers real action chunks, the grounding file used or None) for an agent and its sidecar."""
    if meta.get("action_space", "sim") != "latent":
        if grounding:
            raise ValueError(f"{name} acts in real action chunks; --grounding is only for latent-action agents")
        return sb3_agent, None
    from wm_gym.grounding import GroundedPolicy, Grounding

    grounding = grounding or meta.get("grounding")
    if not grounding:
        raise ValueError(f"{name} acts in latent actions, and a real sim needs real ones: fit a grounding map with "
                         "`wm-gym ground --model MODEL --data LABELLED_DATA --out G.pt` and pass --grounding G.pt")
    if "latent_mean" not in meta or "latent_std" not in meta:
        raise ValueError(f"{name}'s sidecar lacks latent_mean/latent_std (the z units it was trained in); retrain it")
    policy = GroundedPolicy(sb3_agent, Grounding.load(grounding, model), model, meta["latent_mean"], meta["latent_std"])
    return policy, grounding
