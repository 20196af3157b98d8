"""The ranks of a training worker started by an MPI launcher (MLRun MPIJob).

Its own module because both sides use it: the worker (``train.main``) before it
initialises, and the launcher's docs and tests; neither imports the other for it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


def discover_mpi_env() -> dict:
    """Map an MPI launcher's ranks (Open MPI, MPICH/PMI) to the torch.distributed variables.

    Under an MLRun MPIJob each process is started by ``mpirun``; DeepSpeed can discover its
    ranks from MPI, but Accelerate and the HF Trainer read ``RANK``/``WORLD_SIZE``/
    ``LOCAL_RANK``/``MASTER_ADDR`` from the environment, so they must be set before either
    initialises. The master address is rank 0's host name, broadcast with mpi4py when
    ``MASTER_ADDR`` is not already set. Returns what it set (empty outside MPI).
    """
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return {}
    ranks = _mpi_ranks()
    if ranks is None:
        return {}
    rank, size, local = ranks
    found = {"RANK": str(rank), "WORLD_SIZE": str(size), "LOCAL_RANK": str(local)}
    if "MASTER_ADDR" not in env:
        found["MASTER_ADDR"] = _rank0_host()
    found.setdefault("MASTER_PORT", env.get("MASTER_PORT", "29500"))
    os.environ.update(found)
    return found


@dataclass(frozen=True)
class MpiNode:
    """One node of a multi-node run whose MPI launcher started one process per node (an
    MLRun MPIJob: one per replica); that process runs torchrun for the node's GPUs."""

    rank: int  # the node rank (torchrun --node_rank)
    count: int  # the number of nodes (torchrun --nnodes)
    master_addr: str  # node 0's host: the rendezvous
    master_port: int


def mpi_node() -> MpiNode | None:
    """This process's node when started by an MPI launcher, None otherwise. Nothing in the
    environment is changed: the torchrun it launches sets each worker's ranks."""
    ranks = _mpi_ranks()
    if ranks is None:
        return None
    rank, size, _ = ranks
    addr = os.environ.get("MASTER_ADDR") or (_rank0_host() if size > 1 else "127.0.0.1")
    return MpiNode(rank=rank, count=size, master_addr=addr,
                   master_port=int(os.environ.get("MASTER_PORT", "29500")))


def _mpi_ranks() -> tuple[int, int, int] | None:
    """(rank, size, local rank) from an MPI launcher's variables (Open MPI, MPICH/PMI, PMIx)."""
    env = os.environ
    pairs = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
             ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
             ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"))
    for r, s, lr in pairs:
        if r in env and s in env:
            try:
                return int(env[r]), int(env[s]), int(env.get(lr, "0"))
            except ValueError:
                raise RuntimeError(f"MPI rank variables {r}={env[r]!r} {s}={env[s]!r}: "
                                   "expected integers") from None
    return None


def _rank0_host() -> str:
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("started by MPI without MASTER_ADDR: install mpi4py in the image "
                           "or set MASTER_ADDR to rank 0's host") from None
    return MPI.COMM_WORLD.bcast(socket.gethostname(), root=0)
