"""How good is a world model? Open-loop error, latent-action checks, a state probe, and pictures.

* ``mse_by_horizon`` vs ``copy_last_mse_by_horizon``: open-loop rollouts from real history
  with the recorded action chunks, against the "nothing moves" baseline.
  Skipped (and said so) for a model learned from video alone: it has no controller to take them.
* ``latent_open_loop``: imagination through the latent actions alone, as a latent-action agent
  imagines: z_k = E(s_{t+k}, s_{t+k+1}) from the real frames drives the *predicted* state,
  ŝ_{t+k+1} = D(ŝ_{t+k}, z_k), by horizon and against copy-last. Needs no labels.
* ``latent_recon``: D(s_t, E(s_t, s_{t+1})) against s_{t+1} (the latent model's own ceiling).
* ``leakage`` (Garrido et al.): encode a *cut* future (a frame from another episode) and decode
  it. Latent actions that describe the action, not the future, cannot explain a scene cut, so
  the cut error must be far above the real one (``ratio`` ≫ 1).
* ``transfer``: take z from episode A's transition and apply it in episode B; the truth is the
  real sim replaying A's action chunk from B's state.
* ``probe_r2``: a linear probe of the visible state (positions) from φ, on held-out frames.
* ``predicted_motion_ratio`` (models with a state probe): how far the open-loop prediction moves the probed state
  from the last real frame, over how far the real frames moved it, by horizon (medians of distances, so direction
  is not judged: the MSE is): 1 is as much motion as the sim's, 0 is copy-last. A model that predicts too little
  motion (PointMaze's controller: 0.39 at one step on expert data, issue 26) shows here before any agent is trained
  on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from wm_gym.data.dataset import load_episodes
from wm_gym.encoders.probe import linear_probe_r2
from wm_gym.train.feature_windows import FeatureWindows
from wm_gym.media import write_mp4
from wm_gym.state_probe import readable_state_reader
from wm_gym.world_model import WorldModel


def _angle_features(angles: np.ndarray) -> np.ndarray:
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=-1)


#: The part of each sim's state that one frame shows (velocities are not visible in one frame).
VISIBLE_STATE: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "wall": lambda s: s[:, :2],
    "pointmaze": lambda s: s[:, :2],
    "pusht": lambda s: np.concatenate([s[:, :4], _angle_features(s[:, 4:5])], axis=1),
    "dmc-reacher": lambda s: _angle_features(s[:, :2]),
    "dmc-point_mass": lambda s: s[:, :2],
}


def _mse(a: Tensor, b: Tensor) -> float:
    return float(((a - b) ** 2).mean())


@torch.no_grad()
def evaluate_world_model(model: WorldModel, data_dir: str | Path, horizons: tuple[int, ...] = (1, 5, 10),
                         max_windows: int = 256, mode: str = "controller", seed: int = 0,
                         video_dir: str | Path | None = None, transfer_pairs: int = 64,
                         pixel_decoder_steps: int = 500) -> dict[str, Any]:
    data = load_episodes(data_dir)
    rng = np.random.default_rng(seed)
    frames = torch.from_numpy(np.concatenate(data.frames))
    feats = model.encode(frames).cpu()
    windows = FeatureWindows.from_data(feats, data, model.config.history, model.config.frameskip)
    episodes = np.arange(len(data.frames))
    result: dict[str, Any] = {"episodes": len(episodes), "latent": model.config.latent, "mode": mode}

    # ----- open-loop error by horizon (on the episodes with action labels) ------------------------
    labelled = np.flatnonzero(data.labelled)
    drivable = model.takes_sim_actions or mode != "controller"
    if len(labelled) and not drivable:
        result["open_loop"] = "skipped: the model's controller was not trained (no action labels); see latent_open_loop"
    elif len(labelled):
        horizon = max(horizons)
        starts = windows.starts(labelled, horizon)
        t = torch.as_tensor(rng.choice(starts, size=min(max_windows, len(starts)), replace=False))
        batch = windows.gather(t, horizon)
        preds = model.rollout(batch["s_hist"].to(model.device), batch["actions"].to(model.device), mode=mode).cpu()
        last = batch["s_hist"][:, -1]
        result["windows"] = len(t)
        result["mse_by_horizon"] = {str(h): _mse(preds[:, h - 1], batch["targets"][:, h - 1]) for h in horizons}
        result["copy_last_mse_by_horizon"] = {str(h): _mse(last, batch["targets"][:, h - 1]) for h in horizons}
        result["ratio_to_copy_last"] = {h: result["mse_by_horizon"][h] / max(result["copy_last_mse_by_horizon"][h], 1e-12)
                                        for h in result["mse_by_horizon"]}
        if model.state_probe is not None:
            result["predicted_motion_ratio"] = predicted_motion_ratio(model, last, preds, batch["targets"], horizons)
        if video_dir is not None:
            result.update(write_rollout_media(model, batch, preds, Path(video_dir),
                                              pixels=_pixel_decoder(model, feats, frames, pixel_decoder_steps)))

    # ----- latent-action checks -----------------------------------------------------------------
    if model.latent_model is not None:
        starts = windows.starts(episodes, 1)
        t = torch.as_tensor(rng.choice(starts, size=min(max_windows, len(starts)), replace=False))
        pair = windows.gather(t, 1, with_actions=False)
        s_t, s_next = pair["s_hist"][:, -1].to(model.device), pair["targets"][:, 0].to(model.device)
        result["leakage"] = leakage_test(model, s_t, s_next, windows.episode_of(t.numpy()))
        result["latent_recon"] = {"mse": result["leakage"]["real_mse"], "copy_last_mse": _mse(s_t, s_next)}
        result["latent_open_loop"] = latent_open_loop(model, windows, episodes, horizons, rng, max_windows)
        if data.has_actions and data.states is not None and drivable:
            result["transfer"] = transfer_test(model, data, windows, rng, transfer_pairs)

    # ----- probe --------------------------------------------------------------------------------
    visible = VISIBLE_STATE.get(str(data.meta.get("sim", "")))
    if visible is not None and data.states is not None:
        rows = rng.choice(len(feats), size=min(6000, len(feats)), replace=False)
        states = np.concatenate(data.states)[rows]
        result["probe_r2"] = float(linear_probe_r2(feats[rows].flatten(1).float(),
                                                   torch.as_tensor(visible(states), dtype=torch.float32), seed=seed))
    return result


@torch.no_grad()
def predicted_motion_ratio(model: WorldModel, last: Tensor, preds: Tensor, targets: Tensor,
                           horizons: tuple[int, ...]) -> dict[str, float]:
    """{h: median |probe(ŝ_h) − probe(s_0)| / median |probe(s_h) − probe(s_0)|} on the state numbers the probe
    reads from one frame: last [W, N, C], preds and targets [W, T, N, C]."""
    read = readable_state_reader(model)
    start = read(last)
    ratios = {}
    for h in horizons:
        predicted = (read(preds[:, h - 1]) - start).norm(dim=1).median()
        real = (read(targets[:, h - 1]) - start).norm(dim=1).median()
        ratios[str(h)] = float(predicted / real.clamp_min(1e-12))
    return ratios


def latent_open_loop(model: WorldModel, windows: FeatureWindows, episodes: np.ndarray, horizons: tuple[int, ...],
                     rng: np.random.Generator, max_windows: int) -> dict[str, Any]:
    """MSE by horizon of :meth:`WorldModel.latent_rollout` (ŝ_{t+k+1} = D(snap(ŝ_{t+k}), E(s_{t+k}, s_{t+k+1}))
    from ŝ_t = s_t), and of copy-last.

    The latent actions come from the real frames, the states they act on are the model's own: how far
    imagination drifts when the agent picks the right latent actions (the error a latent agent compounds)."""
    horizon = max(horizons)
    starts = windows.starts(episodes, horizon)
    t = torch.as_tensor(rng.choice(starts, size=min(max_windows, len(starts)), replace=False))
    batch = windows.gather(t, horizon, with_actions=False)
    true = torch.cat([batch["s_hist"][:, -1:], batch["targets"]], dim=1)  # [B, horizon+1, N, C]
    preds_t = model.latent_rollout(true.to(model.device)).cpu()
    mse = {str(h): _mse(preds_t[:, h - 1], true[:, h]) for h in horizons}
    copy = {str(h): _mse(true[:, 0], true[:, h]) for h in horizons}
    return {"windows": len(t), "mse_by_horizon": mse, "copy_last_mse_by_horizon": copy,
            "ratio_to_copy_last": {h: mse[h] / max(copy[h], 1e-12) for h in mse}}


def leakage_test(model: WorldModel, s_t: Tensor, s_next: Tensor, episode: np.ndarray) -> dict[str, float]:
    """Decode real futures vs scene cuts (each s_t paired with a frame from another episode)."""
    if len(np.unique(episode)) < 2:
        raise ValueError("the leakage test needs windows from at least two episodes")
    rng = np.random.default_rng(0)
    other = [rng.choice(np.flatnonzero(episode != e)) for e in episode]  # every pair is a true cut
    cut = s_next[torch.as_tensor(np.array(other))]
    real = _mse(model.decode_latent(s_t, model.latent_action(s_t, s_next)), s_next)
    cut_err = _mse(model.decode_latent(s_t, model.latent_action(s_t, cut)), cut)
    return {"real_mse": real, "cut_mse": cut_err, "cut_copy_last_mse": _mse(s_t, cut),
            "ratio": cut_err / max(real, 1e-12)}


def transfer_test(model: WorldModel, data, windows: FeatureWindows, rng: np.random.Generator,
                  pairs: int) -> dict[str, float] | None:
    """z from (A: s_t → s_{t+1}) applied to B's state, vs the real sim replaying A's actions from B."""
    import gymnasium as gym

    env_id = str(data.meta.get("env_id", ""))
    if env_id not in gym.registry:
        return None
    env = gym.make(env_id).unwrapped
    starts = windows.starts(np.arange(len(data.frames)), 1)
    a_idx, b_idx = rng.choice(starts, size=pairs), rng.choice(starts, size=pairs)
    batch_a = windows.gather(torch.as_tensor(a_idx), 1)
    batch_b = windows.gather(torch.as_tensor(b_idx), 1, with_actions=False)
    states = np.concatenate(data.states)
    truth = []
    for b, chunk in zip(b_idx, batch_a["actions"][:, 0].numpy()):
        env.reset(seed=0, options={"start_state": states[b], "goal_state": states[b]})
        for sim_action in chunk.reshape(model.config.frameskip, -1):
            obs, *_ = env.step(sim_action)
        truth.append(obs["pixels"])
    env.close()
    s_true = model.encode(torch.from_numpy(np.stack(truth))).cpu()
    dev = model.device
    z_a = model.latent_action(batch_a["s_hist"][:, -1].to(dev), batch_a["targets"][:, 0].to(dev))
    s_b = batch_b["s_hist"].to(dev)
    transferred = model.decode_latent(s_b[:, -1], z_a).cpu()
    controlled = model.step(s_b, batch_a["actions"][:, 0].to(dev)).cpu()
    return {"transfer_mse": _mse(transferred, s_true), "controller_mse": _mse(controlled, s_true),
            "copy_last_mse": _mse(s_b[:, -1].cpu(), s_true)}


def _pixel_decoder(model: WorldModel, feats: Tensor, frames: Tensor, steps: int) -> Callable[[Tensor], Tensor]:
    """The encoder's own decoder, or a small one fitted on these frames' detached features (DINOv2)."""
    if hasattr(model.encoder, "decode"):
        return model.decode_pixels
    from wm_gym.encoders.pixel_decoder import fit_pixel_decoder

    decoder, _ = fit_pixel_decoder(feats, frames, steps=steps)
    return lambda s: decoder.to(s.device).to_pixels(s)


def write_rollout_media(model: WorldModel, batch: dict[str, Tensor], preds: Tensor, out: Path,
                        n: int = 4, pixels: Callable[[Tensor], Tensor] | None = None) -> dict[str, str]:
    """mp4 + PNG of true (top) vs imagined (bottom) frames for ``n`` rollouts, decoded to pixels by ``pixels``
    (normalised tokens → uint8 images; default: the model's own decoder)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    n = min(n, len(preds))
    true = torch.cat([batch["s_hist"][:n, -1:], batch["targets"][:n]], dim=1)        # [n, T+1, N, C]
    imag = torch.cat([batch["s_hist"][:n, -1:], preds[:n]], dim=1)
    def to_pixels(s: Tensor) -> np.ndarray:  # [n, T, N, C] → uint8 [n, T, H, W, 3]
        images = (pixels or model.decode_pixels)(s.flatten(0, 1).to(model.device)).cpu()
        return images.view(n, s.shape[1], *images.shape[1:]).numpy()

    true_px, imag_px = to_pixels(true), to_pixels(imag)
    # video: for each time step, rollouts side by side, true on top of imagined
    frames = np.concatenate([np.concatenate(list(true_px.transpose(1, 0, 2, 3, 4)), axis=2)[:, None],
                             np.concatenate(list(imag_px.transpose(1, 0, 2, 3, 4)), axis=2)[:, None]], axis=1)
    mp4 = write_mp4(out / "imagined_vs_true.mp4", frames.reshape(frames.shape[0], -1, *frames.shape[3:]))
    steps = true_px.shape[1]
    fig, axes = plt.subplots(2 * n, steps, figsize=(steps * 0.9, 2 * n * 0.95))
    for i in range(n):
        for k in range(steps):
            for row, (px, label) in enumerate([(true_px, "true"), (imag_px, "imagined")]):
                ax = axes[2 * i + row, k]
                ax.imshow(px[i, k]), ax.set_xticks([]), ax.set_yticks([])
                if k == 0:
                    ax.set_ylabel(label, fontsize=6)
                if i == 0 and row == 0:
                    ax.set_title(f"t+{k}", fontsize=6)
    fig.tight_layout()
    png = out / "imagined_vs_true.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return {"video": mp4, "png": str(png)}
