"""WorldModel: the frozen encoder φ, the latent-action model, the dynamics and the controller.

It owns the pieces every consumer needs in one place: encoding frames into normalised feature
tokens, stepping and rolling out (batched, any device, differentiable w.r.t. actions),
decoding features back to pixels for looking at, and saving/loading one self-describing file.

Feature tokens inside the world model are normalised per channel: s = (φ(x) − mean) / std.

Three kinds, chosen at training time with ``latent``:
* ``rla``: residual latent actions (RLA-WM). One step is ŝ = D(s_t, z) with z from the
  controller (deterministic, differentiable) or the flow sampler (stochastic).
* ``lam``: inverse-dynamics latent actions with a sparse/noisy/VQ bottleneck; same step.
* ``action``: the DINO-WM-style baseline, ŝ = f(s_hist, a) with no latent action.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from wm_gym.dynamics.controller import Controller, ControllerConfig
from wm_gym.dynamics.flow import FlowConfig, FlowDynamics
from wm_gym.dynamics.predictor import ActionPredictor, PredictorConfig
from wm_gym.encoders import ConvEncoder, ConvEncoderConfig, DinoV2Encoder, FrozenEncoder
from wm_gym.data.demo_bank import DemoBank
from wm_gym.device import resolved_precision, use_bf16
from wm_gym.encoders.look_alignment import LookAlignment
from wm_gym.encoders.probe import StateProbe
from wm_gym.io import atomic_torch_save
from wm_gym.latent_actions.autoencoder import LatentActionAutoencoder, LatentActionConfig
from wm_gym.nn import check_shape
from wm_gym.rewards.distance import feature_distance
from wm_gym.temporal_distance import TemporalDistance, TemporalDistanceConfig

FORMAT = "wm-gym-world-model"
VERSION = 1
LATENTS = ("rla", "lam", "action")
#: Weights ``save(half=True)`` keeps in fp32.
FULL_PRECISION = ("encoder.", "state_probe.")
STEP_MODES = ("controller", "flow")


@dataclass
class WorldModelConfig:
    latent: str = "rla"                  # "rla" | "lam" | "action"
    encoder: str = "conv"                # "conv" | "dinov2-vits14"
    encoder_config: dict = field(default_factory=dict)   # the encoder's config fields
    encoder_weights: str | None = None   # dinov2 only: path of the official weights file
    history: int = 1                     # H: feature frames the dynamics read
    sim_action_dim: int = 2              # one simulator action
    frameskip: int = 5                   # sim actions per model step (the action chunk)
    latent_config: dict = field(default_factory=dict)      # LatentActionConfig fields (rla/lam)
    flow_config: dict = field(default_factory=dict)        # FlowConfig fields (rla/lam)
    controller_config: dict = field(default_factory=dict)  # ControllerConfig fields (rla/lam)
    predictor_config: dict = field(default_factory=dict)   # PredictorConfig fields (action)
    reproject: bool = True               # re-encode each predicted state through the pixel decoder (conv only)
    distance_config: dict | None = None  # TemporalDistanceConfig fields of the temporal-distance head, if fitted
    look_alignment: str | None = None    # the look this model's encoding is aligned to read (`wm-gym align`), if any
    probe_state_dim: int | None = None   # numbers of the sim state a linear probe reads from features, if fitted
                                         # (`wm-gym calibrate --probe`: the sim's own success test in imagination)

    def __post_init__(self):
        if self.latent not in LATENTS:
            raise ValueError(f"latent must be one of {LATENTS}, got {self.latent!r}")

    @property
    def action_dim(self) -> int:
        """A: the flat action chunk one model step consumes."""
        return self.sim_action_dim * self.frameskip


@dataclass
class WorldModelMeta:
    """What consumers (imagination env, planners, evaluation) need to use the model correctly."""

    sim: str = ""                         # short sim name, e.g. "wall"
    env_id: str = ""                      # registered id, e.g. "wm_gym/Wall-v1"
    image_size: int = 64
    action_low: list[float] = field(default_factory=list)   # one sim action's bounds
    action_high: list[float] = field(default_factory=list)
    success_threshold: float | None = None  # calibrated feature distance for "success" (#4)
    success_metric: str = "l1"
    dataset: str = ""                     # where it was trained
    train_info: dict = field(default_factory=dict)  # steps, seconds, losses, label fraction, ...
    plan_defaults: dict = field(default_factory=dict)  # `wm-gym plan` settings this model plans best with (option
                                                       # dest -> value, e.g. {"terminal": "temporal"}), used where
                                                       # the command line gives none: the bare command reproduces
                                                       # the model's reported planning figure
    agent_defaults: dict = field(default_factory=dict)  # `wm-gym train-agent` settings of this model's best agent
                                                        # (e.g. {"teacher": "plan", "steps": 0}), the same way


def build_frozen_encoder(config: WorldModelConfig) -> FrozenEncoder:
    if config.encoder == "conv":
        return ConvEncoder(ConvEncoderConfig(**config.encoder_config)).freeze()
    if config.encoder == "dinov2-vits14":
        return DinoV2Encoder(config.encoder_weights, **config.encoder_config).freeze()
    raise ValueError(f"unknown encoder {config.encoder!r}; expected conv or dinov2-vits14")


class WorldModel(nn.Module):
    def __init__(self, config: WorldModelConfig, meta: WorldModelMeta | None = None,
                 encoder: FrozenEncoder | None = None):
        super().__init__()
        self.config, self.meta = config, meta or WorldModelMeta()
        self.encoder = (encoder or build_frozen_encoder(config)).freeze()
        n, c = self.encoder.n_tokens, self.encoder.dim
        self.register_buffer("feature_mean", torch.zeros(c))
        self.register_buffer("feature_std", torch.ones(c))
        low = torch.tensor(self.meta.action_low or [-1.0] * config.sim_action_dim)
        high = torch.tensor(self.meta.action_high or [1.0] * config.sim_action_dim)
        self.register_buffer("action_low", low.repeat(config.frameskip).float())
        self.register_buffer("action_high", high.repeat(config.frameskip).float())
        shared = dict(n_tokens=n, dim=c, history=config.history, action_dim=config.action_dim)
        self.bank: DemoBank | None = None  # demos for imagination envs (starts, goals, aligned rewards)
        self.precision = "auto"  # dynamics autocast: "auto" (bf16 on CUDA and CPUs with bf16 units, device.use_bf16) | "bf16" | "fp32"
        self._compiled = self._dynamics_step  # the dynamics call, replaced by compile_dynamics()
        self.latent_model: LatentActionAutoencoder | None = None
        self.flow: FlowDynamics | None = None
        self.controller: Controller | None = None
        self.predictor: ActionPredictor | None = None
        if config.latent == "action":
            self.predictor = ActionPredictor(PredictorConfig(**{**config.predictor_config, **shared}))
        else:
            lat = LatentActionConfig(**{**config.latent_config, "n_tokens": n, "dim": c})
            self.latent_model = LatentActionAutoencoder(lat)
            z_shape = dict(n_latents=lat.n_latents, latent_dim=lat.latent_dim)
            self.flow = FlowDynamics(FlowConfig(**{**config.flow_config, **shared, **z_shape}))
            self.controller = Controller(ControllerConfig(**{**config.controller_config, **shared, **z_shape}))
        self.look_alignment: LookAlignment | None = None  # maps a new look's features to the old (``align``)
        if config.look_alignment is not None:
            self.look_alignment = LookAlignment(n, c)
        self.temporal_distance: TemporalDistance | None = None  # model steps to a goal (``train-distance``)
        if config.distance_config is not None:
            self.temporal_distance = TemporalDistance(n, c, TemporalDistanceConfig(**config.distance_config))
        self.state_probe: StateProbe | None = None  # features -> sim state (``calibrate --probe``)
        if config.probe_state_dim is not None:
            self.state_probe = StateProbe(n, c, config.probe_state_dim)

    # ----- shapes -----------------------------------------------------------------------------
    @property
    def n_tokens(self) -> int:
        return self.encoder.n_tokens

    @property
    def dim(self) -> int:
        return self.encoder.dim

    @property
    def device(self) -> torch.device:
        return self.feature_mean.device

    # ----- features -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, frames: Tensor, batch_size: int = 512) -> Tensor:
        """uint8 frames [B, H, W, 3] → normalised feature tokens [B, N, C] (on the model's device); an aligned model
        (``wm-gym align``) first maps the raw features of its new look onto the look it was trained on."""
        out = [self.encoder(frames[i:i + batch_size].to(self.device)) for i in range(0, len(frames), batch_size)]
        raw = torch.cat(out)
        return self.normalize(self.look_alignment(raw) if self.look_alignment is not None else raw)

    def normalize(self, raw: Tensor) -> Tensor:
        return (raw.float() - self.feature_mean) / self.feature_std

    def denormalize(self, s: Tensor) -> Tensor:
        return s * self.feature_std + self.feature_mean

    @torch.no_grad()
    def decode_pixels(self, s: Tensor) -> Tensor:
        """Normalised tokens [B, N, C] → uint8 images [B, H, W, 3] (for videos; needs a decoding encoder)."""
        if not hasattr(self.encoder, "decode"):
            raise ValueError(f"encoder {self.config.encoder!r} has no pixel decoder")
        return (self.encoder.decode(self.denormalize(s)).clamp(0, 1) * 255).round().to(torch.uint8)

    @property
    def reprojects(self) -> bool:
        """``config.reproject``, where the encoder can do it (it needs a pixel decoder): rollouts then snap
        every prediction back onto encodable frames with :meth:`project_to_frames`."""
        return self.config.reproject and hasattr(self.encoder, "reproject")

    def project_to_frames(self, s: Tensor) -> Tensor:
        """ŝ → φ(decode(ŝ)), differentiable: keeps open-loop rollouts on the manifold of real frames.

        Without it small errors compound off-distribution (on Wall, horizon-5 error vs copy-last
        falls from 0.49 to 0.25 with it); see README "World models". The encoder decides which of its
        decoders re-projects (``ConvEncoderConfig.reprojector``).
        """
        return self.normalize(self.encoder.reproject(self.denormalize(s)))

    def scale_actions(self, a: Tensor) -> Tensor:
        """Sim-unit action chunks [..., A] → [-1, 1], the range the dynamics were trained on."""
        return 2 * (a - self.action_low) / (self.action_high - self.action_low) - 1

    # ----- dynamics -----------------------------------------------------------------------------
    def latent_action(self, s_t: Tensor, s_next: Tensor) -> Tensor:
        """z [B, K, d] that explains s_t → s_next (the latent model's encoder)."""
        return self._latent().encode(s_t, s_next)

    def decode_latent(self, s_t: Tensor, z: Tensor) -> Tensor:
        """Apply a latent action: ŝ_{t+1} = D(s_t, z), [B, N, C] (not re-projected)."""
        return self._latent().decode(s_t, z)

    def step(self, s_hist: Tensor, actions: Tensor, mode: str = "controller", flow_steps: int | None = None,
             noise: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """One model step: s_hist [B, H, N, C] + action chunks [B, A] in sim units → ŝ [B, N, C].

        ``mode="controller"`` is deterministic and differentiable w.r.t. ``actions`` (planning);
        ``mode="flow"`` samples z with the flow model (``noise=zeros`` → its deterministic mean).
        The ``action`` baseline has a single deterministic mode. ``step`` = ``rollout`` of one chunk.
        """
        check_shape(actions, "actions", B=s_hist.shape[0], A=self.config.action_dim)
        return self.rollout(s_hist, actions[:, None], mode, flow_steps=flow_steps, noise=noise, generator=generator)[:, 0]

    # ----- speed: bf16 autocast and torch.compile ---------------------------------------------------
    @property
    def uses_bf16(self) -> bool:
        return use_bf16(self.precision, self.device)

    @property
    def precision_in_use(self) -> str:
        """``"bf16"`` or ``"fp32"``: what ``precision`` resolves to on this model's device (for reports)."""
        return resolved_precision(self.precision, self.device)

    def autocast(self):
        """bf16 autocast for the dynamics where it pays (CUDA, CPUs with bf16 units), per ``precision``; outputs come back fp32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.uses_bf16)

    def compile_dynamics(self, backend: str = "inductor", **kwargs) -> "WorldModel":
        """torch.compile the dynamics step (optional; weights and files are unchanged). Returns self."""
        self._compiled = torch.compile(self._dynamics_step, backend=backend, **kwargs)
        return self

    def _dynamics_step(self, s_hist: Tensor, a: Tensor, mode: str = "controller", **flow_kwargs) -> Tensor:
        """The dynamics alone: s_hist and *scaled* action chunks a ∈ [−1, 1] → ŝ_{t+1}, not re-projected."""
        if self.predictor is not None:
            return self.predictor(s_hist, a)
        if mode == "controller":
            return self.decode_latent(s_hist[:, -1], self.controller(s_hist, a))
        if mode == "flow":
            return self.decode_latent(s_hist[:, -1], self.flow.sample(s_hist, a, **flow_kwargs))
        raise ValueError(f"mode must be one of {STEP_MODES}, got {mode!r}")

    @property
    def controller_trained(self) -> bool:
        """False for a model trained on action-free video: its controller was skipped (``train_info``)."""
        return not str(self.meta.train_info.get("controller", "")).startswith("skipped")

    @property
    def takes_sim_actions(self) -> bool:
        """True when sim action chunks can drive the dynamics: an action predictor, or a trained controller."""
        return self.predictor is not None or self.controller_trained

    @property
    def dynamics(self) -> nn.Module:
        """The module that maps actions to motion: the predictor (action) or the controller (rla/lam).

        Fine-tuning trains only this, so the encoder, the latent-action space and the flow model
        that imagination envs and agents rely on stay as they were.
        """
        return self.predictor if self.predictor is not None else self.controller

    # ----- distance to a goal ----------------------------------------------------------------------
    def attach_temporal_distance(self, head: TemporalDistance) -> None:
        """Make ``head`` part of the model (saved with it; ``metric="temporal"`` and ``reward="temporal"`` use it)."""
        self.temporal_distance = head.to(self.device)
        self.config.distance_config = asdict(head.config)

    def attach_state_probe(self, probe: StateProbe) -> None:
        """Make ``probe`` part of the model (saved with it; the ``probe`` imagined success test uses it)."""
        self.state_probe = probe.to(self.device)
        self.config.probe_state_dim = int(probe.bias.shape[0])

    def goal_distance(self, s: Tensor, goal: Tensor, metric: str = "l1") -> Tensor:
        """[B] distance of states [B, N, C] to goals: a feature metric (l1 | l2 | cosine), or ``"temporal"``,
        the learned number of model steps (needs a head: ``wm-gym train-distance``)."""
        if metric != "temporal":
            return feature_distance(s, goal, metric)
        if self.temporal_distance is None:
            raise ValueError("metric 'temporal' needs a temporal-distance head; fit one with `wm-gym train-distance`")
        return self.temporal_distance.steps(s, goal)

    def snap(self, s: Tensor) -> Tensor:
        """A predicted state as the next rollout input: re-projected when the model does that."""
        return self.project_to_frames(s) if self.reprojects else s

    def rollout(self, s_hist: Tensor, actions: Tensor, mode: str = "controller", *, scaled: bool = False,
                snap_last: bool = True, flow_steps: int | None = None, noise: Tensor | None = None,
                generator: torch.Generator | None = None) -> Tensor:
        """Open loop: s_hist [B, H, N, C], action chunks [B, T, A] → predictions [B, T, N, C].

        Actions are in sim units, or already scaled to [−1, 1] with ``scaled=True`` (training
        batches). Each prediction is snapped (re-projected, when the model does that) and fed
        back as the newest history frame; ``snap_last=False`` returns the last one raw, as
        one-step training fits it.
        """
        check_shape(s_hist, "s_hist", B=None, H=self.config.history, N=self.n_tokens, C=self.dim)
        check_shape(actions, "actions", B=s_hist.shape[0], T=None, A=self.config.action_dim)
        if mode == "controller" and not self.takes_sim_actions:
            raise ValueError("this model's controller was not trained (its data had no action labels), so sim "
                             "actions cannot drive it; use latent actions, or train one with `wm-gym train "
                             "--init-from MODEL --data LABELLED`")
        a = actions if scaled else self.scale_actions(actions)
        preds = []
        with self.autocast():
            for t in range(a.shape[1]):
                s_next = self._compiled(s_hist, a[:, t], mode, steps=flow_steps, noise=noise, generator=generator)
                if snap_last or t < a.shape[1] - 1:
                    s_next = self.snap(s_next)
                preds.append(s_next.float())
                s_hist = torch.cat([s_hist[:, 1:], preds[-1][:, None]], dim=1)
        return torch.stack(preds, dim=1)

    @torch.no_grad()
    def latent_rollout(self, s_seq: Tensor) -> Tensor:
        """Imagination through latent actions, as a latent-action agent imagines: real states s_seq [B, T+1, N, C]
        → predictions [B, T, N, C], ŝ_{k+1} = D(snap(ŝ_k), E(s_k, s_{k+1})) from ŝ_0 = s_0 (not snapped last).

        The latent actions come from the real pairs, the states they act on are the model's own: the drift of
        a rollout whose actions are right, with no action labels (eval-wm, train-distance on video)."""
        s, preds = s_seq[:, 0], []
        for k in range(s_seq.shape[1] - 1):
            preds.append(self.decode_latent(s, self.latent_action(s_seq[:, k], s_seq[:, k + 1])).float())
            s = self.snap(preds[-1])
        return torch.stack(preds, dim=1)

    def _latent(self) -> LatentActionAutoencoder:
        if self.latent_model is None:
            raise ValueError("this is an action-conditioned world model (latent='action'); it has no latent actions")
        return self.latent_model

    # ----- one-file save / load -------------------------------------------------------------------
    def save(self, path: str | Path, half: bool = False) -> None:
        """Write config, metadata and weights to one file, atomically.

        ``half=True`` stores the dynamics' float weights as fp16 (half the size, for the shipped
        zoo); loading casts them back to fp32. The encoder stays fp32 so its identity still matches,
        and the state probe, whose z-scoring divides by small feature spreads.
        """
        state = self.state_dict()
        if half:
            state = {k: v.half() if v.is_floating_point() and not k.startswith(FULL_PRECISION) else v
                     for k, v in state.items()}
        if self.config.encoder != "conv":  # big frozen backbones stay in their own weights file
            state = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        atomic_torch_save({
            "format": FORMAT, "version": VERSION, "config": asdict(self.config), "meta": asdict(self.meta),
            "encoder_identity": self.encoder.identity(), "state_dict": state,
            "bank": self.bank.to_dict() if self.bank is not None else None,
        }, path)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "WorldModel":
        """Rebuild a model from ``save``'s file; a corrupt, foreign or mismatched file raises ValueError."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no world-model file at {path}")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # truncated zip, pickle garbage, ...: all mean "not a usable file"
            raise ValueError(f"{path} is not a readable world-model file (corrupt or truncated): {err}") from err
        if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
            raise ValueError(f"{path} is not a wm-gym world-model file")
        if ckpt.get("version") != VERSION:
            raise ValueError(f"{path} has world-model format version {ckpt.get('version')}; this wm-gym reads version "
                             f"{VERSION}. Retrain it or use the wm-gym release that wrote it.")
        try:
            model = cls(WorldModelConfig(**ckpt["config"]), WorldModelMeta(**ckpt["meta"]))
            missing, unexpected = model.load_state_dict(ckpt["state_dict"], strict=False)
        except (TypeError, RuntimeError, KeyError) as err:
            raise ValueError(f"{path} does not match this wm-gym's model definition: {err}") from err
        if model.config.encoder != "conv":
            missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise ValueError(f"{path} does not match its config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        if model.encoder.identity() != ckpt["encoder_identity"]:
            raise ValueError(f"{path} was trained on encoder {ckpt['encoder_identity']}, but the encoder loaded now is "
                             f"{model.encoder.identity()}; features would not match")
        if ckpt.get("bank") is not None:
            model.bank = DemoBank.from_dict(ckpt["bank"])
        return model.to(device).eval()

    def summary(self) -> dict[str, Any]:
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in self.named_children()}
        return {"latent": self.config.latent, "sim": self.meta.sim, "parameters": counts}
