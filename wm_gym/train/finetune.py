"""Fine-tune a trained world model's dynamics on more data (online rounds, adversarial training).

Only :attr:`WorldModel.dynamics` learns (the predictor, or the controller of a latent-action
model); the encoder, the latent actions and the flow model stay frozen. The loss is the
one-step feature error of what planning rolls out,

    L = mean((predict(s_hist, a) − s_{t+1})²),

or, with ``horizon`` k > 1, the error of k-step open-loop rollouts (re-projected between steps,
as planners roll out), which is where a planner's own trajectories go wrong.

at a small learning rate (1e-5 by default, as in Online World Modeling) so a few hundred
steps on new trajectories correct the model where planning went without forgetting the rest.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from wm_gym.data.dataset import Episode, load_episodes
from wm_gym.encoders.cache import dataset_features
from wm_gym.state_probe import readable_state_reader
from wm_gym.train.adversarial import FGSM
from wm_gym.train.feature_windows import FeatureWindows
from wm_gym.train.loop import StageConfig, Trainer
from wm_gym.world_model import WorldModel

Source = str | Path | Sequence[Episode]  # a dataset dir, a folder of episode_*.npz (an online round), or episodes


@dataclass
class FinetuneConfig:
    steps: int = 300
    lr: float = 1e-5
    batch_size: int = 64
    adversarial: bool = False   # FGSM inputs, clean targets (train/adversarial.py)
    horizon: int = 1            # >1: the loss is over open-loop rollouts of this many steps, as planning rolls out
    probe_weight: float = 0.0   # >0: add this times the squared error of the state probe's reading of each
                                # prediction (positions it reads from one frame) against its reading of the real frame
    seed: int = 0
    log_dir: str | None = None  # TensorBoard folder (None: no logs)
    progress: bool = True


def feature_windows(model: WorldModel, sources: Sequence[Source], progress: bool = True) -> FeatureWindows:
    """Encode every source with the model's frozen φ (datasets through their feature cache) into one window set.

    Sources may keep every frame (an online round's episodes) or every k-th (``collect --frame-stride``):
    all are brought to the coarsest stride, the frames the model reads in any case."""
    parts = []  # (features [F, N, C], frames per episode, actions per episode, frame stride) per source
    for src in sources:
        if isinstance(src, (str, Path)) and not (Path(src) / "meta.json").exists() and any(Path(src).glob("episode_*.npz")):
            src = [Episode.load_npz(p) for p in sorted(Path(src).glob("episode_*.npz"))]  # an online round's episodes
        if isinstance(src, (str, Path)):
            data = load_episodes(src)
            if model.meta.env_id and data.meta.get("env_id") not in (None, model.meta.env_id):
                raise ValueError(f"{src} holds {data.meta.get('env_id')!r} episodes; the model is for {model.meta.env_id!r}")
            keep = np.flatnonzero(data.labelled)  # ingested video may label only some episodes
            if len(keep) == 0:
                raise ValueError(f"{src} has no actions; fine-tuning the dynamics needs action labels")
            raw = dataset_features(model.encoder, src, np.concatenate(data.frames), progress=progress, device=model.device)
            sizes = np.array([len(f) for f in data.frames])
            if len(keep) < len(sizes):
                offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
                raw = raw[torch.as_tensor(np.concatenate([np.arange(offsets[e], offsets[e] + sizes[e]) for e in keep]))]
            parts.append((model.normalize(raw.to(model.device)), [int(sizes[e]) for e in keep],
                          [data.actions[e] for e in keep], data.frame_stride))
        else:
            episodes = list(src)
            if any(ep.actions is None for ep in episodes):
                raise ValueError("fine-tuning needs episodes with actions")
            if len({ep.frame_stride for ep in episodes}) > 1:
                raise ValueError("these episodes keep frames at different strides; pass them as separate sources")
            if episodes:
                parts.append((model.encode(torch.from_numpy(np.concatenate([ep.frames for ep in episodes]))),
                              [ep.frames.shape[0] for ep in episodes], [ep.actions for ep in episodes],
                              episodes[0].frame_stride))
    if not parts:
        raise ValueError("nothing to fine-tune on: every source is empty")
    stride = max(part[3] for part in parts)
    if model.config.frameskip % stride:
        raise ValueError(f"a source keeps every {stride}th frame; the model's frameskip {model.config.frameskip} is no multiple")
    parts = [coarsened(*part, stride) for part in parts]
    actions = [a for part in parts for a in part[2]]
    a_dim = {a.shape[-1] for a in actions}
    if a_dim != {model.config.sim_action_dim}:
        raise ValueError(f"the episodes' actions have {sorted(a_dim)} dims; the model takes {model.config.sim_action_dim}")
    return FeatureWindows.from_episodes(torch.cat([part[0] for part in parts]).half(),
                                        [n for part in parts for n in part[1]], actions, model.config.history,
                                        model.config.frameskip, stride)


def coarsened(features: torch.Tensor, lengths: list[int], actions: list[np.ndarray], stride: int,
              target: int) -> tuple[torch.Tensor, list[int], list[np.ndarray]]:
    """Episodes back to back (frames every ``stride`` sim steps) cut down to a frame every ``target`` sim steps:
    (features, frames per episode, actions per episode, one row per sim step up to the last kept frame)."""
    if target % stride:
        raise ValueError(f"sources keep every {stride}th and every {target}th frame: no common stride")
    factor = target // stride
    if factor == 1:
        return features, lengths, actions
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    rows = [o + np.arange(0, n, factor) for o, n in zip(offsets, lengths)]
    kept = [len(r) for r in rows]
    return (features[torch.as_tensor(np.concatenate(rows), device=features.device)], kept,
            [a[: (n - 1) * target] for a, n in zip(actions, kept)])


def finetune_dynamics(model: WorldModel, sources: Sequence[Source], config: FinetuneConfig | None = None) -> dict:
    """Fine-tune ``model.dynamics`` in place on ``sources``; returns the loss before/after and timings."""
    config = config or FinetuneConfig()
    started = time.perf_counter()
    if config.horizon < 1:  # refused before the data is encoded
        raise ValueError(f"horizon must be >= 1, got {config.horizon}")
    if config.probe_weight < 0:
        raise ValueError(f"probe_weight must be >= 0, got {config.probe_weight}")
    probe = readable_state_reader(model) if config.probe_weight > 0 else None
    windows = feature_windows(model, sources, config.progress)
    episodes = np.arange(len(windows.lengths))
    sample = windows.sampler(episodes, config.batch_size, horizon=config.horizon, device=model.device)
    robust = FGSM.from_windows(windows, episodes, model.scale_actions, config.seed) if config.adversarial else None

    def loss(b: dict):
        s_hist, a, targets = b["s_hist"], model.scale_actions(b["actions"]), b["targets"]
        fn = lambda s, u: rollout_error(model, s, u, targets, probe, config.probe_weight)  # noqa: E731
        return robust.loss(fn, s_hist, a) if robust is not None else fn(s_hist, a)

    held = windows.sampler(episodes, 512, horizon=config.horizon, device=model.device)(
        torch.Generator().manual_seed(config.seed + 1))
    before = clean_mse(model, held, probe)
    flags = {name: p.requires_grad for name, p in model.named_parameters()}
    model.requires_grad_(False)
    model.dynamics.requires_grad_(True)
    trainer = Trainer(modules={"model": model}, checkpoint=None, device=model.device, seed=config.seed,
                      log_dir=Path(config.log_dir) if config.log_dir else None, progress=config.progress)
    try:
        stage = StageConfig("finetune", config.steps, lr=config.lr, batch_size=config.batch_size, warmup=min(50, config.steps // 10),
                            ckpt_every=0)
        trainer.run(stage, model.dynamics, loss, sample)
    finally:
        trainer.close()
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
    model.eval()
    after = clean_mse(model, held, probe)
    info = {"steps": config.steps, "lr": config.lr, "adversarial": config.adversarial, "horizon": config.horizon,
            "probe_weight": config.probe_weight, "episodes": len(windows.lengths),
            "mse_before": before["mse"], "mse_after": after["mse"],
            **({"probe_error_before": before["probe_error"], "probe_error_after": after["probe_error"]} if probe else {}),
            "seconds": round(time.perf_counter() - started, 1)}
    model.meta.train_info.setdefault("finetune", []).append(info)
    return info


def rollout_error(model: WorldModel, s_hist: Tensor, a: Tensor, targets: Tensor, probe=None,
                  probe_weight: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """MSE of predictions from scaled action chunks a [B, k, A] against targets [B, k, N, C], plus
    ``probe_weight`` × the squared error of the probed state (``probe``: :func:`~wm_gym.state_probe.readable_state_reader`).

    One step: the raw prediction. Several: open loop through ``snap``, exactly as planners roll out.
    The feature error weighs every token alike, so a ball a few pixels wide counts little in it; the probed
    error weighs where the ball is (PointMaze's controller damps the motion under the feature error alone).
    """
    preds = model.rollout(s_hist, a, scaled=True, snap_last=a.shape[1] > 1)
    err = preds - targets
    mse = err.pow(2).mean()
    metrics = {"mse": float(mse.detach())}
    if probe is None:
        return mse, metrics
    probe_err = (probe(preds) - probe(targets)).pow(2).sum(-1).mean()
    metrics["probe_error"] = float(probe_err.detach())
    return mse + probe_weight * probe_err, metrics


@torch.no_grad()
def clean_mse(model: WorldModel, batch: dict, probe=None) -> dict[str, float]:
    """:func:`rollout_error`'s metrics on a window batch, without perturbations: ``mse``, and ``probe_error`` with a
    ``probe`` (:func:`~wm_gym.state_probe.readable_state_reader`)."""
    return rollout_error(model, batch["s_hist"], model.scale_actions(batch["actions"]), batch["targets"], probe)[1]


def one_step_mse(model: WorldModel, sources: Sequence[Source], windows: int = 2048, seed: int = 0) -> float:
    """The dynamics' one-step feature MSE on (up to ``windows`` random) windows of ``sources``."""
    data = feature_windows(model, sources, progress=False)
    batch = data.sampler(np.arange(len(data.lengths)), windows, device=model.device)(torch.Generator().manual_seed(seed))
    return clean_mse(model, batch)["mse"]
