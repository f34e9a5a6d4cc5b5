"""Data parallelism with torchrun, and the GPU path: how the same training loops run on N processes.

`torchrun --standalone --nproc_per_node N -m minirlhf pretrain ...` starts N copies of the program and tells each,
in environment variables, who it is (RANK, LOCAL_RANK, WORLD_SIZE) and where to meet the others (MASTER_ADDR,
MASTER_PORT). `setup()` reads them and joins the process group (backend gloo on CPU, nccl on CUDA); a plain
`python -m minirlhf ...` sets none of them, and then nothing here does anything: one process, as before.

Data parallelism (DistributedDataParallel, as nanoGPT and nanochat use it): every process holds the whole model
and draws the same global batch (the same seeded windows, prompts or comparisons as one process would); each takes
its own disjoint share of the rows (`shard`), computes the loss and gradients on it, and the backward pass
all-reduces the gradients to their mean. With the loss of share r scaled by N·n_r/n (`scale_for_mean`), that mean
is the gradient of the one-process loss on the whole batch: the same step, computed in N pieces. Process 0 ("main")
alone logs, evaluates and writes files (the checkpoint module's writers ask `is_main`); the others wait at a
`barrier` and then read what it wrote.

Every collective call has a timeout (`MINIRLHF_DIST_TIMEOUT` seconds, default 600): a process that dies or hangs
makes the others fail with a message naming their rank, instead of waiting forever (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys

import torch
import torch.distributed as dist

TIMEOUT_ENV = "MINIRLHF_DIST_TIMEOUT"   # seconds a collective waits for the other processes
DEVICE_ENV = "MINIRLHF_DEVICE"          # the device every stage uses (model.pick_device reads it); --device sets it
DEFAULT_TIMEOUT_S = 600.0               # longer than anything rank 0 does alone between two collectives


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True once this process has joined a process group of several."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's number, 0..world_size()−1 (0 in a plain run)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """How many processes train together (1 in a plain run)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True for the process that logs, evaluates and writes files: rank 0, or the only one."""
    return rank() == 0


def timeout_seconds() -> float:
    value = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV}={value!r}: give the collective timeout as a positive number of seconds")
    return seconds


def setup(device: str | None = None) -> torch.device:
    """Join torchrun's process group if this process is one of several; returns the device this process uses.

    device: "cpu", "cuda", "mps" or None (the fastest available); it becomes the device of every stage
    (MINIRLHF_DEVICE). Under torchrun on CUDA, process r uses GPU LOCAL_RANK (one GPU per process) and the nccl
    backend; on CPU, gloo. A plain run joins nothing.
    """
    if device is not None:
        os.environ[DEVICE_ENV] = str(device)
    from minirlhf.model import pick_device

    chosen = pick_device()
    if chosen.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but this machine has {torch.cuda.device_count()} GPUs; "
                             "start at most one process per GPU (--nproc_per_node)")
        torch.cuda.set_device(local)          # torch.device("cuda") now means this process's GPU
        torch.backends.cuda.matmul.allow_tf32 = True   # fp32 matmuls (evaluation, PPO) on tensor cores
        torch.backends.cudnn.allow_tf32 = True
        chosen = torch.device("cuda", local)
    if launched_by_torchrun() and not is_distributed():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_seconds()))
    return chosen


def cleanup() -> None:
    """Leave the process group (after a last barrier, so that no process leaves while another still writes)."""
    if is_distributed():
        dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: str | None = None):
    """`with process_group(device):` setup(), the work, cleanup(). A process that fails says which rank it is
    (torchrun then stops the others) and leaves without waiting for them."""
    setup(device)
    try:
        yield
    except BaseException as error:
        if is_distributed():
            print(f"rank {rank()} of {world_size()} stopped: {type(error).__name__}: {error}\n"
                  f"(if another rank failed first, its message is above; collectives wait at most "
                  f"{timeout_seconds():.0f} s, set by {TIMEOUT_ENV})", file=sys.stderr, flush=True)
        raise
    cleanup()


# ------------------------------------------------------------------------------------------------------------
# Sharing a batch among the processes


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, end) of a batch of n rows that process `rank` of `world_size` takes: contiguous, disjoint,
    covering the batch, sizes differing by at most one (10 rows, 3 processes: 0–3, 3–6, 6–10)."""
    return n * rank // world_size, n * (rank + 1) // world_size


def shard(batch):
    """This process's share of a batch (a list, or a tensor's first dimension); the whole batch in a plain run."""
    if not is_distributed():
        return batch
    start, end = shard_bounds(len(batch), rank(), world_size())
    return batch[start:end]


def scale_for_mean(loss: torch.Tensor, local_count: int, global_count: int) -> torch.Tensor:
    """loss (this process's mean over its local_count items) · N · local_count / global_count.

    DDP averages the N processes' gradients; with this scale the average is the gradient of the mean over all
    global_count items of the batch: Σ_r (n_r / n) · ∇loss_r = ∇(one-process loss). Unchanged in a plain run.
    """
    if not is_distributed():
        return loss
    return loss * (world_size() * local_count / global_count)


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of `value` over the processes (a detached copy); `value` itself in a plain run."""
    if not is_distributed():
        return value
    return all_reduce(value) / world_size()


def collective_device() -> torch.device:
    """Where this process's collective tensors live: its GPU under nccl, the CPU under gloo (and in a plain run)."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(value: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """The sum (op "sum") or maximum ("max") of `value` over the processes, a detached copy; `value` in a plain run."""
    if not is_distributed():
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return total


def average_gradients(*models: torch.nn.Module) -> None:
    """After backward: every parameter's gradient replaced by its mean over the processes (what DDP does inside
    its backward pass, written out for a loop that calls several models and their methods). Nothing in a plain run."""
    if not is_distributed():
        return
    for model in models:
        for p in model.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world_size()


def broadcast_parameters(*models: torch.nn.Module) -> None:
    """Rank 0's weights in every process (so that the processes start, and with average_gradients stay, equal)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                dist.broadcast(p.data, src=0)


def broadcast_object(obj):
    """Rank 0's `obj` on every process (a number, a flag, a small dict); `obj` itself in a plain run."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait until every process gets here (nothing in a plain run)."""
    if is_distributed():
        dist.barrier()


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model for training steps: DistributedDataParallel around it under torchrun, the model itself otherwise.

    DDP copies rank 0's weights to every process, then all-reduces the gradients during backward. Only calls of
    the wrapper (ddp_model(x)) synchronise: evaluate, generate and save with the model itself.
    """
    if not is_distributed():
        return model
    return DataParallelModel(model, device_ids=None)


class DataParallelModel(torch.nn.parallel.DistributedDataParallel):
    """DistributedDataParallel that also answers `.config` (the model's), so code that reads model.config
    (context length, padding) takes the model or its wrapper alike."""

    @property
    def config(self):
        return self.module.config


def autocast(device: torch.device):
    """bf16 autocast on a CUDA GPU with bf16 tensor cores (compute capability 8.0 and up: A100, H100, RTX 30xx and
    later): matmuls in bf16, softmax, norms and losses in fp32. Nothing elsewhere (CPU, MPS, a T4: fp32)."""
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
