"""Frozen feature encoders: shapes, determinism, conv learning, DINOv2 loading, feature cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wm_gym.device import resolve_device
from wm_gym.encoders import (ConvEncoder, ConvEncoderConfig, DinoV2Encoder, build_encoder, cached_features,
                             encode_frames, linear_probe_r2)
from wm_gym.encoders.conv import background_frame
from wm_gym.train.encoder import fit_reprojector, reconstruction_loss, reprojector_objective, train_conv_encoder
from wm_gym.encoders.dinov2 import resize_pos_grid
from wm_gym.envs.wall import WallGeometry, render_dots

torch.set_num_threads(1)


def wall_frames(n: int, seed: int = 0, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Frames of the Wall sim's own renderer, no env: uint8 [n, size, size, 3] and dot state [n, 2].

    Dots are uniform over the reachable area (not inside the wall). ``size`` < 64 scales the
    scene's geometry with it but keeps the dot's 1.7-px std: the same task at lower resolution.
    """
    s = size / 64
    geometry = WallGeometry(wall_x=32 * s, wall_width=3 * s, door_center=44 * s, door_width=12 * s,
                            extent=64 * s, margin=3 * s)
    rng = np.random.default_rng(seed)
    pos = rng.uniform(geometry.margin, geometry.extent - geometry.margin, (4 * n, 2))
    in_wall = (np.abs(pos[:, 0] - geometry.wall_x) < geometry.wall_width / 2) & (
        (pos[:, 1] < geometry.door_lo) | (pos[:, 1] > geometry.door_hi))
    pos = pos[~in_wall][:n]
    return render_dots(pos, geometry, size), pos.astype(np.float32)


def test_resolve_device():
    assert resolve_device("auto").type in ("cpu", "cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu0")


def test_build_encoder_rejects_unknown_name():
    with pytest.raises(ValueError, match="conv.*dinov2-vits14"):
        build_encoder("nope")


def test_encoders_refuse_random_weights_unless_asked():
    with pytest.raises(ValueError, match="weights"):
        build_encoder("conv")
    with pytest.raises(ValueError, match="dinov2_vits14_pretrain.pth"):
        build_encoder("dinov2-vits14")


# ----- probe -------------------------------------------------------------------------------

def test_linear_probe_r2_perfect_and_chance():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 20, generator=g)
    y = x[:, :3] @ torch.randn(3, 2, generator=g) + 5.0
    assert linear_probe_r2(x, y) > 0.999
    assert linear_probe_r2(x, torch.randn(400, 2, generator=g)) < 0.1
    wide = x @ torch.randn(20, 5000, generator=g)  # D ≫ n (dual form), same 20-dim signal
    assert linear_probe_r2(wide, y) > 0.99


# ----- conv encoder ------------------------------------------------------------------------

def test_conv_encoder_shapes_and_decode():
    enc = build_encoder("conv", allow_random_weights=True, grid=8, dim=48, width=16)
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    tokens = enc(frames)
    assert (enc.grid, enc.n_tokens, enc.dim) == (8, 64, 48)
    assert tokens.shape == (3, 64, 48) and tokens.dtype == torch.float32
    images = enc.decode(tokens)
    assert images.shape == (3, 64, 64, 3) and 0 <= images.min() and images.max() <= 1
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.training
    with pytest.raises(ValueError, match="64×64"):
        enc(torch.zeros(1, 32, 32, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="power of 2"):
        ConvEncoder(ConvEncoderConfig(grid=6))


def test_conv_encoder_save_load_roundtrip(tmp_path):
    enc = ConvEncoder(ConvEncoderConfig(width=8, dim=16)).freeze()
    enc.save(tmp_path / "conv.pt")
    loaded = build_encoder("conv", weights=tmp_path / "conv.pt")
    assert loaded.identity() == enc.identity()
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_encoder("conv", weights=tmp_path / "missing.pt")


def test_conv_encoder_save_is_atomic(tmp_path, monkeypatch):
    """A save that dies mid-write leaves the previous file intact and no temp file behind."""
    enc = ConvEncoder(ConvEncoderConfig(width=8, dim=16)).freeze()
    enc.save(tmp_path / "conv.pt")
    before = (tmp_path / "conv.pt").read_bytes()

    def dies(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        ConvEncoder(ConvEncoderConfig(width=8, dim=16, grid=4)).save(tmp_path / "conv.pt")
    assert (tmp_path / "conv.pt").read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["conv.pt"]


# The learning test's budget: 32-px Wall-like frames (same scene, half the resolution) and a
# narrow net train ~15× faster than the default 64-px config (which needs ~400 steps, ~80 s on 1 thread,
# to reconstruct the dot within 2 px on every held-out frame).
SMALL = ConvEncoderConfig(image_size=32, grid=8, dim=16, width=16)


@pytest.fixture(scope="module")
def wall_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    train_frames, _ = wall_frames(1000, seed=0, size=32)
    probe_frames, probe_state = wall_frames(300, seed=1, size=32)
    return train_frames, probe_frames, probe_state


def decoded_dot_error(enc: ConvEncoder, frames: np.ndarray, dot_xy: np.ndarray, reprojector: bool = False) -> np.ndarray:
    """Per frame: distance (px) from the true dot centre to the reddest pixel of the reconstruction (by the
    decoder, or with ``reprojector`` by the re-projection decoder)."""
    with torch.no_grad():
        tokens = enc(torch.from_numpy(frames))
        images = enc.reprojection_decode(tokens).permute(0, 2, 3, 1) if reprojector else enc.decode(tokens)
    size = frames.shape[2]
    row, col = np.divmod((images[..., 0] - images[..., 1]).flatten(1).argmax(1).numpy(), size)
    xy = (np.stack([col, row], -1) + 0.5) * (size + 1) / size - 0.5  # pixel → sim coordinates (wall.py's centres)
    return np.linalg.norm(xy - dot_xy, axis=-1)


@pytest.mark.parametrize("decoder", ["conv", "patch"])
def test_conv_encoder_learns_wall_frames(wall_data, decoder):
    """Training must shrink the loss and keep the small dot: its reconstruction lands on the true dot.

    Measured at 100 steps, seeds 0-2: loss ÷12 to ÷33, dot within 2 px in 100 % of held-out
    frames (≈ 0 % at init), probe R² ≥ 0.997; 30 steps gives ÷1.4 and 22 %, failing both.
    The probe does NOT separate trained from random init here: the dot's position is its
    pixels' centre of mass, a linear function of the frame, and a random conv net is nearly
    linear at init, so random features also probe at R² ≈ 0.99. It is checked as an absolute
    bar (training must not lose the state); learning is checked through the reconstruction.
    """
    train_frames, probe_frames, probe_state = wall_data
    config = ConvEncoderConfig(**{**vars(SMALL), "decoder": decoder})
    kw = dict(config=config, batch_size=32, lr=3e-3, seed=0, device="cpu", progress=False)
    init = train_conv_encoder(train_frames, steps=0, **kw)
    trained = train_conv_encoder(train_frames, steps=120, **kw)

    frames = torch.from_numpy(probe_frames)
    background = background_frame(torch.from_numpy(train_frames))  # [H, W, 3]: floor and wall, no dot
    assert torch.equal(trained.background, background.permute(2, 0, 1))

    def loss(enc: ConvEncoder) -> float:
        with torch.no_grad():
            return reconstruction_loss(enc.decode(enc(frames), clamp=False), frames.float() / 255, background).item()

    loss_init, loss_trained = loss(init), loss(trained)
    hit_init = (decoded_dot_error(init, probe_frames, probe_state) < 2).mean()
    hit_trained = (decoded_dot_error(trained, probe_frames, probe_state) < 2).mean()
    feats = encode_frames(trained, probe_frames, device="cpu", progress=False).float().flatten(1)
    r2 = linear_probe_r2(feats, probe_state)
    print(f"loss {loss_init:.4f} → {loss_trained:.4f}; dot ≤ 2 px {hit_init:.2f} → {hit_trained:.2f}; R² {r2:.3f}")
    assert loss_trained < loss_init / 6
    assert hit_init < 0.1 and hit_trained > 0.8
    assert r2 > 0.95


def test_reprojector_fits_the_frozen_encoder_and_re_projection_goes_through_it(wall_data):
    """The conv decoder shapes the features; the patch reprojector, fitted afterwards, must leave them alone,
    learn to draw the dot, and be what ``reproject`` decodes with (issue 29)."""
    train_frames, probe_frames, probe_state = wall_data
    config = ConvEncoderConfig(**{**vars(SMALL), "reprojector": "patch"})
    enc = train_conv_encoder(train_frames, config=config, steps=120, batch_size=32, seed=0, device="cpu", progress=False)
    frames = torch.from_numpy(probe_frames)
    with torch.no_grad():
        tokens = enc(frames)
        via_decoder = enc.encode_images(enc.decode(tokens).permute(0, 3, 1, 2))
        assert not torch.allclose(enc.reproject(tokens), via_decoder)  # re-projection uses the reprojector
    pyramid = {k: v.clone() for k, v in enc.state_dict().items() if not k.startswith("reprojector.")}
    miss_before = (decoded_dot_error(enc, probe_frames, probe_state, reprojector=True) >= 2).mean()
    loss, _ = reprojector_objective(enc, frames, batch_size=len(frames))
    with torch.no_grad():
        before = float(loss(frames)[0])
    fit_reprojector(enc, train_frames, steps=150, batch_size=32, seed=0, progress=False)
    with torch.no_grad():
        after = float(loss(frames)[0])
        assert torch.equal(enc(frames), tokens)  # the features are the trained encoder's, untouched
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in pyramid.items())
    assert not any(p.requires_grad for p in enc.parameters())
    hit = (decoded_dot_error(enc, probe_frames, probe_state, reprojector=True) < 2).mean()
    print(f"reprojector loss {before:.4f} → {after:.4f}; dot ≤ 2 px {1 - miss_before:.2f} → {hit:.2f}")
    assert after < before / 5 and miss_before > 0.9 and hit > 0.8


def test_reprojector_config_is_checked_and_hashed_only_when_set():
    plain = ConvEncoder(ConvEncoderConfig(image_size=32, grid=8, dim=16, width=16))
    assert plain.reprojector is None and "reprojector" not in plain.identity_config()  # older files hash the same
    with_one = ConvEncoder(ConvEncoderConfig(image_size=32, grid=8, dim=16, width=16, reprojector="patch"))
    assert with_one.identity_config()["reprojector"] == "patch" and with_one.identity() != plain.identity()
    with pytest.raises(ValueError, match="reprojector must be None or 'patch'"):
        ConvEncoder(ConvEncoderConfig(reprojector="conv"))
    with pytest.raises(ValueError, match="no reprojector to fit"):
        reprojector_objective(plain, torch.zeros(4, 32, 32, 3, dtype=torch.uint8), batch_size=2)


def test_patch_decoder_shapes_and_no_layer_above_token_resolution():
    enc = ConvEncoder(ConvEncoderConfig(image_size=64, grid=8, dim=32, width=16, decoder="patch"))
    frames = torch.randint(0, 256, (3, 64, 64, 3), dtype=torch.uint8)
    tokens = enc(frames)
    assert tokens.shape == (3, 64, 32) and enc.decode(tokens).shape == (3, 64, 64, 3)
    sizes = []  # output width of every decoder conv: all on the 8×8 token grid, pixels come from the shuffle
    for m in enc.decoder:
        if isinstance(m, torch.nn.Conv2d):
            m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
    enc.decode(tokens)
    assert sizes and set(sizes) == {8}
    with pytest.raises(ValueError, match="decoder must be one of"):
        ConvEncoder(ConvEncoderConfig(decoder="unet"))


def test_identity_of_pyramid_encoders_does_not_depend_on_the_later_decoder_field():
    """Files written before ``decoder`` existed hash their config without it; the pyramid must hash the same."""
    enc = ConvEncoder(ConvEncoderConfig(image_size=32, grid=8, dim=16, width=16))
    assert "decoder" not in enc.identity_config()
    patch = ConvEncoder(ConvEncoderConfig(image_size=32, grid=8, dim=16, width=16, decoder="patch"))
    assert patch.identity_config()["decoder"] == "patch" and patch.identity() != enc.identity()


def test_conv_training_is_deterministic(wall_data):
    train_frames = wall_data[0][:200]
    kw = dict(config=SMALL, steps=3, batch_size=8, seed=3, device="cpu", progress=False)
    a, b = train_conv_encoder(train_frames, **kw), train_conv_encoder(train_frames, **kw)
    c = train_conv_encoder(train_frames, **{**kw, "seed": 4})
    assert a.identity() == b.identity() != c.identity()
    frames = torch.from_numpy(train_frames[:4])
    assert torch.equal(a(frames), b(frames))


def test_conv_training_writes_tensorboard(tmp_path, wall_data):
    train_conv_encoder(wall_data[0][:64], SMALL, steps=2, batch_size=4, device="cpu", progress=False,
                       log_dir=tmp_path / "tb")
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


# ----- DINOv2 ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dino():
    return DinoV2Encoder(None, image_size=56, allow_random_weights=True, seed=0)


def test_dinov2_shapes_and_determinism(dino):
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    tokens = dino(frames)
    assert (dino.grid, dino.n_tokens, dino.dim) == (4, 16, 384)
    assert tokens.shape == (2, 16, 384) and torch.isfinite(tokens).all()
    assert torch.allclose(tokens.std(-1), torch.ones(2, 16), atol=0.05)  # final LayerNorm, unit affine at init
    assert not any(p.requires_grad for p in dino.parameters())
    again = DinoV2Encoder(None, image_size=56, allow_random_weights=True, seed=0)
    assert torch.equal(again(frames), tokens) and again.identity() == dino.identity()
    with pytest.raises(ValueError, match="multiple of 14"):
        DinoV2Encoder(None, image_size=64, allow_random_weights=True)


def test_dinov2_state_dict_uses_official_key_names(dino):
    keys = set(dino.state_dict())
    assert {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias",
            "norm.weight", "norm.bias"} <= keys
    block = {"norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
             "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
             "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma"}
    assert {f"blocks.11.{k}" for k in block} <= keys and len(keys) == 7 + 12 * len(block)
    assert dino.state_dict()["pos_embed"].shape == (1, 1 + 37 * 37, 384)


def _other_weights(dino: DinoV2Encoder) -> dict[str, torch.Tensor]:
    """A state dict unlike ``dino``'s random init, so a load that silently did nothing would show."""
    g = torch.Generator().manual_seed(1)
    return {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in dino.state_dict().items()}


def test_dinov2_loads_official_and_timm_style_files(tmp_path, dino):
    official = _other_weights(dino)
    torch.save(official, tmp_path / "dinov2_vits14_pretrain.pth")
    # timm's vit_small_patch14_dinov2: same names, no mask_token; here also wrapped and prefixed.
    timm_style = {"state_dict": {f"model.{k}": v for k, v in official.items() if k != "mask_token"}}
    torch.save(timm_style, tmp_path / "timm.pth")

    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    a = DinoV2Encoder(tmp_path / "dinov2_vits14_pretrain.pth", image_size=56)
    b = build_encoder("dinov2-vits14", weights=str(tmp_path / "timm.pth"), image_size=56)
    assert torch.equal(a.state_dict()["blocks.3.ls2.gamma"], official["blocks.3.ls2.gamma"])
    assert torch.equal(a(frames), b(frames))
    assert not torch.allclose(a(frames), dino(frames))

    # timm built at img_size=224 stores a 16 × 16 pos_embed: resampled back to the 37 × 37 grid.
    pos = official["pos_embed"]
    small_pos = torch.cat([pos[:, :1], resize_pos_grid(pos[:, 1:], 16)], dim=1)
    torch.save({**timm_style["state_dict"], "model.pos_embed": small_pos}, tmp_path / "timm224.pth")
    c = DinoV2Encoder(tmp_path / "timm224.pth", image_size=56)
    assert c.pos_embed.shape == (1, 1 + 37 * 37, 384) and c(frames).shape == (2, 16, 384)


def test_dinov2_loading_errors(tmp_path, dino):
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth.*dinov2_vits14_pretrain\.pth"):
        DinoV2Encoder(tmp_path / "nowhere.pth")
    bad = dict(dino.state_dict())
    bad.pop("blocks.0.attn.qkv.weight")
    bad["blocks.0.attn.q.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"missing keys.*blocks\.0\.attn\.qkv\.weight.*unexpected.*attn\.q\.weight"):
        DinoV2Encoder(tmp_path / "bad.pth", image_size=56)
    vit_b = {**dino.state_dict(), "norm.weight": torch.ones(768)}  # right names, another model's shapes
    torch.save(vit_b, tmp_path / "vit_b.pth")
    with pytest.raises(ValueError, match=r"wrong shapes.*norm\.weight \(768,\)"):
        DinoV2Encoder(tmp_path / "vit_b.pth", image_size=56)


# ----- feature cache -----------------------------------------------------------------------

class CountingEncoder(ConvEncoder):
    calls = 0

    def forward(self, frames):
        CountingEncoder.calls += 1
        return super().forward(frames)


def test_encode_frames_fp16_and_batched():
    enc = build_encoder("conv", allow_random_weights=True, width=8, dim=16)
    frames, _ = wall_frames(10)
    feats = encode_frames(enc, frames, batch_size=4, device="cpu", progress=False)
    assert feats.shape == (10, 64, 16) and feats.dtype == torch.float16 and feats.device.type == "cpu"
    with torch.no_grad():
        direct = enc(torch.from_numpy(frames))
    assert torch.allclose(feats.float(), direct, atol=1e-2, rtol=1e-2)


def test_cached_features_reuse_and_invalidation(tmp_path):
    frames, _ = wall_frames(12)
    path = tmp_path / "cache" / "feats.pt"
    kw = dict(batch_size=5, device="cpu", progress=False)
    enc = CountingEncoder(ConvEncoderConfig(width=8, dim=16)).freeze()

    CountingEncoder.calls = 0
    first = cached_features(enc, frames, path, **kw)
    assert CountingEncoder.calls == 3 and first.dtype == torch.float16
    stored = torch.load(path, weights_only=True)
    assert stored["features"].dtype == torch.float16 and stored["key"]["encoder"] == enc.identity()
    assert [p.name for p in path.parent.iterdir()] == ["feats.pt"]  # atomic: no temp file left behind

    again = cached_features(enc, frames, path, **kw)
    assert CountingEncoder.calls == 3 and torch.equal(again, first)  # reused, not recomputed

    with torch.no_grad():
        enc.encoder[0].weight.mul_(2)  # encoder changed → invalidated
    changed = cached_features(enc, frames, path, **kw)
    assert CountingEncoder.calls == 6 and not torch.equal(changed, first)

    frames[3, 10, 10, 0] ^= 1  # one byte of the frames changed → invalidated
    cached_features(enc, frames, path, **kw)
    assert CountingEncoder.calls == 9
    cached_features(enc, frames, path, **kw)
    assert CountingEncoder.calls == 9
    assert [p.name for p in path.parent.iterdir()] == ["feats.pt"]


def test_cached_features_recovers_from_a_corrupt_file(tmp_path):
    frames, _ = wall_frames(4)
    path = tmp_path / "feats.pt"
    path.write_bytes(b"not a torch file")
    enc = build_encoder("conv", allow_random_weights=True, width=8, dim=16)
    feats = cached_features(enc, frames, path, device="cpu", progress=False)
    assert feats.shape == (4, 64, 16)
    assert torch.equal(torch.load(path, weights_only=True)["features"], feats)


def test_cached_features_write_is_atomic(tmp_path, monkeypatch):
    frames, _ = wall_frames(4)
    path = tmp_path / "feats.pt"
    first = build_encoder("conv", allow_random_weights=True, width=8, dim=16)
    cached_features(first, frames, path, device="cpu", progress=False)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    other = ConvEncoder(ConvEncoderConfig(width=8, dim=16, grid=4)).freeze()  # different identity → rewrite
    with pytest.raises(RuntimeError, match="disk full"):
        cached_features(other, frames, path, device="cpu", progress=False)
    assert [p.name for p in tmp_path.iterdir()] == ["feats.pt"] and path.read_bytes() == before


@pytest.mark.parametrize("reprojector", [None, "patch"])
def test_reproject_is_encode_of_the_clamped_decode_and_passes_gradients(reprojector):
    """``reproject`` skips the background round trip and clamps in place; it must equal the composition it stands
    for, also where the decoder's output leaves [0, 1] (clamped pixels), and carry gradients to the tokens."""
    enc = ConvEncoder(ConvEncoderConfig(image_size=32, grid=8, dim=16, width=16, reprojector=reprojector))
    enc.background.copy_(torch.rand(3, 32, 32))
    tokens = (3 * torch.randn(4, 64, 16)).requires_grad_(True)  # large: many decoded pixels fall outside [0, 1]
    raw = enc.reprojection_decode(tokens, clamp=False)
    assert ((raw < 0) | (raw > 1)).float().mean() > 0.01
    torch.testing.assert_close(enc.reproject(tokens), enc.encode_images(enc.reprojection_decode(tokens)),
                               atol=1e-5, rtol=1e-5)
    enc.reproject(tokens).square().sum().backward()
    assert torch.isfinite(tokens.grad).all() and tokens.grad.abs().sum() > 0
