"""A linear state probe: read the sim's state from features, so the sim's own success test can judge imagination.

A feature-distance threshold cannot tell an imagined PointMaze goal from a miss: the ball is a few
pixels of a 64-px frame, a predicted frame is blurred, and its L1 distance to the goal stays above
the threshold calibrated on real encodings wherever the ball is (imagined calibration precision
0.23). A ridge probe from the flattened features to the true state (fitted on a dataset that has
states, ``wm-gym calibrate --probe``) reads where the ball is, blurred or not, and the sim's own
``is_success`` then compares the probed state with the probed goal: the success test of the sim,
in imagination. It is a labelled-data tool: video-only models have no states to fit it on.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
from torch import Tensor

from wm_gym.data.collect import make_sim
from wm_gym.data.dataset import load_episodes_for
from wm_gym.encoders.probe import StateProbe

if TYPE_CHECKING:
    from wm_gym.world_model import WorldModel


#: A state number counts as readable from one frame where the probe's held-out R² reaches this (positions,
#: not PointMaze's velocities): motion and drift are measured on those numbers only.
READABLE_R2 = 0.9


def readable_state_dims(model: WorldModel) -> np.ndarray:
    """Indices of the state numbers the model's probe reads from one frame (held-out R² ≥ READABLE_R2; all of
    them where the probe's fit recorded no R²)."""
    if model.state_probe is None:
        raise ValueError("reading states (motion, drift, a probed error) needs a state probe: `wm-gym calibrate --probe` "
                         "on a dataset with states")
    r2 = model.meta.train_info.get("probe", {}).get("r2_heldout_episodes")
    if r2 is None:
        return np.arange(model.state_probe.bias.numel())
    dims = np.flatnonzero(np.asarray(r2) >= READABLE_R2)
    if not len(dims):
        raise ValueError(f"the state probe reads no state number with held-out R² >= {READABLE_R2}: {r2}")
    return dims


def readable_state_reader(model: WorldModel) -> Callable[[Tensor], Tensor]:
    """features [..., N, C] → the state numbers the probe reads from one frame [..., S'] (:func:`readable_state_dims`),
    on the model's device and differentiable: what motion ratios, drift and the fine-tune's probed error compare."""
    dims = torch.as_tensor(readable_state_dims(model), device=model.device)
    return lambda s: model.state_probe(s.to(model.device).flatten(0, -3)).unflatten(0, s.shape[:-2])[..., dims]


def probed_success(probe: StateProbe | None, sim, s: Tensor, goal: Tensor) -> np.ndarray:
    """[B] bool: the sim's ``is_success`` on the states probed from features ``s`` and from the goal's features
    (each [B, N, C]), the goal's probed state made a goal as the sim makes one of a state (``goal_from_state``)."""
    if probe is None:
        raise ValueError("the probe test needs a state probe: `wm-gym calibrate --probe` on a dataset with states")
    with torch.no_grad():
        states, goals = probe(s).cpu().numpy(), probe(goal).cpu().numpy()
    return np.array([sim.is_success(a, sim.goal_from_state(b)) for a, b in zip(states, goals)], bool)


def fit_state_probe(model, data_dir: str | Path, ridge: float = 1e-3,
                    max_episodes: int | None = None) -> dict[str, Any]:
    """Fit the model's state probe on a dataset's frames (at model-step times) and their true states, attach it,
    and report: R² per state number on the odd episodes for a probe fitted on the even ones, then the probe
    test's precision / recall against the sim's labels on the odd episodes' real and imagined frame pairs
    (``calibrate``'s pairs, where the feature thresholds report theirs), with that even-episode probe."""
    from wm_gym.calibrate import episode_pairs, precision_recall

    data = load_episodes_for(data_dir, model.meta.env_id, cache=False)
    fs = data.frame_step(model.config.frameskip)
    count = len(data) if max_episodes is None else min(max_episodes, len(data))
    if count < 2:
        raise ValueError(f"a state probe is fitted on even episodes and checked on odd ones: {data_dir} has {count}")
    feats, states, episode = [], [], []
    for e in range(count):
        times = np.arange(0, len(data.frames[e]), fs)
        with torch.no_grad():
            feats.append(model.encode(torch.from_numpy(np.ascontiguousarray(data.frames[e][times]))).cpu())
        states.append(torch.as_tensor(data.states[e][times])), episode.append(np.full(len(times), e))
    feats, states, episode = torch.cat(feats), torch.cat(states), np.concatenate(episode)
    even = torch.as_tensor(episode % 2 == 0)
    probe = StateProbe(model.n_tokens, model.dim, states.shape[1]).fit(feats[even], states[even], ridge)
    truth = states[~even].double()
    sst = ((truth - truth.mean(0)) ** 2).sum(0)
    r2 = (1 - ((truth - probe(feats[~even]).double()) ** 2).sum(0) / sst.clamp_min(1e-12)).tolist()
    model.attach_state_probe(StateProbe(model.n_tokens, model.dim, states.shape[1]).fit(feats, states, ridge))
    report: dict[str, Any] = {"frames": len(feats), "episodes": count, "ridge": ridge,
                              "r2_heldout_episodes": [round(x, 4) for x in r2]}
    sim = make_sim(model.meta.env_id, model.meta.image_size).unwrapped
    try:
        for kind in ("real", "imagined"):
            predicted, labels = [], []
            for e, (first, goal, success) in enumerate(episode_pairs(model, data_dir, count, kind == "imagined")):
                if e % 2:
                    predicted.append(probed_success(probe, sim, first, goal)), labels.append(success)
            predicted, labels = np.concatenate(predicted), np.concatenate(labels)
            # precision_recall reads "distance < threshold" as success: 0 for a probed success, 1 otherwise
            report[kind] = {**precision_recall((~predicted).astype(float), labels, 0.5), "pairs": len(labels),
                            "positives": int(labels.sum())}
    finally:
        sim.close()
    return report
