"""The CLI generated from the config dataclasses: option forms, help from the fields' comments, the README
table, and the refusals of options a command would ignore."""
import argparse
import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import wm_gym.cli
from wm_gym.agents.train_agent import AgentConfig
from wm_gym.cli import HANDLERS, _planner_config, build_parser, main
from wm_gym.cli_options import (COMMANDS, FIELD_OPTIONS, cli_table_markdown, command_options, config_from,
                                field_comments, field_options)
from wm_gym.imagine.config import ImagineConfig
from wm_gym.online import OnlineConfig
from wm_gym.rewards import REWARDS
from wm_gym.train.world_model import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"


# ----- the generator -------------------------------------------------------------------------------------
@dataclass
class Toy:
    name: str                      # what it is called
    threads: int = 0               # CPU threads (0: all)
    ranks: int | str = "auto"      # processes: a number, or auto
    widths: list[int] = field(default_factory=lambda: [1, 2])  # layer widths
    tags: list[str] = field(default_factory=list)  # labels, "#" in a string is no comment,
                                                   # continued on this line
    dirs: list[str] = field(default_factory=lambda: ["base"])  # folders
    # a section comment, not a field's
    fast: bool = False
    #: a doc comment above its field
    slow: bool = True


def toy_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    for option in field_options(Toy):
        option.add_to(parser)
    return parser


def test_a_new_field_is_an_option_with_its_comment_as_help():
    comments = field_comments(Toy)
    assert comments["tags"] == 'labels, "#" in a string is no comment, continued on this line'
    assert comments["slow"] == "a doc comment above its field" and "fast" not in comments
    args = toy_parser().parse_args(["--name", "n", "--threads", "3", "--ranks", "4", "--widths", "8", "16",
                                    "--tags", "a", "--tags", "b", "--fast", "--no-slow"])
    assert (args.name, args.threads, args.ranks, args.widths, args.tags, args.fast, args.slow) == \
        ("n", 3, 4, [8, 16], ["a", "b"], True, False)
    assert toy_parser().parse_args(["--name", "n", "--ranks", "auto"]).ranks == "auto"
    assert toy_parser().parse_args(["--name", "n"]).dirs == ["base"]
    assert toy_parser().parse_args(["--name", "n", "--dirs", "a", "--dirs", "b"]).dirs == ["a", "b"]  # not base too
    assert args.given == {"name", "threads", "ranks", "widths", "tags", "fast", "slow"}
    help_text = toy_parser().format_help()
    assert "CPU threads (0: all) (default: 0)" in help_text and "(repeatable)" in help_text
    with pytest.raises(SystemExit):
        toy_parser().parse_args([])  # --name has no default: required


def test_a_field_with_no_command_line_form_is_named():
    @dataclass
    class Bad:
        overrides: dict = field(default_factory=dict)  # e.g. {"latent": {"lr": 1e-3}}

    with pytest.raises(TypeError, match="Bad.overrides.*FIELD_OPTIONS"):
        field_options(Bad)


def test_field_options_name_existing_fields():
    for cls, table in FIELD_OPTIONS.items():
        for path in table:
            owner, *parents, name = cls, *path.split(".")
            for parent in parents:
                owner = typing.get_type_hints(owner)[parent]
            assert name in {f.name for f in dataclasses.fields(owner)}, f"FIELD_OPTIONS[{cls.__name__}][{path!r}]"


def test_cli_module_defines_no_option_and_dispatches_every_command():
    assert "add_argument" not in inspect.getsource(wm_gym.cli)
    assert set(HANDLERS) == {c.name for c in COMMANDS}


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_every_option_explains_itself(name, capsys):
    for option in command_options(name):
        assert option.kwargs["help"].replace("(default: %(default)s)", "").strip(), f"{name} {option.flag}"
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(option.flag in out or option.positional for option in command_options(name))


# ----- option forms kept from the hand-written parser ------------------------------------------------------
def test_repeated_options_positionals_and_flags_parse_as_before():
    parser = build_parser()
    args = parser.parse_args(["train", "--data", "D", "--out", "M.pt", "--stage-steps", "flow=100", "--stage-steps",
                              "latent=5", "--compile", "--resume", "--ranks", "2"])
    assert (args.stage_steps, args.compile, args.resume, args.ranks) == (["flow=100", "latent=5"], "inductor", True, 2)
    config = config_from(args, TrainConfig, progress=False)
    assert (config.data, config.out, config.compile, config.resume, config.progress) == (["D"], "M.pt", "inductor",
                                                                                         True, False)
    assert config_from(parser.parse_args(["train", "--data", "A", "--data", "B", "--out", "M.pt"]), TrainConfig).data == ["A", "B"]
    assert parser.parse_args(["train-distance", "--model", "M", "--data", "A", "--data", "B"]).data == ["A", "B"]
    assert parser.parse_args(["ingest", "a.mp4", "b.mp4", "--out", "O"]).inputs == ["a.mp4", "b.mp4"]
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data", "D", "--out", "M.pt", "--preset", "huge"])  # choices


def test_online_builds_its_nested_finetune_config_under_the_old_option_names():
    args = build_parser().parse_args(["online", "--out", "R", "--finetune-steps", "7", "--finetune-lr", "0.01",
                                      "--batch-size", "3", "--adversarial", "--finetune-horizon", "2", "--seed", "5",
                                      "--data", "A", "--data", "B", "--horizon", "4"])
    config = config_from(args, OnlineConfig, batch=args.batch or args.episodes,
                         finetune={"seed": args.seed, "progress": False})
    assert (config.finetune.steps, config.finetune.lr, config.finetune.batch_size, config.finetune.adversarial,
            config.finetune.horizon, config.finetune.seed) == (7, 0.01, 3, True, 2, 5)
    assert (config.data, config.batch, config.seed) == (["A", "B"], 50, 5)
    assert _planner_config(args).horizon == 4  # the planner's --horizon, not the fine-tuning's


def test_plan_planner_config_follows_budget_and_seed():
    args = build_parser().parse_args(["plan", "--mpc", "--budget", "dino-wm", "--scales", "1", "2"])
    config = _planner_config(args)
    assert (config.mpc, config.execute, config.seed, config.scales) == (True, 5, 1000, (1, 2))
    assert _planner_config(build_parser().parse_args(["plan"])).mpc is False


# ----- the README table ------------------------------------------------------------------------------------
def test_readme_cli_table_is_the_generated_one():
    section = README.read_text().split("\n## CLI\n", 1)[1].split("\n## ", 1)[0]
    assert cli_table_markdown() in section, "README's CLI table drifted: paste `python -m wm_gym.cli_options " \
                                            "--readme-table` into its '## CLI' section"


# ----- defect 10: online --agent refuses the planner's options -----------------------------------------------
@pytest.mark.parametrize("extra", [["--planner", "cem"], ["--mpc"], ["--terminal", "temporal"], ["--prior", "p.zip"],
                                   ["--waypoints", "D"], ["--value-agent", "v.zip"], ["--planner", "gbp"]])
def test_online_agent_refuses_planner_options(extra, tmp_path, capsys):
    rc = main(["online", "--agent", str(tmp_path / "a.zip"), "--out", str(tmp_path / "run"), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and extra[0] in err and "--agent" in err
    assert not (tmp_path / "run").exists()


# ----- defect 11: the reward names, and calibrate's demo-only options ----------------------------------------
def test_reward_help_names_every_reward(capsys):
    reward_help = next(o.kwargs["help"] for o in command_options("train-agent") if o.dest == "reward")
    for comment in (reward_help, field_comments(AgentConfig)["reward"], field_comments(ImagineConfig)["reward"]):
        assert all(name in comment for name in REWARDS), comment


@pytest.mark.parametrize("extra", [["--seed", "3"], ["--heldout-fraction", "0.5"], ["--demo-episodes", "4"]])
def test_calibrate_refuses_demo_options_without_demos(extra, tmp_path, capsys):
    rc = main(["calibrate", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and extra[0] in err and "--demos" in err and "deterministic" in err
    seed_help = next(o.kwargs["help"] for o in command_options("calibrate") if o.dest == "seed")
    assert "with --demos" in seed_help and "held out" in seed_help
