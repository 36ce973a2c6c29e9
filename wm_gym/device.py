"""One place that turns a user's device string into a ``torch.device``."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda when available, else cpu; other names must exist on this machine.

    Failing here, with the name in the message, beats a cryptic CUDA error deep in training.
    """
    if isinstance(device, torch.device):
        name = str(device)
    else:
        name = str(device).strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use 'auto' or 'cpu'")
    return resolved


PRECISIONS = ("auto", "bf16", "fp32")


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`; ValueError otherwise (before any work is done)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def resolved_precision(precision: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"``: what ``precision`` runs as on ``device`` (:func:`use_bf16`), as reports name it."""
    return "bf16" if use_bf16(precision, device) else "fp32"


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether to autocast to bf16. ``"bf16"``/``"fp32"`` force it; ``"auto"`` picks it where it was measured
    to pay and to lose nothing: CUDA, and a CPU with bf16 units (AMX, or AVX-512 BF16). On the 2-core Xeon (AMX), training
    (``benchmarks/train_speed.py``): encoder 1.8x, latent 1.4x, flow and controller 1.1x, temporal head 1.7x per
    step, with attention kept in fp32 on the CPU (``wm_gym.nn.Attention``); imagination 1.3-1.4x steps/s on the
    `wall` model. Agents trained in bf16 imagination, bf16 open-loop error and bf16 planning matched fp32 on the
    same seeds (docs/results.md, issue 29). On the 2-core AMD EPYC (AVX-512 BF16, no AMX): dynamics rollouts
    1.8x forward and forward + backward, the conv encoder's training step 1.8-2.4x."""
    if check_precision(precision) != "auto":
        return precision == "bf16"
    return device.type == "cuda" or (device.type == "cpu" and cpu_has_bf16_units())


#: /proc/cpuinfo flags of x86 bf16 matrix units: AMX tiles (Intel Sapphire Rapids on), AVX-512 BF16 (AMD Zen 4 on,
#: Intel Cooper Lake). Without either, bf16 runs emulated on the CPU and is slower than fp32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_bf16_units(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True on x86 CPUs with bf16 units (:data:`BF16_CPU_FLAGS`), read from ``cpuinfo`` (Linux; False elsewhere)."""
    try:
        with open(cpuinfo) as f:
            return any(line.startswith("flags") and set(BF16_CPU_FLAGS) & set(line.split()) for line in f)
    except OSError:
        return False


# ----- CPU layout: processes and threads, set in one place ------------------------------------------------------
def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class RankLayout:
    """How one training run uses the CPU: ``ranks`` local DDP processes of ``threads`` torch threads each.

    ``auto`` is one process with a thread per usable core (or ``OMP_NUM_THREADS`` of them, if set). Measured on
    the quiet 2-core machine (``benchmarks/train_speed.py``, small preset, ms per step, fp32): latent 112 on one
    process of two threads, 117 as two single-thread DDP ranks of half the batch; controller 38 / 45. Two
    threads already keep both cores busy, and DDP adds an all-reduce per step, so ranks > 1 is for machines
    whose cores one process cannot fill (``--ranks N``; each rank draws 1/N of the global batch).
    """

    ranks: int
    threads: int

    @classmethod
    def choose(cls, ranks: int | str, device: torch.device) -> "RankLayout":
        """The layout for ``ranks`` ("auto" or N local CPU ranks). Under torchrun the launcher's ranks stand."""
        cores = _thread_budget()
        if "WORLD_SIZE" in os.environ:  # launched by torchrun or by launch_ranks: already laid out
            world = int(os.environ["WORLD_SIZE"])
            return cls(world, max(1, cores // world))
        if ranks == "auto":
            n = 1
        elif isinstance(ranks, int) and not isinstance(ranks, bool) and ranks >= 1:
            n = ranks
        else:
            raise ValueError(f"ranks must be 'auto' or an integer >= 1, got {ranks!r}")
        if n > 1 and device.type != "cpu":
            raise ValueError(f"ranks={n} starts local CPU processes; on {device.type} launch with torchrun instead")
        return cls(n, max(1, cores // n))


def _thread_budget() -> int:
    """Threads one run may use in all: ``OMP_NUM_THREADS`` when the user set it, else every usable core."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    return int(value) if value.isdigit() and int(value) >= 1 else usable_cores()


def set_threads(threads: int) -> None:
    """torch's intra-op threads for this process (inter-op stays at its one-time default)."""
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)
