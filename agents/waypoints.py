"""Waypoints by graph search over an offline dataset, for planners whose goal cost cannot see walls.

A goal-feature cost pulls a plan straight at the goal, so on Wall MPC stalls against the wall
whenever the door is off that line, even with an exact model (``benchmarks/oracle_planning.py``:
0.68). Search on the replay buffer (Eysenbach et al., 2019) fixes the objective without
changing the planner: the dataset's frames, one every model step, are the nodes of a graph.

- A **transition** edge joins consecutive frames of an episode: a step the sim really took,
  cost 1 model step. Transitions never pass through a wall.
- A **merge** edge joins a frame to each of its ``neighbours`` nearest frames in feature space
  when they are closer than ``merge_radius`` × the median transition's feature distance, at
  cost (their distance / that median). It stitches different episodes together where they
  pass through the same state; the radius keeps it from jumping across a thin wall.

The shortest path from the current frame's nearest node to the goal's then goes around
obstacles, and :class:`WaypointPlanner` gives the inner planner the node ``lookahead`` model
steps along that path as its goal; near the goal it gives the goal itself.

Nodes are single frames: with a history-H model the path ignores velocity (fine for Wall,
approximate for PointMaze).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import dijkstra
from torch import Tensor

from wm_gym.world_model import WorldModel

from .planners import Planner, split_observation


class WaypointGraph:
    """Nodes = feature frames [M, D]; edges = transitions within episodes + near-duplicate merges."""

    def __init__(self, features: Tensor, episode_lengths: Sequence[int], neighbours: int = 8,
                 merge_radius: float = 0.25, block: int = 1024):
        features = torch.as_tensor(features, dtype=torch.float32).flatten(1)
        lengths = np.asarray(episode_lengths, np.int64)
        if features.ndim != 2 or len(features) == 0:
            raise ValueError(f"a waypoint graph needs a non-empty [M, D] feature array, got {tuple(features.shape)}")
        if np.any(lengths < 1) or lengths.sum() != len(features):
            raise ValueError(f"episode lengths (frames per episode) must be >= 1 and sum to {len(features)} frames, "
                             f"got a sum of {int(lengths.sum())}")
        if not torch.isfinite(features).all():
            raise ValueError("waypoint graph features contain NaN or inf")
        self.features, self.lengths = features, lengths
        self._sq = (features ** 2).sum(1)  # squared norms, for distances as |x|² + |y|² − 2x·y
        m = len(features)
        ends = np.cumsum(lengths)
        src = np.concatenate([np.arange(e - n, e - 1) for e, n in zip(ends, lengths)])  # every frame but an episode's last
        if len(src) == 0:
            raise ValueError("the waypoint graph's episodes have no transitions (every episode is a single frame)")
        step = (features[src + 1] - features[src]).norm(dim=1).numpy()
        self.transition_scale = float(np.median(step)) or 1.0  # feature distance of a typical model step
        near, dist = self._nearest_neighbours(min(neighbours, m - 1), block)
        keep = dist <= merge_radius * self.transition_scale
        a, b = np.repeat(np.arange(m), near.shape[1])[keep.ravel()], near.ravel()[keep.ravel()]
        merge_cost = dist.ravel()[keep.ravel()] / self.transition_scale + 1e-6
        rows = np.concatenate([src, a, b])  # merges go both ways
        cols = np.concatenate([src + 1, b, a])
        cost = np.concatenate([np.ones(len(src)), merge_cost, merge_cost])
        # one edge per (from, to) pair, the cheapest (sparse matrices would add up duplicates)
        order = np.lexsort((cost, cols, rows))
        rows, cols, cost = rows[order], cols[order], cost[order]
        first = np.ones(len(rows), bool)
        first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
        rows, cols, cost = rows[first], cols[first], cost[first]
        # reversed graph: shortest paths *from* the goal in it are shortest paths *to* the goal
        self._to_goal = coo_matrix((cost, (cols, rows)), shape=(m, m)).tocsr()
        self.merges = len(rows) - len(src)  # edges beside the (distinct) transitions
        self._paths: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # goal node -> steps_to(goal node)
        self.cached_goals = 256

    @classmethod
    def from_datasets(cls, model: WorldModel, folders: Sequence[str | Path], progress: bool = True,
                      **kwargs) -> "WaypointGraph":
        """Every ``frameskip``-th frame of each episode of ``wm-gym collect`` datasets, in ``model``'s features."""
        from wm_gym.data.dataset import load_episodes
        from wm_gym.encoders.cache import episode_step_features

        if not folders:
            raise ValueError("a waypoint graph needs at least one dataset folder")
        fs, feats, lengths = model.config.frameskip, [], []
        for folder in folders:
            data = load_episodes(folder)
            if data.image_size != model.meta.image_size:
                raise ValueError(f"{folder} has {data.image_size}px frames, the model takes {model.meta.image_size}px")
            raw, counts = episode_step_features(model.encoder, folder, data.frames, data.frame_step(fs), progress,
                                                model.device)
            feats.append(model.normalize(raw.to(model.device)).cpu())
            lengths += counts
        return cls(torch.cat(feats), lengths, **kwargs)

    def __len__(self) -> int:
        return len(self.features)

    def _nearest_neighbours(self, k: int, block: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices [M, k], distances [M, k]) of each node's k nearest other nodes."""
        x, sq = self.features, self._sq
        if k < 1:
            return np.zeros((len(x), 0), np.int64), np.zeros((len(x), 0))
        idx, dist = [], []
        for start in range(0, len(x), block):
            d2 = (sq[start:start + block, None] + sq[None] - 2 * x[start:start + block] @ x.T).clamp_min(0)
            d2[torch.arange(len(d2)), torch.arange(start, start + len(d2))] = float("inf")
            v, j = d2.topk(k, largest=False)
            idx.append(j), dist.append(v.sqrt())
        return torch.cat(idx).numpy(), torch.cat(dist).numpy()

    def nearest(self, feats: Tensor) -> np.ndarray:
        """Index [B] of the node nearest to each feature frame [B, D] (or [B, N, C])."""
        f = torch.as_tensor(feats, dtype=torch.float32).flatten(1).to(self.features.device)
        if f.shape[1] != self.features.shape[1]:
            raise ValueError(f"features have {f.shape[1]} numbers per frame, the graph's nodes {self.features.shape[1]}")
        return (self._sq[None] - 2 * f @ self.features.T).argmin(1).numpy()

    def steps_to(self, goal_node: int) -> tuple[np.ndarray, np.ndarray]:
        """(model steps from every node to ``goal_node`` [M] (inf: unreachable), next node on the way [M])."""
        if goal_node not in self._paths:
            if len(self._paths) >= self.cached_goals:  # forget the oldest goal: a long online run sees many
                self._paths.pop(next(iter(self._paths)))
            steps, after = dijkstra(self._to_goal, indices=goal_node, return_predecessors=True)
            self._paths[goal_node] = (steps, after)
        return self._paths[goal_node]

    def path(self, node: int, goal_node: int, lookahead: float) -> list[int]:
        """Nodes from ``node`` along the shortest path to ``goal_node``, up to ``lookahead`` model steps on."""
        steps, after = self.steps_to(goal_node)
        path = [int(node)]
        while path[-1] != goal_node and after[path[-1]] >= 0 and steps[node] - steps[after[path[-1]]] <= lookahead:
            path.append(int(after[path[-1]]))
        return path

    def waypoints(self, current: Tensor, goal: Tensor, lookahead: float = 1.5) -> tuple[Tensor, np.ndarray]:
        """Goals for a planner: [B, D] features ``lookahead`` steps along each row's path (the goal itself
        when the path reaches it or none exists), and bool [B]: which rows got a waypoint."""
        if lookahead <= 0:
            raise ValueError(f"lookahead must be > 0 model steps, got {lookahead}")
        here, there = self.nearest(current), self.nearest(goal)
        out, used = torch.as_tensor(goal, dtype=torch.float32).flatten(1).clone(), np.zeros(len(here), bool)
        for b, (node, goal_node) in enumerate(zip(here, there)):
            path = self.path(node, goal_node, lookahead)
            if path[-1] != goal_node and np.isfinite(self.steps_to(goal_node)[0][node]):
                out[b], used[b] = self.features[path[-1]], True
        return out, used


class WaypointPlanner:
    """Wraps a planner: the goal in each observation is replaced by the graph's waypoint towards it.

    Same SB3-style ``predict`` as the planners, so ``wm-gym plan``'s real-sim harness runs it.
    """

    def __init__(self, planner: Planner, graph: WaypointGraph, lookahead: float = 1.5):
        if graph.features.shape[1] != planner.model.n_tokens * planner.model.dim:
            raise ValueError(f"the waypoint graph's features have {graph.features.shape[1]} numbers per frame, the "
                             f"model's {planner.model.n_tokens * planner.model.dim}: build it with this model")
        self.planner, self.graph, self.lookahead = planner, graph, lookahead
        self.waypoint_fraction: list[float] = []  # per call: share of rows steered by a waypoint

    def reset(self) -> None:
        self.planner.reset()

    def keep_rows(self, keep: Tensor) -> None:
        self.planner.keep_rows(keep)

    @property
    def expected(self) -> Tensor | None:
        return self.planner.expected

    @property
    def plan_seconds(self) -> list[float]:
        return self.planner.plan_seconds

    @property
    def seconds_per_plan(self) -> float:
        return self.planner.seconds_per_plan

    def predict(self, obs: np.ndarray, state=None, episode_start=None, deterministic: bool = True):
        obs = np.array(obs, np.float32)  # a copy: the caller's observation is left as it was
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        hist, goal = split_observation(self.planner.model, torch.from_numpy(batch))
        targets, used = self.graph.waypoints(hist[:, -1], goal, self.lookahead)
        batch[:, -targets.shape[1]:] = targets.numpy()
        self.waypoint_fraction.append(float(used.mean()))
        return self.planner.predict(batch[0] if single else batch, state, episode_start, deterministic)
