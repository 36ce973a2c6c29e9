"""Train a WorldModel from a collected dataset, stage by stage, with one shared loop.

    encoder     (conv only) self-supervised reconstruction of the dataset's frames
    features    φ(all frames), cached fp16 on disk, normalised per channel
    latent      latent-action autoencoder on (s_t, s_{t+h}) pairs: RLA or LAM,     (all episodes)
                + λ·Seq-Δ-REPA over windows of consecutive pairs when repa_weight > 0
    flow        flow matching of z given (s_hist, action chunk)               (labelled episodes)
    controller  deterministic (s_hist, action chunk) → z, L2 to the encoder's z (labelled episodes)
    predictor   latent="action" baseline instead of latent/flow/controller     (labelled episodes)

Video first: without any labelled training episode (ingested video), the flow is trained as
the z-prior p(z | s_hist) on every training episode, with the null action chunk a = 0 (the
middle of the action range), and the controller is skipped; ``train_info`` says so. Mixed data
(a labels file for some videos) trains flow and controller on the labelled episodes only.

Works unchanged under ``torchrun --nproc_per_node N`` (DDP; gloo on CPU).
"""
from __future__ import annotations

import math
import os
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_gym.data.dataset import concat_episodes, load_episodes
from wm_gym.data.windows import split_episodes
from wm_gym.device import RankLayout, resolve_device, resolved_precision, set_threads
from wm_gym.encoders.cache import dataset_features, encode_frames
from wm_gym.train.adversarial import FGSM
from wm_gym.train.encoder import conv_encoder_objective, reprojector_objective
from wm_gym.train.feature_windows import FeatureWindows
from wm_gym.train.launch import launch_ranks
from wm_gym.train.loop import Distributed, StageConfig, Trainer, setup_device
from wm_gym.world_model import WorldModel, WorldModelConfig, WorldModelMeta


@dataclass
class Preset:
    """Model sizes and stage budgets. ``tiny``: tests; ``small``: ≤30 min on 2 CPU cores; ``fast``: cheap
    imagination on CPUs with small's agent quality (a width-16 encoder with a fitted patch reprojector, a latent
    decoder and a one-block controller over 2×2 token groups, width-64 flow); ``base``: GPU."""

    encoder: dict
    latent: dict
    flow: dict
    controller: dict
    predictor: dict
    stages: dict[str, StageConfig]


def _stages(encoder: int, latent: int, flow: int, controller: int, batch: int, lr: float = 3e-4) -> dict[str, StageConfig]:
    return {
        "encoder": StageConfig("encoder", encoder, lr=2e-3, batch_size=batch),
        "reprojector": StageConfig("reprojector", encoder, lr=2e-3, batch_size=batch),  # encoders that have one
        "latent": StageConfig("latent", latent, lr=lr, batch_size=batch),
        "flow": StageConfig("flow", flow, lr=lr, batch_size=batch),
        "controller": StageConfig("controller", controller, lr=lr, batch_size=batch),
        "predictor": StageConfig("predictor", latent, lr=lr, batch_size=batch),
    }


#: The training stages, in order (`--stage-steps STAGE=N` names one).
STAGES = ("encoder", "reprojector", "latent", "flow", "controller", "predictor")

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        encoder=dict(grid=8, dim=16, width=16),
        latent=dict(n_latents=4, latent_dim=8, width=32, enc_depth=1, dec_depth=1, heads=2),
        flow=dict(width=32, depth=1, heads=2), controller=dict(width=32, depth=1, heads=2),
        predictor=dict(width=32, depth=1, heads=2),
        stages=_stages(encoder=150, latent=150, flow=150, controller=150, batch=16, lr=1e-3),
    ),
    "small": Preset(
        encoder=dict(grid=8, dim=32, width=32),
        latent=dict(n_latents=8, latent_dim=16, width=128, enc_depth=2, dec_depth=2, heads=4),
        flow=dict(width=128, depth=3, heads=4), controller=dict(width=128, depth=2, heads=4),
        predictor=dict(width=128, depth=3, heads=4),
        stages=_stages(encoder=600, latent=2500, flow=2500, controller=3000, batch=64),  # ~25 min on 2 CPU cores
    ),
    "fast": Preset(  # cheap imagination on CPUs (`wm-gym bench`). The conv decoder (not the cheaper patch one) trains
        # features that behaviour cloning and the hold reward need; a patch decoder fitted afterwards re-projects; width
        # 128 in the latent decoder and controller is what fidelity needs, 2×2 token groups make it cheap, and one
        # controller block does as well as two on the agent table (docs/results.md, issue 29)
        encoder=dict(grid=8, dim=32, width=16, decoder="conv", reprojector="patch"),
        latent=dict(n_latents=8, latent_dim=16, width=128, enc_depth=2, dec_depth=1, heads=4, dec_group=2),
        flow=dict(width=64, depth=3, heads=2), controller=dict(width=128, depth=1, heads=4, context_group=2),
        predictor=dict(width=64, depth=3, heads=2),
        stages=_stages(encoder=1500, latent=2500, flow=2500, controller=3000, batch=64),
    ),
    "base": Preset(
        encoder=dict(grid=16, dim=64, width=64),
        latent=dict(n_latents=32, latent_dim=64, width=384, enc_depth=4, dec_depth=6, heads=6),
        flow=dict(width=384, depth=6, heads=6), controller=dict(width=256, depth=4, heads=4),
        predictor=dict(width=384, depth=6, heads=6),
        stages=_stages(encoder=5000, latent=40000, flow=30000, controller=30000, batch=256),
    ),
}


@dataclass
class TrainConfig:
    data: list[str]                  # dataset directory (wm-gym collect / ingest); several of one sim are trained on
                                     # as one (random data for coverage plus demos for where agents go)
    out: str                         # world-model file to write
    preset: str = "small"            # tiny: tests (~1 min CPU) | small: <=30 min on 2 CPU cores | fast: ~5x faster
                                     # imagination on CPUs, small's agent quality (the zoo's models) | base: GPU
    latent: str = "rla"              # rla: residual latent actions | lam: IDM latent actions | action: DINO-WM-style
                                     # action-conditioned baseline
    regularizer: str = "sparse"      # lam bottleneck: sparse | noisy | vq | none
    repa_weight: float = 0.0         # Seq-Δ-REPA auxiliary weight for the latent stage (0 = off)
    repa_window: int = 4             # Seq-Δ-REPA: model steps integrated per window (Olaf-World: 16); cut to fit
    latent_max_h: int = 2            # rla: pairs (s_t, s_{t+h}) with h ∈ [1, latent_max_h] model steps
    steps: int | None = None         # override every stage's step count (quick runs)
    encoder: str = "conv"            # conv | dinov2-vits14
    encoder_weights: str | None = None  # dinov2 weights file
    history: int = 1                 # feature frames the dynamics read
    frameskip: int = 5               # sim steps per model step
    action_labels: float = 1.0       # fraction of training episodes whose actions the dynamics see
    val_fraction: float = 0.05       # held-out episodes (by episode)
    seed: int = 0
    device: str = "auto"
    resume: bool = False             # continue from OUT.train-state
    init_from: str | None = None     # reuse this model's encoder (and latent actions, if configs match); train the rest
    adversarial: bool = False        # FGSM-perturbed dynamics inputs, clean targets (train/adversarial.py)
    precision: str = "auto"          # auto: bf16 on CUDA and CPUs with bf16 units (attention fp32) | bf16 | fp32
    ranks: int | str = "auto"        # local DDP processes on a CPU, each with 1/ranks of the batch (auto: 1, all cores)
    compile: str | None = None       # torch.compile backend for each stage's loss (e.g. "inductor"); None = eager
    log_dir: str | None = None       # TensorBoard folder (default: runs/<out name>)
    checkpoint_every: int | None = None  # steps between mid-stage checkpoints (default: each stage's own, 250)
    progress: bool = True
    stage_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"latent": {"lr": 1e-3}}

    def stage(self, name: str, world_size: int = 1) -> StageConfig:
        """Stage ``name`` with this run's overrides; each of ``world_size`` ranks draws 1/world_size of the batch,
        so the global batch, and with it the recipe, is the same on any number of ranks."""
        stage = PRESETS[self.preset].stages[name]
        if self.steps is not None:
            stage = replace(stage, steps=self.steps)
        if self.checkpoint_every is not None:
            stage = replace(stage, ckpt_every=self.checkpoint_every)
        stage = replace(stage, **self.stage_overrides.get(name, {}))
        return replace(stage, batch_size=max(1, stage.batch_size // world_size))


#: train_info's note for a run whose data has no labelled training episode.
NO_LABELS = "no action labels"


def labelled_episodes(train_eps: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded subset of ``train_eps`` with ``ceil(fraction · n)`` episodes (at least one; none of none)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"action_labels must be in (0, 1], got {fraction}")
    order = np.random.default_rng(seed + 17).permutation(train_eps)
    return np.sort(order[: max(1, math.ceil(fraction * len(train_eps)))]) if len(train_eps) else order


def latent_window_sampler(windows: FeatureWindows, episodes: np.ndarray, batch_size: int, steps: int, max_h: int,
                          device: torch.device | str = "cpu"):
    """Sample ``s_seq`` [B, steps+1, N, C]: consecutive feature frames h model steps apart, h ~ U{1..max_h}.

    ``steps=1`` gives the RLA pairs (s_t, s_{t+h}); longer windows feed Seq-Δ-REPA, which integrates
    the latent actions of every consecutive pair. The latent stage reads no history, so windows start
    at any frame of an episode. Every episode with a pair at gap h takes part, so none leaves the
    reconstruction loss: one too short for ``steps`` pairs gives windows of as many pairs as fit,
    padded with NaN frames (``sequence_loss`` ends the row there). Start frames are drawn uniformly.
    """
    def starts(gap: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(start frames [S], pairs that fit from each [S]) at a gap of ``gap`` frames."""
        t, n = [], []
        for e in episodes:
            length, offset = int(windows.lengths[e]), int(windows.frame_offsets[e])
            pairs = min(steps, (length - 1) // gap)
            if pairs >= 1:
                t.append(offset + np.arange(length - pairs * gap))
                n.append(np.full(length - pairs * gap, pairs))
        if not t:
            raise ValueError(f"no latent-action pair fits: a gap of {gap} frames needs episodes of at least {gap + 1} "
                             f"frames; the longest has {int(windows.lengths[episodes].max())}")
        return torch.as_tensor(np.concatenate(t)), torch.as_tensor(np.concatenate(n))

    tables = [starts(h * windows.frame_step) for h in range(1, max_h + 1)]
    offsets = torch.arange(steps + 1)

    def sample(gen: torch.Generator) -> dict:
        h = int(torch.randint(max_h, (1,), generator=gen))
        first, fits = tables[h]
        k = torch.randint(len(first), (batch_size,), generator=gen)
        real = offsets <= fits[k, None]                                                  # [B, steps+1]
        idx = first[k, None] + (h + 1) * windows.frame_step * torch.where(real, offsets, 0)
        s_seq = windows.features[idx].float()
        if not bool(real.all()):
            s_seq[~real.to(s_seq.device)] = float("nan")
        return {"s_seq": s_seq.to(device, non_blocking=True)}

    return sample


def fitting_window(windows: FeatureWindows, episodes: np.ndarray, wanted: int, max_h: int) -> int:
    """The longest window ≤ ``wanted`` model steps (at gap ``max_h``) that fits the longest of ``episodes``;
    shorter episodes still take part with shorter windows (:func:`latent_window_sampler`)."""
    if not isinstance(wanted, (int, np.integer)) or wanted < 1:
        raise ValueError(f"repa_window must be an integer >= 1 (model steps), got {wanted!r}")
    longest = int(windows.lengths[episodes].max())
    fits = (longest - 1) // (max_h * windows.frame_step)
    if fits < 1:
        raise ValueError(f"no latent-action pair fits: a gap of {max_h} model steps × {windows.frame_step} frames "
                         f"needs episodes of at least {max_h * windows.frame_step + 1} frames; the longest has {longest}")
    return min(wanted, fits)


@dataclass
class StageLosses:
    """Each stage's loss as a named function of a batch (``loss = losses.flow(batch)``).

    Batches come from :class:`FeatureWindows` samplers: ``s_hist`` [B, H, N, C], ``targets``
    [B, K, N, C], ``actions`` [B, K, A] in sim units, and for flow and controller ``z`` [B, k, d], the frozen
    latent encoder's action for (s_t, s_{t+1}) (:func:`latent_targets`). The dynamics losses (flow, controller,
    predictor) see FGSM-perturbed inputs with clean targets when ``robust`` is set
    (``--adversarial``).
    """

    model: WorldModel
    robust: FGSM | None = None

    def latent(self, b: dict) -> torch.Tensor:
        """Latent-action autoencoder on ``s_seq`` [B, T+1, N, C]: reconstruct each s_{i+1} from (s_i, s_{i+1}),
        plus λ·Seq-Δ-REPA over the window when the model has the head (``repa`` in the metrics)."""
        return self.model.latent_model.sequence_loss(b["s_seq"])

    def flow(self, b: dict) -> torch.Tensor:
        """Flow matching of the latent action z given (s_hist, action chunk)."""
        return self._dynamics(lambda s, a: self.model.flow.loss(b["z"], s, a), b)

    def controller(self, b: dict) -> torch.Tensor:
        """Deterministic (s_hist, action chunk) → z, L2 to the latent encoder's z."""
        return self._dynamics(lambda s, a: self.model.controller.loss(s, a, b["z"]), b)

    def predictor(self, b: dict) -> torch.Tensor:
        """The action-conditioned baseline: (s_hist, action chunk) → s_{t+1}."""
        return self._dynamics(lambda s, a: self.model.predictor.loss(s, a, b["targets"][:, 0]), b)

    def _dynamics(self, loss_fn, b: dict) -> torch.Tensor:
        s_hist = b["s_hist"]
        a = self.model.scale_actions(b["actions"][:, 0]) if "actions" in b else self.null_actions(len(s_hist))
        return self.robust.loss(loss_fn, s_hist, a) if self.robust is not None else loss_fn(s_hist, a)

    def null_actions(self, batch: int) -> torch.Tensor:
        """[B, A] zeros: the scaled action chunk that stands for "unknown" when the data has no labels."""
        return torch.zeros(batch, self.model.config.action_dim, device=self.model.device)


def train_world_model(config: TrainConfig) -> WorldModel:
    """Train in this process, or on ``config.ranks`` local DDP ranks (one thread each) launched from here.

    Under torchrun the launcher's ranks stand; either way the same :func:`train_on_this_rank` runs.
    """
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; expected one of {', '.join(PRESETS)}")
    config = replace(config, data=data_dirs(config.data))
    device = resolve_device(config.device)
    layout = RankLayout.choose(config.ranks, device)
    if layout.ranks > 1 and "WORLD_SIZE" not in os.environ:
        launch_ranks(train_on_this_rank, (config,), layout.ranks, layout.threads)
        return WorldModel.load(config.out, device)
    threads = torch.get_num_threads()
    set_threads(layout.threads)
    try:
        return train_on_this_rank(config)
    finally:
        set_threads(threads)


def data_dirs(data: str | Path | list) -> list[str]:
    """``TrainConfig.data`` as a list of dataset folders (one folder may be given as a plain string)."""
    dirs = [str(data)] if isinstance(data, (str, Path)) else [str(d) for d in data]
    if not dirs:
        raise ValueError("no dataset given: pass at least one --data folder")
    return dirs


def train_on_this_rank(config: TrainConfig) -> WorldModel:
    """One rank's training (the only one outside DDP); rank 0 saves the model to ``config.out``."""
    preset = PRESETS[config.preset]
    device, dist = setup_device(config.device)
    started = time.perf_counter()
    where = " + ".join(config.data)  # train_world_model made it a list

    # ----- data --------------------------------------------------------------------------------
    parts = [load_episodes(d) for d in config.data]
    data = concat_episodes(parts, config.data)
    data.frame_step(config.frameskip)  # refuse, before any training, a frame stride the frameskip is no multiple of
    n_eps = len(data.frames)
    train_eps, val_eps = split_episodes(n_eps, config.val_fraction, config.seed)
    labelled = labelled_episodes(np.intersect1d(train_eps, np.flatnonzero(data.labelled)), config.action_labels,
                                 config.seed)
    _check_labels_suffice(config, data.has_actions, len(labelled))
    meta = data.meta
    sim_action_dim = int(meta.get("action_dim") or 1)

    # ----- model -------------------------------------------------------------------------------
    torch.manual_seed(config.seed)
    wm_cfg = WorldModelConfig(
        latent=config.latent, encoder=config.encoder, encoder_weights=config.encoder_weights,
        encoder_config=dict(preset.encoder, image_size=int(meta.get("image_size", 64))) if config.encoder == "conv" else {},
        history=config.history, sim_action_dim=sim_action_dim, frameskip=config.frameskip,
        latent_config=dict(preset.latent, encoder_input="residual" if config.latent == "rla" else "pair",
                           regularizer="none" if config.latent == "rla" else config.regularizer, repa_weight=config.repa_weight),
        flow_config=preset.flow, controller_config=preset.controller, predictor_config=preset.predictor,
    )
    wm_meta = WorldModelMeta(
        sim=str(meta.get("sim") or ""), env_id=str(meta.get("env_id") or ""), image_size=int(meta.get("image_size", 64)),
        action_low=list(meta.get("action_low") or []), action_high=list(meta.get("action_high") or []),
        dataset=" + ".join(str(Path(d).resolve()) for d in config.data),
    )
    model = WorldModel(wm_cfg, wm_meta).to(device)
    out = Path(config.out)
    log_dir = Path(config.log_dir) if config.log_dir else Path("runs") / out.stem
    trainer = Trainer(modules={"model": model}, checkpoint=out.with_name(out.name + ".train-state"), device=device,
                      distributed=dist, seed=config.seed, log_dir=log_dir, progress=config.progress,
                      precision=config.precision, compile=config.compile)
    if config.resume and not trainer.load_checkpoint():
        raise FileNotFoundError(f"--resume: no training state at {trainer.checkpoint}")

    # ----- stage: encoder (conv) -------------------------------------------------------------------
    frames = np.concatenate(data.frames)  # [F, H, W, 3] uint8, episodes back to back
    base = WorldModel.load(config.init_from) if config.init_from else None
    reused = _init_from(model, base, config.init_from) if base is not None else set()
    if config.encoder == "conv" and "encoder" not in reused:
        _train_conv_encoder(trainer, model, frames, config, dist.world_size)

    # ----- features ------------------------------------------------------------------------------
    with trainer.timed("features"):
        ends = np.cumsum([0] + [sum(len(f) for f in part.frames) for part in parts])  # each part's rows of `frames`
        raw = torch.cat([_dataset_features(model, d, frames[a:b], dist, config.progress)
                         for d, a, b in zip(config.data, ends[:-1], ends[1:])])
    windows = FeatureWindows.from_data(raw, data, config.history, config.frameskip)
    if "latent" in reused:  # the reused latent actions were trained on the base model's normalisation: keep it
        model.feature_mean.copy_(base.feature_mean)
        model.feature_std.copy_(base.feature_std)
    else:
        train_rows = np.random.default_rng(config.seed).permutation(windows.frame_rows(train_eps))[:20_000]  # plenty
        stats = raw[torch.as_tensor(train_rows)].float()
        model.feature_mean.copy_(stats.mean(dim=(0, 1)))
        model.feature_std.copy_(stats.std(dim=(0, 1)).clamp_min(1e-3))
    windows.features = model.normalize(raw.to(device)).half()
    losses = StageLosses(model, FGSM.from_windows(windows, labelled, model.scale_actions, config.seed)
                         if config.adversarial else None)
    if losses.robust is not None:
        trainer.generators["fgsm"] = losses.robust.generator
    notes: dict[str, Any] = {}  # what this run did differently (no labels, the REPA window), for train_info

    # ----- stages: dynamics ------------------------------------------------------------------------
    if config.latent == "action":
        stage = config.stage("predictor", dist.world_size)
        trainer.run(stage, model.predictor, losses.predictor, windows.sampler(labelled, stage.batch_size, device=device))
    else:
        latent = model.latent_model
        stage = config.stage("latent", dist.world_size)
        max_h = config.latent_max_h if config.latent == "rla" else 1
        repa_window = fitting_window(windows, train_eps, config.repa_window, max_h) if latent.repa is not None else 1
        if latent.repa is not None:
            notes["repa_window"] = repa_window
        if "latent" not in reused:
            trainer.run(stage, latent, losses.latent,
                        latent_window_sampler(windows, train_eps, stage.batch_size, repa_window, max_h, device))
        latent.eval().requires_grad_(False)

        # the flow: p(z | s_hist, a) on labelled episodes, or the z-prior p(z | s_hist) with a = 0 without labels
        dynamics_eps = labelled if len(labelled) else train_eps
        stages = [config.stage(name, dist.world_size) for name in ("flow", "controller")[:1 + bool(len(labelled))]]
        todo = [stage for stage in stages if not trainer.stage_done(stage.name)]
        draws = sum(stage.steps * stage.batch_size * dist.world_size for stage in todo)
        if draws >= len(windows.starts(dynamics_eps)):  # cheaper to encode every window once than every batch
            with trainer.timed("latent_targets"):
                windows.latent_z = latent_targets(latent, windows, dynamics_eps, dist)
        stage = stages[0]
        trainer.run(stage, model.flow, losses.flow, with_latent_targets(
            windows.sampler(dynamics_eps, stage.batch_size, with_actions=bool(len(labelled)), device=device), latent))
        if len(labelled):
            stage = stages[1]
            trainer.run(stage, model.controller, losses.controller,
                        with_latent_targets(windows.sampler(labelled, stage.batch_size, device=device), latent))
        else:
            notes.update(flow=f"z-prior: {NO_LABELS}, trained with the null action a = 0",
                         controller=f"skipped: {NO_LABELS}")
            if dist.is_main:
                warnings.warn(f"{where} has {NO_LABELS} in its training episodes: trained the encoder, the latent "
                              "actions and the flow as a z-prior; skipped the controller (sim actions cannot drive "
                              "this model). Add labels for some episodes (wm-gym ingest --labels) or train the "
                              "controller later with --init-from on labelled data.", stacklevel=2)

    # ----- finish ---------------------------------------------------------------------------------
    model.eval()
    if len(labelled):
        notes["reproject"] = choose_reprojection(model, windows, np.intersect1d(val_eps, np.flatnonzero(data.labelled)))
    elif model.latent_model is not None:  # no labels: what a latent-action agent imagines decides
        notes["reproject"] = choose_reprojection(model, windows, val_eps, latent=True)
    model.meta.train_info = {
        "preset": config.preset, "latent": config.latent, "seconds": round(time.perf_counter() - started, 1),
        "episodes": n_eps, "train_episodes": len(train_eps), "val_episodes": val_eps.tolist(),
        "labelled_episodes": len(labelled), "action_labels": config.action_labels, "seed": config.seed,
        "adversarial": config.adversarial,
        "world_size": dist.world_size, "threads_per_rank": torch.get_num_threads(), "device": str(device),
        "precision": resolved_precision(config.precision, device),
        "stage_seconds": {k: round(v, 1) for k, v in trainer.seconds.items()},
        "replica_digests": trainer.replica_digests(model),
        "final_loss": {k: float(np.mean(v[-20:])) for k, v in trainer.history.items() if v},
        "config": {k: v for k, v in asdict(config).items() if k not in ("progress",)},
        **notes,
    }
    if dist.is_main:
        model.save(out)
    trainer.close()
    return model


@torch.no_grad()
def choose_reprojection(model: WorldModel, windows: FeatureWindows, episodes: np.ndarray, horizon: int = 5,
                        max_windows: int = 256, seed: int = 0, latent: bool = False) -> dict[str, Any]:
    """Keep re-projection (``config.reproject``) only where it helps: the open-loop error at ``horizon`` model
    steps on held-out windows, with and without it; the lower one wins.

    Re-projecting snaps each prediction onto a frame the pixel decoder can draw. On Wall that halves the
    horizon-5 error; on PushT the small decoder cannot draw the T block well enough, and snapping made the
    error 5× copy-last's (without: 0.84×). ``latent``: roll out through the latent actions of the real frames
    (:meth:`WorldModel.latent_rollout`) instead of the recorded actions, for a model trained with no labels.
    The report goes into ``train_info["reproject"]``.
    """
    if not model.reprojects or len(episodes) == 0:
        return {"chosen": model.reprojects, "checked": False}
    try:
        starts = windows.starts(episodes, horizon)
    except ValueError:  # held-out episodes too short for the check: keep the default
        return {"chosen": model.reprojects, "checked": False}
    rng = np.random.default_rng(seed)
    t = torch.as_tensor(rng.choice(starts, size=min(max_windows, len(starts)), replace=False))
    batch = {k: v.to(model.device) for k, v in windows.gather(t, horizon, with_actions=not latent).items()}
    errors = {}
    for reproject in (True, False):
        model.config.reproject = reproject
        if latent:
            preds = model.latent_rollout(torch.cat([batch["s_hist"][:, -1:], batch["targets"]], dim=1).float())
        else:
            preds = model.rollout(batch["s_hist"].float(), batch["actions"])
        errors[reproject] = float(((preds[:, -1] - batch["targets"][:, -1].float()) ** 2).mean())
    model.config.reproject = errors[True] <= errors[False]
    return {"chosen": model.config.reproject, "checked": True, "by": "latent actions" if latent else "actions",
            "horizon": horizon, "windows": len(t),
            "mse_with": errors[True], "mse_without": errors[False]}


def _check_labels_suffice(config: TrainConfig, has_actions: bool, n_labelled: int) -> None:
    """Fail before any training when the run asks for something that needs action labels and has none."""
    if n_labelled:
        return
    why = "has no actions" if not has_actions else "has no action labels in its training episodes"
    if config.latent == "action":
        raise ValueError(f"{' + '.join(config.data)} {why}; latent='action' needs action labels (use rla or lam, which learn "
                         "from action-free video)")
    if config.adversarial:
        raise ValueError(f"{' + '.join(config.data)} {why}; --adversarial perturbs the dynamics' action inputs, so it needs "
                         "action labels (drop --adversarial for action-free data)")


def _init_from(model: WorldModel, base: WorldModel, path: str) -> set[str]:
    """Copy a trained model's encoder (its config must match) and its latent actions (if theirs does).

    A different latent model (e.g. lam initialised from an rla model) is trained afresh on the reused encoder.
    """
    reused = set()
    pairs = [("encoder", base.encoder, model.encoder), ("latent", base.latent_model, model.latent_model)]
    for name, src, dst in pairs:
        if src is None or dst is None:
            continue
        src_cfg, dst_cfg = src.config, dst.config
        if src_cfg != dst_cfg:
            if name == "encoder":
                raise ValueError(f"--init-from {path}: its encoder config {src_cfg} differs from this run's {dst_cfg}")
            continue
        dst.load_state_dict(src.state_dict())
        reused.add(name)
    model.encoder.freeze()
    return reused


def _dataset_features(model: WorldModel, data_dir: str, frames: np.ndarray, dist: Distributed,
                      progress: bool) -> torch.Tensor:
    """φ(every frame) [F, N, C] fp16 on the CPU: the dataset's cache, or encoded now, each rank doing its share."""
    def encode_shares() -> torch.Tensor:
        return dist.gather_rows(lambda rows: encode_frames(model.encoder, frames[rows], device=model.device,
                                                           progress=progress and dist.is_main), len(frames))

    return dataset_features(model.encoder, data_dir, frames, encode=encode_shares, write=dist.is_main)


@torch.no_grad()
def latent_targets(latent, windows: FeatureWindows, episodes: np.ndarray, dist: Distributed,
                   batch: int = 1024) -> torch.Tensor:
    """[F, K, d]: the frozen latent encoder's z for (s_t, s_{t+1}) at every window start t of ``episodes``
    (zeros elsewhere): the flow's and the controller's target, computed once instead of every step."""
    starts = torch.as_tensor(windows.starts(episodes, 1))
    fs, feats = windows.frame_step, windows.features

    def encode(rows: slice) -> torch.Tensor:
        t = starts[rows].to(feats.device)
        if len(t) == 0:  # a rank with no share (fewer windows than ranks) still sends rows of the right shape
            return encode(slice(0, 1))[:0]
        return torch.cat([latent.encode(feats[t[i:i + batch]].float(), feats[t[i:i + batch] + fs].float())
                          for i in range(0, len(t), batch)])

    z = dist.gather_rows(encode, len(starts))
    out = torch.zeros(len(feats), *z.shape[1:], device=z.device)
    out[starts.to(z.device)] = z
    return out


def with_latent_targets(sample, latent):
    """``sample`` whose batches carry ``z`` [B, k, d]: the precomputed target (:func:`latent_targets`) when the
    windows hold them, else the frozen latent encoder's z of (s_t, s_{t+1}) computed for this batch."""
    def sample_with_z(gen: torch.Generator) -> dict:
        batch = sample(gen)
        if "z" not in batch:
            with torch.no_grad():
                batch["z"] = latent.encode(batch["s_hist"][:, -1], batch["targets"][:, 0])
        return batch

    return sample_with_z


def _train_conv_encoder(trainer: Trainer, model: WorldModel, frames: np.ndarray, config: TrainConfig,
                        world_size: int) -> None:
    """Self-supervised reconstruction with a foreground-weighted loss, so small agents are kept."""
    stage = config.stage("encoder", world_size)
    loss, sample = conv_encoder_objective(model.encoder, torch.from_numpy(frames), stage.batch_size)
    model.encoder.requires_grad_(True)
    trainer.run(stage, model.encoder, loss, sample)
    model.encoder.freeze()
    if model.encoder.reprojector is not None:  # fitted to the frozen encoder: the features stay the conv decoder's
        stage = config.stage("reprojector", world_size)
        loss, sample = reprojector_objective(model.encoder, torch.from_numpy(frames), stage.batch_size)
        model.encoder.reprojector.requires_grad_(True)
        trainer.run(stage, model.encoder.reprojector, loss, sample)
        model.encoder.freeze()
