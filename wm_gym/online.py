"""Online World Modeling: act in the real sim, keep what happened, fine-tune, (retrain,) repeat.

The world model is trained on the data's state distribution; a planner or agent drives it elsewhere.
Each round of this data-aggregation loop (MISSION.md document D)

1. builds the policy on the current model (a planner, any SB3-style ``predict`` policy, or the
   current agent, see below),
2. runs ``episodes`` real episodes with it (round r, episode i resets with seed ``seed + r·episodes + i``),
3. saves every finished episode at once as ``OUT/round_RR/episodes/episode_IIIIII.npz`` (atomic),
4. fine-tunes the dynamics (lr 1e-5, encoder frozen) on the base data plus every round's episodes,
5. writes ``OUT/round_RR/model.pt``,
6. with ``agent`` and ``retrain_steps`` (the Dreamer-style loop): continues the acting agent's RL
   in imagination on that model for ``retrain_steps`` steps, warm-started (weights, optimiser,
   step count; no re-cloning), and saves it as ``OUT/round_RR/agent.zip`` + ``agent.json``.
   Round 0 acts with ``agent`` (the offline agent, zero real steps so far), round r+1 with round
   r's agent. Without ``retrain_steps`` the agent is fixed, like a planner without a model.
   A latent-action agent acts through its grounding map (z → real chunk) and keeps its action
   space and grounding when retrained.
7. writes ``result.json``, which marks the round complete.

Each result reports the real data spent this round (``episodes_added``, ``sim_steps_added``) and
so far (``real_episodes_total``, ``sim_steps_total``), the acting policy's real success
(``success_rate``), with ``eval_episodes`` the success of the policy the next round acts with
(a planner on the new model, or the retrained agent) on fixed held-out seeds (``eval``; the
starting policy's is ``OUT/base_eval.json``), and the one-step error on the round's new
trajectories before and after fine-tuning (``new_data_mse_before/after``): how far the model
was wrong where its own policy went, i.e. the train–test gap this loop closes.

Re-running the same call after an interrupt resumes: finished rounds are skipped, a round's
saved episodes are kept and only the missing ones are run (no trajectory lost or duplicated),
a saved ``model.pt`` is not fine-tuned again and a saved ``agent.zip`` not retrained. The
settings that decide the data (``_FIXED``, the agent file and ``retrain_steps`` among them)
must match. This core package never imports ``agents/``: agent retraining is handed in as an
:class:`AgentTrainer`. Python::

    from wm_gym.online import OnlineConfig, run_online
    from wm_gym.agents.planners import PlannerConfig, make_planner
    rounds = run_online("wall", lambda m: make_planner("gbp", m, PlannerConfig(mpc=False)),
                        OnlineConfig(out="runs/online-wall", rounds=2, episodes=50))

    from wm_gym.agents.online_agent import AgentRetrainer
    rounds = run_online("wall", None, OnlineConfig(out="runs/online-agent", agent="runs/agent.zip",
                                                   retrain_steps=100_000), AgentRetrainer())

CLI: ``wm-gym online --model wall --planner gbp --rounds 2 --out runs/online-wall``, or
``wm-gym online --model wall --agent runs/agent.zip --retrain-steps 100000 --out runs/online-agent``.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from wm_gym.data.dataset import Episode, write_json_atomic
from wm_gym.real_episodes import evaluate_policy
from wm_gym.train.finetune import FinetuneConfig, finetune_dynamics, one_step_mse
from wm_gym.world_model import WorldModel

PolicyFactory = Callable[[WorldModel], Any]  # model -> object with predict(obs, deterministic=...)
RESULT, MODEL, AGENT, EPISODES, CONFIG = "result.json", "model.pt", "agent.zip", "episodes", "online.json"
#: Settings that decide which trajectories a run holds; resuming with other values would mix data.
_FIXED = ("model", "env", "episodes", "seed", "max_steps", "data", "agent", "retrain_steps", "grounding")
#: What runs that predate a setting in _FIXED had, so they still resume.
_UNRECORDED = {"agent": None, "retrain_steps": 0, "grounding": None}


class AgentTrainer(Protocol):
    """Loads and retrains SB3 agents for the loop (:class:`wm_gym.agents.online_agent.AgentRetrainer`).

    Handed in because this core package never imports ``agents/``.
    """

    def policy(self, path: Path, model: WorldModel) -> Any:
        """The agent saved at ``path`` acting in the real sim on ``model``: its ``predict`` answers real action
        chunks (a latent-action agent through its grounding map)."""

    def retrain(self, model: Path, start: Path, out: Path, steps: int) -> dict[str, Any]:
        """Continue ``start``'s RL in imagination on the model file ``model`` for ``steps`` more agent steps;
        save it atomically as ``out``."""


@dataclass
class OnlineConfig:
    out: str                          # run directory (episodes, a model and a result per round)
    env: str | None = None            # the real sim (default: the model's; another one raises)
    rounds: int = 2                   # data-aggregation rounds
    episodes: int = 50                # real episodes per round
    seed: int = 0                     # round r, episode i resets with seed + r·episodes + i
    max_steps: int | None = None      # agent steps per episode (default: the sim's episode length)
    batch: int = 50                   # episodes run in lockstep (planners batch across them)
    data: list[str] = field(default_factory=list)  # base dataset dirs fine-tuned on as well (optional)
    agent: str | None = None          # the SB3 agent (train-agent .zip) that acts instead of a planner, fixed unless
                                      # retrain_steps; a latent-action agent acts through its grounding map
                                      # (recorded: resuming with another raises)
    retrain_steps: int = 0            # with agent: imagined steps of RL per round on the fine-tuned model (0: fixed)
    grounding: str | None = None      # the grounding file a latent agent or prior acts through (recorded only:
                                      # the policy or trainer applies it; None: the one its sidecar records)
    eval_episodes: int = 0            # also evaluate each round's policy on these fixed held-out seeds
    eval_seed: int = 100_000          # first seed of those held-out episodes
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    device: str = "auto"
    progress: bool = True


def run_online(model: str | Path | WorldModel, policy: PolicyFactory | Any | None, config: OnlineConfig,
               trainer: AgentTrainer | None = None) -> list[dict[str, Any]]:
    """Run (or resume) the loop; returns one result dict per round (success, data added, fine-tune losses).

    ``policy``: a factory model -> planner, or a fixed agent. With ``config.retrain_steps`` it is
    None: the loop acts with ``config.agent`` and then with each round's retrained agent, which
    ``trainer`` (:class:`wm_gym.agents.online_agent.AgentRetrainer`) loads and trains.
    """
    from wm_gym.zoo import load_model, resolve_model

    _check_modes(policy, config, trainer)
    name = str(model.meta.dataset or "in-memory model") if isinstance(model, WorldModel) else str(resolve_model(model))
    base = model if isinstance(model, WorldModel) else load_model(model, config.device)
    _check_finetunable(base)
    out = Path(config.out)
    _check_run(out, {"model": name, "env": base.meta.env_id, "episodes": config.episodes, "seed": config.seed,
                     "max_steps": config.max_steps, "data": list(config.data),
                     "agent": str(Path(config.agent).resolve()) if config.agent else None,
                     "retrain_steps": config.retrain_steps,
                     "grounding": str(Path(config.grounding).resolve()) if config.grounding else None}, config)
    make_policy = policy if callable(policy) and not hasattr(policy, "predict") else (lambda m: policy)

    def policy_for(world_model: WorldModel, agent: Path | None):
        """What acts on ``world_model``: the agent in file ``agent`` (retraining), else the planner or fixed agent."""
        return trainer.policy(agent, world_model) if agent is not None else make_policy(world_model)

    current, results = base, []
    agent = Path(config.agent) if config.retrain_steps else None  # the acting agent's file (retraining only)
    if config.eval_episodes and not (out / "base_eval.json").exists():
        write_json_atomic(out / "base_eval.json", _evaluate(policy_for(base, agent), base, config))
    for r in range(config.rounds):
        round_dir = out / f"round_{r:02d}"
        if (round_dir / RESULT).exists():
            results.append(json.loads((round_dir / RESULT).read_text()))
            current = WorldModel.load(round_dir / MODEL, base.device)
            agent = round_dir / AGENT if agent is not None else None
            continue
        started = time.perf_counter()
        collected = _collect(policy_for(current, agent), current, round_dir / EPISODES, r, config)
        sources = [*config.data, *(out / f"round_{k:02d}" / EPISODES for k in range(r + 1))]  # episode folders
        fresh = sources[-1]  # this round's trajectories: where the current model's own plans took it
        gap_before = one_step_mse(current, [fresh])
        tuned, fit = _finetuned(current, round_dir, sources, config)
        result = {"round": r, **collected, **_totals(results, collected), "finetune": fit,
                  "new_data_mse_before": gap_before, "new_data_mse_after": one_step_mse(tuned, [fresh]),
                  "model": str(round_dir / MODEL)}
        if config.agent:
            result["acting_agent"] = str(agent or config.agent)
        if agent is not None:  # retraining: the next round acts with this round's agent
            agent, result["retrain"] = _retrained(trainer, round_dir, agent, config.retrain_steps)
            result["agent"] = str(agent)
        result["seconds"] = round(time.perf_counter() - started, 1)
        if config.eval_episodes:
            result["eval"] = _evaluate(policy_for(tuned, agent), tuned, config)
        write_json_atomic(round_dir / RESULT, result)
        results.append(result)
        current = tuned
    summary = {"rounds": results}
    if (out / "base_eval.json").exists():
        summary["base_eval"] = json.loads((out / "base_eval.json").read_text())
    write_json_atomic(out / "results.json", summary)
    return results


# ----- pieces ------------------------------------------------------------------------------------
def _check_modes(policy: PolicyFactory | Any | None, config: OnlineConfig, trainer: AgentTrainer | None) -> None:
    """One way to act per run: a planner or fixed agent (``policy``), or an agent retrained each round."""
    if config.rounds < 1 or config.episodes < 1:
        raise ValueError(f"rounds and episodes must be >= 1, got {config.rounds} and {config.episodes}")
    if config.retrain_steps < 0:
        raise ValueError(f"retrain_steps must be >= 0, got {config.retrain_steps}")
    if config.retrain_steps and (config.agent is None or trainer is None or policy is not None):
        raise ValueError("retrain_steps > 0 needs config.agent (the starting agent file), a trainer "
                         "(wm_gym.agents.online_agent.AgentRetrainer) and policy=None: the loop acts with the "
                         "agents it retrains")
    if not config.retrain_steps and policy is None:
        raise ValueError("policy is None: pass a planner factory or an agent, "
                         "or set retrain_steps to retrain config.agent")


def _check_finetunable(model: WorldModel) -> None:
    """Refuse, before any episode runs, a model whose dynamics cannot be fine-tuned on the rounds' actions."""
    if not model.takes_sim_actions:
        raise ValueError("this world model's controller was not trained (its data had no action labels), and each "
                         "online round fine-tunes it on the real actions it took; train one first with `wm-gym train "
                         "--init-from MODEL --data LABELLED` (a dataset with action labels)")


def _check_run(out: Path, fixed: dict[str, Any], config: OnlineConfig) -> None:
    """Write OUT/online.json on the first call; on later calls refuse settings that would mix data."""
    path = out / CONFIG
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k, _UNRECORDED.get(k)), fixed[k]) for k in _FIXED
                if old.get(k, _UNRECORDED.get(k)) != fixed[k]}
        if diff:
            raise ValueError(f"{out} holds an online run with other settings "
                             f"({', '.join(f'{k}: {a!r} vs {b!r}' for k, (a, b) in diff.items())}); "
                             f"use another --out or the same settings to resume")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no online run; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**fixed, "config": asdict(config)})


def _finetuned(current: WorldModel, round_dir: Path, sources: list, config: OnlineConfig) -> tuple[WorldModel, dict]:
    """The round's model and its fine-tune record: fine-tuned now, or as an interrupted run saved it."""
    if (round_dir / MODEL).exists():  # its fine-tune record is inside it
        tuned = WorldModel.load(round_dir / MODEL, current.device)
        return tuned, tuned.meta.train_info.get("finetune", [{}])[-1]
    tuned = copy.deepcopy(current)
    fit = finetune_dynamics(tuned, sources, config.finetune)
    tuned.save(round_dir / MODEL)
    return tuned, fit


def _retrained(trainer: AgentTrainer, round_dir: Path, start: Path, steps: int) -> tuple[Path, dict[str, Any]]:
    """The round's agent file and its training record: retrained from ``start`` now, or as already saved."""
    out = round_dir / AGENT
    if out.exists():  # saved before an interrupt (its sidecar holds the training record)
        return out, {"out": str(out), "reused": True}
    return out, trainer.retrain(round_dir / MODEL, start, out, steps)


def _totals(previous: list[dict[str, Any]], collected: dict[str, Any]) -> dict[str, int]:
    """Real data spent so far, this round included: what each round's success was bought with."""
    rounds = [*previous, collected]
    return {"real_episodes_total": sum(x["episodes_added"] for x in rounds),
            "sim_steps_total": sum(x["sim_steps_added"] for x in rounds)}


def _collect(policy, model: WorldModel, folder: Path, r: int, config: OnlineConfig) -> dict[str, Any]:
    """Run the round's missing episodes, saving each the moment it ends; summarise all of them."""
    folder.mkdir(parents=True, exist_ok=True)
    done = {i for i in range(config.episodes) if _shard(folder, i).exists()}

    def save(i: int, episode: Episode) -> None:
        episode.save_npz(_shard(folder, i))

    run = evaluate_policy(policy, model, config.env, episodes=config.episodes, seed=config.seed + r * config.episodes,
                          max_steps=config.max_steps, batch=config.batch, record=save, skip=done)
    episodes = [Episode.load_npz(_shard(folder, i)) for i in range(config.episodes)]
    success = np.array([ep.success.any() for ep in episodes])
    return {"success_rate": float(success.mean()), "episodes_added": len(episodes),
            "sim_steps_added": int(sum(ep.steps for ep in episodes)), "resumed_episodes": len(done),
            "collect_seconds": run["seconds"]}


def _evaluate(policy, model: WorldModel, config: OnlineConfig) -> dict[str, Any]:
    run = evaluate_policy(policy, model, config.env, episodes=config.eval_episodes, seed=config.eval_seed,
                          max_steps=config.max_steps, batch=config.batch)
    return {k: run[k] for k in ("success_rate", "episodes", "mean_episode_length", "seed", "seconds")}


def _shard(folder: Path, i: int) -> Path:
    return folder / f"episode_{i:06d}.npz"
