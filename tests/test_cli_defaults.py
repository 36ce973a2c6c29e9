"""Every CLI option is a config field and defaults to the field's own default, so the two cannot drift apart;
the few that differ on purpose say why in ``FIELD_OPTIONS`` and are listed here."""
import dataclasses
import typing

import pytest

from wm_gym.cli import build_parser
from wm_gym.cli_options import COMMANDS, FIELD_OPTIONS, Cli, command_options

#: (config, field) whose command-line default is its own: --mpc is opt-in, --execute follows --budget,
#: online's --batch is all of a round's --episodes.
OWN_DEFAULTS = {("PlannerConfig", "mpc"), ("PlannerConfig", "execute"), ("OnlineConfig", "batch")}


def required_argv(name: str) -> list[str]:
    """A command line of ``name`` with a placeholder for each required option and positional."""
    argv = [name]
    for option in command_options(name):
        placeholder = "1" if option.kwargs.get("type") in (int, float) else "x"
        if option.positional:
            argv.append(placeholder)
        elif option.kwargs.get("required"):
            argv += [option.flag, placeholder]
    return argv


def field_of(owner: type, path: str) -> dataclasses.Field:
    """The field at ``path`` ("finetune.steps": a nested config's) of the dataclass ``owner``."""
    cls, *parents, name = owner, *path.split(".")
    for parent in parents:
        cls = typing.get_type_hints(cls)[parent]
    return next(f for f in dataclasses.fields(cls) if f.name == name)


@pytest.mark.parametrize("name", [c.name for c in COMMANDS])
def test_cli_defaults_equal_the_config_defaults(name):
    args = vars(build_parser().parse_args(required_argv(name)))
    own = set()
    for option in command_options(name):
        if option.positional or option.kwargs.get("required"):
            continue
        f = field_of(option.owner, option.path)
        cli = FIELD_OPTIONS.get(option.owner, {}).get(option.path, Cli())
        if cli.default is not Cli().default:
            own.add((option.owner.__name__, option.path))
            assert args[option.dest] == cli.default
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        assert args[option.dest] == default, f"{name} {option.flag}: CLI {args[option.dest]!r}, " \
                                             f"{option.owner.__name__}.{option.path} {default!r}"
    assert own <= OWN_DEFAULTS, f"{name}: new command-line defaults {own - OWN_DEFAULTS}: list them (and why) here"


def test_every_config_field_is_an_option_or_says_why_not():
    for command in COMMANDS:
        options = {(o.owner, o.path) for o in command_options(command.name)}
        for cls in command.takes:
            for f in dataclasses.fields(cls):
                cli = FIELD_OPTIONS.get(cls, {}).get(f.name, Cli())
                nested = dataclasses.is_dataclass(typing.get_type_hints(cls)[f.name])
                assert (cls, f.name) in options or cli.omit or nested, f"{command.name}: {cls.__name__}.{f.name}"


def test_train_agent_exposes_the_ppo_settings_the_config_has():
    args = build_parser().parse_args(["train-agent", "--out", "a.zip", "--gamma", "0.99", "--n-epochs", "8",
                                      "--net-arch", "64", "64", "--bc-epochs", "5"])
    assert (args.gamma, args.n_epochs, args.net_arch, args.bc_epochs) == (0.99, 8, [64, 64], 5)
