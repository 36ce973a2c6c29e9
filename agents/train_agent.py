"""Train an SB3 agent entirely in imagination (one readable file, CleanRL style).

The agent never touches a simulator: its env is the world model (:mod:`wm_gym.imagine`), its
reward the video-aligned feature distance. What it learns is then measured in the real sim
by :mod:`wm_gym.agents.evaluate`, through the same encoder and the same action chunks.

Writes ``AGENT.zip`` (SB3) and ``AGENT.json`` (which world model and task it was trained on,
so evaluation needs no extra flags), TensorBoard logs, a learning-curve PNG and atomic
checkpoints every ``checkpoint_every`` steps (DAgger: after every round); ``resume=True`` continues from
the checkpoint.

``action_space="latent"`` trains over the model's standardised latent actions z instead of real
action chunks (video-first: no controller, no action labels needed; cloning targets are the
demos' own latent actions). The sidecar then records ``action_space``, the z units
(``latent_mean``, ``latent_std``) and, if given, the grounding file that maps z back to real
actions (:mod:`wm_gym.grounding`), which real-sim evaluation needs.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from wm_gym.device import check_precision
from wm_gym.io import atomic_path

ALGOS = ("ppo", "sac")
#: What an agent may be distilled from before RL: the model's own `wm-gym plan` recipe (``meta.plan_defaults``).
TEACHERS = ("plan",)
#: What reads the features before the policy's hidden layers (agents/policy_nets.py): ``mlp`` (SB3's flatten) |
#: ``keypoints`` (a conv over the token grid, read as points).
POLICY_NETS = ("mlp", "keypoints")


@dataclass
class AgentConfig:
    model: str = "wall"              # zoo name or world-model file
    out: str = "out/agent.zip"       # agent file to write (AGENT.zip; AGENT.json beside it)
    algo: str = "ppo"                # ppo | sac
    steps: int = 300_000             # imagined env steps (agent steps, one action chunk each)
    num_envs: int = 64               # imagined episodes stepped as one batch
    seed: int = 0
    device: str = "auto"             # world model (imagination) device: auto | cpu | cuda
    policy_device: str = "cpu"       # where the SB3 policy runs (its MLPs are faster on CPU at these sizes)
    precision: str = "auto"          # imagination's dynamics autocast: auto (bf16 on CUDA and CPUs with bf16 units:
                                     # ~1.7x faster steps, same agents on `wall`) | bf16 | fp32
    task: str = "goal"               # goal | demo (what the policy is shown besides its features)
    action_space: str = "sim"        # sim: real action chunks (needs a trained controller) | latent: the model's
                                     # standardised latent actions z (cloning targets are the demos' own z, no
                                     # action labels needed); a latent agent acts in a real sim through a grounding
                                     # map (`wm-gym ground`)
    grounding: str | None = None     # latent agents: a `wm-gym ground` file, recorded so `evaluate` finds it
    reward: str = "demo"             # rewards/ name: goal | demo | progress | seq-delta | temporal (needs
                                     # `wm-gym train-distance`), or several joined by + (e.g. demo+progress)
    metric: str = "l1"               # feature distance of the reward: l1 | l2 | cosine
    scale: float | None = None       # reward scale (default: the reward's own)
    horizon: int | None = None       # agent steps per imagined episode (default: the sim's episode length)
    success_threshold: float | None = None  # imagined success ends an episode below this distance (default: the
                                     # model's calibrated one; 0: episodes end only at the horizon)
    success_metric: str | None = None  # the distance that threshold applies to: l1 | l2 | cosine | temporal (steps
                                     # to go by the model's head: a success test without labels); default: the
                                     # model's calibrated metric
    gamma: float = 0.9               # discount per agent step (RLA-WM's PPO settings, as the next ones)
    gae_lambda: float = 0.95         # PPO GAE lambda
    learning_rate: float = 1e-4      # PPO/SAC learning rate; with critic_warmup and log_std_init below, PPO refines
                                     # the cloned policy
    n_steps: int = 64                # PPO rollout length per env (steps round up to whole rollouts)
    batch_size: int = 512            # minibatch size
    n_epochs: int = 4                # PPO epochs per rollout
    ent_coef: float = 0.0            # PPO entropy bonus
    net_arch: list[int] = field(default_factory=lambda: [256, 256])  # hidden layer widths of policy and value
    policy_net: str = "mlp"          # what reads the features before those layers: mlp (flattened) | keypoints (a conv
                                     # over the token grid read as points: generalises from few states;
                                     # agents/policy_nets.py)
    buffer_size: int = 50_000        # SAC replay buffer (obs are N·C·2 floats: keep it modest)
    bc_data: str | None = "auto"     # clone demos before RL: "auto" (the model's bank if it has actions),
                                     # "bank", a dataset folder ("A,B": several), or None (pure RL from scratch;
                                     # "none" on the command line)
    bc_epochs: int = 30              # behaviour-cloning epochs before RL
    bc_noise: float = 0.0            # std of the feature noise added to cloned observations (see clone_into)
    teacher: str | None = None       # after cloning, before RL: "plan" distils the model's `wm-gym plan` recipe by
                                     # DAgger in imagination (agents/distill.py; the planner labels imagined states);
                                     # "none" on the command line: no teacher, whatever the model's recipe says
    teacher_rounds: int = 8          # DAgger rounds (the first follows the teacher, the rest the student)
    teacher_episodes: int = 128      # imagined episodes per round, from the demo bank's starts
    teacher_horizon: int = 30        # steps of each round's episodes, run on past success (so holding is taught)
    teacher_epochs: int = 30         # refit epochs over all labels so far, after each round
    teacher_start: str = "warm"      # where the teacher's plan for each state starts: warm (MPC's: its last plan,
                                     # shifted) | zero (a fresh plan from the zero plan: the label depends on the
                                     # state alone: the planner's warm_start off)
    log_std_init: float = -1.6       # PPO's initial action noise (log std, std 0.2): small, to keep the cloned policy
    critic_warmup: int = 3           # PPO: first rollouts update only the value net, so a random critic's
                                     # advantages do not drag the cloned actor off the demos
    checkpoint_every: int = 50_000   # agent steps between atomic checkpoints
    resume: bool = False             # continue from OUT's checkpoint (RL's, or DAgger's after its last round)
    log_dir: str | None = None       # TensorBoard folder (default: runs/<agent name>)
    progress: bool = True


def sidecar_path(agent_path: str | Path) -> Path:
    return Path(agent_path).with_suffix(".json")


def checkpoint_path(agent_path: str | Path) -> Path:
    """Where ``train_agent`` keeps its periodic checkpoint; ``resume=True`` continues from it."""
    out = Path(agent_path)
    return out.with_name(out.stem + ".ckpt.zip")


def dagger_checkpoint_path(agent_path: str | Path) -> Path:
    """Where ``train_agent`` keeps DAgger's labels and policy after each round; ``resume=True`` goes on from it."""
    out = Path(agent_path)
    return out.with_name(out.stem + ".dagger.pt")


def atomic_sb3_save(agent, path: str | Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        agent.save(f)


def load_agent(path: str | Path, device: str = "cpu"):
    """(SB3 agent, its sidecar dict) from ``train_agent``'s output or a zoo agent's name; clear errors for bad files."""
    from wm_gym.zoo import resolve_agent

    path = resolve_agent(path)
    if not path.is_file():
        raise FileNotFoundError(f"no agent file at {path}")
    meta = json.loads(sidecar_path(path).read_text()) if sidecar_path(path).is_file() else {}
    algo = meta.get("algo", "ppo")
    if algo not in ALGOS:
        raise ValueError(f"{sidecar_path(path)} names algo {algo!r}; expected one of {ALGOS}")
    try:
        return _algo_class(algo).load(path, device=device), meta
    except Exception as err:  # zipfile.BadZipFile, KeyError, pickle errors: all "not a usable agent"
        raise ValueError(f"{path} is not a readable SB3 {algo.upper()} agent: {err}") from err


#: What a trained agent keeps only to go on training: its last rollout's observations and episode statistics.
TRAINING_STATE = ("_last_obs", "_last_original_obs", "_last_episode_starts", "ep_info_buffer", "ep_success_buffer")


def export_agent(path: str | Path, out: str | Path, half: bool = True) -> Path:
    """Write ``path``'s agent (and its sidecar) to ``out`` for acting only: no optimizer moments, no training state,
    and with ``half`` the weights stored in fp16 (SB3 loads them back into its fp32 networks). A third of the size
    or less: what the zoo ships. ``train_agent --resume`` cannot continue from the copy."""
    agent, meta = load_agent(path)
    policy = agent.policy
    if half:
        policy.half()
    policy.optimizer = type(policy.optimizer)(policy.parameters(), **policy.optimizer.defaults)  # empty moments
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        agent.save(f, exclude=list(TRAINING_STATE))
    with atomic_path(sidecar_path(out)) as tmp:
        tmp.write_text(json.dumps({**meta, "exported_from": str(path), "exported_half": half}, indent=2))
    return out


def value_function(agent) -> Callable[[torch.Tensor], torch.Tensor]:
    """A PPO agent's critic as a differentiable map: observations [B, D] → values [B], on their device.

    The critic learnt the imagined return of its policy, so it scores how close a state is to
    success along paths the policy knows (through Wall's door, say): a cost-to-go for planners.
    """
    if not hasattr(agent.policy, "predict_values"):
        raise ValueError(f"a value function needs a PPO agent's critic; {type(agent).__name__} has none "
                         "(SAC's critics score state-action pairs)")
    policy = agent.policy.eval()

    def value(obs: torch.Tensor) -> torch.Tensor:
        if obs.shape[1:] != agent.observation_space.shape:
            raise ValueError(f"the agent's critic takes observations of shape {agent.observation_space.shape}, got "
                             f"{tuple(obs.shape[1:])}: was it trained on this world model?")
        return policy.predict_values(obs.to(policy.device, torch.float32)).squeeze(-1).to(obs.device)

    return value


def _algo_class(algo: str):
    from stable_baselines3 import PPO, SAC

    return {"ppo": PPO, "sac": SAC}[algo]


def train_agent(config: AgentConfig, world_model=None) -> dict[str, Any]:
    """Train ``config``'s agent; ``world_model``: ``config.model`` already loaded (the CLI reads its recipe first),
    so it is not read twice."""
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import VecMonitor

    from wm_gym.agents.behavior_cloning import clone_into, demo_pairs
    from wm_gym.agents.policy_nets import network_kwargs
    from wm_gym.imagine import make_sb3_vec_env
    from wm_gym.zoo import load_model

    if config.algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {config.algo!r}")
    if config.teacher is not None and config.teacher not in TEACHERS:
        raise ValueError(f"teacher must be one of {', '.join(TEACHERS)} or None, got {config.teacher!r}")
    if config.teacher and (config.action_space != "sim" or config.task != "goal"):
        raise ValueError("a planner teacher labels real action chunks towards a goal: use action_space='sim', "
                         "task='goal'")
    if config.grounding and config.action_space != "latent":
        raise ValueError("grounding maps latent actions to real ones: give it only with action_space='latent'")
    precision = check_precision(config.precision)
    world_model = load_model(config.model if world_model is None else world_model, config.device)
    world_model.precision = precision
    policy_net = network_kwargs(config.policy_net, world_model.config.history + 1, world_model.n_tokens,
                                world_model.dim)  # an unknown net fails here, before any work
    teacher = None
    if config.teacher:  # built now, so a model without a recipe fails before any work
        from wm_gym.agents.distill import recipe_teacher

        teacher = recipe_teacher(world_model, config.seed, config.teacher_start)
    if config.grounding:  # fail now, not after training, if it belongs to another model
        from wm_gym.grounding import Grounding

        Grounding.load(config.grounding, world_model)
    out = Path(config.out)
    ckpt = checkpoint_path(out)
    log_dir = config.log_dir or str(Path("runs") / out.stem)
    imagination = make_sb3_vec_env(
        num_envs=config.num_envs, seed=config.seed, model=world_model, task=config.task, reward=config.reward,
        metric=config.metric, scale=config.scale, horizon=config.horizon, success_threshold=config.success_threshold,
        success_metric=config.success_metric, action_space=config.action_space, device=config.device)
    env = VecMonitor(imagination)
    latent_units = latent_action_units(imagination.env) if config.action_space == "latent" else {}
    algo = _algo_class(config.algo)
    if config.resume and ckpt.is_file():
        agent = algo.load(ckpt, env=env, device=config.policy_device, tensorboard_log=log_dir)
    else:
        policy_kwargs = dict(net_arch=config.net_arch, **({"log_std_init": config.log_std_init} if config.algo == "ppo" else {}),
                             **policy_net)
        common = dict(policy_kwargs=policy_kwargs, gamma=config.gamma, learning_rate=config.learning_rate,
                      seed=config.seed, device=config.policy_device, tensorboard_log=log_dir, verbose=0)
        if config.algo == "ppo":
            agent = algo("MlpPolicy", env, n_steps=config.n_steps, batch_size=config.batch_size, n_epochs=config.n_epochs,
                         gae_lambda=config.gae_lambda, ent_coef=config.ent_coef, **common)
        else:
            agent = algo("MlpPolicy", env, batch_size=config.batch_size, buffer_size=config.buffer_size, train_freq=1,
                         gradient_steps=1, **common)

    bc_losses: list[float] = []
    bc = config.bc_data
    if bc == "auto":  # latent targets come from the demos' frames, so any bank will do
        bc = "bank" if world_model.bank is not None and (
            world_model.bank.actions is not None or config.action_space == "latent") else None
    if bc and not (config.resume and ckpt.is_file()):
        demos = None if bc == "bank" else bc.split(",")  # one or more dataset folders
        obs, targets = demo_pairs(world_model, demos, action_space=config.action_space)
        if latent_units:  # clone in the env's units: standardised z
            targets = (targets - latent_units["latent_mean"]) / latent_units["latent_std"]
        bc_losses = clone_into(agent, obs, targets, epochs=config.bc_epochs, seed=config.seed, noise=config.bc_noise)
    distilled = None
    if teacher is not None and not (config.resume and ckpt.is_file()):
        if not config.resume:
            dagger_checkpoint_path(out).unlink(missing_ok=True)
        distilled = distill(agent, teacher, world_model, config, checkpoint=dagger_checkpoint_path(out))

    curve: list[dict[str, float]] = []

    class Progress(BaseCallback):
        """Learning curve from finished imagined episodes, plus atomic periodic checkpoints."""

        def _on_rollout_end(self) -> None:
            if config.algo == "ppo":  # the update that follows this rollout trains the actor only after warm-up
                rollouts = self.num_timesteps // (config.num_envs * config.n_steps)
                set_actor_trainable(self.model.policy, rollouts > config.critic_warmup)
            buf = self.model.ep_info_buffer
            every = max(config.steps // 200, 1)  # at most ~200 points (SAC ends a "rollout" every step)
            if buf and (not curve or self.num_timesteps - curve[-1]["step"] >= every):
                success = list(self.model.ep_success_buffer)
                curve.append({"step": self.num_timesteps, "return": float(np.mean([e["r"] for e in buf])),
                              "length": float(np.mean([e["l"] for e in buf])),
                              "success": float(np.mean(success)) if success else 0.0})

        def _on_step(self) -> bool:
            if self.num_timesteps // config.num_envs % max(config.checkpoint_every // config.num_envs, 1) == 0:
                atomic_sb3_save(self.model, ckpt)
            return True

    started, start_steps = time.perf_counter(), agent.num_timesteps
    remaining = config.steps - agent.num_timesteps
    if remaining > 0:
        agent.learn(remaining, callback=Progress(), progress_bar=config.progress, reset_num_timesteps=not config.resume,
                    tb_log_name=config.algo)
    seconds = time.perf_counter() - started
    atomic_sb3_save(agent, out)
    with atomic_path(sidecar_path(out)) as tmp:
        tmp.write_text(json.dumps({"algo": config.algo, "model": str(config.model), "task": config.task,
                                   "action_space": config.action_space, "grounding": config.grounding,
                                   "config": asdict(config), "seconds": seconds, "curve": curve,
                                   "bc_losses": bc_losses, "dagger": distilled,
                                   **{k: v.tolist() for k, v in latent_units.items()}}, indent=1))
    png = out.with_name(out.stem + "_curve.png")
    if curve:
        plot_learning_curve(curve, png)
    ckpt.unlink(missing_ok=True)
    dagger_checkpoint_path(out).unlink(missing_ok=True)
    last = curve[-1] if curve else {}
    return {"out": str(out), "algo": config.algo, "action_space": config.action_space,
            "steps": int(agent.num_timesteps), "seconds": round(seconds, 1),
            "imagined_steps_per_s": round((agent.num_timesteps - start_steps) / seconds, 1) if remaining > 0 else None,
            "final_imagined_return": last.get("return"), "final_imagined_success": last.get("success"),
            "curve_png": str(png) if curve else None, "log_dir": log_dir,
            **({"dagger": distilled} if distilled else {})}


def distill(agent, teacher, world_model, config: AgentConfig, checkpoint: Path | None = None) -> dict[str, Any]:
    """DAgger from ``teacher`` in imagination (:func:`wm_gym.agents.distill.dagger`), on episodes that run
    ``teacher_horizon`` steps past any success; refits ``agent`` in place, going on from ``checkpoint`` if it
    exists."""
    from wm_gym.agents.distill import dagger
    from wm_gym.imagine import WMImagineVectorEnv

    env = WMImagineVectorEnv(num_envs=config.teacher_episodes, model=world_model, task="goal",
                             horizon=config.teacher_horizon, success_threshold=0.0, render_mode=None)
    return dagger(agent, teacher, env, config.teacher_rounds, config.teacher_horizon, config.teacher_epochs,
                  seed=config.seed, progress=config.progress, checkpoint=checkpoint)


def latent_action_units(env) -> dict[str, np.ndarray]:
    """The latent imagination env's z units, flat [K·d] each: an agent's action a means z = a·latent_std +
    latent_mean. Recorded with the agent, so the real sim decodes its actions as imagination did."""
    return {"latent_mean": env.z_mean.flatten().cpu().numpy(), "latent_std": env.z_std.flatten().cpu().numpy()}


def set_actor_trainable(policy, trainable: bool) -> None:
    """Freeze or unfreeze everything of an SB3 ActorCriticPolicy but its value head and value layers."""
    for name, param in policy.named_parameters():
        if not (name.startswith("value_net") or name.startswith("mlp_extractor.value_net")):
            param.requires_grad_(trainable)


def plot_learning_curve(curve: list[dict[str, float]], path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [c["step"] for c in curve]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.2))
    ax1.plot(steps, [c["return"] for c in curve])
    ax1.set(xlabel="imagined steps", ylabel="episode return", title="return in imagination")
    ax2.plot(steps, [c["success"] for c in curve])
    ax2.set(xlabel="imagined steps", ylabel="success rate", ylim=(-0.02, 1.02), title="success in imagination")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
