"""One training loop for every stage (encoder, latent actions, dynamics, controller, ...).

Reads top to bottom like CleanRL: set up, sample a batch, compute the stage's loss, step,
log, checkpoint. The same code runs single-process and under ``torchrun`` (DDP): each rank
draws its own batches from a generator seeded by (seed, rank), gradients are averaged by
DDP, and only rank 0 writes logs and checkpoints.

Resuming: the checkpoint holds every module's weights, the current stage's optimizer and
batch-generator state, the step, and every random stream the losses draw from (torch's, numpy's
and Python's global generators, per rank, and the ``generators`` registered with the trainer,
such as FGSM's), so an interrupted run continues bit-for-bit where the last checkpoint left it.
"""
from __future__ import annotations

import hashlib
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch import Tensor
from tqdm.auto import tqdm

from wm_gym.device import resolve_device, use_bf16
from wm_gym.io import atomic_torch_save

LossFn = Callable[[Any], tuple[Tensor, dict[str, float]]]
SampleFn = Callable[[torch.Generator], Any]


@dataclass
class StageConfig:
    name: str
    steps: int
    lr: float = 3e-4
    batch_size: int = 64
    weight_decay: float = 0.0
    warmup: int = 50          # linear warm-up steps, then cosine decay to 10% of lr
    grad_clip: float = 1.0
    log_every: int = 25
    ckpt_every: int = 250


@dataclass
class Distributed:
    """Rank and world size; set up from torchrun's environment variables if present."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int, rank: int | None = None) -> slice:
        """A rank's contiguous share of ``n`` rows (this rank's by default; the first ranks take one more)."""
        rank = self.rank if rank is None else rank
        size, extra = divmod(n, self.world_size)
        start = rank * size + min(rank, extra)
        return slice(start, start + size + (rank < extra))

    def gather_rows(self, compute: Callable[[slice], Tensor], n: int) -> Tensor:
        """``compute`` over all ``n`` rows, each rank doing its :meth:`shard`: every rank gets the whole [n, ...].

        Frozen work that every rank needs (encoding a dataset, the latent targets) is done once across ranks.
        """
        if not self.enabled:
            return compute(slice(0, n))
        part = compute(self.shard(n))
        sizes = [self.shard(n, r).stop - self.shard(n, r).start for r in range(self.world_size)]
        padded = part.new_zeros((max(sizes), *part.shape[1:]))  # all_gather wants equal sizes
        padded[:len(part)] = part
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[:k] for p, k in zip(parts, sizes)])

    @classmethod
    def from_env(cls, device: torch.device) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def setup_device(device: str = "auto") -> tuple[torch.device, Distributed]:
    """Resolve ``device`` and join the torchrun process group when launched under torchrun."""
    dev = resolve_device(device)
    if dev.type == "cuda" and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(dev)
    return dev, Distributed.from_env(dev)


class _LossModule(nn.Module):
    """Wraps a stage's loss so DDP sees a ``forward`` (it syncs gradients from there)."""

    def __init__(self, trainable: nn.Module, loss_fn: LossFn):
        super().__init__()
        self.trainable = trainable
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, float]]:
        return self.loss_fn(batch)


@dataclass
class Trainer:
    """Runs stages in order; owns logging, checkpoints and the DDP setup."""

    modules: dict[str, nn.Module]          # every module whose weights the checkpoint holds
    checkpoint: Path | None                 # training-state file (atomic); None = no checkpoints
    device: torch.device
    distributed: Distributed = field(default_factory=Distributed)
    seed: int = 0
    log_dir: Path | None = None
    progress: bool = True
    extra_state: dict[str, Any] = field(default_factory=dict)  # saved with checkpoints (e.g. stats)
    precision: str = "auto"                 # "auto": bf16 autocast on CUDA and CPUs with bf16 units (device.use_bf16) | "bf16" | "fp32"
    compile: str | None = None              # torch.compile backend for the loss (e.g. "inductor"); None = eager
    generators: dict[str, torch.Generator] = field(default_factory=dict)  # more random streams to checkpoint
    _resume: dict[str, Any] | None = None
    _rng_pending: bool = False              # a loaded checkpoint's random states wait for the next stage run
    _writer: Any = None
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall-clock per stage; a resumed run adds on

    def __post_init__(self):
        if self.log_dir is not None and self.distributed.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir))

    # ----- resume ---------------------------------------------------------------------------
    def load_checkpoint(self) -> bool:
        """Load module weights and the in-progress stage from ``checkpoint``; False if none."""
        if self.checkpoint is None or not self.checkpoint.exists():
            return False
        try:
            state = torch.load(self.checkpoint, map_location="cpu", weights_only=False)
        except Exception as err:  # torch raises many types for a truncated/corrupt file
            raise ValueError(f"training checkpoint {self.checkpoint} is corrupt or unreadable ({err})") from err
        for name, module in self.modules.items():
            if name not in state["modules"]:
                raise ValueError(f"training checkpoint {self.checkpoint} has no weights for {name!r}")
            module.load_state_dict(state["modules"][name])
        self.extra_state.update(state.get("extra", {}))
        self.seconds.update(state.get("seconds", {}))
        self._resume = state
        self._rng_pending = "rng" in state
        return True

    def stage_done(self, name: str) -> bool:
        return self._resume is not None and name in self._resume["done"]

    # ----- the loop -------------------------------------------------------------------------
    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Add the wall-clock seconds of the ``with`` body to ``seconds[name]`` (the per-stage time table)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0

    def run(self, stage: StageConfig, trainable: nn.Module, loss_fn: LossFn, sample: SampleFn) -> list[float]:
        """Train ``trainable`` for ``stage.steps`` on ``loss_fn(sample(gen))``; returns the loss curve."""
        if self.stage_done(stage.name):
            return self.history.get(stage.name, [])
        params = [p for p in trainable.parameters() if p.requires_grad]
        model: nn.Module = _LossModule(trainable, loss_fn)
        if self.distributed.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)
        if self.compile:
            model = torch.compile(model, backend=self.compile)
        optim = torch.optim.AdamW(params, lr=stage.lr, weight_decay=stage.weight_decay)
        gen = torch.Generator().manual_seed(self.seed * 1000 + self.distributed.rank + hash_name(stage.name))
        start, curve = 0, []
        if self._rng_pending:  # the first stage run after a resume continues the saved random streams
            self._restore_rng(self._resume["rng"])
        if self._resume is not None and self._resume.get("stage") == stage.name:
            optim.load_state_dict(self._resume["optim"])
            gen.set_state(self._resume["generator"][self.distributed.rank])
            start, curve = self._resume["step"], list(self._resume["curve"])

        bf16 = use_bf16(self.precision, self.device)
        trainable.train()
        bar = tqdm(range(start, stage.steps), desc=stage.name, disable=not (self.progress and self.distributed.is_main),
                   initial=start, total=stage.steps, dynamic_ncols=True)
        t0, before = time.perf_counter(), self.seconds.get(stage.name, 0.0)  # a resumed stage adds on
        for step in bar:
            for group in optim.param_groups:
                group["lr"] = lr_at(step, stage)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
                loss, metrics = model(sample(gen))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"stage {stage.name}: loss became {loss.item()} at step {step}")
            optim.zero_grad(set_to_none=True)
            loss.backward()
            if stage.grad_clip:
                nn.utils.clip_grad_norm_(params, stage.grad_clip)
            optim.step()
            curve.append(float(loss.detach()))
            if step % stage.log_every == 0 or step == stage.steps - 1:
                bar.set_postfix(loss=f"{curve[-1]:.4f}")
                self._log(stage.name, step, {"loss": curve[-1], **metrics, "lr": lr_at(step, stage),
                                             "sps": (step + 1 - start) / (time.perf_counter() - t0)})
            if stage.ckpt_every and (step + 1) % stage.ckpt_every == 0 and step + 1 < stage.steps:
                self.seconds[stage.name] = before + time.perf_counter() - t0
                self._save(stage.name, step + 1, optim, gen, curve, done=False)
        self.seconds[stage.name] = before + time.perf_counter() - t0
        trainable.eval()
        self.history[stage.name] = curve
        self._save(stage.name, stage.steps, optim, gen, curve, done=True)
        return curve

    # ----- helpers --------------------------------------------------------------------------
    def _log(self, stage: str, step: int, metrics: dict[str, float]) -> None:
        if self._writer is None:
            return
        for key, value in metrics.items():
            group = "charts" if key in ("lr", "sps") else "losses"
            self._writer.add_scalar(f"{group}/{stage}/{key}", value, step)

    def _rng_state(self) -> dict[str, Any]:
        """This rank's random streams: the global torch / CUDA / numpy / Python generators and ``generators``."""
        return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                "generators": {name: g.get_state() for name, g in self.generators.items()}}

    def _restore_rng(self, per_rank: list[dict[str, Any]]) -> None:
        state = per_rank[self.distributed.rank]
        torch.set_rng_state(state["torch"])
        np.random.set_state(state["numpy"])
        random.setstate(state["python"])
        if state["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
        for name, g_state in state["generators"].items():
            if name in self.generators:
                self.generators[name].set_state(g_state)
        self._rng_pending = False

    def _save(self, stage: str, step: int, optim, gen: torch.Generator, curve: list[float], done: bool) -> None:
        gens, rngs = [gen.get_state()], [self._rng_state()]
        if self.distributed.enabled:  # every rank's streams, so each resumes its own
            gens, rngs = [None] * self.distributed.world_size, [None] * self.distributed.world_size
            dist.all_gather_object(gens, gen.get_state())
            dist.all_gather_object(rngs, self._rng_state())
        if self.checkpoint is None or not self.distributed.is_main:
            return
        finished = list(self._resume["done"]) if self._resume else []
        if done:
            finished.append(stage)
        state = {
            "modules": {name: m.state_dict() for name, m in self.modules.items()},
            "stage": None if done else stage,
            "step": step,
            "optim": None if done else optim.state_dict(),
            "generator": gens,
            "rng": rngs,
            "curve": curve,
            "done": finished,
            "extra": self.extra_state,
            "seconds": self.seconds,
        }
        atomic_torch_save(state, self.checkpoint)
        self._resume = state

    def replica_digests(self, module: nn.Module) -> list[str]:
        """SHA-256 of ``module``'s weights on every rank (one entry per rank): DDP replicas must agree."""
        digest = hashlib.sha256()
        for name, tensor in module.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        digests = [digest.hexdigest()]
        if self.distributed.enabled:
            digests = [None] * self.distributed.world_size
            dist.all_gather_object(digests, digest.hexdigest())
        return digests

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def lr_at(step: int, stage: StageConfig) -> float:
    """Linear warm-up then cosine decay to 10% of the peak rate."""
    if step < stage.warmup:
        return stage.lr * (step + 1) / stage.warmup
    progress = (step - stage.warmup) / max(1, stage.steps - stage.warmup)
    return stage.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def hash_name(name: str) -> int:
    """A stable small integer per stage name (Python's hash() is salted per process)."""
    return sum((i + 1) * ord(ch) for i, ch in enumerate(name)) % 100_003
