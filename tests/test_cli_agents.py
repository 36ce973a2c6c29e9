"""The agent-side CLI, in-process: calibrate, train-agent, evaluate, bench (rc, JSON last line, errors -> rc 2)."""
from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch

from wm_gym import bench
from wm_gym.agents.train_agent import load_agent, sidecar_path
from wm_gym.cli import main
from wm_gym.data.dataset import load_episodes
from wm_gym.world_model import WorldModel
from wm_gym.zoo import MODELS

torch.set_num_threads(1)


def run(capsys, *argv: str) -> tuple[int, dict | None, str]:
    """(rc, the JSON object on stdout's last line or None, stderr)."""
    rc = main(list(argv))
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    return rc, (json.loads(lines[-1]) if rc == 0 and lines else None), captured.err




@pytest.fixture(scope="module")
def cli_agent(world, tmp_path_factory):
    """`wm-gym train-agent` once for the module: (rc, JSON, folder)."""
    folder = tmp_path_factory.mktemp("cli_agent")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["train-agent", "--model", str(world.path), "--out", str(folder / "a.zip"), "--steps", "256",
                   "--num-envs", "8", "--device", "cpu", "--log-dir", str(folder / "tb"), "--json"])
    lines = out.getvalue().strip().splitlines()
    return rc, json.loads(lines[-1]) if lines else None, folder


# ----- calibrate -----------------------------------------------------------------------------------------
def test_calibrate_attaches_demos_and_a_threshold(capsys, world, tmp_path):
    out = tmp_path / "m.pt"
    rc, result, err = run(capsys, "calibrate", "--model", str(world.nobank_path), "--data", str(world.random_dir),
                          "--demos", str(world.expert_dir), "--out", str(out), "--json")
    assert rc == 0, err
    cal = result["calibration"]
    assert cal["threshold"] > 0 and cal["metric"] == "l1"
    assert 0.0 <= cal["precision"] <= 1.0 and 0.0 <= cal["recall"] <= 1.0
    n_demos = len(load_episodes(world.expert_dir).frames)
    assert result["demos"]["count"] == n_demos and 0 < result["demos"]["heldout"] < n_demos
    assert result["out"] == str(out)
    model = WorldModel.load(out)
    assert model.bank is not None and len(model.bank) == n_demos
    assert int(model.bank.heldout.sum()) == result["demos"]["heldout"]
    assert model.meta.success_threshold == pytest.approx(cal["threshold"]) and model.meta.success_metric == "l1"
    assert model.meta.train_info["calibration"] == cal
    assert WorldModel.load(world.nobank_path).bank is None  # --out: the input file is left alone


def test_calibrate_without_out_overwrites_the_model_and_respects_metric(capsys, world, tmp_path):
    path = tmp_path / "copy.pt"
    shutil.copy(world.nobank_path, path)
    rc, result, err = run(capsys, "calibrate", "--model", str(path), "--data", str(world.random_dir),
                          "--metric", "cosine", "--json")
    assert rc == 0, err
    assert "demos" not in result and result["calibration"]["metric"] == "cosine"
    model = WorldModel.load(path)
    assert model.bank is None and model.meta.success_metric == "cosine"
    assert model.meta.success_threshold == pytest.approx(result["calibration"]["threshold"])


def test_calibrate_on_a_corrupt_model_is_rc_2(capsys, world, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file" * 64)
    rc, _, err = run(capsys, "calibrate", "--model", str(bad), "--data", str(world.random_dir), "--json")
    assert rc == 2 and "calibrate: error" in err and "not a readable world-model file" in err
    assert bad.read_bytes() == b"not a torch file" * 64


# ----- train-agent, evaluate ---------------------------------------------------------------------------
def test_train_agent_cli_writes_the_agent(cli_agent, world):
    rc, result, folder = cli_agent
    assert rc == 0
    agent_path = folder / "a.zip"
    assert result["out"] == str(agent_path) and result["algo"] == "ppo"
    assert agent_path.is_file() and sidecar_path(agent_path).is_file()
    assert not (folder / "a.ckpt.zip").exists()
    assert list((folder / "tb").rglob("events.out.tfevents.*"))
    agent, meta = load_agent(agent_path)
    assert meta["model"] == str(world.path) and meta["config"]["num_envs"] == 8 and meta["config"]["device"] == "cpu"
    # PPO collects whole rollouts (default n_steps 64 x 8 envs), so it may overshoot --steps, never undershoot
    assert result["steps"] == agent.num_timesteps >= 256


def test_train_agent_cli_takes_the_models_agent_recipe_where_no_flag_is_given(capsys, world, tmp_path):
    model = WorldModel.load(world.path)
    model.meta.agent_defaults = {"steps": 0, "bc_epochs": 3}
    model.save(tmp_path / "recipe.pt")

    def train(name, *flags):
        rc, result, err = run(capsys, "train-agent", "--model", str(tmp_path / "recipe.pt"), "--out",
                              str(tmp_path / f"{name}.zip"), "--num-envs", "4", "--device", "cpu", "--json", *flags)
        assert rc == 0, err
        return result, json.loads(sidecar_path(tmp_path / f"{name}.zip").read_text())

    bare, sidecar = train("bare")
    assert bare["model_recipe"] == {"steps": 0, "bc_epochs": 3} and bare["steps"] == 0
    assert sidecar["config"]["bc_epochs"] == 3 and len(sidecar["bc_losses"]) == 3
    given, sidecar = train("given", "--bc-epochs", "2")  # a flag given wins over the recipe
    assert given["model_recipe"] == {"steps": 0} and len(sidecar["bc_losses"]) == 2
    model.meta.agent_defaults = {"out": "elsewhere.zip"}
    model.save(tmp_path / "recipe.pt")
    rc, _, err = run(capsys, "train-agent", "--model", str(tmp_path / "recipe.pt"), "--out", str(tmp_path / "x.zip"))
    assert rc == 2 and "train-agent recipe names out" in err


def test_evaluate_cli_reports_success_in_the_real_sim(capsys, cli_agent):
    _, _, folder = cli_agent
    rc, result, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "2", "--json")
    assert rc == 0, err
    assert 0.0 <= result["success_rate"] <= 1.0 and result["episodes"] == 2
    assert 1 <= result["mean_episode_length"] <= result["max_steps"] == 10
    assert result["env"] == "wm_gym/Wall-v0" and result["seed"] == 1000 and "per_episode" not in result
    rc, detailed, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "2", "--seed", "5",
                            "--max-steps", "2", "--per-episode", "--json")
    assert rc == 0, err
    assert [e["seed"] for e in detailed["per_episode"]] == [5, 6] and detailed["max_steps"] == 2
    assert all(1 <= e["length"] <= 2 for e in detailed["per_episode"])
    rc, swm, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "2", "--budget", "swm",
                       "--json")
    assert rc == 0, err
    assert swm["budget"] == "swm" and swm["budget_sim_steps"] == 50 and swm["success_check_every"] == 1
    rc, _, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "1", "--budget", "lots")
    assert rc == 2 and "budget" in err
    rc, _, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "1", "--budget", "task")
    assert rc == 2 and "task episode" in err  # Wall has no task episode of its own (dm_control has)


def test_evaluate_cli_imagined_sets_imagined_success_beside_the_real_one(capsys, cli_agent, world):
    _, _, folder = cli_agent
    rc, result, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "2", "--budget", "swm",
                          "--imagined", "real", "--json")
    assert rc == 0, err
    imagined, model = result["imagined"], WorldModel.load(world.path)
    assert (imagined["test"], imagined["budget"], imagined["split"]) == ("real", "swm", "heldout")
    assert imagined["threshold"] == pytest.approx(model.meta.train_info["real_success_threshold"])
    assert imagined["episodes"] == len(model.bank.indices("heldout")) and imagined["model_steps"] == 50 // 5
    assert 0.0 <= imagined["imagined_success_rate"] <= 1.0 and result["episodes"] == 2
    rc, _, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "1", "--imagined", "temporal")
    assert rc == 2 and "temporal-distance head" in err  # said before any real episode runs
    rc, both, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "1", "--budget", "swm",
                        "--imagined", "real", "--paired", "--json")
    assert rc == 0, err
    paired = both["paired"]  # the real sim from the imagined episodes' starts and goals, beside them
    assert paired["episodes"] == imagined["episodes"] and paired["budget"] == "swm" and "drift" not in paired
    assert paired["tests"]["real"]["imagined_success_rate"] == imagined["imagined_success_rate"]
    rc, _, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--episodes", "1", "--paired")
    assert rc == 2 and "imagined success test" in err
    with pytest.raises(SystemExit) as exited:  # argparse refuses an unknown test by name
        main(["evaluate", "--agent", str(folder / "a.zip"), "--imagined", "pixels"])
    assert exited.value.code == 2 and "invalid choice: 'pixels'" in capsys.readouterr().err


def test_evaluate_agent_reads_one_imagined_run_with_several_tests_each_as_alone(cli_agent):
    from wm_gym.agents.evaluate import evaluate_agent

    _, _, folder = cli_agent
    agent = folder / "a.zip"
    alone = {test: evaluate_agent(agent, episodes=1, budget="swm", device="cpu", imagined=test)["imagined"]
             for test in ("real", "calibrated")}
    both = evaluate_agent(agent, episodes=1, budget="swm", device="cpu", imagined=["real", "calibrated"], paired=True)
    assert set(both["imagined"]) == {"real", "calibrated"}
    for test, result in alone.items():
        same = {"tests_in_rollout": [test], "seconds": result["seconds"]}  # one rollout read by both tests
        assert both["imagined"][test] | same == result
        assert both["imagined"][test]["tests_in_rollout"] == ["real", "calibrated"]
        assert both["paired"]["tests"][test]["imagined_success_rate"] == result["imagined_success_rate"]


def test_evaluate_cli_errors_are_rc_2(capsys, cli_agent, tmp_path):
    rc, _, err = run(capsys, "evaluate", "--agent", str(tmp_path / "missing.zip"), "--json")
    assert rc == 2 and "evaluate: error" in err and "missing.zip" in err
    _, _, folder = cli_agent
    rc, _, err = run(capsys, "evaluate", "--agent", str(folder / "a.zip"), "--env", "pointmaze", "--episodes", "1")
    assert rc == 2 and "trained on" in err


def test_train_agent_cli_unknown_model_lists_the_zoo(capsys, tmp_path):
    rc, _, err = run(capsys, "train-agent", "--model", "nonexistent-zoo-name", "--out", str(tmp_path / "a.zip"),
                     "--steps", "8", "--num-envs", "2", "--device", "cpu", "--log-dir", str(tmp_path / "tb"), "--json")
    assert rc == 2 and "train-agent: error" in err and "nonexistent-zoo-name" in err
    assert all(name in err for name in MODELS)
    assert not (tmp_path / "a.zip").exists()


# ----- bench -----------------------------------------------------------------------------------------------
def test_bench_cli_imagination_vs_feature_sim(capsys, world):
    rc, result, err = run(capsys, "bench", "--model", str(world.path), "--batch", "8", "--steps", "20", "--sim", "wall",
                          "--no-ppo", "--device", "cpu", "--repeats", "3", "--json")
    assert rc == 0, err
    runs = result["repeats"]["imagine_cpu"]
    assert len(runs) == 3 and result["imagine_steps_per_s"]["cpu"] == sorted(runs)[1]  # the median of the repeats
    assert result["repeats"]["pointmaze"] == []
    assert set(result["sim_steps_per_s"]) == {"wall"} and result["sim_steps_per_s"]["wall"] > 0
    assert result["wall_vector_steps_per_s"] > 0
    assert set(result["imagine_steps_per_s"]) == {"cpu"} and result["imagine_steps_per_s"]["cpu"] > 0
    assert set(result["feature_sim_steps_per_s"]) == {"wall"} and result["feature_sim_steps_per_s"]["wall"] > 0
    ratios = result["ratios"]
    assert ratios["imagine_cpu_vs_pointmaze_pixel_steps"] is None  # --sim wall: no pointmaze to compare with
    assert ratios["imagine_cpu_sim_time_vs_pointmaze"] is None
    expected = result["imagine_steps_per_s"]["cpu"] / result["feature_sim_steps_per_s"]["wall"]
    assert ratios["imagine_cpu_vs_wall_feature_sim"] == pytest.approx(expected, abs=0.051)
    assert "ppo_steps_per_s" not in result and "CPU cores" in result["machine"]


@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")  # bench's fixed batch vs 64 steps
def test_bench_ppo_steps_per_s(world):
    model = WorldModel.load(world.path)
    assert bench.ppo_steps_per_s(model, "imagine", num_envs=4, steps=64) > 0
    with pytest.raises(ValueError, match="where"):
        bench.ppo_steps_per_s(model, "bogus", num_envs=4, steps=64)


# ----- help ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command, options", [
    ("calibrate", ["--model", "--data", "--demos", "--out", "--metric", "--json"]),
    ("train-agent", ["--model", "--algo", "--out", "--steps", "--num-envs", "--task", "--reward", "--resume",
                     "--json"]),
    ("evaluate", ["--agent", "--env", "--episodes", "--seed", "--video", "--per-episode", "--json"]),
    ("bench", ["--model", "--batch", "--sim", "--no-ppo", "--steps", "--json"]),
])
def test_help_of_each_agent_command(capsys, command, options):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: wm-gym {command}")
    assert all(option in out for option in options)
