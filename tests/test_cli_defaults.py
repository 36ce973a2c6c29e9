"""Every CLI option that mirrors a config field has the field's default, so the two cannot drift apart."""
import dataclasses

import pytest

from wm_gym.agents.planners import PlannerConfig
from wm_gym.agents.train_agent import AgentConfig
from wm_gym.cli import build_parser
from wm_gym.online import OnlineConfig
from wm_gym.temporal_distance import TemporalDistanceConfig
from wm_gym.train.finetune import FinetuneConfig
from wm_gym.train.world_model import TrainConfig

#: command line with its required arguments -> (config class, CLI defaults known to differ, and why)
COMMANDS = {
    ("train", "--data", "D", "--out", "M.pt"): (TrainConfig, {}),
    ("train-agent", "--out", "A.zip"): (AgentConfig, {}),
    ("train-distance", "--model", "M", "--data", "D"): (TemporalDistanceConfig, {}),
    ("finetune", "--model", "M", "--data", "D", "--out", "M2.pt"): (FinetuneConfig, {}),
    ("online", "--out", "R"): (OnlineConfig, {"data": "repeatable --data, None until given",
                                              "batch": "None: all of a round's --episodes in one batch"}),
    ("plan",): (PlannerConfig, {
        "mpc": "--mpc is opt-in on the CLI (open loop unless asked)",
        "execute": "None: 1, or 5 under --budget dino-wm / swm",
        "seed": "--seed is the first reset seed (1000); the planner's own seed follows it"}),
}


@pytest.mark.parametrize("argv", list(COMMANDS), ids=[argv[0] for argv in COMMANDS])
def test_cli_defaults_equal_the_config_defaults(argv):
    config_class, known = COMMANDS[argv]
    args = vars(build_parser().parse_args(list(argv)))
    compared = 0
    for field in dataclasses.fields(config_class):
        no_default = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        given = "--" + field.name.replace("_", "-") in argv  # the command's required arguments
        if field.name not in args or field.name in known or no_default or given:
            continue
        default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
        assert args[field.name] == default, f"{argv[0]} --{field.name.replace('_', '-')}: CLI {args[field.name]!r}, " \
                                            f"{config_class.__name__} {default!r}"
        compared += 1
    assert compared >= 5  # the command really mirrors its config


def test_train_agent_exposes_the_ppo_settings_the_config_has():
    args = build_parser().parse_args(["train-agent", "--out", "a.zip", "--gamma", "0.99", "--n-epochs", "8",
                                      "--net-arch", "64", "64", "--bc-epochs", "5"])
    assert (args.gamma, args.n_epochs, args.net_arch, args.bc_epochs) == (0.99, 8, [64, 64], 5)
