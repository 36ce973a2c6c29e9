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
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_gym.data.dataset import load_episodes
from wm_gym.data.windows import split_episodes
from wm_gym.encoders.cache import dataset_features
from wm_gym.encoders.conv import conv_encoder_objective
from wm_gym.train.adversarial import FGSM
from wm_gym.train.feature_windows import FeatureWindows
from wm_gym.train.loop import StageConfig, Trainer, setup_device
from wm_gym.world_model import WorldModel, WorldModelConfig, WorldModelMeta


@dataclass
class Preset:
    """Model sizes and stage budgets. ``tiny``: tests; ``small``: ≤30 min on 2 CPU cores; ``fast``: half
    small's width, a patch decoder and a longer encoder stage, for cheap imagination on CPUs; ``base``: GPU."""

    encoder: dict
    latent: dict
    flow: dict
    controller: dict
    predictor: dict
    stages: dict[str, StageConfig]


def _stages(encoder: int, latent: int, flow: int, controller: int, batch: int, lr: float = 3e-4) -> dict[str, StageConfig]:
    return {
        "encoder": StageConfig("encoder", encoder, lr=2e-3, batch_size=batch),
        "latent": StageConfig("latent", latent, lr=lr, batch_size=batch),
        "flow": StageConfig("flow", flow, lr=lr, batch_size=batch),
        "controller": StageConfig("controller", controller, lr=lr, batch_size=batch),
        "predictor": StageConfig("predictor", latent, lr=lr, batch_size=batch),
    }


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
    "fast": Preset(  # ~2,100-2,500 imagined steps/s at batch 256 on 2 CPU cores (`wm-gym bench`), small ~545
        encoder=dict(grid=8, dim=32, width=16, decoder="patch"),
        latent=dict(n_latents=8, latent_dim=16, width=64, enc_depth=2, dec_depth=1, heads=2),
        flow=dict(width=64, depth=3, heads=2), controller=dict(width=64, depth=2, heads=2),
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
    data: str                        # dataset directory (wm-gym collect / ingest)
    out: str                         # world-model file to write
    preset: str = "small"            # tiny | small | fast | base
    latent: str = "rla"              # rla | lam | action
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
    precision: str = "auto"          # auto: bf16 autocast on CUDA, fp32 on CPU | bf16 | fp32
    compile: str | None = None       # torch.compile backend for each stage's loss (e.g. "inductor"); None = eager
    log_dir: str | None = None       # TensorBoard folder (default: runs/<out name>)
    checkpoint_every: int | None = None  # steps between mid-stage checkpoints (default: each stage's own, 250)
    progress: bool = True
    stage_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # e.g. {"latent": {"lr": 1e-3}}

    def stage(self, name: str) -> StageConfig:
        stage = PRESETS[self.preset].stages[name]
        if self.steps is not None:
            stage = replace(stage, steps=self.steps)
        if self.checkpoint_every is not None:
            stage = replace(stage, ckpt_every=self.checkpoint_every)
        return replace(stage, **self.stage_overrides.get(name, {}))


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
    at any frame of an episode.
    """
    samplers = [replace(windows, history=1, frameskip=h * windows.frameskip).sampler(
        episodes, batch_size, horizon=steps, with_actions=False, device=device) for h in range(1, max_h + 1)]

    def sample(gen: torch.Generator) -> dict:
        h = int(torch.randint(len(samplers), (1,), generator=gen))
        b = samplers[h](gen)
        return {"s_seq": torch.cat([b["s_hist"], b["targets"]], dim=1)}

    return sample


def fitting_window(windows: FeatureWindows, episodes: np.ndarray, wanted: int, max_h: int) -> int:
    """The longest window ≤ ``wanted`` model steps (at gap ``max_h``) that fits the longest of ``episodes``."""
    if not isinstance(wanted, (int, np.integer)) or wanted < 1:
        raise ValueError(f"repa_window must be an integer >= 1 (model steps), got {wanted!r}")
    longest = int(windows.lengths[episodes].max())
    fits = (longest - 1) // (max_h * windows.frameskip)
    if fits < 1:
        raise ValueError(f"no latent-action pair fits: a gap of {max_h} model steps × frameskip {windows.frameskip} "
                         f"needs episodes of at least {max_h * windows.frameskip + 1} frames; the longest has {longest}")
    return min(wanted, fits)


@dataclass
class StageLosses:
    """Each stage's loss as a named function of a batch (``loss = losses.flow(batch)``).

    Batches come from :class:`FeatureWindows` samplers: ``s_hist`` [B, H, N, C], ``targets``
    [B, K, N, C], ``actions`` [B, K, A] in sim units. The dynamics losses (flow, controller,
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

    def with_latent_targets(self, b: dict) -> dict:
        """Add ``z`` [B, K, d], the frozen latent encoder's action for (s_t, s_{t+1}): flow's and controller's target."""
        with torch.no_grad():
            b["z"] = self.model.latent_model.encode(b["s_hist"][:, -1], b["targets"][:, 0])
        return b

    def _dynamics(self, loss_fn, b: dict) -> torch.Tensor:
        s_hist = b["s_hist"]
        a = self.model.scale_actions(b["actions"][:, 0]) if "actions" in b else self.null_actions(len(s_hist))
        return self.robust.loss(loss_fn, s_hist, a) if self.robust is not None else loss_fn(s_hist, a)

    def null_actions(self, batch: int) -> torch.Tensor:
        """[B, A] zeros: the scaled action chunk that stands for "unknown" when the data has no labels."""
        return torch.zeros(batch, self.model.config.action_dim, device=self.model.device)


def train_world_model(config: TrainConfig) -> WorldModel:
    if config.preset not in PRESETS:
        raise ValueError(f"unknown preset {config.preset!r}; expected one of {', '.join(PRESETS)}")
    preset = PRESETS[config.preset]
    device, dist = setup_device(config.device)
    started = time.perf_counter()

    # ----- data --------------------------------------------------------------------------------
    data = load_episodes(config.data)
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
        dataset=str(Path(config.data).resolve()),
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
    reused = _init_from(model, config.init_from) if config.init_from else set()
    if config.encoder == "conv" and "encoder" not in reused:
        _train_conv_encoder(trainer, model, frames, config)

    # ----- features ------------------------------------------------------------------------------
    raw = dataset_features(model.encoder, config.data, frames, progress=config.progress and dist.is_main)
    windows = FeatureWindows.from_data(raw, data, config.history, config.frameskip)
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
        stage = config.stage("predictor")
        trainer.run(stage, model.predictor, losses.predictor, windows.sampler(labelled, stage.batch_size, device=device))
    else:
        latent = model.latent_model
        stage = config.stage("latent")
        max_h = config.latent_max_h if config.latent == "rla" else 1
        repa_window = fitting_window(windows, train_eps, config.repa_window, max_h) if latent.repa is not None else 1
        if latent.repa is not None:
            notes["repa_window"] = repa_window
        if "latent" not in reused:
            trainer.run(stage, latent, losses.latent,
                        latent_window_sampler(windows, train_eps, stage.batch_size, repa_window, max_h, device))
        latent.eval().requires_grad_(False)

        # the flow: p(z | s_hist, a) on labelled episodes, or the z-prior p(z | s_hist) with a = 0 without labels
        stage = config.stage("flow")
        flow_sample = (windows.sampler(labelled, stage.batch_size, device=device) if len(labelled) else
                       windows.sampler(train_eps, stage.batch_size, with_actions=False, device=device))
        trainer.run(stage, model.flow, losses.flow, lambda g: losses.with_latent_targets(flow_sample(g)))
        if len(labelled):
            stage = config.stage("controller")
            sample = windows.sampler(labelled, stage.batch_size, device=device)
            trainer.run(stage, model.controller, losses.controller, lambda g: losses.with_latent_targets(sample(g)))
        else:
            notes.update(flow=f"z-prior: {NO_LABELS}, trained with the null action a = 0",
                         controller=f"skipped: {NO_LABELS}")
            if dist.is_main:
                warnings.warn(f"{config.data} has {NO_LABELS} in its training episodes: trained the encoder, the latent "
                              "actions and the flow as a z-prior; skipped the controller (sim actions cannot drive "
                              "this model). Add labels for some episodes (wm-gym ingest --labels) or train the "
                              "controller later with --init-from on labelled data.", stacklevel=2)

    # ----- finish ---------------------------------------------------------------------------------
    model.eval()
    model.meta.train_info = {
        "preset": config.preset, "latent": config.latent, "seconds": round(time.perf_counter() - started, 1),
        "episodes": n_eps, "train_episodes": len(train_eps), "val_episodes": val_eps.tolist(),
        "labelled_episodes": len(labelled), "action_labels": config.action_labels, "seed": config.seed,
        "adversarial": config.adversarial,
        "world_size": dist.world_size, "device": str(device), "replica_digests": trainer.replica_digests(model),
        "final_loss": {k: float(np.mean(v[-20:])) for k, v in trainer.history.items() if v},
        "config": {k: v for k, v in asdict(config).items() if k not in ("progress",)},
        **notes,
    }
    if dist.is_main:
        model.save(out)
    trainer.close()
    return model


def _check_labels_suffice(config: TrainConfig, has_actions: bool, n_labelled: int) -> None:
    """Fail before any training when the run asks for something that needs action labels and has none."""
    if n_labelled:
        return
    why = "has no actions" if not has_actions else "has no action labels in its training episodes"
    if config.latent == "action":
        raise ValueError(f"{config.data} {why}; latent='action' needs action labels (use rla or lam, which learn "
                         "from action-free video)")
    if config.adversarial:
        raise ValueError(f"{config.data} {why}; --adversarial perturbs the dynamics' action inputs, so it needs "
                         "action labels (drop --adversarial for action-free data)")


def _init_from(model: WorldModel, path: str) -> set[str]:
    """Copy a trained model's encoder (its config must match) and its latent actions (if theirs does).

    A different latent model (e.g. lam initialised from an rla model) is trained afresh on the reused encoder.
    """
    base = WorldModel.load(path)
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


def _train_conv_encoder(trainer: Trainer, model: WorldModel, frames: np.ndarray, config: TrainConfig) -> None:
    """Self-supervised reconstruction with a foreground-weighted loss, so small agents are kept."""
    stage = config.stage("encoder")
    loss, sample = conv_encoder_objective(model.encoder, torch.from_numpy(frames), stage.batch_size)
    model.encoder.requires_grad_(True)
    trainer.run(stage, model.encoder, loss, sample)
    model.encoder.freeze()
