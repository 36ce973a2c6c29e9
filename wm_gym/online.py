"""Online World Modeling: plan (or act) in the real sim, keep what happened, fine-tune, repeat.

The world model is trained on the data's state distribution; a planner drives it elsewhere.
Each round of this data-aggregation loop (MISSION.md document D)

1. builds the policy on the current model (a planner, or any SB3-style ``predict`` policy),
2. runs ``episodes`` real episodes with it (round r, episode i resets with seed ``seed + r·episodes + i``),
3. saves every finished episode at once as ``OUT/round_RR/episodes/episode_IIIIII.npz`` (atomic),
4. fine-tunes the dynamics (lr 1e-5, encoder frozen) on the base data plus every round's episodes,
5. writes ``OUT/round_RR/model.pt`` and then ``result.json``, which marks the round complete.

Each result also reports the one-step error on the round's new trajectories before and after
fine-tuning (``new_data_mse_before/after``): how far the model was wrong where its own plans
went, i.e. the train–test gap this loop closes.

Re-running the same call after an interrupt resumes: finished rounds are skipped, a round's
saved episodes are kept and only the missing ones are run, so no trajectory is lost or
duplicated. Python::

    from wm_gym.online import OnlineConfig, run_online
    from wm_gym.agents.planners import PlannerConfig, make_planner
    rounds = run_online("wall", lambda m: make_planner("gbp", m, PlannerConfig(mpc=False)),
                        OnlineConfig(out="runs/online-wall", rounds=2, episodes=50))

CLI: ``wm-gym online --model wall --planner gbp --rounds 2 --out runs/online-wall``.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from wm_gym.data.dataset import Episode, write_json_atomic
from wm_gym.real_episodes import evaluate_policy
from wm_gym.train.finetune import FinetuneConfig, finetune_dynamics, one_step_mse
from wm_gym.world_model import WorldModel

PolicyFactory = Callable[[WorldModel], Any]  # model -> object with predict(obs, deterministic=...)
RESULT, MODEL, EPISODES, CONFIG = "result.json", "model.pt", "episodes", "online.json"
#: Settings that decide which trajectories a run holds; resuming with other values would mix data.
_FIXED = ("model", "env", "episodes", "seed", "max_steps", "data")


@dataclass
class OnlineConfig:
    out: str                          # run directory (episodes, a model and a result per round)
    env: str | None = None            # the real sim (default: the model's; another one raises)
    rounds: int = 2
    episodes: int = 50                # real episodes per round
    seed: int = 0                     # round r, episode i resets with seed + r·episodes + i
    max_steps: int | None = None      # agent steps per episode (default: the sim's episode length)
    batch: int = 50                   # episodes run in lockstep (planners batch across them)
    data: list[str] = field(default_factory=list)  # base dataset dirs fine-tuned on as well (optional)
    eval_episodes: int = 0            # also evaluate each round's model on these fixed held-out seeds
    eval_seed: int = 100_000
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    device: str = "auto"
    progress: bool = True


def run_online(model: str | Path | WorldModel, policy: PolicyFactory | Any, config: OnlineConfig) -> list[dict[str, Any]]:
    """Run (or resume) the loop; returns one result dict per round (success, data added, fine-tune losses)."""
    from wm_gym.zoo import load_model, resolve_model

    if config.rounds < 1 or config.episodes < 1:
        raise ValueError(f"rounds and episodes must be >= 1, got {config.rounds} and {config.episodes}")
    name = str(model.meta.dataset or "in-memory model") if isinstance(model, WorldModel) else str(resolve_model(model))
    base = model if isinstance(model, WorldModel) else load_model(model, config.device)
    out = Path(config.out)
    _check_run(out, {"model": name, "env": base.meta.env_id, "episodes": config.episodes, "seed": config.seed,
                     "max_steps": config.max_steps, "data": list(config.data)}, config)
    make_policy = policy if callable(policy) and not hasattr(policy, "predict") else (lambda m: policy)

    current, results = base, []
    if config.eval_episodes and not (out / "base_eval.json").exists():
        write_json_atomic(out / "base_eval.json", _evaluate(make_policy(base), base, config))
    for r in range(config.rounds):
        round_dir = out / f"round_{r:02d}"
        if (round_dir / RESULT).exists():
            results.append(json.loads((round_dir / RESULT).read_text()))
            current = WorldModel.load(round_dir / MODEL, base.device)
            continue
        started = time.perf_counter()
        collected = _collect(make_policy(current), current, round_dir / EPISODES, r, config)
        sources = [*config.data, *(out / f"round_{k:02d}" / EPISODES for k in range(r + 1))]  # episode folders
        fresh = sources[-1]  # this round's trajectories: where the current model's own plans took it
        gap_before = one_step_mse(current, [fresh])
        tuned = WorldModel.load(round_dir / MODEL, base.device) if (round_dir / MODEL).exists() else None
        if tuned is None:
            tuned = copy.deepcopy(current)
            fit = finetune_dynamics(tuned, sources, config.finetune)
            tuned.save(round_dir / MODEL)
        else:  # interrupted after the model was written: its fine-tune record is inside it
            fit = tuned.meta.train_info.get("finetune", [{}])[-1]
        result = {"round": r, **collected, "finetune": fit, "seconds": round(time.perf_counter() - started, 1),
                  "new_data_mse_before": gap_before, "new_data_mse_after": one_step_mse(tuned, [fresh]),
                  "model": str(round_dir / MODEL)}
        if config.eval_episodes:
            result["eval"] = _evaluate(make_policy(tuned), tuned, config)
        write_json_atomic(round_dir / RESULT, result)
        results.append(result)
        current = tuned
    summary = {"rounds": results}
    if (out / "base_eval.json").exists():
        summary["base_eval"] = json.loads((out / "base_eval.json").read_text())
    write_json_atomic(out / "results.json", summary)
    return results


# ----- pieces ------------------------------------------------------------------------------------
def _check_run(out: Path, fixed: dict[str, Any], config: OnlineConfig) -> None:
    """Write OUT/online.json on the first call; on later calls refuse settings that would mix data."""
    path = out / CONFIG
    if path.exists():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), fixed[k]) for k in _FIXED if old.get(k) != fixed[k]}
        if diff:
            raise ValueError(f"{out} holds an online run with other settings "
                             f"({', '.join(f'{k}: {a!r} vs {b!r}' for k, (a, b) in diff.items())}); "
                             f"use another --out or the same settings to resume")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty and holds no online run; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, {**fixed, "config": asdict(config)})


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
