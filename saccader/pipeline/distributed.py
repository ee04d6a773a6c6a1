"""Data-parallel training with ``torch.distributed`` (gloo on CPU, NCCL on CUDA).

Each replica takes an equal, contiguous slice of every *global* minibatch, computes the mean loss over its slice and
the gradients are averaged across replicas: the update equals the single-process update on the global batch (up to
floating-point summation order). Gradients are all-reduced by hand, once per optimizer step (after the last
micro-batch), rather than through ``DistributedDataParallel``: the Saccader is driven through several methods
(``backbone``, ``rollout``, ``pretrain_forward``) and DDP's reducer only arms its gradient hooks in a call of the
wrapped module's ``forward``; some stages also leave parameters without a gradient in a step, which DDP only allows
with ``find_unused_parameters`` (a graph walk each step). The price: the all-reduce does not overlap the backward
pass. Batch-norm statistics stay per replica (per micro-batch), as with per-core batch norm on the TPUs of the paper.

Ranks come from the usual ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` variables,
which ``torchrun`` sets and which :func:`init` exports from submitit's job environment inside a submitit task (one
task per GPU, on one or several nodes). Every task sees every GPU of its node; it takes ``cuda:LOCAL_RANK``.
"""

from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

__all__ = ["init", "is_distributed", "rank", "local_rank", "world_size", "is_main", "shard", "all_reduce_mean",
           "all_reduce_sum", "all_gather_object", "average_gradients", "broadcast_module", "broadcast_buffers",
           "barrier", "shutdown"]


def init(device: str | torch.device | None = None) -> torch.device:
    """Join the process group when launched with several tasks (submitit or torchrun) and return this task's device.

    ``device`` None means CUDA when available, else CPU. A CUDA device without an index becomes ``cuda:LOCAL_RANK``
    (made the current device, and the process group is bound to it), so the tasks of a node use one GPU each; on
    CUDA, cuDNN autotunes its convolutions (``cudnn.benchmark``).
    One process: no process group, and ``cuda`` is ``cuda:0``.
    """
    _export_submitit_environment()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank())
        torch.cuda.set_device(dev)
        # Every job feeds fixed shapes (one resolution, drop-last training batches, fixed glimpse sizes): let cuDNN
        # time its convolution algorithms once per shape and keep the fastest.
        torch.backends.cudnn.benchmark = True
    if dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dev
    backend = "nccl" if dev.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30),
                            device_id=dev if dev.type == "cuda" else None)
    return dev


def _export_submitit_environment() -> None:
    """RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR/PORT from submitit's job environment (several tasks only)."""
    if "WORLD_SIZE" not in os.environ and "SUBMITIT_EXECUTOR" in os.environ:
        try:
            import submitit

            if submitit.JobEnvironment().num_tasks > 1:
                submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
        except RuntimeError:  # not inside a submitit job after all
            pass


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This task's index on its node (which GPU it uses)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def shard(batch_indices: torch.Tensor) -> torch.Tensor:
    """This replica's contiguous slice of a global batch (the global batch size must divide by the world size)."""
    n = world_size()
    if n == 1:
        return batch_indices
    size = len(batch_indices) // n
    return batch_indices[rank() * size:(rank() + 1) * size]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over replicas (a copy; the input is left untouched)."""
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out / world_size()


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    if not is_distributed():
        return value
    out = value.detach().clone()
    dist.all_reduce(out)
    return out


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` for one process)."""
    if not is_distributed():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def average_gradients(parameters) -> None:
    """Average the ``.grad`` of ``parameters`` over replicas, in one flat all-reduce."""
    if not is_distributed():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_module(module: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every replica (identical start even if initialisation differed)."""
    if not is_distributed():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(tensor.data, src=0)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (batch-norm running statistics, per replica while training) to every replica, so that
    every rank evaluates the model that rank 0 saves."""
    if not is_distributed():
        return
    for tensor in module.buffers():
        dist.broadcast(tensor.data, src=0)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()
