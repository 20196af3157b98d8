"""Launch a fine-tune: in-process, under torchrun, under MPI, or as a Kubeflow TrainJob.

``finetune(config, nproc)`` is what the MLRun handler calls: it checks every input in the
calling process first (a bad input never starts a worker), then runs in-process
(``nproc == 1``) or spawns ``torchrun --nproc_per_node nproc -m rightsizer.finetune.train``.
The same call runs on a laptop (CPU processes, gloo) and in a GPU pod (NCCL).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path

from rightsizer.atomic import atomic_write_text
from rightsizer.errors import ConfigError

_ROOT = str(Path(__file__).resolve().parents[2])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_command(config_path: str | Path, nproc: int, nnodes: int = 1, node_rank: int = 0,
                     master_addr: str = "127.0.0.1", master_port: int | None = None,
                     python: str | None = None) -> list[str]:
    """The torchrun command line for one node (``python -m torch.distributed.run``)."""
    return [python or sys.executable, "-m", "torch.distributed.run",
            f"--nproc_per_node={nproc}", f"--nnodes={nnodes}", f"--node_rank={node_rank}",
            f"--master_addr={master_addr}", f"--master_port={master_port or free_port()}",
            "-m", "rightsizer.finetune.train", "--config", str(config_path)]


def worker_env(nproc: int, extra: dict | None = None) -> dict:
    """Environment for the workers: project importable, DeepSpeed on CPU when no GPU, and
    the CPU cores split between processes (oversubscription makes gloo crawl)."""
    import torch

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH")) if p)
    if not torch.cuda.is_available():
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(nproc, 1))))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if (env.get("PYTHONDONTWRITEBYTECODE") and not env.get("PYTHONPYCACHEPREFIX")
            and env.get("RIGHTSIZER_WORKER_PYCACHE", "1") != "0"):
        # Every worker imports torch/transformers/deepspeed; without bytecode caches each
        # recompiles them (~15 s per process). Cache them outside the sources instead.
        cache = Path(env.get("RIGHTSIZER_CACHE", Path.home() / ".cache" / "rightsizer"))
        env.pop("PYTHONDONTWRITEBYTECODE")
        env["PYTHONPYCACHEPREFIX"] = str(cache / "pycache")
    # DeepSpeed on torch 2.13 warns once per collective (deprecated all_gather_into_tensor).
    env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    env.update(extra or {})
    return env


def job_id(params: dict, nproc: int) -> str:
    """A short hash of a job's parameters and training data (name, size, mtime): the same
    job rerun gets the same id (and so resumes), any change gets another."""
    import hashlib

    d = {k: v for k, v in params.items() if k not in ("output_dir", "progress", "resume", "merge")}
    data = d.get("train_data")
    if isinstance(data, (str, Path)) and Path(data).is_file():
        st = Path(data).stat()
        d["train_data"] = [str(Path(data).resolve()), st.st_size, int(st.st_mtime)]
    d["nproc"] = nproc
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


def precheck(cfg, world_size: int):
    """Everything a worker would reject, checked here: inputs, plan vs args, resume."""
    from rightsizer.finetune.train import check_run

    _, plan, ds, args, _ = check_run(cfg, world_size)
    return plan, ds, args


def finetune(config, nproc: int = 1, env: dict | None = None, timeout: float | None = None,
             stream=None, inprocess: bool | None = None, node=None) -> dict:
    """Run a fine-tune with ``nproc`` processes; returns the result dict (``result.json``).

    ``node`` (``rightsizer.finetune.mpi.MpiNode``): this is one node of several, which
    launches its ``nproc`` workers with torchrun against node 0's rendezvous; the output
    folder must be shared by the nodes. Only node 0 returns the result; the others return
    ``{"node_rank", "world_size"}`` once their workers are done.
    Bad input raises :class:`ConfigError` before any training and leaves no adapter.
    """
    from rightsizer.finetune.train import FinetuneConfig, run_training

    cfg = config if isinstance(config, FinetuneConfig) else FinetuneConfig.from_dict(dict(config))
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc: {nproc!r}; expected a positive integer")
    nodes = node.count if node is not None else 1
    world = nproc * nodes
    precheck(cfg, world)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if world == 1 and inprocess is not False:
        return run_training(cfg)
    # Written whole (write, then rename): on several nodes each writes the same files into
    # the shared folder while the others' workers may already read them.
    if isinstance(cfg.train_data, list):  # workers read the data from a file
        data = out / "train_data.jsonl"
        atomic_write_text(data, "".join(json.dumps({"prompt": p, "answer": a}) + "\n"
                                        for p, a in ((r[0], r[1]) if not isinstance(r, dict)
                                                     else (r.get("prompt"), r.get("answer"))
                                                     for r in cfg.train_data)))
        cfg = FinetuneConfig.from_dict({**cfg.to_dict(), "train_data": str(data),
                                        "prompt_template": None})
    cfg_path = out / "finetune-config.json"
    atomic_write_text(cfg_path, json.dumps(cfg.to_dict(), indent=2))
    if node is None or node.rank == 0:
        (out / "error.json").unlink(missing_ok=True)
    cmd = (torchrun_command(cfg_path, nproc) if node is None else
           torchrun_command(cfg_path, nproc, nnodes=node.count, node_rank=node.rank,
                            master_addr=node.master_addr, master_port=node.master_port))
    rc, tail = run_command(cmd, worker_env(nproc, env), timeout=timeout, stream=stream)
    err = out / "error.json"
    if err.is_file():
        e = json.loads(err.read_text())
        raise ConfigError(e["problems"], source="fine-tune")
    if rc != 0:
        raise RuntimeError(f"torchrun exited with {rc}; last output:\n" + "".join(tail))
    if node is not None and node.rank != 0:
        return {"node_rank": node.rank, "world_size": world}  # node 0 writes the result
    return json.loads((out / "result.json").read_text())


def run_command(cmd: list[str], env: dict, timeout: float | None = None, stream=None,
                cwd: str | None = None) -> tuple[int, list[str]]:
    """Run ``cmd``, echo its output to ``stream`` (stdout by default), keep the last lines."""
    stream = stream if stream is not None else sys.stdout
    tail: deque[str] = deque(maxlen=60)
    proc = subprocess.Popen(cmd, env=env, cwd=cwd or _ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)
    try:
        for line in proc.stdout:
            tail.append(line)
            if stream:
                stream.write(line)
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return rc, list(tail)


# --------------------------------------------------------------------------- multi-node

def trainjob_manifest(name: str, image: str, config_path: str, num_nodes: int, gpus_per_node: int,
                      namespace: str | None = None, runtime: str = "torch-distributed",
                      env: dict | None = None) -> dict:
    """A Kubeflow Trainer (v2) ``TrainJob`` that runs this entry point on ``num_nodes`` nodes.

    The ``torch-distributed`` runtime starts torchrun on every node with the node count,
    rank and master address (``PET_*``) set, so the command is the module itself.
    """
    problems = []
    if num_nodes < 1:
        problems.append(f"num_nodes: {num_nodes}; expected >= 1")
    if gpus_per_node < 0:
        problems.append(f"gpus_per_node: {gpus_per_node}; expected >= 0")
    if not name or not name.replace("-", "").isalnum() or name != name.lower():
        problems.append(f"name: {name!r}; expected a lower-case DNS label")
    if problems:
        raise ConfigError(problems, source="TrainJob")
    limits = {"nvidia.com/gpu": gpus_per_node} if gpus_per_node else {}
    manifest = {
        "apiVersion": "trainer.kubeflow.org/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": name, **({"namespace": namespace} if namespace else {})},
        "spec": {
            "runtimeRef": {"name": runtime},
            "trainer": {
                "image": image,
                "command": ["torchrun", "-m", "rightsizer.finetune.train", "--config", config_path],
                "numNodes": num_nodes,
                "numProcPerNode": gpus_per_node or 1,
                "resourcesPerNode": {"limits": limits, "requests": dict(limits)},
                "env": [{"name": k, "value": str(v)} for k, v in
                        {"NCCL_DEBUG": "WARN", "TOKENIZERS_PARALLELISM": "false", **(env or {})}.items()],
            },
        },
    }
    return manifest
