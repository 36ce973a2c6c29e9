"""Success calibration: which feature distance to the goal means "the sim would call this a success".

Imagination has no simulator to ask, so an imagined episode ends when the feature distance to
the goal falls below a threshold. We pick that threshold on held-out real data, where both are
known: pairs of frames (k, j) of one episode at model-step times, labelled by the sim's own
success test on their true states, plus each frame against the episode's goal image, labelled
by the recorded success flag. The threshold maximises F1 on half of the episodes; precision
and recall are reported on the other half, so the numbers are not fitted to themselves.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_gym.data.collect import make_sim
from wm_gym.data.dataset import load_episodes
from wm_gym.rewards import feature_distance
from wm_gym.world_model import WorldModel


def labelled_pairs(model: WorldModel, data_dir: str | Path, metric: str = "l1",
                   max_episodes: int | None = None) -> dict[str, np.ndarray]:
    """Feature distances and sim success labels of frame pairs: ``distance``, ``success``, ``episode``."""
    data = load_episodes(data_dir, cache=False)
    if len(data) == 0:
        raise ValueError(f"{data_dir} has no episodes to calibrate on")
    if data.meta.get("env_id") != model.meta.env_id:
        raise ValueError(f"{data_dir} was collected in {data.meta.get('env_id')!r} but the model is for {model.meta.env_id!r}")
    sim = make_sim(model.meta.env_id, model.meta.image_size).unwrapped
    fs = model.config.frameskip
    dist, label, episode = [], [], []
    for e in range(len(data) if max_episodes is None else min(max_episodes, len(data))):
        times = np.arange(0, len(data.frames[e]), fs)
        frames = np.concatenate([data.frames[e][times], data.goal_pixels[e][None]]) if data.goal_pixels is not None \
            else data.frames[e][times]
        with torch.no_grad():
            feats = model.encode(torch.from_numpy(np.ascontiguousarray(frames)))
        states = data.states[e][times]
        k, j = np.triu_indices(len(times), 1)  # every later frame of the same episode as a goal
        d = feature_distance(feats[k], feats[j], metric).cpu().numpy()
        y = np.array([sim.is_success(states[a], states[b]) for a, b in zip(k, j)], bool)
        if data.goal_pixels is not None:  # and the episode's own goal image, labelled by the recorded flag
            d = np.concatenate([d, feature_distance(feats[:-1], feats[-1:].expand(len(times), -1, -1), metric).cpu().numpy()])
            y = np.concatenate([y, data.success[e][times]])
        dist.append(d), label.append(y), episode.append(np.full(len(d), e))
    sim.close()
    return {"distance": np.concatenate(dist), "success": np.concatenate(label), "episode": np.concatenate(episode)}


def precision_recall(distance: np.ndarray, success: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall and F1 of "distance < threshold" as a predictor of ``success``."""
    predicted = distance < threshold
    tp = float(np.sum(predicted & success))
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float(success.sum()), 1.0)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return {"precision": precision, "recall": recall, "f1": f1}


def best_threshold(distance: np.ndarray, success: np.ndarray) -> float:
    """The threshold with the highest F1: midway between consecutive sorted distances."""
    if not success.any():
        raise ValueError("no successful pairs to calibrate on; use data where the goal is sometimes reached")
    order = np.sort(np.unique(distance))
    candidates = np.concatenate([(order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    if len(candidates) > 2000:
        candidates = np.quantile(candidates, np.linspace(0, 1, 2000))
    f1 = [precision_recall(distance, success, c)["f1"] for c in candidates]
    return float(candidates[int(np.argmax(f1))])


def calibrate_success(model: WorldModel, data_dir: str | Path, metric: str = "l1",
                      max_episodes: int | None = None) -> dict[str, Any]:
    """Fit the threshold on even episodes, report on odd ones; writes it into ``model.meta``."""
    pairs = labelled_pairs(model, data_dir, metric, max_episodes)
    fit = pairs["episode"] % 2 == 0
    threshold = best_threshold(pairs["distance"][fit], pairs["success"][fit])
    report = precision_recall(pairs["distance"][~fit], pairs["success"][~fit], threshold)
    model.meta.success_threshold, model.meta.success_metric = threshold, metric
    return {"threshold": threshold, "metric": metric, **report, "pairs": int((~fit).sum()),
            "positives": int(pairs["success"][~fit].sum()), "data": str(data_dir)}
