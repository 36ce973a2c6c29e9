"""Grounding: a latent action z back to the real action chunk that makes it happen, g(s_t, z) → a.

A latent-action world model learned from video can be driven, and an agent trained, entirely
in its latent actions z (``WMImagine-v0`` with ``action_space="latent"``). A real sim takes
real actions, so acting there needs the way back: a small regression head fitted on the few
episodes that do have action labels, on triples

    (s_t, z = latent_action(s_t, s_{t+1}), the real chunk a_t that moved s_t to s_{t+1}).

It is the controller's inverse (the controller maps (s_hist, a) → z) and it needs nothing of
the controller, so it also grounds models trained on action-free video. Output is in sim units,
inside the action bounds (a tanh head scaled onto [low, high]); input z is in the model's own
units (an agent's standardised z is un-standardised first, see :class:`GroundedPolicy`).

Why a separate file (``wm-gym ground … --out G.pt``) rather than part of an agent or a model:
it depends only on the world model's latent space and the labelled data, so one grounding
serves every latent agent of that model; the file records a fingerprint of the latent space
(encoder, feature normalisation, latent-action autoencoder) and loading against another model
fails, naming the fix.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from wm_gym.imagine.vector_env import split_observation
from wm_gym.io import atomic_torch_save
from wm_gym.nn import MLP, check_shape
from wm_gym.world_model import WorldModel

FORMAT = "wm-gym-grounding"
VERSION = 1


@dataclass
class GroundingConfig:
    """How a grounding map is fitted (the options of ``wm-gym ground``)."""

    labelled_fraction: float = 0.1  # share of the dataset's labelled episodes used (seeded choice, at least one)
    hidden: int = 256               # MLP width
    layers: int = 3                 # Linear layers of the MLP
    epochs: int = 200               # passes over the training triples (at most)
    patience: int = 30              # stop after this many epochs without a lower validation error
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.1       # of the used episodes, for selection: the epoch with the lowest error on them is kept
    test_fraction: float = 0.1      # of the used episodes, never seen by fitting or selection: the held-out error
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction must be in (0, 1], got {self.labelled_fraction}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1 and self.val_fraction + self.test_fraction < 1):
            raise ValueError(f"val_fraction and test_fraction must be in [0, 1) with a sum below 1, got "
                             f"{self.val_fraction} and {self.test_fraction}")
        if min(self.hidden, self.layers, self.epochs, self.batch_size, self.patience) < 1:
            raise ValueError("hidden, layers, epochs, batch_size and patience must be positive integers")


@dataclass
class Triples:
    """Labelled transitions to fit on: M triples (s_t, z, real chunk) and the episode each came from."""

    s_t: Tensor           # [M, N, C] normalised features
    z: Tensor             # [M, K, d] latent actions, the model's units
    chunks: Tensor        # [M, A] real action chunks, sim units
    episodes: np.ndarray  # int64 [M]

    def __len__(self) -> int:
        return len(self.chunks)

    def subset(self, rows: np.ndarray) -> "Triples":
        idx = torch.as_tensor(rows, dtype=torch.long)
        return Triples(self.s_t[idx], self.z[idx], self.chunks[idx], self.episodes[rows])


class Grounding(nn.Module):
    """g(s_t [B, N, C], z [B, K, d]) → real action chunk [B, A] in sim units, within [low, high].

    An MLP on [s_t, standardised z]; z is standardised with the fitted triples' own statistics so
    the map does not depend on the latent space's scale.
    """

    def __init__(self, n_tokens: int, dim: int, n_latents: int, latent_dim: int, low: Tensor, high: Tensor,
                 hidden: int = 256, layers: int = 3):
        super().__init__()
        self.shape = dict(n_tokens=n_tokens, dim=dim, n_latents=n_latents, latent_dim=latent_dim,
                          hidden=hidden, layers=layers)
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        if low.shape != high.shape or low.ndim != 1 or not bool((high > low).all()):
            raise ValueError(f"action bounds must be two [A] vectors with high > low, got {low.tolist()}, "
                             f"{high.tolist()}")
        self.register_buffer("low", low)
        self.register_buffer("high", high)
        self.register_buffer("z_mean", torch.zeros(n_latents, latent_dim))
        self.register_buffer("z_std", torch.ones(n_latents, latent_dim))
        self.net = MLP(n_tokens * dim + n_latents * latent_dim, hidden, len(low), layers=layers)
        self.info: dict[str, Any] = {}  # how it was fitted (data, episodes, errors), saved with it
        self.latent_space = ""          # the fingerprint of the world model's latent space it was fitted on

    @property
    def action_dim(self) -> int:
        return len(self.low)

    def unit_action(self, s_t: Tensor, z: Tensor) -> Tensor:
        """The chunk scaled to [-1, 1] (what the fit's loss compares), [B, A]."""
        s = self.shape
        b = check_shape(s_t, "s_t", B=None, N=s["n_tokens"], C=s["dim"])[0]
        check_shape(z, "z", B=b, K=s["n_latents"], d=s["latent_dim"])
        z = (z.to(self.z_mean) - self.z_mean) / self.z_std
        return torch.tanh(self.net(torch.cat([s_t.to(self.z_mean).flatten(1), z.flatten(1)], dim=1)))

    def forward(self, s_t: Tensor, z: Tensor) -> Tensor:
        return self.low + (self.unit_action(s_t, z) + 1) / 2 * (self.high - self.low)

    def to_unit(self, chunks: Tensor) -> Tensor:
        """Sim-unit chunks [B, A] → [-1, 1], clipped to the bounds."""
        return (2 * (chunks.to(self.low) - self.low) / (self.high - self.low) - 1).clamp(-1, 1)

    # ----- one-file save / load -------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write shape, fit info, latent-space fingerprint and weights to one file, atomically."""
        atomic_torch_save({"format": FORMAT, "version": VERSION, "shape": self.shape, "info": self.info,
                           "latent_space": self.latent_space,
                           "state_dict": {k: v.cpu() for k, v in self.state_dict().items()}}, path)

    @classmethod
    def load(cls, path: str | Path, model: WorldModel | None = None) -> "Grounding":
        """Rebuild from :meth:`save`'s file; with ``model``, check it was fitted on that model's latent space."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no grounding file at {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # truncated zip, pickle garbage: "not a usable file"
            raise ValueError(f"{path} is not a readable grounding file (corrupt or truncated): {err}") from err
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ValueError(f"{path} is not a wm-gym grounding file (fit one with `wm-gym ground`)")
        if ckpt.get("version") != VERSION:
            raise ValueError(f"{path} has grounding format version {ckpt.get('version')}; this wm-gym reads {VERSION}")
        state = ckpt["state_dict"]
        grounding = cls(low=state["low"], high=state["high"], **ckpt["shape"])
        grounding.load_state_dict(state)
        grounding.info, grounding.latent_space = ckpt.get("info", {}), ckpt.get("latent_space", "")
        if model is not None and grounding.latent_space != latent_space_id(model):
            raise ValueError(f"{path} was fitted on another world model's latent space (fitted on "
                             f"{grounding.info.get('model', '?')!r}); refit it for this model with "
                             "`wm-gym ground --model MODEL --data DATA --out G.pt`")
        return grounding.eval()


def latent_space_id(model: WorldModel) -> str:
    """Fingerprint of what (s_t, z) mean for a model: encoder, feature normalisation, latent-action autoencoder."""
    if model.latent_model is None:
        raise ValueError("grounding needs a latent-action world model (rla or lam); an action model has no z")
    h = hashlib.sha256(model.encoder.identity().encode())
    tensors = {"feature_mean": model.feature_mean, "feature_std": model.feature_std,
               **{f"latent.{k}": v for k, v in model.latent_model.state_dict().items()}}
    for name, t in sorted(tensors.items()):
        h.update(name.encode() + t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ----- data -----------------------------------------------------------------------------------------
def chosen_episodes(labelled: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The labelled episodes a fit may use: a seeded ``ceil(fraction · n)`` of them (the same rule, and so
    the same episodes, as ``wm-gym train --action-labels fraction``)."""
    from wm_gym.train.world_model import labelled_episodes

    if len(labelled) == 0:
        raise ValueError("grounding needs action labels, and this dataset has no labelled episode (collect some "
                         "with `wm-gym collect`, or ingest video with a labels file)")
    return labelled_episodes(np.asarray(labelled, np.int64), fraction, seed)


@torch.no_grad()
def dataset_triples(model: WorldModel, data: str | Path, labelled_fraction: float = 0.1, seed: int = 0
                    ) -> tuple[Triples, dict[str, Any]]:
    """Every model step of the chosen labelled episodes of dataset ``data`` as triples, and what was chosen.

    Frames are taken every ``frameskip`` sim steps from the episode start; the chunk between two
    such frames is their ``frameskip`` sim actions, flattened (the world model's action unit).
    """
    from wm_gym.data.dataset import load_episodes

    episodes = load_episodes(data, mmap=True)  # frames read only for the chosen episodes
    labelled = np.flatnonzero(episodes.labelled)
    used = chosen_episodes(labelled, labelled_fraction, seed)
    fs = model.config.frameskip
    if knows_sim_actions(model) and episodes.action_dim * fs != model.config.action_dim:
        raise ValueError(f"{data} has {episodes.action_dim}-number sim actions, the model's chunk is "
                         f"{fs} × {model.config.sim_action_dim}")
    s_t, z, chunks, rows = [], [], [], []
    step = episodes.frame_step(fs)  # stored frames per model step
    for e in used:
        steps = (len(episodes.frames[e]) - 1) // step
        if steps < 1:
            continue
        feats = model.encode(torch.from_numpy(np.array(episodes.frames[e][: steps * step + 1: step])))  # a copy: mmap
        s_t.append(feats[:-1].cpu()), z.append(model.latent_action(feats[:-1], feats[1:]).float().cpu())
        chunks.append(torch.from_numpy(episodes.actions[e][: steps * fs].reshape(steps, -1).astype(np.float32)))
        rows.append(np.full(steps, e, np.int64))
    if not rows:
        raise ValueError(f"no chosen episode of {data} is one model step ({fs} sim steps) long")
    triples = Triples(torch.cat(s_t), torch.cat(z), torch.cat(chunks), np.concatenate(rows))
    return triples, {"data": str(data), "labelled_fraction": labelled_fraction, "labelled_available": len(labelled),
                     "episodes": [int(e) for e in used], "n_episodes": len(used), "triples": len(triples)}


# ----- fitting --------------------------------------------------------------------------------------
def split_train_val_test(n_episodes: int, val_fraction: float, test_fraction: float, seed: int
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episode indices (train, val, test), disjoint, sorted, covering ``range(n_episodes)``.

    ``round(n · fraction)`` episodes each for val and test (at least one when the fraction is > 0 and
    a training episode is left), by one seeded permutation; training keeps at least one episode, and
    test gives way before val does, so a fit on two episodes still selects.
    """
    n_test = max(round(n_episodes * test_fraction), 1 if test_fraction > 0 else 0)
    n_val = max(round(n_episodes * val_fraction), 1 if val_fraction > 0 else 0)
    n_val = min(n_val, n_episodes - 1)
    n_test = min(n_test, n_episodes - 1 - n_val)
    perm = np.random.default_rng(seed).permutation(n_episodes)
    test, val, train = perm[:n_test], perm[n_test:n_test + n_val], perm[n_test + n_val:]
    return tuple(np.sort(part).astype(np.int64) for part in (train, val, test))


def fit_grounding(triples: Triples, low: Tensor, high: Tensor, config: GroundingConfig | None = None
                  ) -> tuple[Grounding, dict[str, Any]]:
    """Fit a :class:`Grounding` by MSE in [-1, 1] action units; returns it and its errors.

    Episodes are split three ways: training, validation (``val_fraction``) and test
    (``test_fraction``). The weights of the epoch with the lowest validation MSE are kept, and
    fitting stops ``patience`` epochs after it (a few hundred labelled steps over thousands of
    feature numbers are easy to memorise: on Wall the best epoch comes early). That choice makes
    ``val_mse`` optimistic, so the held-out error is ``test_mse``, on episodes that neither fitting
    nor selection saw. ``baseline_mse`` is the error of always answering the training mean on
    the same test episodes (validation, then training, when there are none): a fit that does not
    beat it has learnt nothing.
    """
    config = config or GroundingConfig()
    torch.manual_seed(config.seed)
    n, c, k, d = *triples.s_t.shape[1:], *triples.z.shape[1:]
    grounding = Grounding(n, c, k, d, low, high, config.hidden, config.layers)
    unique = np.unique(triples.episodes)
    parts = split_train_val_test(len(unique), config.val_fraction, config.test_fraction, config.seed)
    train, val, test = (triples.subset(np.flatnonzero(np.isin(triples.episodes, unique[i]))) for i in parts)
    grounding.z_mean.copy_(train.z.mean(0))
    grounding.z_std.copy_(train.z.std(0).nan_to_num(1.0).clamp_min(1e-6))  # one triple: std is NaN
    optimizer = torch.optim.AdamW(grounding.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    generator = torch.Generator().manual_seed(config.seed)
    target = grounding.to_unit(train.chunks)
    best = (math.inf, None, -1)  # (validation MSE, weights, epoch)
    started = time.perf_counter()
    for epoch in range(config.epochs):
        grounding.train()
        for idx in torch.randperm(len(train), generator=generator).split(config.batch_size):
            loss = F.mse_loss(grounding.unit_action(train.s_t[idx], train.z[idx]), target[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if len(val):
            mse = unit_mse(grounding, val)
            if mse < best[0]:
                best = (mse, {k: v.clone() for k, v in grounding.state_dict().items()}, epoch)
            elif epoch - best[2] >= config.patience:
                break
    if best[1] is not None:
        grounding.load_state_dict(best[1])
    grounding.eval()
    mean = target.mean(0)
    scored = next(part for part in (test, val, train) if len(part))
    report = {"train_triples": len(train), "val_triples": len(val), "test_triples": len(test), "epochs": epoch + 1,
              "train_episodes": unique[parts[0]].tolist(), "val_episodes": unique[parts[1]].tolist(),
              "test_episodes": unique[parts[2]].tolist(),
              "train_mse": unit_mse(grounding, train),
              "val_mse": unit_mse(grounding, val) if len(val) else None, "best_epoch": best[2] if len(val) else None,
              "test_mse": unit_mse(grounding, test) if len(test) else None,
              "baseline_mse": float(((grounding.to_unit(scored.chunks) - mean) ** 2).mean()),
              "fit_seconds": round(time.perf_counter() - started, 1), "config": asdict(config)}
    grounding.info.update(report)
    return grounding, report


@torch.no_grad()
def unit_mse(grounding: Grounding, triples: Triples) -> float:
    """MSE of the grounded chunks in [-1, 1] action units (the sim's bounds map to ±1)."""
    grounding.eval()
    return float(F.mse_loss(grounding.unit_action(triples.s_t, triples.z), grounding.to_unit(triples.chunks)))


def knows_sim_actions(model: WorldModel) -> bool:
    """Whether the model was trained with action labels (it records their bounds); a model learned from
    video alone has no sim action of its own, and the labelled data of ``ground`` brings one."""
    return bool(model.meta.action_low)


def chunk_bounds(model: WorldModel, data: str | Path) -> tuple[Tensor, Tensor]:
    """The real action chunk's bounds [frameskip · a]: the model's, or for a model that never saw a label
    the labelled dataset's sim-action bounds tiled over the model's frameskip."""
    if knows_sim_actions(model):
        return model.action_low.cpu(), model.action_high.cpu()
    from wm_gym.data.dataset import read_meta

    meta = read_meta(data)  # labelled data records its bounds (collect: the sim's; ingest --labels: the labels')
    fs = model.config.frameskip
    return (torch.tensor(meta["action_low"], dtype=torch.float32).repeat(fs),
            torch.tensor(meta["action_high"], dtype=torch.float32).repeat(fs))


def fit_dataset_grounding(model: WorldModel, data: str | Path, config: GroundingConfig | None = None,
                          out: str | Path | None = None, model_name: str = "") -> tuple[Grounding, dict]:
    """``wm-gym ground``: fit on the chosen labelled episodes of ``data`` for ``model``; save to ``out``."""
    config = config or GroundingConfig()
    fingerprint = latent_space_id(model)  # also rejects action models before any work
    triples, chosen = dataset_triples(model, data, config.labelled_fraction, config.seed)
    grounding, report = fit_grounding(triples, *chunk_bounds(model, data), config)
    grounding.latent_space = fingerprint
    grounding.info.update(chosen, model=str(model_name))
    if out is not None:
        grounding.save(out)
    return grounding, {"out": None if out is None else str(out), **chosen, **report}


# ----- acting in the real sim -------------------------------------------------------------------------
def current_features(obs: np.ndarray | Tensor, model: WorldModel) -> Tensor:
    """s_t [B, N, C] out of policy observations [B, (H+1)·N·C]: the newest history frame.

    The layout is :func:`wm_gym.imagine.vector_env.policy_observation`'s: H history frames,
    oldest first, then the target frame.
    """
    obs = torch.as_tensor(np.asarray(obs, np.float32) if not isinstance(obs, Tensor) else obs)
    return split_observation(model, obs)[0][:, -1]


class GroundedPolicy:
    """A latent-action policy that acts in the real sim: ``predict`` returns real action chunks.

    The wrapped policy (an SB3 agent trained with ``action_space="latent"``) answers standardised
    z; ``z = a · latent_std + latent_mean`` (the imagination env's units, recorded with the agent);
    the grounding turns (s_t, z) into the chunk. The harness (:func:`wm_gym.real_episodes.evaluate_policy`)
    sees just another policy.
    """

    def __init__(self, policy, grounding: Grounding, model: WorldModel, latent_mean, latent_std):
        self.policy, self.grounding, self.model = policy, grounding, model
        k, d = grounding.shape["n_latents"], grounding.shape["latent_dim"]
        self.latent_mean = torch.as_tensor(np.asarray(latent_mean, np.float32)).reshape(k, d)
        self.latent_std = torch.as_tensor(np.asarray(latent_std, np.float32)).reshape(k, d)

    @torch.no_grad()
    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        """SB3's signature: observations [B, D] → (real action chunks [B, A] in sim units, state)."""
        a, state = self.policy.predict(observation, state=state, episode_start=episode_start,
                                       deterministic=deterministic)
        z = torch.as_tensor(np.asarray(a, np.float32)).reshape(-1, *self.latent_mean.shape)
        z = z * self.latent_std + self.latent_mean
        return self.grounding(current_features(observation, self.model), z).numpy(), state
