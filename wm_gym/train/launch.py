"""Run a training function on N local ranks (DDP on gloo) from inside one command, as torchrun would.

``wm-gym train`` on a 2-core CPU uses both cores this way (see :class:`wm_gym.device.RankLayout`):
each rank is a spawned process with one torch thread and torchrun's environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so the training code is the same one
that runs under ``torchrun``. Ranks die with the launching process (an interrupted run leaves no
orphan writing into the files a resumed run will read), and an exception in a rank is raised again
in the launcher with its own type, so bad input fails the same way on one rank or many.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch.multiprocessing as mp

from wm_gym.device import set_threads


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_ranks(fn: Callable[..., Any], args: tuple, ranks: int, threads: int) -> None:
    """``fn(*args)`` on ``ranks`` spawned processes of ``threads`` torch threads each; returns when all end.

    ``fn`` must be importable (module level), and writes its results to files (rank 0 by convention).
    """
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="wm-gym-ranks-") as errors:
        try:
            mp.start_processes(_rank_main, args=(ranks, port, threads, errors, fn, args), nprocs=ranks, join=True,
                               start_method="spawn")
        except mp.ProcessRaisedException as failure:
            raise _first_error(Path(errors)) or failure
        except mp.ProcessExitedException as failure:  # killed, not raised
            raise RuntimeError(f"a training rank exited unexpectedly ({failure})") from None


def _rank_main(rank: int, ranks: int, port: int, threads: int, errors: str, fn: Callable[..., Any],
               args: tuple) -> None:
    _die_with_parent()
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(ranks), LOCAL_WORLD_SIZE=str(ranks),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
    set_threads(threads)
    try:
        fn(*args)
        _leave_process_group()
    except BaseException as err:  # hand the original exception to the launcher, then fail this rank
        try:
            (Path(errors) / f"rank{rank:03d}.pkl").write_bytes(pickle.dumps(err))
        except Exception:  # an unpicklable exception still fails the rank below
            pass
        raise
    # The work is done and its files written. Leave without the interpreter's teardown: destroying torch's C++
    # state while gloo's threads wind down still aborted a rank now and then ("terminate called without an
    # active exception", SIGABRT) after the barrier above, failing a training that had succeeded.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _leave_process_group() -> None:
    """Wait for every rank, then close gloo's connections before the interpreter exits.

    A rank that exits while a peer's gloo threads still hold its sockets can abort that peer at teardown
    (``terminate called without an active exception``) after the training itself succeeded.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _first_error(errors: Path) -> BaseException | None:
    for path in sorted(errors.glob("rank*.pkl")):  # the lowest rank's error first
        try:
            return pickle.loads(path.read_bytes())
        except Exception:
            continue
    return None


def _die_with_parent() -> None:
    """Linux: SIGKILL this rank when the launcher dies (a peer blocked in an all-reduce would hang forever)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
