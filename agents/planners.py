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
They all expose SB3's ``predict(obs) -> (actions, None)`` on the imagination env's observation
``[the model's history of feature frames, goal features]``, so ``wm-gym evaluate``'s real-sim harness runs them unchanged.
One ``predict`` plans for every row of the batch at once (50 episodes = one batch).

``mpc=True`` replans after every ``execute`` chunks (1 by default; DINO-WM's MPC executes 5)
and warm-starts from the previous plan shifted by what was executed; ``mpc=False`` plans once
per ``horizon`` steps and executes the whole plan open loop. Planning happens in normalised
action units u ∈ [−1, 1].
"""
from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wm_gym.imagine.vector_env import policy_observation_tensor
from wm_gym.world_model import WorldModel

PLANNERS = ("cem", "gbp", "gd", "mppi")


@dataclass
class PlannerConfig:
    horizon: int = 5            # action chunks planned ahead
    mpc: bool = True            # replan every `execute` steps (else execute the whole plan open loop)
    execute: int = 1            # MPC: chunks of each plan executed before replanning (DINO-WM: 5)
    mode: str = "controller"    # how the world model turns actions into latent actions
    decay: float = 0.5          # weight 0.5^(T−i) of predicted frame i in the cost
    scales: tuple[int, ...] = (1,)  # token-grid blur kernels the cost averages over (1 = plain MSE); see goal_cost
    # sampling planners (CEM, MPPI)
    samples: int = 300
    elites: int = 30            # CEM top-k
    iterations: int = 10
    init_std: float = 1.0       # in normalised action units
    temperature: float = 0.5    # MPPI: weights ∝ exp(−cost / (temperature · std of costs))
    # gradient-based planning (gbp: Adam at lr; gd: plain gradient descent at gd_lr)
    gbp_steps: int = 100
    lr: float = 0.2
    gd_lr: float = 1.0
    noise: float = 0.003        # Gaussian noise added to u after each Adam step (escapes flat spots)
    seed: int = 0
    value_weight: float = 1.0   # weight of −V(last predicted frames, goal), when a value function is given


#: Maps policy observations [B, (H+1)·N·C] to values [B] (higher = better), differentiably.
ValueFunction = Callable[[Tensor], Tensor]


class Planner(ABC):
    """Shared plumbing: observation parsing, history, warm start, open-loop queue, timing."""

    def __init__(self, model: WorldModel, config: PlannerConfig | None = None, value: ValueFunction | None = None):
        self.model, self.config, self.value = model.eval(), config or PlannerConfig(), value
        if self.config.horizon < 1 or not 1 <= self.config.execute <= self.config.horizon:
            raise ValueError(f"need horizon >= 1 and 1 <= execute <= horizon, got {self.config.horizon} and {self.config.execute}")
        self.generator = torch.Generator(device=model.device).manual_seed(self.config.seed)
        self.plan_seconds: list[float] = []
        self.reset()

    def reset(self) -> None:
        self._warm: Tensor | None = None   # [B, T, A] normalised plan to start from
        self._queue: Tensor | None = None  # [B, k, A] open-loop actions still to execute
        self._hist: Tensor | None = None   # [B, H, N, C] past features (from the latest observation)
        self._planned: Tensor | None = None  # [B, k, N, C] predicted features of the queued actions
        self.expected: Tensor | None = None  # [B, N, C] what the model predicts after the action just returned

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
            plan = self.plan(self._hist, goal, self._warm)
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
        per_frame = goal_cost(preds, goal[:, None].expand_as(preds), self.config.scales)  # [B, T]
        cost = (per_frame * weights).sum(1)
        if self.value is not None:  # cost-to-go from the plan's last H frames, as the agent would see them
            last = torch.cat([s_hist, preds], dim=1)[:, -self.model.config.history:]
            cost = cost - self.config.value_weight * self.value(policy_observation_tensor(last, goal))
        return cost

    def to_sim(self, u: Tensor) -> Tensor:
        low, high = self.model.action_low, self.model.action_high
        return low + (u.clamp(-1, 1) + 1) / 2 * (high - low)

    def _start(self, b: int, warm: Tensor | None) -> Tensor:
        if warm is not None and warm.shape[0] == b:
            return warm
        return torch.zeros(b, self.config.horizon, self.model.config.action_dim, device=self.model.device)

    def _sample_costs(self, s_hist: Tensor, goal: Tensor, mean: Tensor, std: Tensor) -> tuple[Tensor, Tensor]:
        """Draw ``samples`` plans per row around mean/std; returns (u [B, S, T, A], cost [B, S])."""
        b, k = mean.shape[0], self.config.samples
        noise = torch.randn((b, k, *mean.shape[1:]), generator=self.generator, device=mean.device)
        u = (mean[:, None] + std[:, None] * noise).clamp(-1, 1)
        u[:, 0] = mean.clamp(-1, 1)  # keep the current mean among the candidates
        flat_hist = s_hist[:, None].expand(-1, k, -1, -1, -1).flatten(0, 1)
        flat_goal = goal[:, None].expand(-1, k, -1, -1).flatten(0, 1)
        with torch.no_grad():
            cost = self.cost(flat_hist, flat_goal, u.flatten(0, 1)).view(b, k)
        return u, cost


class SamplingPlanner(Planner):
    """Sample ``samples`` plans around a Gaussian, score them, refit; ``iterations`` times."""

    def plan(self, s_hist, goal, warm):
        mean = self._start(goal.shape[0], warm)
        std = torch.full_like(mean, self.config.init_std)
        for _ in range(self.config.iterations):
            u, cost = self._sample_costs(s_hist, goal, mean, std)
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
        b = goal.shape[0]
        if warm is not None and warm.shape[0] == b:
            u0 = warm.clone()
        else:
            u0 = torch.randn(b, self.config.horizon, self.model.config.action_dim, generator=self.generator,
                             device=goal.device).clamp(-1, 1)
        u = u0.requires_grad_(True)
        optimizer = self.optimizer([u])
        s_hist, goal = s_hist.detach(), goal.detach()
        for _ in range(self.config.gbp_steps):
            loss = self.cost(s_hist, goal, u).sum()  # rows are independent: one backward for all
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                u.add_(self.config.noise * torch.randn(u.shape, generator=self.generator, device=u.device)).clamp_(-1, 1)
        return u.detach()

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


def split_observation(model: WorldModel, obs: Tensor) -> tuple[Tensor, Tensor]:
    """A policy observation [B, (H+1)·N·C] → (history [B, H, N, C], goal [B, N, C]); bad shapes raise."""
    n, c, h = model.n_tokens, model.dim, model.config.history
    if obs.ndim != 2 or obs.shape[1:] != ((h + 1) * n * c,):
        raise ValueError(f"obs must be [B, {(h + 1) * n * c}] ({h} feature frames and the goal's), "
                         f"got {tuple(obs.shape)}")
    return obs[:, : h * n * c].reshape(-1, h, n, c), obs[:, h * n * c:].reshape(-1, n, c)


def make_planner(name: str, model: WorldModel, config: PlannerConfig | None = None,
                 value: ValueFunction | None = None) -> Planner:
    classes = {"cem": CEMPlanner, "gbp": GradientPlanner, "gd": GradientDescentPlanner, "mppi": MPPIPlanner}
    if name not in classes:
        raise ValueError(f"unknown planner {name!r}; expected one of {', '.join(PLANNERS)}")
    return classes[name](model, config, value)
