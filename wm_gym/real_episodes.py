"""Run any policy in the REAL simulator, through the world model's eyes (evaluation and online data).

Each step: the sim renders → the world model's frozen encoder φ gives features → the policy
sees ``[features, goal features]`` (exactly the imagination env's observation) → its action
chunk runs ``frameskip`` real sim steps. Success is the sim's own criterion, never the
world model's. ``policy`` is anything with SB3's ``predict(obs, deterministic=...)``: an SB3
agent trained in imagination, or a planner from :mod:`wm_gym.agents.planners`.

How long an episode runs and when its success is checked is a :class:`Budget`, the same for
agents and planners: ``dino-wm`` (DINO-WM's MPC protocol: success checked after every 5 chunks
and reported after 2, 4, 10 and 20 replans), ``swm`` (stable-worldmodel's 50 sim steps), ``task``
(the sim's own task episode, run to its end with the task's reward summed: dm_control's 1,000
steps) or a number of sim steps; ``docs/protocol.md`` explains each.

Episodes run in lockstep batches (one φ call and one ``predict`` per step for the batch), so
planners that batch across episodes get all of them at once. With ``record``, every sim step
of every finished episode is handed over as a dataset :class:`~wm_gym.data.dataset.Episode`
the moment it ends (the online loop saves each one atomically).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from wm_gym.data.collect import make_sim
from wm_gym.data.dataset import Episode
from wm_gym.data.recorder import EpisodeRecorder
from wm_gym.envs.action_chunk import chunk_space
from wm_gym.envs.registration import resolve_env_id, sim_spec
from wm_gym.envs.validation import check_action
from wm_gym.imagine.vector_env import policy_observation, push_history
from wm_gym.media import side_by_side, write_mp4
from wm_gym.world_model import WorldModel

#: DINO-WM's MPC executes this many planned chunks per replan (``n_taken_actions: 5``).
DINO_WM_REPLAN_CHUNKS = 5
#: Replans after which the ``dino-wm`` budget reports success (its MPC has no step limit).
DINO_WM_REPORT_REPLANS = (2, 4, 10, 20)
#: stable-worldmodel's fixed evaluation budget, in sim steps.
SWM_SIM_STEPS = 50
BUDGETS = ("dino-wm", "swm")
#: The budget of a sim's own task episode (``SimSpec.task_steps``): not a replanning protocol.
TASK_BUDGET = "task"


@dataclass(frozen=True)
class Budget:
    """How long a real episode runs and when its success is checked: the protocol a success rate belongs to.

    Success is checked after every ``check_every``-th sim step and latched once seen; the
    episode stops there unless ``to_end`` (a task episode, whose return counts every step).
    ``report_at`` lists the sim-step counts whose success rates are reported, all from the
    same run (the last is ``sim_steps``).
    """

    name: str
    sim_steps: int
    check_every: int = 1
    report_at: tuple[int, ...] = ()
    to_end: bool = False

    def __post_init__(self) -> None:
        if self.sim_steps < 1 or self.check_every < 1:
            raise ValueError(f"a budget needs sim_steps >= 1 and check_every >= 1, got {self}")
        if not self.report_at:
            object.__setattr__(self, "report_at", (self.sim_steps,))

    def checks(self, sim_step: int) -> bool:
        """Whether success is looked at after sim step ``sim_step`` (1-based)."""
        return sim_step % self.check_every == 0


def chunks_per_plan(spec: str | int | Budget | None) -> int:
    """Chunks an MPC planner executes per plan under a budget: 5 for the ``dino-wm`` and ``swm``
    protocols (DINO-WM's ``n_taken_actions``, stable-worldmodel's ``receding_horizon``), else 1."""
    name = spec.name if isinstance(spec, Budget) else spec
    return DINO_WM_REPLAN_CHUNKS if name in BUDGETS else 1


def make_budget(spec: str | int | Budget | None, frameskip: int, default_sim_steps: int,
                task_steps: int | None = None) -> Budget:
    """``dino-wm`` | ``swm`` | ``task`` | a number of sim steps | None (the sim's episode length) → a :class:`Budget`.

    * ``dino-wm``: DINO-WM's MPC protocol. Success is checked at the end of each replan (every
      5 chunks = 25 sim steps at frameskip 5) and reported after 2, 4, 10 and 20 replans
      (50 / 100 / 250 / 500 sim steps), since DINO-WM itself plans until every episode succeeds.
    * ``swm``: stable-worldmodel's 50 sim steps, success at any step.
    * ``task``: the sim's own task episode (``task_steps`` sim steps: dm_control's 1,000), run to its
      end whatever happens, so that the task's reward can be summed (success is still its first step).
    * ``N``: N sim steps, success at any step.
    """
    if isinstance(spec, Budget):
        return spec
    if spec is None:
        return Budget(f"{default_sim_steps} steps", int(default_sim_steps))
    if spec == "dino-wm":
        replan = DINO_WM_REPLAN_CHUNKS * frameskip
        return Budget("dino-wm", DINO_WM_REPORT_REPLANS[-1] * replan, replan,
                      tuple(r * replan for r in DINO_WM_REPORT_REPLANS))
    if spec == "swm":
        return Budget("swm", SWM_SIM_STEPS)
    if spec == TASK_BUDGET:
        if task_steps is None:
            raise ValueError("budget 'task' is the sim's own task episode, and this sim has none "
                             "(the dm_control sims have: 1,000 steps)")
        return Budget(TASK_BUDGET, int(task_steps), to_end=True)
    text = str(spec)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS + (TASK_BUDGET,))} or a positive number of "
                         f"sim steps, got {spec!r}")
    return Budget(f"{int(text)} steps", int(text))


def sim_budget(spec: str | int | Budget | None, env_id: str, frameskip: int) -> Budget:
    """:func:`make_budget` with the sim's own episode and task lengths (its registration)."""
    sim = sim_spec(env_id)
    return make_budget(spec, frameskip, sim.max_episode_steps, sim.task_steps)


def evaluate_policy(policy, model: WorldModel, env: str | None = None, episodes: int = 50, seed: int = 1000,
                    max_steps: int | None = None, batch: int = 50, deterministic: bool = True,
                    video_dir: str | Path | None = None, video_episodes: int = 4,
                    record: Callable[[int, Episode], None] | None = None, skip: set[int] | frozenset = frozenset(),
                    budget: str | int | Budget | None = None, look: str | None = None,
                    placements: Sequence[tuple[np.ndarray, np.ndarray]] | None = None) -> dict[str, Any]:
    """Success rate of ``policy`` over ``episodes`` real episodes seeded ``seed + i``.

    ``budget`` (see :func:`make_budget`) sets the episode length and when success is checked;
    ``max_steps`` is the older shortcut for a budget of that many agent steps (action chunks).
    Default: the sim's episode length, success at any step. ``record(i, episode)`` receives
    episode i's every sim step as soon as it ends; indices in ``skip`` are not run (already
    recorded: resuming). ``look``: the sim drawn another way (its ``SimSpec.looks``), the physics unchanged.
    ``placements``: episode i starts at state ``placements[i][0]`` with goal state ``placements[i][1]`` instead of
    the sim's own draw (e.g. a demo bank's recorded starts and goals, to run the episodes imagination ran).
    """
    env_id = resolve_env_id(env or model.meta.env_id or model.meta.sim or "")
    if model.meta.env_id and env_id != model.meta.env_id:
        raise ValueError(f"the world model was trained on {model.meta.env_id!r}, not {env_id!r}")
    if episodes < 1 or (max_steps is not None and max_steps < 1):
        raise ValueError(f"episodes and max_steps must be >= 1, got {episodes} and {max_steps}")
    if max_steps is not None and budget is not None:
        raise ValueError("give either budget or max_steps, not both")
    if placements is not None and len(placements) != episodes:
        raise ValueError(f"placements give {len(placements)} start/goal pairs for {episodes} episodes")
    fs = model.config.frameskip
    budget = sim_budget(max_steps * fs if max_steps is not None else budget, env_id, fs)
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    todo = [i for i in range(episodes) if i not in skip]
    for first in range(0, len(todo), batch):
        idx = todo[first:first + batch]
        on_end = None if record is None else (lambda j, ep, idx=idx: record(idx[j], ep))
        placed = None if placements is None else [placements[i] for i in idx]
        results += _run_batch(policy, model, env_id, [seed + i for i in idx], budget, deterministic,
                              video_dir, max(0, min(len(idx), video_episodes - first)) if video_dir else 0, on_end, look,
                              placed)
    seconds = time.perf_counter() - started
    return {**summarize(results, budget, fs), "env": env_id, **({"look": look} if look else {}), "seed": seed,
            "seconds": round(seconds, 1), "per_episode": results}


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (honest at 0 and 1, unlike p ± z·√(p(1−p)/n))."""
    if n < 1:
        return float("nan"), float("nan")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def mean_interval(values, z: float = 1.96) -> tuple[float, float]:
    """95 % normal interval of a mean (e.g. a task's return over episodes): mean ± z·s/√n, NaN for n < 2."""
    values = np.asarray(values, float)
    if len(values) < 2:
        return float("nan"), float("nan")
    half = z * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def summarize(results: list[dict[str, Any]], budget: Budget, frameskip: int) -> dict[str, Any]:
    """Success rate (at the budget's end and at each reporting point) and lengths of per-episode results."""
    n = len(results)
    steps = np.array([r["success_step"] if r["success_step"] is not None else np.inf for r in results], float)
    returns = np.array([r["task_return"] for r in results if "task_return" in r], float)
    lengths = np.array([r["length"] for r in results], float)
    rate = lambda limit: float((steps <= limit).mean()) if n else float("nan")  # noqa: E731
    out = {"success_rate": rate(budget.sim_steps), "episodes": n,
           "success_ci95": [round(x, 4) for x in wilson_interval(int(np.isfinite(steps).sum()), n)],
           "mean_episode_length": float(lengths.mean()) if n else float("nan"),
           "max_steps": -(-budget.sim_steps // frameskip), "budget": budget.name, "budget_sim_steps": budget.sim_steps,
           "success_check_every": budget.check_every,
           "success_at_sim_steps": {str(k): rate(k) for k in budget.report_at}}
    if budget.name == "dino-wm":
        out["success_after_replans"] = dict(zip(map(str, DINO_WM_REPORT_REPLANS), out["success_at_sim_steps"].values()))
    if budget.to_end and len(returns):  # the task's return: mean, its 95 % interval, and the spread
        out.update(mean_task_return=float(returns.mean()), task_return_ci95=list(mean_interval(returns)),
                   task_return_std=float(returns.std()))
    return out


def run_chunk(env, chunk: np.ndarray, budget: Budget, sim_steps: int,
              success_step: int | None = None) -> tuple[dict, int, int | None, float]:
    """Step ``env`` through one action chunk [frameskip, A] under ``budget``.

    Success is checked only after sim steps that are multiples of ``budget.check_every``, and
    the chunk stops at the first success seen (unless ``budget.to_end``) or at the budget's end.
    ``success_step``: the episode's success so far. Returns (the last obs, the sim steps taken so
    far, the sim step of the first success or None, the sim's ``task_reward`` summed over the chunk).
    """
    obs, reward = None, 0.0
    for sim_action in chunk:
        obs, _, _, _, info = env.step(sim_action)
        sim_steps += 1
        reward += float(info.get("task_reward", 0.0))
        if success_step is None and budget.checks(sim_steps) and info["is_success"]:
            success_step = sim_steps
            if not budget.to_end:
                break
        if sim_steps >= budget.sim_steps:
            break
    return obs, sim_steps, success_step, reward


def _run_batch(policy, model, env_id, seeds, budget: Budget, deterministic, video_dir, n_videos, on_end=None,
               look: str | None = None, placements=None) -> list[dict[str, Any]]:
    fs = model.config.frameskip
    task = budget.name == TASK_BUDGET  # the sim's own task episode: its own starts and goals
    envs = [make_sim(env_id, model.meta.image_size, look=look, task=task).unwrapped for _ in seeds]
    envs = [EpisodeRecorder(e) if on_end else e for e in envs]
    action_space = chunk_space(envs[0].action_space, fs)
    try:
        pixels, goals = [], []
        for j, (env, s) in enumerate(zip(envs, seeds)):
            placed = None if placements is None else {"start_state": placements[j][0], "goal_state": placements[j][1]}
            obs, _ = env.reset(seed=s, options=placed)
            pixels.append(obs["pixels"]), goals.append(env.unwrapped.goal_pixels)
        goal_feats = _encode(model, np.stack(goals))
        active = np.ones(len(envs), bool)
        sim_steps, length, task_return = np.zeros(len(envs), int), np.zeros(len(envs), int), np.zeros(len(envs))
        success_step: list[int | None] = [None] * len(envs)
        # planners say what they expect to see next: videos then show real | planned (decoded) | goal
        planned = n_videos > 0 and hasattr(policy, "expected") and hasattr(model.encoder, "decode")
        frames = [[side_by_side(*([p, p] if planned else [p]), g)] for p, g in zip(pixels[:n_videos], goals[:n_videos])]
        if hasattr(policy, "reset"):  # planners keep warm starts per episode
            policy.reset()
        # The policy sees the running episodes only (finished ones cost a planner nothing): rows = their indices,
        # history [len(rows), H, N, C] the model's history of their frames, as in imagination, goal their goals.
        rows, history, goal = np.arange(len(envs)), None, goal_feats
        while active.any():
            if not active[rows].all():  # episodes ended: drop their rows, and tell a planner with per-row state
                kept = active[rows]
                keep = torch.from_numpy(kept).to(goal.device)
                if hasattr(policy, "keep_rows"):
                    policy.keep_rows(keep)
                rows, history, goal = rows[kept], history[keep], goal[keep]
            feats = _encode(model, np.stack([pixels[i] for i in rows]))
            history = push_history(history, feats, model.config.history)
            actions, _ = policy.predict(policy_observation(history, goal), deterministic=deterministic)
            filmed = int((rows < n_videos).sum())  # video episodes come first, so they are the first rows
            imagined = model.decode_pixels(policy.expected[:filmed]).cpu().numpy() if planned else None
            for j, i in enumerate(rows):
                chunk = check_action(actions[j], action_space).reshape(fs, -1)
                step_obs, sim_steps[i], success_step[i], reward = run_chunk(envs[i], chunk, budget, int(sim_steps[i]),
                                                                            success_step[i])
                task_return[i] += reward
                active[i] = (success_step[i] is None or budget.to_end) and sim_steps[i] < budget.sim_steps
                pixels[i] = step_obs["pixels"]
                length[i] += 1
                if i < n_videos:
                    frames[i].append(side_by_side(*([pixels[i], imagined[j]] if planned else [pixels[i]]), goals[i]))
                if not active[i] and on_end:
                    on_end(i, envs[i].episode())
        for i in range(n_videos):
            write_mp4(Path(video_dir) / f"episode_{seeds[i]}.mp4", np.stack(frames[i]))
        return [{"seed": s, "success": success_step[i] is not None, "success_step": success_step[i],
                 "length": int(length[i]), "sim_steps": int(sim_steps[i]),
                 **({"task_return": float(task_return[i])} if task else {})} for i, s in enumerate(seeds)]
    finally:
        for env in envs:
            env.close()


@torch.no_grad()
def _encode(model: WorldModel, frames: np.ndarray) -> torch.Tensor:
    return model.encode(torch.from_numpy(np.ascontiguousarray(frames)))
