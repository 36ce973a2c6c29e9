"""Episode datasets: collection, Minari storage, training windows and video ingestion."""
from .collect import collect_dataset, episode_seeds, rollout
from .dataset import Episode, EpisodeData, load_episodes, minari_path, read_meta, write_dataset
from .video import ingest_videos
from .windows import WindowDataset, split_episodes

__all__ = [
    "collect_dataset", "episode_seeds", "rollout",
    "Episode", "EpisodeData", "load_episodes", "minari_path", "read_meta", "write_dataset",
    "ingest_videos",
    "WindowDataset", "split_episodes",
]
