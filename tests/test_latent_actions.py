"""Latent-action autoencoders (RLA / LAM variants) and Seq-Δ-REPA on a tiny synthetic world.

World: tokens s_t ~ N(0, I) [B, N, C]; a 2-D action a ~ U(-1, 1) moves the first half of the tokens
("the agent's patches") along a fixed direction per action dim: s_{t+1} = s_t + mask ⊙ (W a) + noise.
A latent action can explain the change exactly; without one, the best guess is copy-last.
"""
from __future__ import annotations

import functools
import math
from dataclasses import replace

import pytest
import torch

from wm_gym.latent_actions import (LatentActionAutoencoder, LatentActionConfig, SeqDeltaRepa,
                                   sparse_energy, vcm_loss)

torch.set_num_threads(1)

N, C, A, K, D = 8, 8, 2, 2, 4
STEPS, BATCH = 200, 32


def world(B: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> s_t [B, N, C], a [B, A], s_next [B, N, C]."""
    W = torch.randn(A, 1, C, generator=torch.Generator().manual_seed(123))
    W = W * (torch.arange(N) < N // 2).float()[None, :, None]
    s = torch.randn(B, N, C, generator=g)
    a = torch.rand(B, A, generator=g) * 2 - 1
    return s, a, s + torch.einsum("ba,anc->bnc", a, W) + 0.01 * torch.randn(B, N, C, generator=g)


def tiny(**kw) -> LatentActionConfig:
    return LatentActionConfig(n_tokens=N, dim=C, n_latents=K, latent_dim=D, width=32, enc_depth=1, dec_depth=1,
                              heads=2, **kw)


@functools.cache
def trained(regularizer: str, encoder_input: str) -> tuple[LatentActionAutoencoder, list[dict[str, float]]]:
    """Adam-train a tiny autoencoder on the world; cached so several tests share one run."""
    torch.manual_seed(0)
    model = LatentActionAutoencoder(tiny(regularizer=regularizer, encoder_input=encoder_input))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    history = []
    for _ in range(STEPS):
        s, _, s_next = world(BATCH, g)
        loss, metrics = model.loss(s, s_next)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(metrics)
    return model.eval(), history


def drop(history: list[dict[str, float]], key: str = "recon_mse") -> float:
    """Mean of the first 10 values over mean of the last 10."""
    first, last = history[:10], history[-10:]
    return sum(m[key] for m in first) / sum(m[key] for m in last)


# --- API, shapes, determinism -------------------------------------------------------------------

@pytest.mark.parametrize("regularizer", ["none", "sparse", "noisy", "vq"])
@pytest.mark.parametrize("encoder_input", ["residual", "pair"])
def test_shapes_and_metrics(regularizer, encoder_input):
    torch.manual_seed(0)
    model = LatentActionAutoencoder(tiny(regularizer=regularizer, encoder_input=encoder_input))
    s, _, s_next = world(3, torch.Generator().manual_seed(1))
    z = model.encode(s, s_next)
    assert z.shape == (3, K, D)
    assert model.decode(s, z).shape == (3, N, C)
    loss, metrics = model.loss(s, s_next)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"loss", "recon_l1", "recon_mse"} <= metrics.keys()
    assert all(isinstance(v, float) for v in metrics.values())
    extra = {"none": set(), "sparse": {"vcm", "energy"}, "noisy": {"kl"}, "vq": {"vq", "vq_perplexity"}}
    assert extra[regularizer] <= metrics.keys()


def test_untrained_decoder_is_copy_last():
    """Zero-initialised residual head: training starts from the copy-last baseline, not from noise."""
    model = LatentActionAutoencoder(tiny())
    s, _, s_next = world(4, torch.Generator().manual_seed(1))
    assert torch.equal(model.decode(s, model.encode(s, s_next)), s)


def test_deterministic_under_manual_seed():
    s, _, s_next = world(4, torch.Generator().manual_seed(1))
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = LatentActionAutoencoder(tiny(regularizer="noisy"))
        losses.append(model.loss(s, s_next)[0])  # train mode: includes the sampled noise
    assert torch.equal(losses[0], losses[1])


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="regularizer"):
        tiny(regularizer="kl")
    with pytest.raises(ValueError, match="encoder_input"):
        tiny(encoder_input="frames")


def test_wrong_shapes_raise_with_expected_shape():
    model = LatentActionAutoencoder(tiny())
    s, _, s_next = world(2, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"s_t: expected shape \[B, N=8, C=8\], got \[2, 8, 7\]"):
        model.encode(s[..., :7], s_next)
    with pytest.raises(ValueError, match=r"s_next: expected shape \[B=2, N=8, C=8\]"):
        model.loss(s, s_next[:1])
    with pytest.raises(ValueError, match=r"z: expected shape \[B=2, K=2, d=4\]"):
        model.decode(s, torch.zeros(2, K, D + 1))
    with pytest.raises(ValueError, match=r"s_seq: expected shape \[B, T1, N=8, C=8\]"):
        model.sequence_loss(s)


def test_runs_under_bf16_autocast():
    model = LatentActionAutoencoder(tiny(regularizer="vq"))
    s, _, s_next = world(2, torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = model.loss(s, s_next)
        out = model.decode(s, model.encode(s, s_next))
    assert torch.isfinite(loss) and torch.isfinite(out).all()


# --- learning -------------------------------------------------------------------------------------

def test_rla_learns_and_beats_copy_last_on_held_out_pairs():
    model, history = trained("none", "residual")
    assert drop(history) > 5, history[-1]
    s, _, s_next = world(256, torch.Generator().manual_seed(99))
    with torch.no_grad():
        err = (model.decode(s, model.encode(s, s_next)) - s_next).pow(2).mean()
    copy_last = (s - s_next).pow(2).mean()
    assert copy_last / err > 5, (float(copy_last), float(err))  # measured 12x (seed 0), 85-210x (seeds 1-4)


@pytest.mark.parametrize("regularizer", ["none", "sparse", "noisy", "vq"])
def test_lam_variants_learn(regularizer):
    """IDM on (s_t, s_next) with each bottleneck: reconstruction MSE drops (measured 7.6-12x, seeds 0-4)."""
    _, history = trained(regularizer, "pair")
    assert drop(history) > 4, (history[:2], history[-2:])


# --- regularisers -------------------------------------------------------------------------------

def test_sparse_energy_matches_hand_computation():
    # D=4, √D=2. Row 1: ‖z‖²=9 ≥ 2 -> hinge 0, ‖z‖₁=3. Row 2: ‖z‖²=0.5 -> hinge 1.5, ‖z‖₁=1.
    z = torch.tensor([[[3.0, 0, 0, 0], [0.5, -0.5, 0, 0]]])
    expected = ((0.1 * 0 + 0.01 * 3) + (0.1 * 1.5 + 0.01 * 1)) / 2
    assert sparse_energy(z, l2_weight=0.1, l1_weight=0.01).item() == pytest.approx(expected)


def test_sparse_model_reports_its_energy():
    model = LatentActionAutoencoder(tiny(regularizer="sparse", energy_l2_weight=0.3, energy_l1_weight=0.05))
    s, _, s_next = world(8, torch.Generator().manual_seed(1))
    _, metrics = model.loss(s, s_next)
    assert metrics["energy"] == pytest.approx(sparse_energy(model.encode(s, s_next), 0.3, 0.05).item(), rel=1e-5)


def test_vcm_penalises_collapse_not_spread():
    collapsed = torch.zeros(256, 4)
    spread = torch.randn(256, 4, generator=torch.Generator().manual_seed(0))
    assert vcm_loss(collapsed).item() == pytest.approx(1.0, abs=0.02)  # variance hinge fully active
    assert vcm_loss(spread).item() < 0.1


def test_vq_codes_come_from_the_codebook():
    model, history = trained("vq", "pair")
    s, _, s_next = world(64, torch.Generator().manual_seed(5))
    with torch.no_grad():
        z = model.encode(s, s_next).reshape(-1, D)
    dist = (z[:, None] - model.bottleneck.vq.codebook[None]).norm(dim=-1).min(1).values
    assert dist.max() < 1e-5
    assert history[-1]["vq_perplexity"] > 2  # more than one code in use


def test_noisy_encode_is_deterministic_in_eval_and_stochastic_in_train():
    torch.manual_seed(0)
    model = LatentActionAutoencoder(tiny(regularizer="noisy"))
    s, _, s_next = world(4, torch.Generator().manual_seed(1))
    model.train()
    assert not torch.equal(model.encode(s, s_next), model.encode(s, s_next))
    model.eval()
    assert torch.equal(model.encode(s, s_next), model.encode(s, s_next))


# --- Seq-Δ-REPA ----------------------------------------------------------------------------------

def _identity_repa() -> SeqDeltaRepa:
    head = SeqDeltaRepa(z_numel=4, feat_dim=4, hidden=0)
    with torch.no_grad():
        head.proj.net[0].weight.copy_(torch.eye(4))
        head.proj.net[0].bias.zero_()
    return head


def test_seq_delta_repa_matches_hand_computation():
    # Batch 0: Σz = e1, mean Δ = 2·e1 -> cos 1. Batch 1: Σz = e1 + e2, mean Δ = 3·e2 -> cos 1/√2.
    z_seq = torch.zeros(2, 3, 2, 2)  # [B, T, K, d]; flattened K·d = 4
    z_seq[0, 0, 0, 0], z_seq[0, 2, 0, 0] = 0.25, 0.75
    z_seq[1, 1, 0, 0], z_seq[1, 1, 0, 1] = 1.0, 1.0
    s_start = torch.randn(2, 2, 4, generator=torch.Generator().manual_seed(0))
    delta = torch.zeros(2, 2, 4)
    delta[0, :, 0] = torch.tensor([1.0, 3.0])
    delta[1, :, 1] = torch.tensor([2.0, 4.0])
    loss = _identity_repa().loss(z_seq, s_start, s_start + delta)
    assert loss.item() == pytest.approx((0 + (1 - 1 / math.sqrt(2))) / 2, abs=1e-6)


def test_seq_delta_repa_stops_gradient_into_feature_targets():
    head = SeqDeltaRepa(z_numel=K * D, feat_dim=C, hidden=16)
    z_seq = torch.randn(3, 4, K, D, requires_grad=True)
    s_start = torch.randn(3, N, C, requires_grad=True)
    s_end = torch.randn(3, N, C, requires_grad=True)
    head.loss(z_seq, s_start, s_end).backward()
    assert s_start.grad is None and s_end.grad is None
    assert z_seq.grad is not None and z_seq.grad.abs().sum() > 0


def test_seq_delta_repa_rejects_wrong_shapes():
    head = SeqDeltaRepa(z_numel=K * D, feat_dim=C, hidden=16)
    with pytest.raises(ValueError, match=r"z_seq: expected shape \[B, T, K, d\] with K\*d=8"):
        head.loss(torch.zeros(2, 3, K, D + 1), torch.zeros(2, N, C), torch.zeros(2, N, C))
    with pytest.raises(ValueError, match=r"s_end: expected shape \[B=2, N=8, C=8\]"):
        head.loss(torch.zeros(2, 3, K, D), torch.zeros(2, N, C), torch.zeros(2, N + 1, C))


def test_sequence_loss_on_a_padded_row_counts_its_real_pairs_only():
    """Row 1 ends after 2 frames (NaN after): the loss is the pair loss over the 4 + 1 real pairs, and REPA
    integrates row 1's one latent action against its own last real frame."""
    torch.manual_seed(0)
    model = LatentActionAutoencoder(tiny(repa_weight=0.5, repa_hidden=16)).eval()
    g = torch.Generator().manual_seed(4)
    s_seq = torch.randn(2, 5, N, C, generator=g)
    s_seq[1, 2:] = float("nan")
    loss, metrics = model.sequence_loss(s_seq)
    s_t = torch.cat([s_seq[0, :-1], s_seq[1, :1]])
    s_next = torch.cat([s_seq[0, 1:], s_seq[1, 1:2]])
    with torch.no_grad():
        _, pair_metrics = model.loss(s_t, s_next)
        z = model.encode(s_t, s_next)
        z_seq = torch.zeros(2, 4, K, D)
        z_seq[0], z_seq[1, 0] = z[:4], z[4]
        repa = model.repa.loss(z_seq, s_seq[:, 0], torch.stack([s_seq[0, 4], s_seq[1, 1]]))
    assert metrics["recon_mse"] == pytest.approx(pair_metrics["recon_mse"], rel=1e-5)
    assert metrics["recon_l1"] == pytest.approx(pair_metrics["recon_l1"], rel=1e-5)
    assert metrics["repa"] == pytest.approx(repa.item(), rel=1e-5)
    assert math.isfinite(loss.item())
    with pytest.raises(ValueError, match="NaN only after"):
        gap = torch.randn(1, 5, N, C, generator=g)
        gap[0, 2] = float("nan")  # padding in the middle of a row
        model.sequence_loss(gap)


def test_sequence_loss_adds_weighted_repa():
    torch.manual_seed(0)
    model = LatentActionAutoencoder(tiny(repa_weight=0.5, repa_hidden=16))
    g = torch.Generator().manual_seed(2)
    s_seq = torch.randn(3, 5, N, C, generator=g)  # T = 4 transitions
    loss, metrics = model.sequence_loss(s_seq)
    expected = metrics["recon_l1"] + metrics["recon_mse"] + 0.5 * metrics["repa"]
    assert metrics["loss"] == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert model.repa.proj.net[0].weight.grad.abs().sum() > 0
    assert model.encoder.head.weight.grad.abs().sum() > 0  # REPA also orients the encoder's z
    off = LatentActionAutoencoder(tiny())
    assert off.repa is None and "repa" not in off.sequence_loss(s_seq)[1]


# --- the grouped decoder (dec_group): a quarter of the tokens, the same function class -------------

def test_group_tokens_takes_square_blocks_of_a_row_major_grid_and_inverts():
    from wm_gym.nn import group_tokens, ungroup_tokens

    x = torch.arange(2 * 16 * 3, dtype=torch.float32).reshape(2, 16, 3)  # a 4x4 grid, 3 channels
    grouped = group_tokens(x, 2)
    assert grouped.shape == (2, 4, 12)
    token_of = lambda g: [int(v) // 3 for v in grouped[0, g].reshape(4, 3)[:, 0]]  # noqa: E731
    assert token_of(0) == [0, 1, 4, 5] and token_of(1) == [2, 3, 6, 7] and token_of(3) == [10, 11, 14, 15]
    assert torch.equal(ungroup_tokens(grouped, 2), x)
    assert group_tokens(x, 1) is x
    with pytest.raises(ValueError, match="cannot group 8 tokens"):
        group_tokens(x[:, :8], 2)
    with pytest.raises(ValueError, match="cannot group 16 tokens in 3x3"):
        group_tokens(x, 3)


def grouped_world(B: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """16 tokens (4x4); an action moves the top-left 2x2 block's tokens: -> s_t, s_next [B, 16, C]."""
    W = torch.randn(A, 1, C, generator=torch.Generator().manual_seed(7))
    W = W * torch.tensor([1.0 if (i // 4 < 2 and i % 4 < 2) else 0.0 for i in range(16)])[None, :, None]
    s, a = torch.randn(B, 16, C, generator=g), torch.rand(B, A, generator=g) * 2 - 1
    return s, s + torch.einsum("ba,anc->bnc", a, W)


def test_grouped_decoder_starts_at_copy_last_learns_and_costs_less():
    from wm_gym.bench import count_flops

    config = LatentActionConfig(n_tokens=16, dim=C, n_latents=K, latent_dim=D, width=32, enc_depth=1, dec_depth=1,
                                heads=2, dec_group=2)
    torch.manual_seed(0)
    model = LatentActionAutoencoder(config)
    s, s_next = grouped_world(64, torch.Generator().manual_seed(1))
    assert torch.equal(model.decode(s, model.encode(s, s_next)), s)
    opt, g, history = torch.optim.Adam(model.parameters(), lr=3e-3), torch.Generator().manual_seed(0), []
    for _ in range(600):  # grouped: slower to start than ungrouped (drop 1.1x vs 8x at 200 steps), 430x at 600
        loss, metrics = model.loss(*grouped_world(BATCH, g))
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(metrics)
    assert drop(history) > 5, history[-1]
    with torch.no_grad():
        z = model.encode(s, s_next)
        err = (model.decode(s, z) - s_next).pow(2).mean()
        assert (s - s_next).pow(2).mean() / err > 5
        ungrouped = LatentActionAutoencoder(replace(config, dec_group=1))
        flops = [count_flops(lambda m=m: m.decode(s, z)) for m in (model, ungrouped)]
    assert flops[0] < 0.5 * flops[1], flops  # the transformer runs on 4 tokens instead of 16
