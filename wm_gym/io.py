"""Atomic file writes: write a temp file in the same folder, fsync, then rename over the target.

A reader (or a resumed run) therefore sees either the old file or the complete new one, never
a half-written file, even if the process is killed mid-write.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

@contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``target``; on success it is renamed to ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_torch_save(obj: Any, target: str | Path) -> None:
    import torch  # local: the data-collection path uses this module without torch

    with atomic_path(target) as tmp:
        torch.save(obj, tmp)
