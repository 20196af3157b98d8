"""The ranks of a training worker started by an MPI launcher (MLRun MPIJob).

Its own module because both sides use it: the worker (``train.main``) before it
initialises, and the launcher's docs and tests; neither imports the other for it.
"""

from __future__ import annotations

import os
import socket


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
    pairs = (("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
             ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
             ("PMIX_RANK", "PMIX_SIZE", "PMIX_LOCAL_RANK"))
    for r, s, lr in pairs:
        if r in env and s in env:
            found = {"RANK": env[r], "WORLD_SIZE": env[s], "LOCAL_RANK": env.get(lr, "0")}
            break
    else:
        return {}
    if "MASTER_ADDR" not in env:
        try:
            from mpi4py import MPI

            found["MASTER_ADDR"] = MPI.COMM_WORLD.bcast(socket.gethostname(), root=0)
        except ImportError:
            raise RuntimeError("started by MPI without MASTER_ADDR: install mpi4py in the image "
                               "or set MASTER_ADDR to rank 0's host") from None
    found.setdefault("MASTER_PORT", env.get("MASTER_PORT", "29500"))
    os.environ.update(found)
    return found
