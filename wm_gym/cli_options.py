"""The ``wm-gym`` command line, generated from config dataclasses.

Every option is a dataclass field, written once: ``--name`` is the field's name, its type and
default are the field's, and its ``--help`` line is the field's trailing ``# comment`` (with the
comment lines indented under it). A sub-command is the list of dataclasses whose fields it takes
(:data:`COMMANDS`): the configs of the library (``TrainConfig``, ``AgentConfig``, ...) plus a small
``*Options`` dataclass here for what only the command line has (``--json``, ``--video``, ...).
A field added to a config is an option of every command that takes it, with nothing else to edit.

Where the plain form is not right, :data:`FIELD_OPTIONS` says how a field differs on the command
line (:class:`Cli`: choices, a metavar, a positional, a default of its own, or left off and why).
``config_from(args, TrainConfig)`` turns the parsed options back into the config, so commands do
not copy fields by hand, and :func:`cli_table_markdown` prints the README's CLI table from the same
source (``python -m wm_gym.cli_options --readme-table``).

Type → option: ``int``/``float``/``str`` (``| None`` allowed) → one value; ``bool`` → a flag
(``--no-x`` too when it defaults to True); ``list[str]`` → repeatable (``--data A --data B``);
``list[int]``/``tuple[int, ...]`` → several values (``--net-arch 64 64``); a nested config dataclass →
its fields as ``--<field>-<name>``. Any other type must be given a :class:`Cli` entry or left off.
"""
from __future__ import annotations

import argparse
import functools
import inspect
import io
import re
import sys
import textwrap
import tokenize
import types
import typing
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

from wm_gym.agents.distill import TEACHER_STARTS
from wm_gym.agents.planners import PLANNERS, TERMINALS, PlannerConfig
from wm_gym.agents.train_agent import ALGOS, POLICY_NETS, TEACHERS, AgentConfig
from wm_gym.imagined_episodes import IMAGINED_TESTS
from wm_gym.device import PRECISIONS
from wm_gym.encoders import ENCODERS
from wm_gym.envs.registration import GOAL_SPLITS, SIMS
from wm_gym.grounding import GroundingConfig
from wm_gym.imagine.config import ACTION_SPACES, TASKS
from wm_gym.latent_actions.regularizers import REGULARIZERS
from wm_gym.online import OnlineConfig
from wm_gym.rewards.distance import METRICS
from wm_gym.temporal_distance import TemporalDistanceConfig
from wm_gym.train.finetune import FinetuneConfig
from wm_gym.train.world_model import PRESETS, TrainConfig
from wm_gym.world_model import LATENTS, STEP_MODES

T = TypeVar("T")

SIM_HELP = ("real sim: wall, pointmaze, pusht, dmc-reacher, dmc-point_mass (v1, DINO-WM parity), or a full id such as "
            "wm_gym/Wall-v0 for an older version")
BUDGET_HELP = ("evaluation protocol: dino-wm (success checked every 5 chunks, reported after 2/4/10/20 replans = "
               "50/100/250/500 sim steps), swm (50 sim steps, success at any step), task (the sim's own task episode run to "
               "its end, with its reward summed: dm_control's 1,000 steps from the suite's own starts and targets) or a "
               "number of sim steps (default: the sim's episode length); see docs/protocol.md")
LOOK_HELP = ("draw the sim another way, the physics unchanged ("
             + "; ".join(f"{name}: {', '.join(spec.looks)}" for name, spec in SIMS.items() if spec.looks)
             + "; the other sims have none yet): video of a changed look, to test or adapt a model on")
#: Help for common field names that carry no comment: they mean the same in every config.
COMMON_HELP = {
    "seed": "random seed",
    "device": "auto | cpu | cuda | cuda:N",
    "lr": "learning rate",
    "batch_size": "samples per gradient step",
    "steps": "gradient steps",
    "hidden": "hidden layer width",
    "weight_decay": "weight decay of the optimiser",
    "log_dir": "TensorBoard folder",
}


# ----- what only the command line has ------------------------------------------------------------
@dataclass
class CommonOptions:
    """Every command's."""
    json: bool = False              # print one JSON object on the last line


@dataclass
class CollectOptions:
    env: str                        # the real sim (its help: SIM_HELP)
    episodes: int                   # number of episodes to collect
    out: str                        # dataset directory to create (or resume)
    policy: str = "random"          # collection policy: random | noisy-expert
    seed: int = 0                   # episode i is fully determined by (seed, i)
    workers: int = 1                # parallel worker processes (results do not depend on it)
    max_steps: int | None = None    # steps per episode (default: the sim's episode length)
    goal_split: str | None = None   # sims with recorded goal sets (pusht): the trajectories resets start from,
                                    # train (default) | eval | all; evaluation uses eval, held out from train
    frame_stride: int = 1           # render and store only every k-th frame (a model of frameskip k reads no
                                    # others); the actions of every sim step are kept
    look: str | None = None         # draw the sim another way, the physics unchanged (its help: LOOK_HELP)


@dataclass
class IngestOptions:
    inputs: list[str]               # video files, frame folders, or folders holding them (episode name: the
                                    # video's file stem or the frame folder's name)
    out: str                        # dataset directory to create (or resume)
    image_size: int = 64            # square frame size after the center crop
    fps_stride: int = 1             # keep every n-th frame (1: all frames)
    max_frames: int | None = None   # keep at most this many frames per episode
    labels: str | None = None       # actions for some episodes: .npz with one [T, A] array per episode name, or
                                    # .json {name: [[a0, a1, ...], ...]}; row t leads from kept frame t to t+1
                                    # (T = frames kept - 1)


@dataclass
class TrainOptions:
    stage_steps: list[str] = field(default_factory=list)  # override one stage's steps, e.g. flow=1000


@dataclass
class FinetuneOptions:
    model: str                      # world model: zoo name or file
    data: list[str]                 # dataset dir, or an online round's episodes folder
    out: str                        # world-model file to write
    device: str = "auto"


@dataclass
class EvalWmOptions:
    model: str                      # world-model file or zoo name (e.g. wall, pointmaze, dmc-reacher)
    data: str                       # dataset directory (ideally held-out episodes from a fresh seed)
    mode: str = "controller"        # how z is produced: the controller from the recorded actions, or the flow
    windows: int = 256              # rollout windows evaluated
    video: str | None = None        # folder for imagined-vs-true mp4 and PNG
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"         # the model's autocast in the rollouts (auto: bf16 on CUDA and CPUs with bf16 units) | bf16 | fp32


@dataclass
class CalibrateOptions:
    model: str                      # world-model file (or zoo name)
    data: str                       # held-out dataset of the same sim (e.g. a fresh seed)
    demos: str | None = None        # dataset of demos for the bank (e.g. `collect --policy noisy-expert`)
    demo_episodes: int | None = None  # with --demos: use only the first N demo episodes
    heldout_fraction: float = 0.2   # with --demos: share of the demos reserved for evaluation
    seed: int = 0                   # with --demos: which demos are held out (the calibration itself is
                                    # deterministic: it fits on even episodes and reports on odd ones)
    metric: str = "l1"              # distance to the goal: a feature distance, or temporal, the learned steps to
                                    # go (needs `wm-gym train-distance` first)
    probe: bool = False             # also fit a linear state probe on --data's frames and true states (saved with
                                    # the model): the sim's own success test on probed states, reported on real and
                                    # imagined pairs, and `evaluate --imagined probe`
    out: str | None = None          # write here instead of overwriting --model


@dataclass
class TrainDistanceOptions:
    model: str                      # world-model file or zoo name
    data: list[str]                 # dataset of the same sim, e.g. random and expert episodes: random ones cover
                                    # the space, expert ones the shortest paths
    out: str | None = None          # write here instead of overwriting --model
    max_episodes: int | None = None  # use only the first N episodes of each dataset
    log_dir: str | None = None      # TensorBoard folder
    device: str = "auto"


@dataclass
class GroundOptions:
    data: str                       # dataset folder with action labels (at least on some episodes)
    out: str                        # grounding file to write (G.pt)
    model: str = "wall"             # latent-action world model (rla or lam): zoo name or file
    device: str = "auto"            # where features and latent actions are computed


@dataclass
class AlignOptions:
    model: str                      # world model trained on the old look: zoo name or file
    old: str                        # unlabelled episodes of the look the model was trained on (e.g. its random videos)
    new: str                        # unlabelled episodes of the new look, the same kind of behaviour
    out: str                        # aligned model file to write
    look: str = "new"               # a name for the new look, recorded in the model
    max_episodes: int | None = 100  # use only the first N episodes of each dataset
    ridge: float = 1e-3             # covariance regulariser (times the mean variance)
    device: str = "auto"


@dataclass
class EvaluateOptions:
    agent: str                      # AGENT.zip from train-agent
    model: str | None = None        # world model (default: the one the agent was trained on)
    grounding: str | None = None    # latent-action agents: the `wm-gym ground` file mapping (features, z) to real
                                    # action chunks (default: the one recorded at training)
    per_episode: bool = False       # include per-episode results
    imagined: str | None = None     # also run the agent in its world model, on the demo bank's held-out demos under
                                    # the same budget, success by this test: calibrated (the model's threshold) |
                                    # real (the real-encoding threshold) | temporal (< 1 step to go by the head) |
                                    # probe (the sim's own test on probed states: calibrate --probe)
    paired: bool = False            # with --imagined: also run the real sim from the imagined episodes' own starts and
                                    # goals, and report where the two agree and how far the imagined state drifts from
                                    # the real one (paired; wm_gym/paired_episodes.py)


@dataclass
class RealRunOptions:
    """Episodes in the real sim (``evaluate`` and ``plan``)."""
    env: str | None = None          # the real sim (its help: SIM_HELP)
    episodes: int = 50              # real episodes
    seed: int = 1000                # episode i resets with seed + i: fresh seeds, distinct from the data's (plan:
                                    # the planner's seed too)
    max_steps: int | None = None    # agent steps per episode (default: sim length / frameskip)
    budget: str | None = None       # the evaluation protocol (its help: BUDGET_HELP)
    video: str | None = None        # folder for mp4s of the first episodes (plan: real | planned | goal)
    look: str | None = None         # draw the sim another way, the physics unchanged (its help: LOOK_HELP)
    device: str = "auto"


@dataclass
class PlanOptions:
    model: str = "wall"             # world model: zoo name or file
    precision: str = "auto"         # the model's autocast while planning (auto: bf16 on CUDA and CPUs with bf16 units) | bf16 | fp32


@dataclass
class PlannerOptions:
    """What plans, besides :class:`PlannerConfig` (``plan`` and ``online``)."""
    planner: str = "gbp"            # gbp: Adam on the actions; gd: plain gradient descent; cem / mppi: sampling
    value_agent: str | None = None  # a PPO agent (train-agent .zip) on this model: its critic adds a learned
                                    # cost-to-go, -w·V(end of plan, goal), to the goal cost (w: --value-weight)
    prior: str | None = None        # a policy prior (TD-MPC2 style): this train-agent agent (task goal, on this
                                    # model; a .zip or a zoo agent's name, e.g. wall-prior) acts in the model over
                                    # the horizon; its plan is a start (GBP/GD begin from it, CEM/MPPI's first mean,
                                    # where cheaper than the MPC warm start); none: no prior, also when the model's
                                    # recipe names one
    waypoints: str | None = None    # dataset folder(s) (wm-gym collect; random data covers most states) whose
                                    # frames form a graph in feature space; the planner then aims at the waypoint
                                    # --waypoint-lookahead steps along the shortest path to the goal instead of at
                                    # the goal (goes around walls)
    waypoint_lookahead: float = 1.5  # how far along the path the waypoint is, in model steps


@dataclass
class OnlineOptions:
    model: str = "wall"             # starting world model: zoo name or file


@dataclass
class BenchOptions:
    sims: bool = False              # only the real sims
    sim: list[str] = field(default_factory=list)  # only this sim
    model: list[str] = field(default_factory=list)  # world model for imagination, zoo name or file (default:
                                    # every zoo model shipped in this install)
    batch: int = 256                # imagined envs stepped together
    device: str = "auto"            # auto: CPU, plus CUDA when present; cpu: CPU only
    no_ppo: bool = False            # skip the SB3 PPO end-to-end timing
    precision: str = "auto"         # the models' autocast in every imagination timing (auto: bf16 on CUDA and CPUs
                                    # with bf16 units, as imagination runs by default) | bf16 | fp32; reported per model
    steps: int = 300                # steps timed per sim
    repeats: int = 3                # imagination and PointMaze pixel steps are timed alternately this many times;
                                    # medians are compared
    peak_seconds: float = 2.0       # seconds each GEMM peak probe runs (square matmuls: CPU fp32 once per repeat,
                                    # alternated with imagination like PointMaze; CUDA fp32 and bf16 once)
    seed: int = 0


# ----- where a field differs on the command line ------------------------------------------------
_SAME: Any = object()  # Cli.default: the field's own


@dataclass(frozen=True)
class Cli:
    """How one field appears on the command line where the plain form (``--field-name``, the field's type,
    default and comment) is not right."""
    flag: str | None = None         # the option's name (default: --field-name, nested: --parent-field-name)
    help: str | None = None         # instead of the field's comment
    default: Any = _SAME            # the command line's own default (the help says why)
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    required: bool | None = None    # default: required when the field has no default
    positional: bool = False
    nargs: str | None = None
    const: Any = None
    negatable: bool = False         # a bool flag off by default that also takes --no-x (a model's recipe may turn
                                    # it on: wm-gym plan)
    omit: str = ""                  # not on the command line: why


#: Per dataclass, field name (dotted for a nested config's field) -> how it differs on the command line.
FIELD_OPTIONS: dict[type, dict[str, Cli]] = {
    CollectOptions: {"env": Cli(help=SIM_HELP), "goal_split": Cli(choices=GOAL_SPLITS), "look": Cli(help=LOOK_HELP)},
    IngestOptions: {"inputs": Cli(positional=True, metavar="INPUT"), "labels": Cli(metavar="FILE")},
    TrainConfig: {
        "preset": Cli(choices=tuple(PRESETS)), "latent": Cli(choices=LATENTS), "regularizer": Cli(choices=REGULARIZERS),
        "encoder": Cli(choices=ENCODERS), "precision": Cli(choices=PRECISIONS),
        "compile": Cli(nargs="?", const="inductor", metavar="BACKEND"),
        "progress": Cli(omit="--json turns the progress bars off"),
        "stage_overrides": Cli(omit="--stage-steps sets a stage's steps"),
    },
    TrainOptions: {"stage_steps": Cli(metavar="STAGE=N")},
    FinetuneConfig: {"progress": Cli(omit="--json turns the progress bars off")},
    TemporalDistanceConfig: {"precision": Cli(choices=PRECISIONS)},
    EvalWmOptions: {"mode": Cli(choices=STEP_MODES), "precision": Cli(choices=PRECISIONS)},
    PlanOptions: {"precision": Cli(choices=PRECISIONS)},
    BenchOptions: {"precision": Cli(choices=PRECISIONS)},
    CalibrateOptions: {"metric": Cli(choices=(*METRICS, "temporal"))},
    AgentConfig: {
        "out": Cli(required=True), "algo": Cli(choices=ALGOS), "task": Cli(choices=TASKS),
        "action_space": Cli(choices=ACTION_SPACES), "metric": Cli(choices=METRICS), "grounding": Cli(metavar="G.pt"),
        "success_metric": Cli(choices=(*METRICS, "temporal")), "precision": Cli(choices=PRECISIONS),
        "teacher": Cli(choices=(*TEACHERS, "none")), "teacher_start": Cli(choices=TEACHER_STARTS),
        "policy_net": Cli(choices=POLICY_NETS),
        "progress": Cli(omit="--json turns the progress bars off"),
    },
    EvaluateOptions: {"grounding": Cli(metavar="G.pt"), "imagined": Cli(choices=IMAGINED_TESTS)},
    RealRunOptions: {"env": Cli(help=SIM_HELP + " (default: the model's sim)"),
                     "budget": Cli(metavar="dino-wm|swm|task|STEPS", help=BUDGET_HELP), "look": Cli(help=LOOK_HELP)},
    PlannerOptions: {"planner": Cli(choices=PLANNERS), "prior": Cli(metavar="AGENT.zip"),
                     "waypoints": Cli(metavar="DIR[,DIR]")},
    PlannerConfig: {
        "mpc": Cli(default=False, negatable=True,
                   help="replan after every executed chunk (warm-started); open loop without it"),
        "execute": Cli(default=None, help="with --mpc: chunks of each plan executed before replanning (default 1; 5 "
                       "under --budget dino-wm or swm, as DINO-WM's MPC and stable-worldmodel's receding horizon)"),
        "mode": Cli(choices=STEP_MODES), "terminal": Cli(choices=TERMINALS), "prior_samples": Cli(metavar="FRACTION"),
        "seed": Cli(omit="follows the command's --seed"),
    },
    OnlineConfig: {
        "env": Cli(help=SIM_HELP + " (default: the model's sim)"),
        "batch": Cli(default=None, help="episodes run in lockstep (default: all of a round, at most 200: each sim "
                     "renders on its own, so 500 PointMaze sims at once need more than 24 GiB)"),
        "grounding": Cli(metavar="G.pt"), "retrain_steps": Cli(metavar="N"),
        "progress": Cli(omit="--json turns the progress bars off"),
        "finetune.batch_size": Cli(flag="--batch-size"), "finetune.adversarial": Cli(flag="--adversarial"),
        "finetune.seed": Cli(omit="the run's --seed"), "finetune.progress": Cli(omit="--json turns it off"),
    },
}


@dataclass(frozen=True)
class Option:
    """One command-line option, resolved from a dataclass field and its :class:`Cli` entry."""
    owner: type                     # the dataclass the command takes (the outer one for a nested field)
    path: str                       # the field's name; "finetune.steps" inside a nested config
    flag: str                       # "--finetune-steps", or the positional's dest
    dest: str                       # where argparse puts it
    kwargs: dict[str, Any]          # for ``add_argument``
    positional: bool = False

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        action = _recording(parser, self.kwargs.get("action", "store"))
        kwargs = {**self.kwargs, "action": action}
        if self.positional:
            parser.add_argument(self.dest, **kwargs)
        else:
            parser.add_argument(self.flag, dest=self.dest, **kwargs)


def field_options(cls: type, prefix: str = "", owner: type | None = None, help_prefix: str = "") -> list[Option]:
    """The options of ``cls``'s fields, in field order (a nested config's fields in its place)."""
    owner = owner or cls
    table, hints, comments = FIELD_OPTIONS.get(owner, {}), typing.get_type_hints(cls), field_comments(cls)
    out = []
    for f in fields(cls):
        path = prefix + f.name
        cli = table.get(path, Cli())
        if cli.omit:
            continue
        if is_dataclass(hints[f.name]) and cli == Cli():
            parent = comments.get(f.name) or f.name
            out += field_options(hints[f.name], path + ".", owner, help_prefix=f"{parent}: ")
            continue
        help_text = cli.help or comments.get(f.name) or COMMON_HELP.get(f.name, "")
        out.append(_option(owner, path, f, hints[f.name], cli, help_prefix + help_text if help_text else ""))
    return out


def _option(owner: type, path: str, f: Field, hint: Any, cli: Cli, help_text: str) -> Option:
    name = f"{owner.__name__}.{path}"
    element, container = _plain_type(hint, name)
    default = _field_default(f) if cli.default is _SAME else cli.default
    required = cli.required if cli.required is not None else default is MISSING
    kwargs: dict[str, Any] = {}
    if element is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default is True or cli.negatable else "store_true"
    elif container is not None and (cli.positional or element is not str):
        kwargs.update(nargs="+", type=element)
    elif container is not None:
        kwargs.update(action="append", type=element)
    else:
        kwargs["type"] = element
    for key in ("choices", "metavar", "nargs", "const"):
        if getattr(cli, key) is not None:
            kwargs[key] = getattr(cli, key)
    if not cli.positional:
        kwargs["required"] = required
    if default is not MISSING and not required:
        kwargs["default"] = list(default) if isinstance(default, list) else default
    kwargs["help"] = _help(help_text, kwargs, required)
    flag = cli.flag or "--" + path.replace(".", "_").replace("_", "-")
    dest = path if cli.positional else flag.lstrip("-").replace("-", "_")
    return Option(owner, path, flag, dest, kwargs, cli.positional)


def _help(text: str, kwargs: dict[str, Any], required: bool) -> str:
    """The comment, with ``%`` escaped for argparse, "(repeatable)" and the default where it says nothing."""
    text = text.replace("%", "%%")
    if kwargs.get("action") == "append" and "repeatable" not in text:
        text += " (repeatable)"
    default = kwargs.get("default")
    shown = default is not None and default is not False and default != [] and kwargs.get("action") not in (
        argparse.BooleanOptionalAction,)  # which adds its own
    if not required and shown and "default" not in text:
        text += " (default: %(default)s)"
    return text.strip()


def _field_default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else MISSING


def _plain_type(hint: Any, name: str) -> tuple[Callable[[str], Any], type | None]:
    """(value type, list or tuple or None) of a field's type: ``int | None`` -> (int, None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _plain_type(rest[0], name)
        if set(rest) <= {int, float, str}:  # e.g. ``int | str``: "4" -> 4, "auto" -> "auto"
            return _first_parse(tuple(t for t in (int, float, str) if t in rest)), None
    elif origin in (list, tuple) and len({a for a in args if a is not Ellipsis}) == 1 and args[0] in (int, float, str):
        return args[0], origin
    elif hint in (bool, int, float, str):
        return hint, None
    raise TypeError(f"{name}: a field of type {hint} has no command-line form; give it a Cli(...) entry, or "
                    f"Cli(omit='why') to leave it off, in FIELD_OPTIONS of wm_gym/cli_options.py")


@functools.cache
def _first_parse(kinds: tuple[type, ...]) -> Callable[[str], Any]:
    """A value as the first of ``kinds`` that reads it (``int | str``: a number, else the word)."""

    def parse(text: str) -> Any:
        for kind in kinds:
            try:
                return kind(text)
            except ValueError:
                continue
        raise argparse.ArgumentTypeError(f"expected {' or '.join(k.__name__ for k in kinds)}, got {text!r}")

    parse.__name__ = "_or_".join(k.__name__ for k in kinds)
    return parse


def field_comments(cls: type) -> dict[str, str]:
    """Each field's help in the source of ``cls`` (and its dataclass bases): the trailing ``# comment`` with the
    comment-only lines indented under it, or the ``#:`` lines just above the field."""
    names, comments = {f.name for f in fields(cls)}, {}
    for klass in reversed(cls.__mro__):
        if is_dataclass(klass):
            try:
                comments.update(_source_comments(textwrap.dedent(inspect.getsource(klass)), names))
            except (OSError, TypeError):  # no source (e.g. defined in a REPL): the fields go without help
                pass
    return comments


def _source_comments(source: str, names: set[str]) -> dict[str, str]:
    comment_at = {tok.start[0]: tok.string for tok in tokenize.generate_tokens(io.StringIO(source).readline)
                  if tok.type == tokenize.COMMENT}

    def text(row: int) -> str:
        return re.sub(r"^#:?\s*", "", comment_at[row]).strip()

    out: dict[str, str] = {}
    body, last, above = None, None, []
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("class "))
    for row, line in enumerate(lines[start + 1:], start + 2):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if not stripped:
            last, above = None, []
            continue
        body = indent if body is None else body
        if indent < body:
            break
        if stripped.startswith("#"):
            if indent > body and last is not None:          # a comment continued under its field
                out[last] += " " + text(row)
            elif indent == body and stripped.startswith("#:"):  # a doc comment above a field
                above.append(text(row))
            else:                                           # a section comment
                last, above = None, []
            continue
        match = re.match(r"(\w+)\s*:", stripped) if indent == body else None
        if match and match.group(1) in names:
            parts = above + ([text(row)] if row in comment_at else [])
            if parts:
                out[match.group(1)] = " ".join(parts)
            last = match.group(1) if row in comment_at else None
        else:
            last = None
        above = []
    return out


# ----- "given" options ---------------------------------------------------------------------------
class _RecordsGiven:
    """Mixed into argparse's actions: also adds the option's dest to ``args.given``, so a command can refuse an
    option that does not apply to what it was asked (``online --agent`` has no planner to set). A repeatable
    option given replaces its default list instead of appending to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        given = getattr(namespace, "given", frozenset())
        if isinstance(self.default, list) and self.dest not in given:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)
        namespace.given = given | {self.dest}


@functools.cache
def _recording_class(base: type[argparse.Action]) -> type[argparse.Action]:
    return type(base.__name__.lstrip("_"), (_RecordsGiven, base), {})


def _recording(parser: argparse.ArgumentParser, action: str | type[argparse.Action]) -> type[argparse.Action]:
    return _recording_class(parser._registry_get("action", action, action))


# ----- the commands ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One sub-command: the dataclasses whose fields are its options, in ``--help`` order."""
    name: str
    help: str                       # one line, in `wm-gym --help`
    description: str                # its `--help` and the README table
    takes: tuple[type, ...]         # CommonOptions is added to every command
    readme: tuple[str, ...] = ()    # optional options shown in the README's usage (required ones always are)


COMMANDS: tuple[Command, ...] = (
    Command("collect", "collect episodes from a real sim into a dataset",
            "Roll out a data-collection policy in a real sim and write a Minari dataset with lossless 64x64 frames, "
            "actions, proprio, true states and success. Interrupted runs resume: re-run the same command. --look "
            "draws the scene another way (colours, dot size, a floor texture) with the same physics.",
            (CollectOptions,), ("policy", "seed", "workers", "look")),
    Command("ingest", "turn videos or folders of frame images into a dataset without actions",
            "Each video (.mp4, .mov, .avi, .mkv, .webm) and each folder of frame images (.png/.jpg, in natural name "
            "order) becomes one episode at any resolution: center-cropped to a square, resized to --image-size, with "
            "no actions, so `wm-gym train` learns the encoder, the latent actions and the flow z-prior from it. A "
            "folder of videos and/or frame folders gives one episode each. --labels attaches actions to the episodes "
            "it names only. Interrupted runs resume: re-run the same command; nothing is duplicated.",
            (IngestOptions,), ("image_size", "labels")),
    Command("train", "train a world model on a dataset",
            "Train a world model stage by stage (tqdm, TensorBoard in runs/): encoder (conv), latent actions "
            "(rla/lam), flow dynamics and controller, or the action-conditioned baseline (--latent action). Atomic "
            "checkpoints go to OUT.train-state; --resume continues an interrupted run. Prints and records each stage's "
            "seconds (train_info stage_seconds). Uses every core (one torch thread each; --ranks N: N local DDP ranks "
            "on gloo) and runs unchanged under torchrun; bf16 autocast on CUDA and on CPUs with bf16 units by default "
            "(attention in fp32 on the CPU). Action-free data (`wm-gym ingest` without --labels) trains the "
            "encoder, the latent actions and the flow as a z-prior, and skips the controller (said in the output and "
            "in the model's train_info); with labels for some episodes, flow and controller train on those only. "
            "--repa-weight adds Seq-Δ-REPA over windows of --repa-window model steps to the latent stage. Several "
            "--data folders of one sim (e.g. random episodes and demos) train as one dataset.",
            (TrainConfig, TrainOptions),
            ("preset", "latent", "action_labels", "repa_weight", "repa_window", "init_from", "adversarial", "precision", "ranks",
             "compile", "resume", "checkpoint_every", "device")),
    Command("finetune", "fine-tune a world model's dynamics on more data (optionally adversarial)",
            "Fine-tune only the dynamics (the predictor, or the controller of rla/lam models) on more data: datasets "
            "or online rounds' episode folders. The loss is the one-step feature error, or with --horizon K the error "
            "of K-step open-loop rollouts; the encoder, latent actions and flow stay frozen. --adversarial trains on "
            "FGSM-perturbed history features (eps 0.05 std) and actions (eps 0.02 std) with clean targets.",
            (FinetuneOptions, FinetuneConfig), ("steps", "lr", "horizon", "adversarial")),
    Command("eval-wm", "open-loop error, latent-action checks and a state probe for a world model",
            "Evaluate a world model on a dataset (ideally held-out episodes from a fresh seed): open-loop feature MSE "
            "at horizons 1/5/10 vs copy-last, latent reconstruction, the leakage (scene-cut) test, latent-action "
            "transfer across episodes, a linear probe of the state from the features (R²), and imagined-vs-true "
            "mp4/PNG with --video.",
            (EvalWmOptions,), ("video",)),
    Command("calibrate", "attach demos and calibrate the success threshold of a world model",
            "Pick the distance to the goal that best matches the sim's own success on held-out real data (fit on the "
            "even episodes, precision/recall reported on the odd ones), and optionally attach a demo bank (starts, "
            "goals and video-aligned rewards for WMImagine-v0) from a dataset of demos.",
            (CalibrateOptions,), ("demos", "metric", "out")),
    Command("train-distance", "fit a temporal-distance head (learned steps to a goal) on a world model",
            "Learn how many model steps separate a state from a goal, from the order of frames in the datasets' "
            "episodes (no actions needed): HILP-style V(s,g) = -|phi(s) - phi(g)| by expectile TD with -1 per step, "
            "over the model's frozen features. The head is saved inside the model; then `train-agent --reward "
            "temporal` (progress in steps) and `calibrate --metric temporal` (success test) use it. Resumable: an "
            "interrupted run continues from OUT.distance-state.",
            (TrainDistanceOptions, TemporalDistanceConfig), ("steps", "imagined_fraction", "out")),
    Command("ground", "fit the map from latent actions back to real action chunks (for latent agents)",
            "Fit a small MLP g(s_t, z) -> real action chunk [frameskip x sim action] in sim units, within the action "
            "bounds, on (s_t, z = latent_action(s_t, s_t+1), recorded chunk) triples from a seeded "
            "--labelled-fraction of the dataset's labelled episodes (held-out error reported). It lets an agent "
            "trained with `train-agent --action-space latent` act in the real sim (`evaluate --grounding G.pt`). The "
            "file records the episodes used and a fingerprint of the model's latent space; it is written atomically.",
            (GroundOptions, GroundingConfig), ("model", "labelled_fraction")),
    Command("align", "adapt a world model to a changed look from unlabelled video of both looks",
            "Write a copy of the model whose encoding maps the new look's features onto the old look's, per token "
            "(mean and covariance, CORAL), estimated from unlabelled episodes of each look (no actions, no pairing). "
            "Agents and groundings trained on the original model then act in the new look through it: `evaluate "
            "--model ALIGNED --look ...`. Imagination refuses the aligned model (its demo bank shows the old look).",
            (AlignOptions,), ("model", "old", "new", "out", "look")),
    Command("train-agent", "train an SB3 agent entirely in imagination",
            "Train PPO or SAC on world-model features (an MLP, or --policy-net keypoints: a conv over the token grid "
            "read as points) in WMImagine-v0: batched imagined rollouts with video-aligned rewards; no simulator is "
            "touched. By default the agent first clones the model's demos, "
            "and PPO's first --critic-warmup updates train only the value net, so a random critic does not drag the "
            "cloned actor off its demos. --teacher plan then distils the model's own `plan` recipe by DAgger in "
            "imagination (the planner labels every imagined state the policy reaches) before any RL. Flags not given "
            "take the model's agent recipe where it has one (`pointmaze`: --teacher plan --steps 0 --teacher-start zero "
            "--policy-net keypoints). Writes AGENT.zip, AGENT.json (its world model and task), a learning-curve PNG, "
            "TensorBoard logs and resumable checkpoints.",
            (AgentConfig,),
            ("model", "algo", "steps", "num_envs", "reward", "bc_data", "critic_warmup", "success_threshold",
             "action_space", "grounding", "teacher", "policy_net", "resume")),
    Command("evaluate", "success rate of an agent in the REAL sim",
            "Run an agent in the real simulator: render -> world-model encoder -> policy -> action chunk (a latent-"
            "action agent through its grounding map). Success is the sim's own criterion: success_rate, episodes, "
            "mean_episode_length (under --budget dino-wm also success_after_replans; under --budget task the task's "
            "mean_task_return with its 95 % interval), and mp4s. --look evaluates "
            "in the sim drawn another way (a changed look, the same physics). --imagined TEST also runs the agent in "
            "its world model under the same budget and reports that success beside the real one (imagined); --paired "
            "adds the real sim run from those same starts and goals, episode by episode (paired).",
            (EvaluateOptions, RealRunOptions),
            ("grounding", "env", "episodes", "seed", "budget", "video", "look", "imagined", "paired")),
    Command("plan", "plan with the world model (CEM, GBP, GD, MPPI) and act in the REAL sim",
            "Plan action chunks with the world model for all episodes in one batch and execute them in the real sim, "
            "open loop or replanning with --mpc; reports success, seconds_per_plan and mp4s of real | planned | goal. "
            "--waypoints aims at waypoints from a graph search over a dataset's frames (also for `online`); "
            "--terminal temporal scores plans by the learned steps to go; --prior lets an imagination agent propose "
            "the initial plan and a share of CEM's samples (TD-MPC2 style). A model that carries a recipe plans with it "
            "where no flag says otherwise (`wall`: MPC-GBP on the learned steps to go, seeded by its shipped agent, "
            "under the dino-wm budget); the output's model_recipe lists what it set.",
            (PlanOptions, RealRunOptions, PlannerOptions, PlannerConfig),
            ("model", "planner", "mpc", "horizon", "execute", "budget", "episodes", "value_agent", "waypoints",
             "terminal", "prior", "starts")),
    Command("online", "online world modeling: act in the real sim, add the trajectories, fine-tune (and retrain the "
            "agent), repeat",
            "Online World Modeling's data-aggregation loop. Each round runs --episodes real episodes with a planner "
            "(or an SB3 agent, --agent, which then takes no planner option), saves every finished trajectory "
            "atomically under OUT/round_RR/episodes, fine-tunes the dynamics (lr 1e-5, encoder frozen) on --data "
            "plus all rounds' trajectories and writes OUT/round_RR/model.pt. With --agent and --retrain-steps N (the "
            "Dreamer-style loop) the agent then continues its PPO in imagination on that fine-tuned model for N "
            "steps, warm-started from the agent that acted, and is saved as OUT/round_RR/agent.zip; the next round "
            "acts with it. Each round's result.json reports its real episodes and sim steps, this round and in "
            "total, the acting policy's success and, with --eval-episodes, the next policy's success on held-out "
            "seeds (the starting one's in OUT/base_eval.json). Re-run the same command to resume an interrupted run: "
            "nothing is lost, duplicated or trained twice.",
            (OnlineOptions, OnlineConfig, PlannerOptions, PlannerConfig),
            ("model", "rounds", "episodes", "planner", "agent", "retrain_steps", "data", "eval_episodes")),
    Command("bench", "throughput: imagination vs real-sim steps/s, FLOPs and fraction of peak, SB3 PPO in both",
            "Measure, in one run so ratios are fair: real-sim pixel steps/s of every sim, a GEMM peak (square fp32 "
            "matmuls; on CUDA fp32 and bf16), and per world model: batched imagination steps/s (CPU, and CUDA when "
            "present), the FLOPs of one imagined step (torch's FLOP counter), the fraction of the GEMM peak that "
            "reaches, the time and FLOPs of each part of a step, one real-sim agent step with encoding, and SB3 PPO "
            "end-to-end steps/s in imagination vs in the real sim (keys: flops_per_step, gemm_peak_flops, "
            "fraction_of_peak, time_breakdown_ms, ...).",
            (BenchOptions,), ("model", "batch", "repeats", "sims", "no_ppo")),
)


def command(name: str) -> Command:
    found = [c for c in COMMANDS if c.name == name]
    if not found:
        raise KeyError(f"no wm-gym command {name!r}; commands: {', '.join(c.name for c in COMMANDS)}")
    return found[0]


@functools.cache
def command_options(name: str) -> tuple[Option, ...]:
    """Every option of the command ``name``, in ``--help`` order."""
    return tuple(option for cls in (*command(name).takes, CommonOptions) for option in field_options(cls))


def option_flags(name: str, *classes: type) -> dict[str, str]:
    """dest -> flag of the options that ``classes`` give the command ``name``."""
    return {o.dest: o.flag for o in command_options(name) if o.owner in classes}


def build_parser(handlers: Mapping[str, Callable[[argparse.Namespace], Any]]) -> argparse.ArgumentParser:
    """The ``wm-gym`` parser; ``handlers[name](args)`` runs a command (``args.func``)."""
    parser = argparse.ArgumentParser(
        prog="wm-gym", description="World models as Gymnasium imagination environments, and the real sims to "
        "evaluate in.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for c in COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.description)
        for option in command_options(c.name):
            option.add_to(p)
        p.set_defaults(func=handlers[c.name], given=frozenset())
    return parser


def config_from(args: argparse.Namespace, cls: type[T], **values: Any) -> T:
    """``cls`` built from the parsed options of its fields (of ``args.command``); ``values`` set the fields a
    command derives, e.g. ``progress=not args.json`` (a nested config's field takes a dict of its own)."""
    options = {o.path: o for o in command_options(args.command) if o.owner is cls}
    return _build(args, cls, options, "", values)


def _build(args: argparse.Namespace, cls: type[T], options: dict[str, Option], prefix: str,
           values: dict[str, Any]) -> T:
    hints, kwargs = typing.get_type_hints(cls), {}
    unknown = set(values) - {f.name for f in fields(cls)}
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    for f in fields(cls):
        path = prefix + f.name
        if is_dataclass(hints[f.name]) and not isinstance(values.get(f.name, {}), dict):
            kwargs[f.name] = values[f.name]
        elif is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(args, hints[f.name], options, path + ".", values.get(f.name, {}))
        elif f.name in values:
            kwargs[f.name] = values[f.name]
        elif path in options:
            value = getattr(args, options[path].dest)
            kwargs[f.name] = tuple(value) if typing.get_origin(hints[f.name]) is tuple else value
    return cls(**kwargs)


# ----- the README's table ------------------------------------------------------------------------
def usage(name: str) -> str:
    """``wm-gym NAME`` with its required options and the ones the README shows, as argparse writes them."""
    c = command(name)
    wide = functools.partial(argparse.HelpFormatter, width=10_000)
    parser = argparse.ArgumentParser(prog=f"wm-gym {name}", add_help=False, formatter_class=wide)
    by_dest = {o.dest: o for o in command_options(name)}
    unknown = sorted(set(c.readme) - set(by_dest))
    if unknown:
        raise KeyError(f"{name}: README options {unknown} are not options of the command")
    for o in command_options(name):
        if o.positional or o.kwargs.get("required") or o.dest in c.readme:
            o.add_to(parser)
    return parser.format_usage().removeprefix("usage: ").strip()


def cli_table_markdown() -> str:
    """The README's CLI table: each command's usage and what it does."""
    def cell(text: str) -> str:  # a | inside a table cell, code spans too, is escaped
        return text.replace("|", "\\|")

    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| `{cell(usage(c.name))}` | {cell(c.description)} |" for c in COMMANDS]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--readme-table"]:
        sys.exit("usage: python -m wm_gym.cli_options --readme-table")
    print(cli_table_markdown(), end="")
