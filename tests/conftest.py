import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# one torch thread per pytest-xdist worker: `make test` runs 2 workers on 2 cores (training reads this too)
os.environ.setdefault("OMP_NUM_THREADS", "1")

import wm_gym  # noqa: E402,F401  (registers the env ids)


# ----- a tiny calibrated world model with a demo bank, shared by the imagination tests ------------------
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


#: The sim the tiny test world models are trained on.
TINY_WORLD_SIM = "wm_gym/Wall-v0"


@dataclass(frozen=True)
class TinyImagineWorld:
    path: Path           # wall world model with a demo bank and a calibrated success threshold
    nobank_path: Path    # the same weights without a bank (and without a threshold)
    random_dir: Path     # 12 random-policy Wall episodes (training + calibration data)
    expert_dir: Path     # 12 noisy-expert Wall episodes (the demo bank)
    calibration: dict    # calibrate_success's report


@pytest.fixture(scope="session")
def tiny_imagine_world(tmp_path_factory) -> TinyImagineWorld:
    """Built once per session in ~15 s on 2 CPU cores.

    The encoder and latent stages get a few more steps than the rest so the model's next state
    really depends on its latent action (flow noise, latent actions) and stays bounded over short
    rollouts; re-projection is off for the same reason (with 30-step stages it diverges).
    """
    import torch

    from wm_gym.calibrate import calibrate_success
    from wm_gym.data.collect import collect_dataset
    from wm_gym.data.demo_bank import DemoBank
    from wm_gym.train.world_model import TrainConfig, train_world_model

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("imagine_world")
    # Wall-v0's look (a bright dot on a black floor) is what these 100-step tiny models learn reliably;
    # the v1 (DINO-WM) sim is covered by tests/test_wall_v1.py and the shipped `wall` model.
    random_dir = collect_dataset(TINY_WORLD_SIM, 12, root / "random", policy="random", seed=0, progress=False)
    expert_dir = collect_dataset(TINY_WORLD_SIM, 12, root / "expert", policy="noisy-expert", seed=1, progress=False)
    model = train_world_model(TrainConfig(
        data=str(random_dir), out=str(root / "wm.pt"), preset="tiny", steps=30, device="cpu", progress=False,
        log_dir=str(root / "tb"), stage_overrides={"encoder": {"steps": 100}, "latent": {"steps": 80}},
        precision="fp32"))  # one reference model on every CPU (auto trains in bf16 where the CPU has bf16 units)
    model.config.reproject = False
    model.save(root / "nobank.pt")
    model.bank = DemoBank.from_dataset(expert_dir, model.config.frameskip, heldout_fraction=0.25, seed=0)
    calibration = calibrate_success(model, random_dir)
    model.save(root / "wm.pt")
    return TinyImagineWorld(root / "wm.pt", root / "nobank.pt", Path(random_dir), Path(expert_dir), calibration)


@pytest.fixture(scope="module")
def world(tiny_imagine_world) -> TinyImagineWorld:
    """The tiny world (model files and datasets), under the short name most test modules use."""
    return tiny_imagine_world


@pytest.fixture(scope="module")
def model(world):
    """A fresh load of the tiny calibrated world model per test module (tests may change it)."""
    from wm_gym.world_model import WorldModel

    return WorldModel.load(world.path)


@pytest.fixture(scope="module")
def imagined_starts(tiny_imagine_world):
    """(model, obs [3, D], s_hist [3, H, N, C], goal [3, N, C]): three imagined episodes just reset (seed 0), on a
    fresh load of the tiny model per test module: what planners start from."""
    import torch

    from wm_gym.imagine import WMImagineVectorEnv
    from wm_gym.imagine.vector_env import split_observation
    from wm_gym.world_model import WorldModel

    torch.set_num_threads(1)
    model = WorldModel.load(tiny_imagine_world.path)
    obs, _ = WMImagineVectorEnv(num_envs=3, model=model, device="cpu").reset(seed=0)
    return (model, obs, *split_observation(model, torch.as_tensor(obs)))


class RecordingPolicy:
    """A real-sim policy that keeps every observation batch it is shown and answers a constant 0.5 action."""

    def __init__(self, action_dim):
        self.seen, self.action_dim = [], action_dim

    def predict(self, obs, deterministic=True):
        self.seen.append(obs.copy())
        return np.full((len(obs), self.action_dim), 0.5, np.float32), None
