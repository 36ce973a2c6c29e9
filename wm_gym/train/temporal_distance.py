"""Fit a world model's temporal-distance head (:mod:`wm_gym.temporal_distance`) on datasets.

Offline and action-free: only the order of frames in each episode matters. Frames are taken at
model-step times (every ``frameskip`` sim steps) and encoded once with the model's frozen
encoder. Each batch draws a state s, its successor s' and a goal g (with ``p_future`` a frame
later in the same episode, geometric offset; otherwise any frame of any episode), and regresses
V(s, g) on -1 + γ·V̄(s', g) with an expectile loss, V̄ a Polyak-averaged copy: HILP's recipe.
With ``imagined_fraction`` > 0, s is often the model's own open-loop prediction of that frame
instead, so the head reads imagined states as the real ones they stand for: under the recorded
actions where the episode has labels and the model a controller, else through the latent actions
of the real frames (:meth:`WorldModel.latent_rollout`, what a latent-action agent imagines).
It runs in the shared :class:`~wm_gym.train.loop.Trainer`, so it has progress bars, TensorBoard,
atomic checkpoints and resume.

CLI: ``wm-gym train-distance --model wall --data data/wall-random --data data/wall-expert``.
"""
from __future__ import annotations

import copy
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from wm_gym.calibrate import open_loop
from wm_gym.data.dataset import load_episodes_for
from wm_gym.device import resolved_precision
from wm_gym.encoders.cache import episode_step_features
from wm_gym.temporal_distance import TemporalDistance, TemporalDistanceConfig
from wm_gym.train.loop import StageConfig, Trainer
from wm_gym.world_model import WorldModel


def encode_episodes(model: WorldModel, data_dirs: Sequence[str | Path], max_episodes: int | None = None,
                    imagined: bool = False, progress: bool = True, imagined_episodes: int | None = None,
                    ) -> tuple[Tensor, np.ndarray, Tensor | None, np.ndarray | None]:
    """(features [F, N, C] at model-step times, episodes back to back; lengths [E] in frames; with
    ``imagined`` the model's open-loop predictions of the same frames from each episode's first one,
    under its recorded actions [F, N, C] (frame 0 real), or None; and the episodes that have them).

    The imagined copies are what imagination feeds the head: the dynamics drift a little from the
    real features, and a head that never saw that drift reads it as distance. ``imagined_episodes``
    rolls out only that many evenly spaced episodes per dataset (the others keep real copies and
    are left out of the returned list): rollouts cost a model step per frame.
    """
    feats, lengths, predicted, rolled = [], [], [], []
    fs = model.config.frameskip
    for path in data_dirs:
        data = load_episodes_for(path, model.meta.env_id)
        raw, counts = episode_step_features(model.encoder, path, data.frames, data.frame_step(fs), progress,
                                            model.device)
        with torch.no_grad():
            per_episode = list(model.normalize(raw.to(model.device)).cpu().split(counts))
        keep = [e for e, n in enumerate(counts[:max_episodes]) if n >= 2]  # episodes spanning a model step
        if imagined:
            chosen = evenly_spaced(len(keep), imagined_episodes)
            copies = [per_episode[e] for e in keep]  # real copies where nothing is rolled out
            rollouts = open_loop_from_first(model, [copies[k] for k in chosen],
                                            [data.actions[keep[k]] if model.takes_sim_actions and data.labelled[keep[k]]
                                             else None for k in chosen])
            for k, rollout in zip(chosen, rollouts):
                copies[k] = rollout
            predicted += copies
            rolled += [len(lengths) + k for k in chosen]
        feats += [per_episode[e] for e in keep]
        lengths += [counts[e] for e in keep]
    if not lengths:
        raise ValueError(f"no episode of {list(map(str, data_dirs))} spans two model steps")
    if not imagined:
        return torch.cat(feats), np.asarray(lengths), None, None
    return torch.cat(feats), np.asarray(lengths), torch.cat(predicted), np.asarray(rolled, np.int64)


def evenly_spaced(n: int, count: int | None) -> list[int]:
    """``count`` indices spread evenly over range(n) (all of them when ``count`` is None or ≥ n)."""
    if count is None or count >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, count).round().astype(int).tolist()))


@torch.no_grad()
def open_loop_from_first(model: WorldModel, episodes: list[Tensor], actions: list[np.ndarray | None],
                         batch: int = 256) -> list[Tensor]:
    """Each episode's frames [T, N, C] as the model predicts them open loop from its first frame (frame 0 stays
    real): under its recorded actions, or, where they are None, through the latent actions of its real frames
    (:meth:`WorldModel.latent_rollout`). Episodes of equal length and kind are rolled out together."""
    fs, out = model.config.frameskip, [None] * len(episodes)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, f in enumerate(episodes):
        groups.setdefault((len(f), actions[i] is None), []).append(i)
    for (steps, latent), members in groups.items():
        for k in range(0, len(members), batch):
            rows = members[k:k + batch]
            if latent:
                real = torch.stack([episodes[i] for i in rows]).to(model.device).float()
                rolled = torch.cat([real[:, :1], model.latent_rollout(real)], dim=1).cpu()
                for j, i in enumerate(rows):
                    out[i] = rolled[j].to(episodes[i].dtype)
                continue
            first = torch.stack([episodes[i][0] for i in rows]).to(model.device)
            chunks = torch.as_tensor(np.stack([actions[i][: (steps - 1) * fs] for i in rows]), device=model.device)
            rolled = open_loop(model, first, chunks.reshape(len(rows), steps - 1, -1)).cpu()
            for j, i in enumerate(rows):
                out[i] = rolled[j]
    return out


def make_sampler(features: Tensor, lengths: np.ndarray, config: TemporalDistanceConfig,
                 imagined: Tensor | None = None, imagined_episodes: np.ndarray | None = None):
    """``sample(generator) -> (s, s', g)`` batches; s is never an episode's last frame.

    With ``imagined`` (aligned with ``features``), s is its imagined copy with probability
    ``config.imagined_fraction``; s' and g stay real, so the TD target is the real one. When only
    ``imagined_episodes`` have copies, those states are drawn from them, so the fraction holds.
    """
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    ends = torch.as_tensor(offsets + lengths - 1)              # each episode's last frame
    episode = torch.as_tensor(np.repeat(np.arange(len(lengths)), lengths))
    episode_starts = lambda eps: torch.as_tensor(np.concatenate([offsets[e] + np.arange(lengths[e] - 1)  # noqa: E731
                                                                  for e in eps]))
    starts = episode_starts(range(len(lengths)))
    covered = episode_starts(imagined_episodes) if imagined is not None and imagined_episodes is not None else None
    log_gamma = float(np.log(config.gamma))

    def sample(gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        b = config.batch_size
        i = starts[torch.randint(len(starts), (b,), generator=gen)]
        if covered is not None:  # the imagined rows start in the episodes that were rolled out
            use = torch.rand(b, generator=gen) < config.imagined_fraction
            i = torch.where(use, covered[torch.randint(len(covered), (b,), generator=gen)], i)
        # Geometric(1-γ) offsets ≥ 1, by inversion with the batch generator (so resume is exact)
        u = torch.rand(b, generator=gen).clamp_min(1e-12)
        offset = 1 + torch.floor(torch.log(u) / log_gamma).long()
        future = torch.minimum(i + offset, ends[episode[i]])
        anywhere = torch.randint(len(features), (b,), generator=gen)
        g = torch.where(torch.rand(b, generator=gen) < config.p_future, future, anywhere)
        s, s_next = features[i].float(), features[i + 1].float()
        if imagined is not None:
            if covered is None:
                use = torch.rand(b, generator=gen) < config.imagined_fraction
            s = torch.where(use[:, None, None], imagined[i].float(), s)
        if config.feature_noise:
            s = s + config.feature_noise * torch.randn(s.shape, generator=gen)
        return s, s_next, features[g].float()

    return sample


def expectile_td_loss(head: TemporalDistance, target: TemporalDistance,
                      batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Expectile regression of V(s, g) on -1 + γ·V̄(s', g), where V̄(g, g) = 0 ends the chain."""
    s, s_next, g = batch
    config = head.config
    with torch.no_grad():
        for p_t, p in zip(target.parameters(), head.parameters()):  # Polyak step, before the target is read
            p_t.lerp_(p, config.ema)
        td_target = -1.0 + config.gamma * target.value(s_next, g)
    v = head.value(s, g)
    diff = td_target - v
    weight = torch.where(diff > 0, config.expectile, 1 - config.expectile)
    loss = (weight * diff.pow(2)).mean()
    return loss, {"value": float(v.detach().mean()), "td_target": float(td_target.mean())}


def fit_temporal_distance(model: WorldModel, data_dirs: Sequence[str | Path],
                          config: TemporalDistanceConfig | None = None, checkpoint: str | Path | None = None,
                          log_dir: str | Path | None = None, max_episodes: int | None = None,
                          progress: bool = True) -> dict[str, Any]:
    """Train a head on ``data_dirs`` and attach it to ``model`` (``model.temporal_distance``).

    ``checkpoint``: a training-state file; an interrupted fit resumes from it.
    """
    config = config or TemporalDistanceConfig()
    torch.manual_seed(config.seed)
    head = TemporalDistance(model.n_tokens, model.dim, config).to(model.device)
    target = copy.deepcopy(head).requires_grad_(False)
    trainer = Trainer({"head": head, "target": target}, Path(checkpoint) if checkpoint else None, model.device,
                      seed=config.seed, log_dir=Path(log_dir) if log_dir else None, progress=progress,
                      precision=config.precision)
    trainer.load_checkpoint()
    with trainer.timed("encoding" if config.imagined_fraction == 0 else "encoding and imagined states"):
        features, lengths, imagined, rolled = encode_episodes(
            model, data_dirs, max_episodes, config.imagined_fraction > 0, progress, config.imagined_episodes)
    features = features.to(model.device)
    imagined = imagined.to(model.device) if imagined is not None else None
    stage = StageConfig("temporal_distance", config.steps, lr=config.lr, batch_size=config.batch_size,
                        warmup=min(200, config.steps // 10), ckpt_every=max(1, config.steps // 10))
    curve = trainer.run(stage, head, lambda batch: expectile_td_loss(head, target, batch),
                        make_sampler(features, lengths, config, imagined, rolled))
    trainer.close()
    model.attach_temporal_distance(head.eval())
    report = {"config": asdict(config), "data": [str(p) for p in data_dirs], "frames": int(len(features)),
              "episodes": int(len(lengths)), "loss_first": curve[0] if curve else None,
              "loss_last": float(np.mean(curve[-50:])) if curve else None,
              "episode_rank_correlation": episode_rank_correlation(head, features, lengths),
              "stage_seconds": {k: round(v, 1) for k, v in trainer.seconds.items()},
              "precision": resolved_precision(config.precision, model.device)}
    model.meta.train_info["temporal_distance"] = report
    return report


@torch.no_grad()
def episode_rank_correlation(head: TemporalDistance, features: Tensor, lengths: np.ndarray,
                             episodes: int = 200) -> float:
    """Spearman correlation of steps(s_t, last frame) with the frames still to go, over the first episodes.

    1.0 means the head orders every state of an episode by how far it is from the episode's end.
    """
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    predicted, to_go = [], []
    for o, n in list(zip(offsets, lengths))[:episodes]:
        s = features[o:o + n].float()
        predicted.append(head.steps(s, s[-1]).cpu().numpy())
        to_go.append(np.arange(n - 1, -1, -1))
    predicted, to_go = np.concatenate(predicted), np.concatenate(to_go)
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable")  # noqa: E731
    return float(np.corrcoef(rank(predicted), rank(to_go))[0, 1])
