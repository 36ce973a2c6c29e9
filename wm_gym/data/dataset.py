"""The on-disk episode dataset: a Minari dataset with lossless frames, plus ``meta.json``.

Layout of a dataset directory ``DIR``::

    DIR/meta.json                 our metadata (format version, env, policy, seed, sizes, ...);
                                  written last, so its presence means "complete"
    DIR/minari/metadata.json      a plain Minari (HDF5) dataset: ``minari.MinariDataset(DIR/minari)``
    DIR/minari/main_data.hdf5
    DIR/.cache/                   optional consolidated .npy/.npz copy for fast reloads
    DIR/.staging/                 only while a collection is unfinished (see collect.py)

Why Minari: it is the standard offline-RL episode format, so other tools can read our data.
Why ``jpeg_encoding=False``: Minari 0.5.4 JPEG-encodes image observations by default, which
is lossy; world models are trained to reproduce pixels, so frames must come back bit-exact.

Per Minari episode (T sim steps, T+1 observations):

* ``observations/pixels`` uint8 [T+1, H, W, 3], ``observations/proprio`` float32 [T+1, P]
* ``actions`` float32 [T, A] (A = 0 for actionless video), ``rewards`` [T]
* ``terminations`` all False and ``truncations`` True only at the end: every episode runs the
  full length whatever happens, so nothing ends early
* ``infos/state`` float64 [T+1, S], ``infos/is_success`` bool [T+1]
* ``infos/goal`` float64 [T+1, S] and ``infos/goal_pixels`` uint8 [1, H, W, 3]: the episode's
  goal state (repeated per step, as the sim reports it) and its rendered image (stored once,
  not per step, to keep files half the size); absent for datasets without goals.

Every k-th frame (``meta["frame_stride"] = k``, ``wm-gym collect --frame-stride k``): a model
with frameskip k reads only every k-th frame, so collection can render and store only those.
Such a dataset is, to Minari, a dataset of the action-chunked sim (``envs/action_chunk.py``):
each stored step holds the k sim actions between two stored frames, concatenated
(``actions`` [T/k, k·A]), and the sum of their rewards. In memory (:class:`EpisodeData`) the
actions are per sim step again ([T, A], a free reshape); frames, proprio, states and success
have T/k + 1 entries, frame j being sim step j·k. Without the key, k = 1: every frame.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from wm_gym.io import atomic_path

FORMAT_NAME = "wm-gym-episodes"
FORMAT_VERSION = 1
META_FILE = "meta.json"
MINARI_DIR = "minari"
CACHE_DIR = ".cache"
STAGING_DIR = ".staging"
_HDF5_FILE = "main_data.hdf5"


# ----------------------------------------------------------------------------- one episode
@dataclass
class Episode:
    """One episode in memory: the unit that collection and video ingestion hand to the writer.

    ``T`` is the number of steps; observations (frames, proprio, states, success) have T+1
    entries because the reset observation comes first.
    """

    frames: np.ndarray  # uint8 [T+1, H, W, 3]
    proprio: np.ndarray  # float32 [T+1, P] (P may be 0)
    states: np.ndarray  # float64 [T+1, S] (S may be 0)
    success: np.ndarray  # bool [T+1]
    actions: np.ndarray | None = None  # float32 [T, A]; None for actionless video
    rewards: np.ndarray | None = None  # float32 [T]
    goal: np.ndarray | None = None  # float64 [S]
    goal_pixels: np.ndarray | None = None  # uint8 [H, W, 3]
    seed: int | None = None  # the reset seed, so the episode can be replayed
    frame_stride: int = 1  # k: frame j is sim step j·k; actions stay per sim step, rewards per frame gap

    @property
    def steps(self) -> int:
        """Sim steps: T (frames hold T/k + 1 entries)."""
        return (int(self.frames.shape[0]) - 1) * self.frame_stride

    def check(self) -> None:
        """Raise ValueError if the arrays do not line up (catches writer bugs before disk)."""
        n = self.frames.shape[0]
        if self.frames.dtype != np.uint8 or self.frames.ndim != 4 or self.frames.shape[-1] != 3 or n < 1:
            raise ValueError(f"frames must be uint8 [T+1, H, W, 3], got {self.frames.dtype} {self.frames.shape}")
        for name in ("proprio", "states", "success"):
            arr = getattr(self, name)
            if arr.shape[0] != n:
                raise ValueError(f"{name} has {arr.shape[0]} entries, expected {n} (one per frame)")
        k = self.frame_stride
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"frame_stride must be an integer >= 1, got {k!r}")
        if self.actions is not None and (self.actions.ndim != 2 or self.actions.shape[0] != (n - 1) * k):
            raise ValueError(f"actions must be [T={(n - 1) * k}, A] (one per sim step), got {self.actions.shape}")
        if self.rewards is not None and self.rewards.shape != (n - 1,):
            raise ValueError(f"rewards must be [{n - 1}] (one per stored frame gap), got {self.rewards.shape}")
        if (self.goal is None) != (self.goal_pixels is None):
            raise ValueError("goal and goal_pixels must both be given or both be None")
        if self.goal_pixels is not None and self.goal_pixels.shape != self.frames.shape[1:]:
            raise ValueError(f"goal_pixels must be {self.frames.shape[1:]}, got {self.goal_pixels.shape}")

    # Staging shards are plain uncompressed .npz files: lossless and quick to write.
    def save_npz(self, path: str | Path) -> None:
        """Write atomically (tmp file, then ``os.replace``), so a shard either exists whole or not at all."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "frames": self.frames, "proprio": self.proprio, "states": self.states, "success": self.success,
        }
        for name in ("actions", "rewards", "goal", "goal_pixels"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name)
        if self.seed is not None:
            arrays["seed"] = np.asarray(self.seed, np.int64)
        if self.frame_stride != 1:
            arrays["frame_stride"] = np.asarray(self.frame_stride, np.int64)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load_npz(cls, path: str | Path) -> "Episode":
        try:
            with np.load(path, allow_pickle=False) as z:
                d = {k: z[k] for k in z.files}
        except Exception as e:  # zipfile.BadZipFile, OSError, ValueError, KeyError ...
            raise ValueError(f"corrupt episode shard {path}: {e}") from e
        missing = {"frames", "proprio", "states", "success"} - set(d)
        if missing:
            raise ValueError(f"corrupt episode shard {path}: missing {sorted(missing)}")
        seed = int(d.pop("seed")) if "seed" in d else None
        stride = int(d.pop("frame_stride")) if "frame_stride" in d else 1
        return cls(seed=seed, frame_stride=stride, **d)


# ----------------------------------------------------------------------------- loaded data
@dataclass
class EpisodeData:
    """Every episode of a dataset in memory, one list entry per episode.

    Episodes may differ in length (videos); for sim datasets they all have T steps. The
    per-episode arrays are views into a few big contiguous arrays (the ``flat_*`` fields,
    concatenated over episodes and cut by ``offsets``), so loading is a handful of copies.
    """

    frames: list[np.ndarray]  # [E] of uint8 [T_e/k+1, H, W, 3] (k = frame_stride, 1 unless collected so)
    proprio: list[np.ndarray]  # [E] of float32 [T_e/k+1, P]
    states: list[np.ndarray]  # [E] of float64 [T_e/k+1, S]
    success: list[np.ndarray]  # [E] of bool [T_e/k+1]
    actions: list[np.ndarray] | None  # [E] of float32 [T_e, A] (NaN rows where not ``labelled``), or None: no actions
    rewards: list[np.ndarray] | None  # [E] of float32 [T_e/k]: per stored frame gap
    goals: np.ndarray | None  # float64 [E, S], or None when the dataset has no goals
    goal_pixels: np.ndarray | None  # uint8 [E, H, W, 3]
    seeds: np.ndarray  # int64 [E], the reset seed of each episode (-1 when unknown)
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def n_episodes(self) -> int:
        return len(self.frames)

    @property
    def frame_stride(self) -> int:
        """k: stored frame j of an episode is its sim step j·k (``wm-gym collect --frame-stride``)."""
        return int(self.meta.get("frame_stride", 1))

    def frame_step(self, frameskip: int) -> int:
        """Stored frames per model step of ``frameskip`` sim steps; ValueError when the stride does not divide it."""
        if frameskip % self.frame_stride:
            raise ValueError(f"this dataset keeps every {self.frame_stride}th frame, which a model stepping "
                             f"{frameskip} sim steps at a time cannot use (frameskip must be a multiple of it); "
                             "collect with --frame-stride 1 or a divisor of the frameskip")
        return frameskip // self.frame_stride

    @property
    def lengths(self) -> np.ndarray:
        """int64 [E]: sim steps per episode ((frames - 1) · frame_stride)."""
        return np.array([(f.shape[0] - 1) * self.frame_stride for f in self.frames], np.int64)

    @property
    def has_actions(self) -> bool:
        return self.actions is not None

    @property
    def labelled(self) -> np.ndarray:
        """bool [E]: which episodes have action labels.

        Every episode of a dataset with actions, unless ``meta.json`` lists ``labelled_episodes``
        (video ingested with a labels file): then only those, and the others' action rows are NaN.
        """
        mask = np.zeros(len(self.frames), bool)
        if self.actions is not None:
            listed = self.meta.get("labelled_episodes")
            mask[slice(None) if listed is None else np.asarray(listed, np.int64)] = True
        return mask

    @property
    def has_goals(self) -> bool:
        return self.goals is not None

    @property
    def image_size(self) -> int:
        return int(self.frames[0].shape[1])

    @property
    def action_dim(self) -> int:
        return 0 if self.actions is None else int(self.actions[0].shape[1])

    def episode(self, i: int) -> Episode:
        """Episode ``i`` as an :class:`Episode` (views, no copies)."""
        return Episode(
            frames=self.frames[i], proprio=self.proprio[i], states=self.states[i], success=self.success[i],
            actions=None if self.actions is None else self.actions[i],
            rewards=None if self.rewards is None else self.rewards[i],
            goal=None if self.goals is None else self.goals[i],
            goal_pixels=None if self.goal_pixels is None else self.goal_pixels[i],
            seed=None if self.seeds[i] < 0 else int(self.seeds[i]), frame_stride=self.frame_stride,
        )


# ----------------------------------------------------------------------------- meta.json
def read_meta(path: str | Path) -> dict[str, Any]:
    """Read and validate ``DIR/meta.json``; ValueError explains what is wrong with ``DIR``."""
    root = Path(path)
    if not root.exists():
        raise ValueError(f"dataset directory {root} does not exist")
    if not root.is_dir():
        raise ValueError(f"dataset path {root} is not a directory")
    meta_path = root / META_FILE
    if not meta_path.exists():
        if (root / STAGING_DIR).exists():
            raise ValueError(f"{root} holds an unfinished collection (no {META_FILE} yet); re-run the same collect command to finish it")
        if not any(root.iterdir()):
            raise ValueError(f"dataset directory {root} is empty; collect a dataset into it first")
        raise ValueError(f"{root} is not a wm-gym dataset: {META_FILE} is missing")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt {meta_path}: {e}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{meta_path} is not a {FORMAT_NAME} meta file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{root} has dataset format version {meta.get('format_version')!r}, this wm-gym reads version "
            f"{FORMAT_VERSION}; re-collect the dataset with this version"
        )
    if not isinstance(meta.get("episodes"), int) or meta["episodes"] < 1:
        raise ValueError(f"{root} is an empty dataset (meta says {meta.get('episodes')!r} episodes)")
    return meta


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON via tmp + ``os.replace`` so readers never see half a file."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def is_complete(path: str | Path) -> bool:
    """True when ``path`` holds a finished dataset (``meta.json`` exists)."""
    return (Path(path) / META_FILE).exists()


# ----------------------------------------------------------------------------- writing
def write_dataset(
    out: str | Path,
    episodes: Iterable[Episode],
    meta: dict[str, Any],
    observation_space,
    action_space,
    env_spec=None,
    dataset_id: str = "wm_gym/episodes-v0",
    progress: bool = False,
) -> Path:
    """Write ``episodes`` as the Minari dataset ``out/minari`` and then ``out/meta.json``.

    Atomic: the Minari files are built in a temporary sibling folder and renamed into place,
    and ``meta.json`` (the "complete" marker) is written last, so an interrupted write never
    looks complete. ``episodes`` may be a generator: episodes are streamed to disk one at a
    time, so memory stays at one episode. ``meta`` gets ``episodes``/``total_steps`` filled in.
    With ``meta["frame_stride"] = k`` the episodes keep every k-th frame and Minari stores k-action
    chunks (module docstring); ``action_space`` is always the sim's.
    """
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage
    from tqdm.auto import tqdm

    root = Path(out).absolute()  # Minari's get_size() breaks on relative paths
    root.mkdir(parents=True, exist_ok=True)
    if is_complete(root):
        raise ValueError(f"{root} already holds a complete dataset; delete it or choose another directory")
    final = root / MINARI_DIR
    tmp = root / f".{MINARI_DIR}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"episodes": 0, "steps": 0}
    expected_len: list[int] = []
    stride = int(meta.get("frame_stride", 1))
    if stride > 1:
        from wm_gym.envs.action_chunk import chunk_space

        action_space = chunk_space(action_space, stride)

    def buffers() -> Iterator[EpisodeBuffer]:
        for ep in tqdm(episodes, desc="write", unit="ep", disable=not progress, total=meta.get("episodes")):
            ep.check()
            if ep.frame_stride != stride:
                raise ValueError(f"episode keeps every {ep.frame_stride}th frame, the dataset every {stride}th")
            n = ep.frames.shape[0]
            T = n - 1  # stored steps: T·stride sim steps
            infos: dict[str, np.ndarray] = {
                "state": np.asarray(ep.states, np.float64),
                "is_success": np.asarray(ep.success, bool),
            }
            if ep.goal is not None:
                infos["goal"] = np.repeat(np.asarray(ep.goal, np.float64)[None], n, axis=0)
                infos["goal_pixels"] = np.asarray(ep.goal_pixels, np.uint8)[None]
            actions = ep.actions.reshape(T, -1) if ep.actions is not None else np.zeros((T, 0), np.float32)
            rewards = ep.rewards if ep.rewards is not None else np.zeros(T, np.float32)
            truncations = np.zeros(T, bool)
            if T:
                truncations[-1] = True
            counts["episodes"] += 1
            counts["steps"] += T * stride
            expected_len.append(T * stride)
            yield EpisodeBuffer(
                id=None, seed=ep.seed,
                observations={"pixels": np.asarray(ep.frames, np.uint8), "proprio": np.asarray(ep.proprio, np.float32)},
                actions=np.asarray(actions, np.float32), rewards=np.asarray(rewards, np.float32),
                terminations=np.zeros(T, bool), truncations=truncations, infos=infos,
            )

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = MinariStorage.new(
                tmp, observation_space=observation_space, action_space=action_space, env_spec=env_spec,
                data_format="hdf5", jpeg_encoding=False,  # lossless frames, see the module docstring
            )
            storage.update_metadata({
                "dataset_id": dataset_id, "minari_version": minari.__version__,
                "algorithm_name": str(meta.get("policy") or meta.get("source") or "unknown"),
                "description": "wm-gym episodes; see ../meta.json",
            })
            storage.update_episodes(buffers())
        if counts["episodes"] == 0:
            raise ValueError("no episodes to write")
        meta = dict(meta, episodes=counts["episodes"], total_steps=counts["steps"],
                    minari_dataset_id=dataset_id, minari_version=minari.__version__,
                    created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if len(set(expected_len)) == 1:
            meta["episode_length"] = expected_len[0]
        shutil.rmtree(final, ignore_errors=True)  # a leftover from a crash before meta.json
        os.replace(tmp, final)
        write_json_atomic(root / META_FILE, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Path(out)


# ----------------------------------------------------------------------------- reading
def minari_path(path: str | Path) -> Path:
    """The Minari data folder of a dataset: open it with ``minari.MinariDataset(minari_path(DIR))``."""
    return Path(path) / MINARI_DIR


def _fingerprint(root: Path) -> str:
    """Changes whenever meta.json or the HDF5 file changes, so a stale cache is never used."""
    h5 = root / MINARI_DIR / _HDF5_FILE
    st = h5.stat()
    h = hashlib.sha1((root / META_FILE).read_bytes())
    h.update(f"{st.st_size}:{st.st_mtime_ns}:{FORMAT_VERSION}".encode())
    return h.hexdigest()


def _read_hdf5(root: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Read every episode straight from the HDF5 file into flat arrays (faster than Minari's
    per-episode decoding). Returns the flat arrays plus ``offsets`` (frames) per episode."""
    import h5py

    h5 = root / MINARI_DIR / _HDF5_FILE
    if not h5.exists() or not (root / MINARI_DIR / "metadata.json").exists():
        raise ValueError(f"{root} is incomplete: the Minari files in {root / MINARI_DIR} are missing")
    try:
        minari_meta = json.loads((root / MINARI_DIR / "metadata.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"corrupt dataset {root}: cannot read {root / MINARI_DIR / 'metadata.json'}: {e}") from e
    if minari_meta.get("jpeg_encoding", True):
        raise ValueError(f"{root}: the Minari frames are JPEG-encoded (lossy); wm-gym datasets store raw frames")
    E = meta["episodes"]
    has_goals = bool(meta.get("has_goals"))
    try:
        with h5py.File(h5, "r") as f:
            names = [k for k in f.keys() if k.startswith("episode_")]
            if len(names) != E:
                raise ValueError(f"corrupt dataset {root}: meta.json says {E} episodes, the HDF5 file has {len(names)}")
            groups = [f[f"episode_{i}"] for i in range(E)]
            lengths = np.array([g["observations/pixels"].shape[0] for g in groups], np.int64)
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            first = groups[0]
            img = first["observations/pixels"].shape[1:]
            P = first["observations/proprio"].shape[1]
            S = first["infos/state"].shape[1]
            A = first["actions"].shape[1]
            N = int(offsets[-1])
            step_off = offsets - np.arange(E + 1)  # T_e = frames_e - 1
            out = {
                "frames": np.empty((N, *img), np.uint8),
                "proprio": np.empty((N, P), np.float32),
                "states": np.empty((N, S), np.float64),
                "success": np.empty((N,), bool),
                "actions": np.empty((int(step_off[-1]), A), np.float32),
                "rewards": np.empty((int(step_off[-1]),), np.float32),
                "seeds": np.full(E, -1, np.int64),
                "offsets": offsets,
            }
            if has_goals:
                out["goals"] = np.empty((E, S), np.float64)
                out["goal_pixels"] = np.empty((E, *img), np.uint8)
            for i, g in enumerate(groups):
                a, b = offsets[i], offsets[i + 1]
                sa, sb = step_off[i], step_off[i + 1]
                if g["observations/pixels"].shape[1:] != img:
                    raise ValueError(f"corrupt dataset {root}: episode {i} has frames {g['observations/pixels'].shape[1:]}, expected {img}")
                g["observations/pixels"].read_direct(out["frames"][a:b])
                out["proprio"][a:b] = g["observations/proprio"][()]
                out["states"][a:b] = g["infos/state"][()]
                out["success"][a:b] = g["infos/is_success"][()]
                out["actions"][sa:sb] = g["actions"][()]
                out["rewards"][sa:sb] = g["rewards"][()]
                if "seed" in g.attrs:
                    out["seeds"][i] = int(g.attrs["seed"])
                if has_goals:
                    out["goals"][i] = g["infos/goal"][0]
                    out["goal_pixels"][i] = g["infos/goal_pixels"][0]
    except ValueError:
        raise
    except (OSError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"corrupt dataset {root}: cannot read {h5}: {e}") from e
    return out


def _cache_load(root: Path, key: str, mmap: bool) -> dict[str, np.ndarray] | None:
    cache = root / CACHE_DIR
    try:
        if json.loads((cache / "key.json").read_text()).get("key") != key:
            return None
        with np.load(cache / "arrays.npz", allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        out["frames"] = np.load(cache / "frames.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        if out["frames"].shape[0] != out["offsets"][-1]:
            return None
        return out
    except Exception:  # a missing or damaged cache is simply rebuilt
        return None


def _cache_save(root: Path, key: str, arrays: dict[str, np.ndarray]) -> None:
    """Save the flat arrays as one frames.npy (memory-mappable) + arrays.npz, atomically as a folder."""
    tmp = root / f"{CACHE_DIR}.tmp-{os.getpid()}"
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        np.save(tmp / "frames.npy", arrays["frames"])
        with open(tmp / "arrays.npz", "wb") as f:
            np.savez(f, **{k: v for k, v in arrays.items() if k != "frames"})
        (tmp / "key.json").write_text(json.dumps({"key": key}))
        shutil.rmtree(root / CACHE_DIR, ignore_errors=True)
        os.replace(tmp, root / CACHE_DIR)
    except OSError as e:  # read-only dataset folder, full disk: loading still works, only slower
        warnings.warn(f"could not write the load cache in {root}: {e}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_episodes(path: str | Path, cache: bool = True, mmap: bool = False) -> EpisodeData:
    """Load every episode of dataset ``path`` into memory as an :class:`EpisodeData`.

    The first load reads the Minari HDF5 file and (with ``cache=True``) writes ``DIR/.cache``,
    a consolidated copy that later loads read several times faster; the cache is keyed on
    meta.json and the HDF5 file's size and mtime, so it is rebuilt if the dataset changes.
    It doubles the disk use: pass ``cache=False`` to skip it. ``mmap=True`` memory-maps the
    cached frames instead of reading them (instant, read-only; needs the cache).

    Raises ValueError for a missing or empty directory, an unfinished collection, a corrupt
    file or a format-version mismatch.
    """
    root = Path(path)
    meta = read_meta(root)
    arrays = None
    key = None
    if cache or mmap:
        try:
            key = _fingerprint(root)
        except OSError as e:
            raise ValueError(f"{root} is incomplete: the Minari files in {root / MINARI_DIR} are missing ({e})") from e
        arrays = _cache_load(root, key, mmap)
    if arrays is None:
        arrays = _read_hdf5(root, meta)
        if key is not None:
            _cache_save(root, key, arrays)
            if mmap:
                arrays = _cache_load(root, key, mmap) or arrays
    return _split(arrays, meta)


def load_episodes_for(path: str | Path, env_id: str, cache: bool = True) -> EpisodeData:
    """:func:`load_episodes` for a world model of sim ``env_id``: an empty dataset, or one collected in
    another sim, raises ValueError (its features would mean nothing to the model)."""
    data = load_episodes(path, cache=cache)
    if len(data) == 0:
        raise ValueError(f"{path} has no episodes")
    collected_in = data.meta.get("env_id") or ""  # ingested video records None, a model trained on it ""
    if collected_in != (env_id or ""):
        where = f"collected in {collected_in!r}" if collected_in else "video with no sim (wm-gym ingest)"
        raise ValueError(f"{path} is {where} but the model is for {env_id or 'video with no sim'!r}")
    return data


#: What a collection setting was before it existed: a dataset whose meta.json lacks the key was collected so
#: (``collect`` matches and resumes by it; :func:`concat_episodes` compares by it).
META_DEFAULTS: dict[str, Any] = {"goal_split": None, "frame_stride": 1, "look": None, "view": 1}


def concat_episodes(parts: list[EpisodeData], names: list[str] | None = None) -> EpisodeData:
    """Several datasets of one sim as one :class:`EpisodeData`, episodes in the order given.

    What makes frames comparable must agree (sim, image size, frame stride, action size); the
    rest is kept per episode. A dataset without actions joins with NaN rows and is left out of
    ``labelled``; goals and rewards are kept only when every part has them. ``meta`` is the first
    part's, with ``sources`` (``names``), ``policy`` (each part's) and ``episodes`` of the whole.
    """
    if not parts:
        raise ValueError("no dataset to concatenate")
    names = list(names) if names is not None else [f"dataset {i}" for i in range(len(parts))]
    if len(parts) == 1:
        return parts[0]
    first = parts[0].meta
    for key in ("env_id", "image_size", "frame_stride", "view"):
        values = {str(part.meta.get(key, META_DEFAULTS.get(key))) for part in parts}
        if len(values) > 1:
            raise ValueError(f"{' and '.join(names)} differ in {key} ({', '.join(sorted(values))}); "
                             "only datasets of one sim, drawn and strided alike, can be trained on together")
    action_dims = {a[0].shape[-1] for a in (part.actions for part in parts) if a}
    if len(action_dims) > 1:
        raise ValueError(f"{' and '.join(names)} have actions of different sizes {sorted(action_dims)}")
    labelled = np.concatenate([part.labelled for part in parts])
    actions = None
    if action_dims:
        (A,) = action_dims
        actions = [a for part in parts for a in (part.actions or
                   [np.full(((f.shape[0] - 1) * part.frame_stride, A), np.nan, np.float32) for f in part.frames])]
    every = lambda name: all(getattr(part, name) is not None for part in parts)  # noqa: E731
    meta = {**first, "sources": list(names), "policy": [part.meta.get("policy") for part in parts],
            "episodes": int(sum(len(part) for part in parts))}
    meta.pop("labelled_episodes", None)
    labelled_meta = next((part.meta for part in parts if part.actions is not None), {})
    meta.update({k: labelled_meta[k] for k in ("action_dim", "action_low", "action_high") if k in labelled_meta})
    if actions is not None and not labelled.all():
        meta["labelled_episodes"] = [int(e) for e in np.flatnonzero(labelled)]
    return EpisodeData(
        frames=[f for part in parts for f in part.frames], proprio=[x for part in parts for x in part.proprio],
        states=[x for part in parts for x in part.states], success=[x for part in parts for x in part.success],
        actions=actions, rewards=[r for part in parts for r in part.rewards] if every("rewards") else None,
        goals=np.concatenate([part.goals for part in parts]) if every("goals") else None,
        goal_pixels=np.concatenate([part.goal_pixels for part in parts]) if every("goal_pixels") else None,
        seeds=np.concatenate([part.seeds for part in parts]), meta=meta)


def _split(a: dict[str, np.ndarray], meta: dict[str, Any]) -> EpisodeData:
    off = a["offsets"]
    E = len(off) - 1
    step_off = off - np.arange(E + 1)

    def cut(x: np.ndarray, o: np.ndarray) -> list[np.ndarray]:
        return [x[o[i]:o[i + 1]] for i in range(E)]

    has_actions = bool(meta.get("has_actions"))
    stride = int(meta.get("frame_stride", 1))
    sim_actions = a["actions"].reshape(len(a["actions"]) * stride, -1)  # stored k-action chunks -> one row per sim step
    return EpisodeData(
        frames=cut(a["frames"], off), proprio=cut(a["proprio"], off), states=cut(a["states"], off),
        success=cut(a["success"], off),
        actions=cut(sim_actions, step_off * stride) if has_actions else None,
        rewards=cut(a["rewards"], step_off) if has_actions else None,
        goals=a.get("goals"), goal_pixels=a.get("goal_pixels"), seeds=a["seeds"], meta=meta,
    )
