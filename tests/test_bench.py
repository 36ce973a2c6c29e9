"""wm_gym.bench's FLOP count, GEMM peak and step breakdown, and what `wm-gym bench --json` reports per model.

No timing is asserted: only counts that have a hand-checkable value, and the shape of the report.
"""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from wm_gym import bench
from wm_gym.cli import main
from wm_gym.world_model import WorldModel

torch.set_num_threads(1)




# ----- FLOP counting ------------------------------------------------------------------------------------
def test_linear_flops_match_the_hand_count():
    batch, d_in, d_out = 7, 12, 5
    layer, x = torch.nn.Linear(d_in, d_out), torch.randn(batch, d_in)
    assert bench.count_flops(lambda: layer(x)) == 2 * batch * d_in * d_out


def test_cpu_attention_is_counted():
    """torch's counter has no formula for the CPU attention kernel; bench adds it: QKᵀ and AV, 2 each per MAC."""
    b, h, s, d = 3, 2, 10, 8
    q, k, v = (torch.randn(b, h, s, d) for _ in range(3))
    assert bench.count_flops(lambda: F.scaled_dot_product_attention(q, k, v)) == 2 * (2 * b * h * s * s * d)


def test_imagined_step_flops_scale_with_the_batch(world):
    flops = bench.imagine_step_flops(str(world.path), num_envs=4)
    assert flops > 0
    assert bench.imagine_step_flops(str(world.path), num_envs=8) == 2 * flops


def test_imagined_step_flops_include_the_reprojection(world):
    """With re-projection on, the decoder and the encoder run each step and their FLOPs are counted."""
    model = WorldModel.load(world.path)
    plain = bench.imagine_step_flops(model, num_envs=4)
    model.config.reproject = True
    assert model.reprojects
    reprojected = bench.imagine_step_flops(model, num_envs=4)
    parts = bench.imagine_step_breakdown(model, num_envs=4, steps=2, warmup=1)
    assert reprojected > plain
    assert parts["flops"]["reprojection"] == pytest.approx(reprojected - plain)
    assert sum(parts["flops"].values()) == reprojected  # the parts cover every counted FLOP of the step


def test_step_breakdown_names_the_parts_it_called(world):
    model = WorldModel.load(world.path)
    parts = bench.imagine_step_breakdown(model, num_envs=4, steps=2, warmup=1)
    time_ms = parts["time_ms"]
    # the tiny model does not re-project, and the env's default mode is the controller: no decoder, no flow
    assert {"controller", "latent_decoder", "reward", "termination", "other", "total"} <= set(time_ms)
    assert not {"reprojection", "flow"} & set(time_ms)
    assert time_ms["total"] == pytest.approx(sum(v for k, v in time_ms.items() if k != "total"), abs=0.05)
    assert "reproject" not in vars(model.encoder) and "forward" not in vars(model.controller)  # wrappers were removed


# ----- the GEMM peak --------------------------------------------------------------------------------------
def test_gemm_peak_is_a_positive_finite_rate():
    peak = bench.gemm_peak_flops("cpu", "fp32", sizes=(32, 64), seconds=0.05)
    assert peak > 0 and math.isfinite(peak)
    assert bench.fraction_of_peak(1000, 10, 50.0, 1e4) == pytest.approx(0.5)  # 100 FLOPs/row x 50 rows/s / 1e4
    with pytest.raises(ValueError, match="dtype"):
        bench.gemm_peak_flops("cpu", "fp8")


# ----- the CLI --------------------------------------------------------------------------------------------
def test_bench_json_reports_flops_peak_and_breakdown_per_model(capsys, world, tmp_path):
    second = tmp_path / "copy.pt"
    shutil.copy(world.path, second)
    rc = main(["bench", "--model", str(world.path), "--model", str(second), "--batch", "4", "--steps", "10",
               "--sim", "wall", "--no-ppo", "--device", "cpu", "--repeats", "1", "--peak-seconds", "0.1", "--json"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    result = json.loads(captured.out.strip().splitlines()[-1])
    assert list(result["models"]) == [str(world.path), str(second)]
    peaks = [report["repeats"]["gemm_peak_cpu"][0] for report in result["models"].values()]  # one per repeat
    assert min(peaks) > 0 and result["gemm_peak_flops"]["cpu_fp32"] == pytest.approx(sum(peaks) / 2, abs=1)
    for report in result["models"].values():
        assert report["flops_per_step"] > 0 and report["flops_per_agent_step"] == round(report["flops_per_step"] / 4)
        assert report["gemm_peak_flops"] == report["repeats"]["gemm_peak_cpu"][0]  # its own probe's median
        expected = report["flops_per_agent_step"] * report["imagine_steps_per_s"]["cpu"] / report["gemm_peak_flops"]
        assert report["fraction_of_peak"] == pytest.approx(expected, rel=0.01, abs=1e-4)
        assert report["imagine_steps_per_s"]["cpu"] > 0
        assert report["ratios"]["imagine_cpu_vs_pointmaze_pixel_steps"] is None  # --sim wall: no PointMaze
        assert report["time_breakdown_ms"]["total"] > 0 and "controller" in report["time_breakdown_ms"]
        assert report["flops_breakdown"]["controller"] > 0
    assert result["models"][str(world.path)]["flops_per_step"] == result["models"][str(second)]["flops_per_step"]
    # the keys of one-model runs stay, as the first model's
    first = result["models"][str(world.path)]
    for key in ("imagine_steps_per_s", "repeats", "feature_sim_steps_per_s", "ratios"):
        assert result[key] == first[key]


def test_bench_precision_sets_every_imagination_timings_autocast(capsys, world, monkeypatch):
    """--precision reaches the model each CPU timing steps, and the report says which precision ran."""
    from wm_gym.imagine import WMImagineVectorEnv

    seen = []
    real_step = WMImagineVectorEnv.step
    monkeypatch.setattr(WMImagineVectorEnv, "step", lambda self, a: seen.append(self.model.uses_bf16) or real_step(self, a))
    for precision in ("bf16", "fp32"):
        seen.clear()
        rc = main(["bench", "--model", str(world.path), "--batch", "4", "--steps", "10", "--sim", "wall", "--no-ppo",
                   "--device", "cpu", "--repeats", "1", "--peak-seconds", "0.05", "--precision", precision, "--json"])
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"][str(world.path)]
        assert rc == 0 and report["precision"] == {"cpu": precision}
        assert seen and set(seen) == {precision == "bf16"}
