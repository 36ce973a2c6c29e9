"""Planning with the world model: CEM, gradient-based (GBP, Adam) and MPPI, batched over episodes.

Every planner minimises the same goal cost over a horizon of action chunks,

    cost(a_1..a_T) = Σ_i 0.5^(T−i) · mean((ŝ_i − s_goal)²),   ŝ = model.rollout(s_hist, a),

so the last predicted frame counts most and earlier ones pull the plan towards the goal too.
A goal distance has no notion of obstacles: on Wall even an exact model stalls MPC against
the wall on a third of the pairs (``benchmarks/oracle_planning.py``). Given a ``value``
function (an agent's critic trained in imagination, see ``agents.train_agent.value_function``),
the cost adds a learned cost-to-go of the plan's end, ``− value_weight · V(ŝ_T, goal)``.
``agents.waypoints.WaypointPlanner`` instead keeps the cost and moves the goal: it aims any of
these planners at a waypoint found by graph search over an offline dataset's frames.

``terminal="temporal"`` swaps what scores each predicted frame: instead of the feature MSE it is
the model's learned temporal distance (``model.goal_distance(ŝ_i, s_goal, "temporal")``, model
steps to go, fitted by ``wm-gym train-distance``), so the cost counts steps around walls, not
feature overlap. The same decay weights apply (``decay=0``: the final frame alone); the head is
differentiable, so GBP/GD push gradients through it and CEM/MPPI just score samples with it.

A ``prior`` policy (an SB3 agent trained in imagination; TD-MPC2's policy prior) proposes plans:
it acts closed loop in the model for ``horizon`` steps, seeing what it saw in imagination
(``policy_observation(history, goal)``). Its deterministic rollout is a start candidate (each
planner starts, per row, from the cheaper of it and MPC's warm start), and CEM/MPPI put
``prior_samples`` × ``samples`` prior rollouts (the first deterministic, the rest with the
policy's own action noise) among every iteration's samples.

They all expose SB3's ``predict(obs) -> (actions, None)`` on the imagination env's observation
``[the model's history of feature frames, goal features]``, so ``wm-gym evaluate``'s real-sim harness runs them unchanged.
One ``predict`` plans for every row of the batch at once (50 episodes = one batch).

``starts=K`` (GBP/GD) optimises K plans per row side by side, the start above and K − 1 random ones,
and keeps the cheapest. The evaluation harness shows a planner only the episodes still running and
calls ``keep_rows`` when some end, so finished episodes cost no planning.

``mpc=True`` replans after every ``execute`` chunks (1 by default; DINO-WM's MPC executes 5)
and warm-starts from the previous plan shifted by what was executed (``warm_start=False``: from the zero
plan, or the prior's, every time); ``mpc=False`` plans once
per ``horizon`` steps and executes the whole plan open loop. Planning happens in normalised
action units u ∈ [−1, 1].
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wm_gym.imagine.vector_env import policy_observation, policy_observation_tensor, push_history, split_observation
from wm_gym.world_model import WorldModel

PLANNERS = ("cem", "gbp", "gd", "mppi")
#: What scores a predicted frame against the goal: feature MSE (goal_cost) or the learned steps to go.
TERMINALS = ("goal", "temporal")


@dataclass
class PlannerConfig:
    horizon: int = 5            # action chunks planned ahead
    mpc: bool = True            # replan every `execute` steps (else execute the whole plan open loop)
    execute: int = 1            # MPC: chunks of each plan executed before replanning (DINO-WM: 5)
    warm_start: bool = True     # MPC: start each plan from the one before, shifted by what ran; off: from the zero
                                # plan (or the prior's), so a plan depends on the state alone (a DAgger teacher's
                                # labels: agents/distill.py)
    mode: str = "controller"    # how the world model turns actions into latent actions
    decay: float = 0.5          # predicted frame i of T weighs decay^(T−i) in the cost (0: only the final frame)
    scales: tuple[int, ...] = (1,)  # token-grid blur kernels the cost averages over (1 = plain MSE); see goal_cost
    # sampling planners (CEM, MPPI)
    samples: int = 300          # CEM/MPPI samples per iteration
    elites: int = 30            # CEM top-k
    iterations: int = 10        # CEM/MPPI iterations
    init_std: float = 1.0       # CEM/MPPI's first sampling std, in normalised action units
    temperature: float = 0.5    # MPPI: weights ∝ exp(−cost / (temperature · std of costs))
    # gradient-based planning (gbp: Adam at lr; gd: plain gradient descent at gd_lr)
    gbp_steps: int = 100        # gradient steps per plan (gbp and gd)
    lr: float = 0.2             # GBP Adam learning rate
    gd_lr: float = 1.0          # GD learning rate
    noise: float = 0.003        # Gaussian noise added to u after each Adam step (escapes flat spots)
    starts: int = 1             # gbp/gd: plans optimised side by side per row (the warm start or prior, the rest
                                # random); the cheapest is kept. More starts escape the corners one start sticks in
    seed: int = 0
    value_weight: float = 1.0   # weight of −V(last predicted frames, goal), when a value function is given
    terminal: str = "goal"      # per-frame cost against the goal: goal (feature MSE, goal_cost) | temporal (the
                                # model's learned steps to go, a head fitted by `wm-gym train-distance`: counts
                                # steps around walls, where a feature distance points through them)
    prior_samples: float = 0.05  # CEM/MPPI with a prior: share of each iteration's samples that are the prior's
                                 # rollouts (its deterministic one, the rest with its action noise); 0.05 of 300 =
                                 # 15, about TD-MPC2's 24/512

    def __post_init__(self) -> None:
        if self.terminal not in TERMINALS:
            raise ValueError(f"terminal must be one of {', '.join(TERMINALS)}, got {self.terminal!r}")
        if self.starts < 1:
            raise ValueError(f"starts must be >= 1, got {self.starts}")
        if not 0 <= self.prior_samples <= 1:
            raise ValueError(f"prior_samples is a share of the samples, in [0, 1], got {self.prior_samples}")


#: Maps policy observations [B, (H+1)·N·C] to values [B] (higher = better), differentiably.
ValueFunction = Callable[[Tensor], Tensor]


class Policy(Protocol):
    """Anything with SB3's predict: policy observations [B, (H+1)·N·C] → action chunks [B, A] in sim units."""

    def predict(self, observation: np.ndarray, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]: ...


class Planner(ABC):
    """Shared plumbing: observation parsing, history, warm start, prior proposals, open-loop queue, timing."""

    def __init__(self, model: WorldModel, config: PlannerConfig | None = None, value: ValueFunction | None = None,
                 prior: Policy | None = None):
        self.model, self.config, self.value, self.prior = model.eval(), config or PlannerConfig(), value, prior
        if self.config.horizon < 1 or not 1 <= self.config.execute <= self.config.horizon:
            raise ValueError(f"need horizon >= 1 and 1 <= execute <= horizon, got {self.config.horizon} and {self.config.execute}")
        if self.config.terminal == "temporal" and model.temporal_distance is None:
            raise ValueError("terminal='temporal' needs a world model with a temporal-distance head; fit one with "
                             "`wm-gym train-distance --model MODEL --data DIR` (or use terminal='goal')")
        if prior is not None:
            check_prior(prior, model)
        self.generator = torch.Generator(device=model.device).manual_seed(self.config.seed)
        self.plan_seconds: list[float] = []
        self.reset()

    def reset(self) -> None:
        self._warm: Tensor | None = None   # [B, T, A] normalised plan to start from
        self._queue: Tensor | None = None  # [B, k, A] open-loop actions still to execute
        self._hist: Tensor | None = None   # [B, H, N, C] past features (from the latest observation)
        self._planned: Tensor | None = None  # [B, k, N, C] predicted features of the queued actions
        self.expected: Tensor | None = None  # [B, N, C] what the model predicts after the action just returned

    def keep_rows(self, keep: Tensor) -> None:
        """Episodes ended: keep only the per-row state (warm start, queued actions) of rows where ``keep`` [B]
        is True, so the next ``predict`` gets those rows' observations alone and plans for them only."""
        keep = keep.to(self.model.device)
        for name in ("_warm", "_queue", "_hist", "_planned", "expected"):
            value = getattr(self, name)
            if value is not None:
                if value.shape[0] != keep.shape[0]:
                    raise ValueError(f"keep_rows got {keep.shape[0]} rows, the planner holds {value.shape[0]}")
                setattr(self, name, value[keep])

    # ----- SB3-style interface -------------------------------------------------------------------
    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        """obs [B, (H+1)·N·C] (or unbatched) → action chunks [B, A] in sim units."""
        obs_t = torch.as_tensor(np.asarray(obs, np.float32), device=self.model.device)
        single = obs_t.ndim == 1
        obs_t = obs_t[None] if single else obs_t
        self._hist, goal = split_observation(self.model, obs_t)
        if self._queue is not None and self._queue.shape[1] > 0:
            u, self.expected = self._queue[:, 0], self._planned[:, 0]
            self._queue, self._planned = self._queue[:, 1:], self._planned[:, 1:]
        else:
            started = time.perf_counter()
            start = self._warm if self.config.warm_start else torch.zeros(
                goal.shape[0], self.config.horizon, self.model.config.action_dim, device=goal.device)
            plan = self.plan(self._hist, goal, start)
            self.plan_seconds.append(time.perf_counter() - started)
            u = plan[:, 0]
            k = self.config.execute if self.config.mpc else 1  # open loop keeps its one-step shift
            self._warm = torch.cat([plan[:, k:], plan[:, -1:].expand(-1, k, -1)], dim=1)  # shift by what runs
            self._queue = plan[:, 1:self.config.execute] if self.config.mpc else plan[:, 1:]
            with torch.no_grad():  # the plan's imagined future, for planned-vs-real videos
                predicted = self.model.rollout(self._hist, self.to_sim(plan), mode=self.config.mode)
            self.expected, self._planned = predicted[:, 0], predicted[:, 1:]
        actions = self.to_sim(u).detach().cpu().numpy()
        return (actions[0] if single else actions), None

    @property
    def seconds_per_plan(self) -> float:
        return float(np.mean(self.plan_seconds)) if self.plan_seconds else float("nan")

    # ----- what each planner implements ------------------------------------------------------------
    @abstractmethod
    def plan(self, s_hist: Tensor, goal: Tensor, warm: Tensor | None) -> Tensor:
        """[B, H, N, C], [B, N, C] → the best normalised plan u [B, T, A]."""

    # ----- shared pieces -----------------------------------------------------------------------------
    def cost(self, s_hist: Tensor, goal: Tensor, u: Tensor) -> Tensor:
        """Goal cost [B] of normalised plans u [B, T, A] (differentiable)."""
        preds = self.model.rollout(s_hist, self.to_sim(u), mode=self.config.mode)  # [B, T, N, C]
        t = u.shape[1]
        weights = self.config.decay ** torch.arange(t - 1, -1, -1, device=u.device, dtype=preds.dtype)
        cost = (self.frame_cost(preds, goal) * weights).sum(1)
        if self.value is not None:  # cost-to-go from the plan's last H frames, as the agent would see them
            last = torch.cat([s_hist, preds], dim=1)[:, -self.model.config.history:]
            cost = cost - self.config.value_weight * self.value(policy_observation_tensor(last, goal))
        return cost

    def frame_cost(self, preds: Tensor, goal: Tensor) -> Tensor:
        """[B, T] cost of each predicted frame [B, T, N, C] against its row's goal [B, N, C]:
        the feature MSE (``terminal="goal"``) or the learned model steps to go (``"temporal"``)."""
        goals = goal[:, None].expand_as(preds)
        if self.config.terminal == "temporal":
            steps = self.model.goal_distance(preds.flatten(0, 1), goals.flatten(0, 1), "temporal")
            return steps.view(preds.shape[:2])
        return goal_cost(preds, goals, self.config.scales)

    def to_sim(self, u: Tensor) -> Tensor:
        low, high = self.model.action_low, self.model.action_high
        return low + (u.clamp(-1, 1) + 1) / 2 * (high - low)

    def propose(self, s_hist: Tensor, goal: Tensor, k: int) -> Tensor | None:
        """k plans per row from the prior, normalised [B, k, T, A]: its deterministic rollout first, then
        k − 1 with the policy's own action noise (SB3's ``deterministic=False``). None without a prior."""
        if self.prior is None:
            return None
        b = goal.shape[0]
        rows = torch.arange(b, device=goal.device)
        rows = torch.cat([rows, rows.repeat_interleave(k - 1)])  # B mean rows, then each row k − 1 times
        plans = policy_rollout(self.model, self.prior, s_hist[rows], goal[rows], self.config.horizon,
                               self.config.mode, deterministic_rows=b)  # one batch: a model step's cost is per call
        plans = torch.cat([plans[:b, None], plans[b:].view(b, k - 1, *plans.shape[1:])], dim=1)
        return self.model.scale_actions(plans).clamp(-1, 1)

    def _start(self, s_hist: Tensor, goal: Tensor, warm: Tensor | None, proposal: Tensor | None) -> Tensor:
        """The plan to improve [B, T, A]: per row the cheaper of MPC's warm start and the prior's
        proposal (either may be missing); with neither, the planner's cold start."""
        b = goal.shape[0]
        starts = [x for x in (warm if warm is not None and warm.shape[0] == b else None, proposal) if x is not None]
        if not starts:
            return self._cold_start(b)
        if len(starts) == 1:
            return starts[0].clone()
        with torch.no_grad():  # both scored in one batch
            cost = self.cost(s_hist.repeat(2, 1, 1, 1), goal.repeat(2, 1, 1), torch.cat(starts)).view(2, b)
        return torch.where((cost[1] < cost[0])[:, None, None], starts[1], starts[0])

    def _cold_start(self, b: int) -> Tensor:
        """[B, T, A] zeros: the middle of the action range (sampling planners spread around it)."""
        return torch.zeros(b, self.config.horizon, self.model.config.action_dim, device=self.model.device)

    @property
    def prior_count(self) -> int:
        """How many of each iteration's ``samples`` are prior rollouts (slot 0 keeps the mean)."""
        if self.prior is None or self.config.prior_samples == 0:
            return 0
        return min(math.ceil(self.config.prior_samples * self.config.samples), self.config.samples - 1)

    def _sample_costs(self, s_hist: Tensor, goal: Tensor, mean: Tensor, std: Tensor,
                      fixed: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``samples`` plans per row around mean/std, the mean and ``fixed`` plans [B, F, T, A]
        (the prior's) among them; returns (u [B, S, T, A], cost [B, S])."""
        b, k = mean.shape[0], self.config.samples
        noise = torch.randn((b, k, *mean.shape[1:]), generator=self.generator, device=mean.device)
        u = (mean[:, None] + std[:, None] * noise).clamp(-1, 1)
        u[:, 0] = mean.clamp(-1, 1)  # keep the current mean among the candidates
        if fixed is not None and fixed.shape[1] > 0:
            u[:, 1:1 + fixed.shape[1]] = fixed
        flat_hist = s_hist[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1)
        flat_goal = goal[:, None].expand(-1, k, -1, -1).flatten(0, 1)
        with torch.no_grad():
            cost = self.cost(flat_hist, flat_goal, u.flatten(0, 1)).view(b, k)
        return u, cost


class SamplingPlanner(Planner):
    """Sample ``samples`` plans around a Gaussian, score them, refit; ``iterations`` times."""

    def plan(self, s_hist, goal, warm):
        proposals = self.propose(s_hist, goal, max(1, self.prior_count))  # rolled out once per plan, as TD-MPC2
        mean = self._start(s_hist, goal, warm, None if proposals is None else proposals[:, 0])
        std = torch.full_like(mean, self.config.init_std)
        fixed = None if proposals is None else proposals[:, :self.prior_count]
        for _ in range(self.config.iterations):
            u, cost = self._sample_costs(s_hist, goal, mean, std, fixed)
            mean, std = self.refit(u, cost, std)
        return mean

    @abstractmethod
    def refit(self, u: Tensor, cost: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """Plans u [B, S, T, A] with costs [B, S] → the next (mean, std) [B, T, A]."""


class CEMPlanner(SamplingPlanner):
    """Cross-entropy method: refit a Gaussian to the ``elites`` best of ``samples`` plans."""

    def refit(self, u, cost, std):
        idx = cost.topk(self.config.elites, dim=1, largest=False).indices  # [B, E]
        elites = u.gather(1, idx[:, :, None, None].expand(-1, -1, *u.shape[2:]))
        return elites.mean(1), elites.std(1).clamp_min(1e-3)


class MPPIPlanner(SamplingPlanner):
    """MPPI: the cost-weighted average of sampled plans, weights ∝ exp(−cost / λ); the spread stays fixed."""

    def refit(self, u, cost, std):
        scale = self.config.temperature * cost.std(1, keepdim=True).clamp_min(1e-8)
        w = torch.softmax(-(cost - cost.min(1, keepdim=True).values) / scale, dim=1)  # [B, S]
        return (w[:, :, None, None] * u).sum(1), std


class GradientPlanner(Planner):
    """Gradient-based planning: Adam on the actions through the differentiable rollout."""

    @torch.enable_grad()  # also when called under no_grad: the gradient is the method
    def plan(self, s_hist, goal, warm):
        s_hist, goal = s_hist.detach(), goal.detach()
        proposal = self.propose(s_hist, goal, 1)
        u = self._start(s_hist, goal, warm, None if proposal is None else proposal[:, 0])
        b, k = u.shape[0], self.config.starts
        if k > 1:  # row-major [B·K]: each row's first plan is its start, the others random
            u = torch.cat([u[:, None], self._cold_start(b * (k - 1)).view(b, k - 1, *u.shape[1:])], 1).flatten(0, 1)
            s_hist, goal = s_hist.repeat_interleave(k, 0), goal.repeat_interleave(k, 0)
        u.requires_grad_(True)
        optimizer = self.optimizer([u])
        for _ in range(self.config.gbp_steps):
            loss = self.cost(s_hist, goal, u).sum()  # rows are independent: one backward for all
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                u.add_(self.config.noise * torch.randn(u.shape, generator=self.generator, device=u.device)).clamp_(-1, 1)
        u = u.detach()
        if k == 1:
            return u
        with torch.no_grad():
            best = self.cost(s_hist, goal, u).view(b, k).argmin(1)
        return u.view(b, k, *u.shape[1:])[torch.arange(b, device=u.device), best]

    def _cold_start(self, b: int) -> Tensor:
        """[B, T, A] random plans (Gaussian, clipped to [−1, 1]): different rows start in different places."""
        return torch.randn(b, self.config.horizon, self.model.config.action_dim, generator=self.generator,
                           device=self.model.device).clamp(-1, 1)

    def optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.config.lr)


class GradientDescentPlanner(GradientPlanner):
    """Plain gradient descent on the actions (DINO-WM's GD planner: lr 1): the baseline Adam improves on."""

    def optimizer(self, params: list[Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.config.gd_lr)


def goal_cost(pred: Tensor, goal: Tensor, scales: tuple[int, ...] = (1,)) -> Tensor:
    """Mean over ``scales`` of the MSE between token grids blurred by a k×k box: [..., N, C] → [...].

    k = 1 is DINO-WM's plain feature MSE. With a local encoder, a small agent's features change
    only in the few tokens it covers, so the plain MSE is flat once the agent is a few tokens
    from the goal; blurring both grids spreads each token's features over k×k neighbours and
    the cost keeps a slope towards the goal from further away.
    """
    if tuple(scales) == (1,):
        return ((pred - goal) ** 2).mean(dim=(-2, -1))
    *lead, n, c = pred.shape
    g = math.isqrt(n)
    if g * g != n:
        raise ValueError(f"blurred costs need a square token grid, got {n} tokens")
    both = torch.stack([pred, goal]).reshape(-1, g, g, c).permute(0, 3, 1, 2)  # [2·B', C, g, g]
    total = 0.0
    for k in scales:
        blurred = both if k == 1 else F.avg_pool2d(both, k, stride=1, padding=k // 2, count_include_pad=False)
        p, q = blurred.reshape(2, -1, c, g, g)
        total = total + ((p - q) ** 2).mean(dim=(1, 2, 3))
    return (total / len(scales)).reshape(lead)


@torch.no_grad()
def policy_rollout(model: WorldModel, policy: Policy, s_hist: Tensor, goal: Tensor, horizon: int,
                   mode: str = "controller", deterministic_rows: int | None = None) -> Tensor:
    """``policy`` acting closed loop in the model: action chunks [B, T, A] in sim units.

    At each step it sees what it saw in imagination, ``policy_observation(history, goal)``, and
    its chunk moves the model one step (s_hist [B, H, N, C], goal [B, N, C]). The first
    ``deterministic_rows`` rows (default: all) take the policy's mean action, the rest sample it.
    """
    b = goal.shape[0]
    n = b if deterministic_rows is None else deterministic_rows
    actions = []
    for t in range(horizon):
        obs = policy_observation(s_hist, goal)
        chunks = [policy.predict(part, deterministic=det)[0] for part, det in ((obs[:n], True), (obs[n:], False))
                  if len(part)]
        actions.append(torch.as_tensor(np.concatenate(chunks), dtype=torch.float32, device=model.device).reshape(b, -1))
        if t < horizon - 1:
            s_hist = push_history(s_hist, model.step(s_hist, actions[-1], mode=mode), model.config.history)
    return torch.stack(actions, dim=1)


def check_prior(prior: Policy, model: WorldModel) -> None:
    """Raise unless ``prior`` takes this model's policy observations and acts in its sim action chunks."""
    h, n, c, a = model.config.history, model.n_tokens, model.dim, model.config.action_dim
    obs_space, act_space = getattr(prior, "observation_space", None), getattr(prior, "action_space", None)
    if obs_space is not None and tuple(obs_space.shape) != ((h + 1) * n * c,):
        raise ValueError(f"the prior policy takes observations of shape {tuple(obs_space.shape)}, this model's are "
                         f"({(h + 1) * n * c},) ({h} feature frames and the goal's): train it on this world model")
    if act_space is not None and tuple(act_space.shape) != (a,):
        raise ValueError(f"the prior policy acts with shape {tuple(act_space.shape)}, planners need sim action chunks "
                         f"({a},): train it with the imagination env's actions='sim'")


def load_prior(path: str | Path, device: str = "cpu", model: WorldModel | None = None,
               grounding: str | Path | None = None) -> Policy:
    """A ``train-agent`` agent as a planner's prior: it must see the goal and propose sim action chunks.

    A latent-action agent answers z, not chunks; given the ``model`` it plans on, it is wrapped in
    its grounding map (``grounding``, else the one its sidecar records), so each z it picks in the
    prior's rollout becomes the chunk g(s_t, z) and the planner gets chunks like from any prior.
    """
    from .train_agent import load_agent

    agent, meta = load_agent(path, device)
    if meta.get("task", "goal") != "goal":
        raise ValueError(f"the prior {path} was trained with task {meta['task']!r}; a planner's prior must see the "
                         "goal (train-agent --task goal)")
    if meta.get("action_space", "sim") == "sim":
        if grounding:
            raise ValueError(f"the prior {path} acts in sim action chunks; a grounding map is only for latent-action "
                             "priors")
        return agent
    if model is None or not (grounding or meta.get("grounding")):
        raise ValueError(f"the prior {path} acts in {meta['action_space']!r} actions; planners plan sim action chunks, "
                         "so a latent prior is grounded on the planning model through a grounding map: train it with "
                         "`train-agent --action-space latent --grounding G.pt` (recorded in its sidecar), or pass "
                         "the model and grounding=G.pt (online: --grounding G.pt)")
    from .evaluate import real_policy

    return real_policy(agent, meta, model, grounding, name=f"the prior {path}")[0]


def make_planner(name: str, model: WorldModel, config: PlannerConfig | None = None,
                 value: ValueFunction | None = None, prior: Policy | None = None) -> Planner:
    classes = {"cem": CEMPlanner, "gbp": GradientPlanner, "gd": GradientDescentPlanner, "mppi": MPPIPlanner}
    if name not in classes:
        raise ValueError(f"unknown planner {name!r}; expected one of {', '.join(PLANNERS)}")
    return classes[name](model, config, value, prior)
