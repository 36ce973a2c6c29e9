"""Throughput measurements. Ratios (imagination vs real sim) are only meaningful inside one run.

A "pixel step" is one ``env.step`` that returns a freshly rendered 64x64 observation, which
is what an agent acting from images pays per step in the real sim.

How close imagination runs to the hardware: :func:`imagine_step_flops` counts the FLOPs of one
imagined step (matmuls, convolutions and attention, as ``torch.utils.flop_counter`` counts them;
elementwise ops are free), :func:`gemm_peak_flops` measures what square matmuls achieve on the
same device, and their ratio at the measured steps/s is :func:`fraction_of_peak`, the "MFU".
"""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, Iterator

import gymnasium as gym
import numpy as np

from wm_gym.envs import SIMS, resolve_env_id


def sim_steps_per_s(name: str, steps: int = 300, seed: int = 0) -> float:
    """Pixel steps per second of one real sim under uniformly random actions (resets excluded)."""
    env = gym.make(resolve_env_id(name))
    env.action_space.seed(seed)
    env.reset(seed=seed)
    elapsed, done_steps = 0.0, 0
    try:
        while done_steps < steps:
            action = env.action_space.sample()
            start = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            elapsed += time.perf_counter() - start
            done_steps += 1
            if terminated or truncated:
                env.reset()
    finally:
        env.close()
    return done_steps / elapsed


def bench_sims(names: list[str] | None = None, steps: int = 300, seed: int = 0) -> dict[str, float]:
    """``{sim name: pixel steps/s}`` for every sim (or the ones named)."""
    return {name: round(sim_steps_per_s(name, steps, seed), 1) for name in (names or list(SIMS))}


def wall_vector_steps_per_s(num_envs: int = 256, steps: int = 50, seed: int = 0) -> float:
    """Pixel steps per second of the natively batched Wall sim (all rows counted)."""
    envs = gym.make_vec(SIMS["wall"].env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    envs.action_space.seed(seed)
    envs.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    elapsed = time.perf_counter() - start
    envs.close()
    return float(np.round(num_envs * steps / elapsed, 1))


def imagine_env(model, num_envs: int = 256, device: str = "cpu", seed: int = 0, warmup: int = 3):
    """A reset batched imagination env, stepped ``warmup`` times: what every imagination figure here measures.

    ``model`` is a zoo name or file (loaded afresh onto ``device``), or a loaded WorldModel.
    """
    from wm_gym.imagine import WMImagineVectorEnv

    envs = WMImagineVectorEnv(num_envs=num_envs, model=model, device=device, render_mode=None)
    envs.action_space.seed(seed)
    envs.reset(seed=seed)
    for _ in range(warmup):  # allocations, oneDNN primitive caches, CUDA kernels
        envs.step(envs.action_space.sample())
    return envs


def imagine_steps_per_s(model, num_envs: int = 256, steps: int = 30, device: str = "cpu", seed: int = 0,
                        warmup: int = 3) -> float:
    """Imagined env steps per second (all rows counted) of the batched imagination env.

    One imagined step is one agent step: an action chunk of ``frameskip`` sim steps, the
    world-model prediction, the reward and the observation.
    """
    envs = imagine_env(model, num_envs, device, seed, warmup)
    _sync(envs.device)
    start = time.perf_counter()
    for _ in range(steps):
        envs.step(envs.action_space.sample())
    _sync(envs.device)
    return float(np.round(num_envs * steps / (time.perf_counter() - start), 1))


# ----- FLOPs, the GEMM peak and where an imagined step's time goes --------------------------------------
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """torch's counter has formulas for the CUDA attention kernels but not the CPU one; the math is the same."""
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _flop_counter():
    """A FlopCounterMode that also counts CPU attention (``aten._scaled_dot_product_flash_attention_for_cpu``)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return FlopCounterMode(display=False, custom_mapping={cpu_sdpa: _cpu_sdpa_flops} if cpu_sdpa else None)


@contextlib.contextmanager
def _without_param_grads(module) -> Iterator[None]:
    """Parameters that do not require grad inside the block. The counter's module tracker asserts on a view
    of a parameter made under ``no_grad`` (it requires grad but has no grad_fn), as ``queries.expand`` is."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    try:
        module.requires_grad_(False)
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call of ``fn``: 2 per multiply-add of every matmul, convolution and attention it runs.

    Under ``no_grad``, call it inside :func:`_without_param_grads` of the model (see there).
    """
    with _flop_counter() as counter:
        fn()
    return int(counter.get_total_flops())


def imagine_step_flops(model, num_envs: int = 256, seed: int = 0) -> int:
    """FLOPs of one imagined agent step for the whole batch of ``num_envs`` rows, counted on the call path
    :func:`imagine_steps_per_s` times: dynamics (controller or flow, latent decoder, or the action
    predictor), re-projection (pixel decoder + encoder) when the model does it, reward and termination."""
    envs = imagine_env(model, num_envs, "cpu", seed, warmup=0)
    action = envs.action_space.sample()
    with _without_param_grads(envs.model):
        return count_flops(lambda: envs.step(action))


def gemm_peak_flops(device: str = "cpu", dtype: str = "fp32", sizes: tuple[int, ...] | None = None,
                    seconds: float = 2.0) -> float:
    """Best FLOP/s square matmuls reach on ``device`` (at torch's thread count): the roofline the imagined
    step's FLOP/s is compared with. Each size gets an equal share of ``seconds``; a timed trial runs enough
    matmuls (≥ ~1 GFLOP on CPU, 10 TFLOP on CUDA) that timer and launch overheads do not count."""
    import torch

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be one of {sorted(dtypes)}, got {dtype!r}")
    sizes = sizes or ((1024, 2048, 4096, 8192) if device.startswith("cuda") else (256, 512, 1024, 2048))
    trial_flops = 1e13 if device.startswith("cuda") else 1e9
    best = 0.0
    for n in sizes:
        a, b = (torch.randn(n, n, device=device, dtype=dtypes[dtype]) for _ in range(2))
        out = torch.mm(a, b)  # first call: allocation and kernel selection
        reps = max(1, int(trial_flops // (2 * n**3)))
        deadline = time.perf_counter() + seconds / len(sizes)
        while True:
            _sync(device)
            start = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b, out=out)
            _sync(device)
            best = max(best, reps * 2 * n**3 / (time.perf_counter() - start))
            if time.perf_counter() > deadline:
                break
    return best


def fraction_of_peak(flops_per_step: int, num_envs: int, steps_per_s: float, peak_flops: float) -> float:
    """Achieved FLOP/s over the GEMM peak (the "MFU"). ``flops_per_step`` is one batched step of ``num_envs``
    rows and ``steps_per_s`` counts rows, so the achieved FLOP/s is flops_per_step / num_envs × steps_per_s."""
    return flops_per_step / num_envs * steps_per_s / peak_flops


def imagine_step_parts(envs) -> list[tuple[str, Any, str]]:
    """(label, owner, attribute) of each part of one imagined step that the env calls by that name.

    Parts the model does not have (no flow, no predictor) are left out; parts the step does not call
    (the flow in controller mode, the re-projection when the model does not re-project) simply record no calls.
    """
    model = envs.model
    parts = [("controller", model.controller, "forward"), ("flow", model.flow, "sample"),
             ("predictor", model.predictor, "forward"), ("latent_decoder", model.latent_model, "decode"),
             ("reprojection", model.encoder, "reproject"),
             ("reward", envs, "reward_fn"), ("termination", model, "goal_distance")]  # the success test
    return [(label, owner, attr) for label, owner, attr in parts if owner is not None and hasattr(owner, attr)]


@contextlib.contextmanager
def _wrapped(parts: list[tuple[str, Any, str]], wrap: Callable[[str, Callable], Callable]) -> Iterator[None]:
    """Replace each ``owner.attribute`` with ``wrap(label, original)`` inside the block, and restore it."""
    saved = []
    try:
        for label, owner, attr in parts:
            saved.append((owner, attr, attr in vars(owner), getattr(owner, attr)))
            setattr(owner, attr, wrap(label, saved[-1][3]))
        yield
    finally:
        for owner, attr, own, original in reversed(saved):
            if own:
                setattr(owner, attr, original)
            else:  # a method: drop the instance attribute, the class's shows again
                delattr(owner, attr)


def imagine_step_breakdown(model, num_envs: int = 256, steps: int = 10, seed: int = 0,
                           warmup: int = 3) -> dict[str, dict[str, float]]:
    """Where one imagined step (CPU, batch ``num_envs``) spends its time and its FLOPs, part by part.

    The real ``env.step`` runs with each part of :func:`imagine_step_parts` wrapped in a timer (then,
    for one more step, in a FLOP counter), so the parts are measured where and as the env calls them.
    ``other`` is the rest of the step: action checks, history, observations to numpy, autoresets.
    Returns ``{"time_ms": {part: ms per step, ..., "other", "total"}, "flops": {part: FLOPs, ...}}``;
    parts the step never called are left out.
    """
    envs = imagine_env(model, num_envs, "cpu", seed, warmup)
    parts = imagine_step_parts(envs)
    seconds: dict[str, float] = {}
    flops: dict[str, int] = {}

    def timed(label: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - start
        return call

    def counted(label: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            with _flop_counter() as counter:
                out = fn(*args, **kwargs)
            flops[label] = flops.get(label, 0) + int(counter.get_total_flops())
            return out
        return call

    with _wrapped(parts, timed):
        start = time.perf_counter()
        for _ in range(steps):
            envs.step(envs.action_space.sample())
        total = time.perf_counter() - start
    with _wrapped(parts, counted), _without_param_grads(envs.model):
        envs.step(envs.action_space.sample())
    called = [label for label, _, _ in parts if label in seconds]
    time_ms = {label: round(1000 * seconds[label] / steps, 2) for label in called}
    time_ms["other"] = round(1000 * (total - sum(seconds.values())) / steps, 2)
    time_ms["total"] = round(1000 * total / steps, 2)
    return {"time_ms": time_ms, "flops": {label: flops[label] for label in called if label in flops}}


def feature_sim_steps_per_s(model, steps: int = 60, seed: int = 0) -> float:
    """Agent steps per second in the model's real sim: chunk of sim steps, render, and φ encode."""
    from wm_gym.imagine.real_sim import make_feature_sim

    env = make_feature_sim(model)
    env.action_space.seed(seed)
    env.reset(seed=seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return float(np.round(steps / elapsed, 1))


def ppo_steps_per_s(model, where: str, num_envs: int = 16, steps: int = 2048, seed: int = 0) -> float:
    """SB3 PPO end-to-end (rollouts + updates) steps/s, in imagination or in the real sim."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    from wm_gym.imagine import make_sb3_vec_env
    from wm_gym.imagine.real_sim import make_feature_sim

    if where == "imagine":
        env = make_sb3_vec_env(num_envs=num_envs, seed=seed, model=model, device=str(model.device), render_mode=None)
    elif where == "sim":
        env = DummyVecEnv([lambda: make_feature_sim(model)] * num_envs)
    else:
        raise ValueError(f"where must be 'imagine' or 'sim', got {where!r}")
    agent = PPO("MlpPolicy", env, n_steps=max(steps // num_envs // 2, 8), batch_size=256, n_epochs=2, seed=seed,
                device="cpu", verbose=0)
    start = time.perf_counter()
    agent.learn(steps)
    elapsed = time.perf_counter() - start
    env.close()
    return float(np.round(agent.num_timesteps / elapsed, 1))


def _sync(device) -> None:
    import torch

    if getattr(device, "type", str(device)).startswith("cuda"):
        torch.cuda.synchronize()
