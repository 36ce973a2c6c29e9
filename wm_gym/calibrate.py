"""Success calibration: which feature distance to the goal means "the sim would call this a success".

Imagination has no simulator to ask, so an imagined episode ends when the feature distance to
the goal falls below a threshold. We pick that threshold on held-out real data, where both are
known: pairs of frames (k, j ≥ k) of one episode at model-step times, labelled by the sim's own
success test on their true states, plus each frame against the episode's goal image, labelled
by the recorded success flag. The threshold maximises F1 on half of the episodes; precision
and recall are reported on the other half, so the numbers are not fitted to themselves.

Two calibrations are made. ``real``: frame k is the encoded real frame. ``imagined``: frame k
is the model's open-loop prediction from frame 0 under the recorded actions, so the threshold
absorbs the small systematic offset of imagined features (on Wall, predicted states of a dot
at the right place sit ~0.1–0.3 L1 from its real encoding). The imagination env uses the
imagined threshold; anything comparing real encodings (planners, evaluation) uses ``real``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_gym.data.collect import make_sim
from wm_gym.data.dataset import load_episodes_for
from wm_gym.world_model import WorldModel


def labelled_pairs(model: WorldModel, data_dir: str | Path, metric: str = "l1",
                   max_episodes: int | None = None, imagined: bool = False) -> dict[str, np.ndarray]:
    """Feature distances and sim success labels of frame pairs: ``distance``, ``success``, ``episode``.

    ``imagined=True`` replaces the first frame of each pair by the model's open-loop prediction.
    """
    dist, label, episode = [], [], []
    for e, (first, goal, success) in enumerate(episode_pairs(model, data_dir, max_episodes, imagined)):
        dist.append(model.goal_distance(first, goal, metric).detach().cpu().numpy())
        label.append(success), episode.append(np.full(len(success), e))
    return {"distance": np.concatenate(dist), "success": np.concatenate(label), "episode": np.concatenate(episode)}


def episode_pairs(model: WorldModel, data_dir: str | Path, max_episodes: int | None = None, imagined: bool = False):
    """Per episode, its labelled pairs: (frame features [K, N, C], goal features [K, N, C], sim success [K] bool).

    Pairs are frames (k, j ≥ k) at model-step times, labelled by the sim's own test on their true states, plus
    each frame against the episode's goal image, labelled by the recorded flag. ``imagined=True``: frame k is the
    model's open-loop prediction under the recorded actions (and frame 0, real in both, is left out).
    """
    data = load_episodes_for(data_dir, model.meta.env_id, cache=False)
    sim = make_sim(model.meta.env_id, model.meta.image_size).unwrapped
    fs = data.frame_step(model.config.frameskip)  # stored frames per model step
    try:
        for e in range(len(data) if max_episodes is None else min(max_episodes, len(data))):
            times = np.arange(0, len(data.frames[e]), fs)
            frames = np.concatenate([data.frames[e][times], data.goal_pixels[e][None]]) \
                if data.goal_pixels is not None else data.frames[e][times]
            with torch.no_grad():
                feats = model.encode(torch.from_numpy(np.ascontiguousarray(frames)))
                first = imagined_states(model, feats[:1], data.actions[e], len(times) - 1) if imagined \
                    else feats[: len(times)]
            states = data.states[e][times]
            k, j = np.triu_indices(len(times), 1 if not imagined else 0)  # the same or a later frame as the goal
            if imagined:  # frame 0 is real in both: leave it out
                keep = k > 0
                k, j = k[keep], j[keep]
            a, b = first[k], feats[j]
            y = np.array([sim.is_success(states[p], sim.goal_from_state(states[q])) for p, q in zip(k, j)], bool)
            if data.goal_pixels is not None:  # and the episode's own goal image, labelled by the recorded flag
                rows = np.arange(1 if imagined else 0, len(times))
                a, b = torch.cat([a, first[rows]]), torch.cat([b, feats[-1:].expand(len(rows), -1, -1)])
                y = np.concatenate([y, data.success[e][times][rows]])
            yield a, b, y
    finally:
        sim.close()


def imagined_states(model: WorldModel, start: torch.Tensor, actions: np.ndarray, steps: int) -> torch.Tensor:
    """[steps + 1, N, C]: the real start, then open-loop predictions under the recorded action chunks."""
    if actions is None:
        raise ValueError("imagined calibration needs action-labelled data")
    chunks = torch.as_tensor(actions[: steps * model.config.frameskip], device=model.device).reshape(1, steps, -1)
    return open_loop(model, start, chunks)[0]


def open_loop(model: WorldModel, starts: torch.Tensor, chunks: torch.Tensor) -> torch.Tensor:
    """[B, T+1, N, C]: each start frame [B, N, C], then the model's open-loop predictions under the action
    chunks [B, T, A] (sim units); the start fills the whole history, as an imagined episode starts."""
    s_hist = starts[:, None].expand(-1, model.config.history, -1, -1)
    return torch.cat([starts[:, None], model.rollout(s_hist, chunks)], dim=1)


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


def fit_threshold(pairs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Fit on even episodes, report precision/recall on odd ones."""
    fit = pairs["episode"] % 2 == 0
    threshold = best_threshold(pairs["distance"][fit], pairs["success"][fit])
    report = precision_recall(pairs["distance"][~fit], pairs["success"][~fit], threshold)
    return {"threshold": threshold, **report, "pairs": int((~fit).sum()), "positives": int(pairs["success"][~fit].sum())}


def calibrate_success(model: WorldModel, data_dir: str | Path, metric: str = "l1",
                      max_episodes: int | None = None) -> dict[str, Any]:
    """Both calibrations (see the module docstring); writes the imagined threshold into ``model.meta``."""
    real = fit_threshold(labelled_pairs(model, data_dir, metric, max_episodes))
    imagined = fit_threshold(labelled_pairs(model, data_dir, metric, max_episodes, imagined=True))
    model.meta.success_threshold, model.meta.success_metric = imagined["threshold"], metric
    model.meta.train_info["real_success_threshold"] = real["threshold"]
    return {"threshold": imagined["threshold"], "metric": metric, "imagined": imagined, "real": real,
            "precision": imagined["precision"], "recall": imagined["recall"], "data": str(data_dir)}
