"""Data-parallel training under `torchrun`: the few collectives `rfprm.trainer.train` needs.

    torchrun --nproc_per_node 2 scripts/train_prm.py ...   # same flags as one process

How rfprm splits the work (the paper trains its PRM on several GPUs, arXiv 2506.18896 Sec. 5.1;
how the global batch is split does not change what is learned):
- The global batch of an optimizer step is `grad_accum` micro-batches, each given by the pure
  function `batch_at(step, micro)` (see `rfprm/trainer.py`). Rank r of W takes the micro-batches
  micro = r, r + W, r + 2W, ... (`my_micro_batches`); `grad_accum` must be a multiple of W, so
  every rank does the same amount of work and no micro-batch is seen twice.
- Each rank back-propagates loss / grad_accum over its own micro-batches; summing the gradients
  over ranks (`all_reduce_grads`) gives exactly the single-process accumulated gradient, so the
  same global batch gives the same run up to float summation order. No `DistributedDataParallel`
  wrapper: rfprm's losses call model methods other than `forward` (e.g. `PRM.read`), which DDP's
  hooks do not see; one flat all-reduce per optimizer step does the same job plainly.
- Rank 0 broadcasts its weights at the start (`broadcast_params`), so every rank starts equal
  even if they were initialised differently; only rank 0 (`is_main()`) writes files or shows a
  progress bar.
- Backend: NCCL when CUDA is available (each rank on `cuda:LOCAL_RANK`, see `local_device`),
  gloo on the CPU. Outside torchrun (WORLD_SIZE unset or 1) every function here is a no-op, so
  single-process code needs no branches.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import RfprmError


def world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """True on the one process that writes checkpoints, logs and result files."""
    return rank() == 0


def is_distributed() -> bool:
    return world_size() > 1


def local_device() -> torch.device:
    """cuda:LOCAL_RANK when CUDA is available, else the CPU: where this rank's model goes."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_from_env() -> bool:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT).
    Returns True when running distributed. Idempotent; a no-op for a single process."""
    if world_size() <= 1:
        return False
    if dist.is_initialized():
        return True
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RfprmError(f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} is not set; "
                         f"launch with torchrun --nproc_per_node N (which sets them)")
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_device())
    dist.init_process_group(backend=backend)
    return True


def cleanup() -> None:
    """Leave the process group (scripts call it once at the very end)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def check_divisible(global_count: int, what: str = "grad_accum") -> int:
    """-> the per-rank share of `global_count`, or one clear error when it does not divide."""
    w = world_size()
    if global_count % w:
        raise RfprmError(f"{what} = {global_count} is not divisible by the {w} processes torchrun "
                         f"started; use a multiple of {w} (the global batch is split evenly)")
    return global_count // w


def split_global_batch(global_batch: int, accum_per_rank: int = 1) -> tuple[int, int]:
    """A script's global batch (examples per optimizer step) -> (micro-batch size, grad_accum)
    for `TrainConfig`: each of the W ranks runs `accum_per_rank` micro-batches, so
    grad_accum = W * accum_per_rank and micro-batch size = global_batch / grad_accum. One
    process gives (global_batch / accum_per_rank, accum_per_rank): the same optimisation."""
    grad_accum = world_size() * accum_per_rank
    if accum_per_rank < 1 or global_batch % grad_accum:
        raise RfprmError(f"batch size {global_batch} cannot be split over {world_size()} processes x "
                         f"{accum_per_rank} micro-batches each; use a multiple of {max(grad_accum, 1)}")
    return global_batch // grad_accum, grad_accum


def micro_batches(global_batch: int, grad_accum: int = 0, what: str = "examples") -> tuple[int, int]:
    """(micro-batch size, micro-batches per optimizer step) for a global batch of `global_batch`
    `what` split into `grad_accum` micro-batches over all processes (0: one per process). The
    same global batch and grad_accum give the same run on one process or under torchrun."""
    world = world_size()
    grad_accum = grad_accum or world
    if grad_accum < 1 or grad_accum % world or global_batch % grad_accum:
        raise RfprmError(f"batch of {global_batch} {what} in {grad_accum} micro-batches over {world} "
                         f"process(es): the micro-batches must divide the batch evenly and be a multiple "
                         f"of the number of processes")
    return global_batch // grad_accum, grad_accum


def my_micro_batches(grad_accum: int) -> range:
    """The micro-batch indices of one optimizer step that this rank computes."""
    check_divisible(grad_accum)
    return range(rank(), grad_accum, world_size())


def shard(items: list, what: str = "batch") -> list:
    """This rank's contiguous slice of a global list (e.g. the examples of one global batch);
    the length must divide evenly."""
    per_rank = check_divisible(len(items), f"{what} size")
    return items[rank() * per_rank:(rank() + 1) * per_rank]


def broadcast_params(model: torch.nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not is_distributed() or not dist.is_initialized():
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


def all_reduce_grads(model: torch.nn.Module) -> None:
    """Sum every parameter's gradient over ranks, in one flat buffer (a missing grad counts as 0,
    so all ranks issue the same collective)."""
    if not is_distributed() or not dist.is_initialized():
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])          # (total params,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def _collective_device() -> torch.device:
    return local_device() if dist.get_backend() == "nccl" else torch.device("cpu")


def union_of_keys(keys: list[str]) -> list[str]:
    """Every rank's metric names, on every rank (a loss may log a term only for some batches).
    The names travel as UTF-8 bytes in tensors: no pickling."""
    device = _collective_device()
    data = torch.tensor(list("\n".join(sorted(keys)).encode()), dtype=torch.uint8, device=device)
    size = torch.tensor([data.numel()], device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(sizes).item())
    padded = torch.zeros(longest, dtype=torch.uint8, device=device)
    padded[:data.numel()] = data
    gathered = [torch.zeros_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    names = set()
    for t, n in zip(gathered, sizes):
        names.update(k for k in bytes(t[:int(n.item())].tolist()).decode().split("\n") if k)
    return sorted(names)


def from_main(text: str) -> str:
    """Rank 0's `text` on every rank (e.g. a run name made from the clock); itself outside torchrun."""
    if not is_distributed() or not dist.is_initialized():
        return text
    return union_of_keys([text] if is_main() else [])[0]


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum a dict of floats over ranks; a name missing on a rank counts 0 there."""
    if not is_distributed() or not dist.is_initialized():
        return values
    keys = union_of_keys(list(values))
    t = torch.tensor([values.get(k, 0.0) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return dict(zip(keys, t.tolist()))
