"""The process group of a data-parallel training run: N processes started by ``torchrun`` (or by
``kgprobe linkpred train --nproc N``, which starts torchrun), each a *rank*, that train one model.

* :func:`join` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``/``MASTER_PORT``) and opens the process group: NCCL when the run's device is a
  GPU (rank ``r`` of a node takes ``cuda:LOCAL_RANK``), gloo on CPUs. Outside torchrun (or with one
  process) it returns :data:`SINGLE` and nothing distributed happens.
* :class:`World` is what a rank knows and does with the others: its rank, the number of ranks,
  an all-gather of rows that gradients flow back through (the in-batch entity vectors: every
  rank scores its positives against the vectors that *all* ranks encoded, SimKGC-style), and
  small host-side exchanges (a sum, a flag, a broadcast object) on a gloo group of their own, so
  they never wait on the GPU nor interleave with DDP's gradient all-reduce.
* :func:`shard_bounds` splits ``n`` rows into ``N`` contiguous shares that differ by at most one
  row (the first ``n mod N`` ranks take one more); training splits every global batch by it,
  evaluation its candidate entities and its queries.
* :func:`check_nproc` and :func:`launch` are ``--nproc N``: at most one process per CUDA device
  (GPU) or per CPU core this process may use (CPU), then ``torch.distributed.run --standalone``
  with the same command. No scheduler of our own: torchrun starts, watches and stops the ranks.

The all-gather's backward sums, over every rank, the gradient of each gathered row and hands
each rank the part of its own rows: with DDP averaging the parameter gradients over ``N`` ranks and
each rank's loss scaled by ``N`` (see :class:`~kgprobe.linkpred.trainer.Trainer`), the update is
the gradient of the whole global batch's loss, as one process with that batch computes it.
"""
from __future__ import annotations

import logging
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.distributed as dist

from kgprobe.errors import KgprobeError

#: the variables torchrun sets for every rank (the ones read here)
ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

__all__ = ["ENV", "SINGLE", "World", "available_slots", "check_nproc", "join", "launch", "launched", "launched_rank",
           "lost_peers", "shard_bounds"]


def launched() -> bool:
    """Whether this process is one of several that torchrun started (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def launched_rank() -> int:
    """This process's rank under torchrun (0 outside it)."""
    try:
        return int(os.environ.get("RANK", "0")) if launched() else 0
    except ValueError:
        return 0


def shard_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous ``(start, stop)`` ranges covering ``range(n)`` in order; sizes differ by
    at most one, the first ``n % parts`` ranges one longer (a range may be empty when ``n < parts``)."""
    if parts < 1:
        raise KgprobeError(f"cannot split into {parts} parts")
    base, extra = divmod(int(n), int(parts))
    bounds, start = [], 0
    for rank in range(parts):
        stop = start + base + (1 if rank < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


class _GatherRows(torch.autograd.Function):
    """All-gather of ``(rows, d)`` blocks padded to ``width`` rows: ``(world x width, d)``, rank
    ``r``'s block at rows ``r x width``. Backward: the gradients of every rank summed (one
    all-reduce), then each rank keeps those of its own rows."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, width: int, group: Any) -> torch.Tensor:
        rows = tensor.shape[0]
        padded = torch.cat([tensor, tensor.new_zeros((width - rows, *tensor.shape[1:]))]) if rows < width \
            else tensor.contiguous()
        blocks = [torch.empty_like(padded) for _ in range(dist.get_world_size(group))]
        dist.all_gather(blocks, padded, group=group)
        ctx.group, ctx.rows, ctx.width = group, rows, width
        return torch.cat(blocks)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, group=ctx.group)
        start = dist.get_rank(ctx.group) * ctx.width
        return grad[start:start + ctx.rows], None, None


@dataclass
class World:
    """This rank and its peers (``size`` 1: a single process; every method is then a no-op)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None
    #: the group of the vectors' all-gather (apart from DDP's, so their collectives never interleave)
    gather_group: Any = None
    #: a gloo group for host-side values (sums, flags, objects), whatever the backend
    control: Any = None
    owned: bool = field(default=False, repr=False)

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints and metrics and prints."""
        return self.rank == 0

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's ``(start, stop)`` of ``n`` rows (:func:`shard_bounds`)."""
        return shard_bounds(n, self.size)[self.rank]

    def gather_rows(self, tensor: torch.Tensor, width: int) -> torch.Tensor:
        """Every rank's ``(rows, d)`` block padded to ``width`` rows, in rank order, with gradients
        flowing back to each rank's own rows (see :class:`_GatherRows`)."""
        if self.size == 1:
            return tensor
        return _GatherRows.apply(tensor, int(width), self.gather_group)

    def gather_varlen(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Every rank's ``tensor`` (any length along dim 0, the other dims equal), no gradient, in
        rank order; a CPU tensor goes through the gloo group, a GPU one through the gather group."""
        if self.size == 1:
            return [tensor]
        group = self.control if tensor.device.type == "cpu" else self.gather_group
        sizes = [torch.zeros(1, dtype=torch.long) for _ in range(self.size)]
        dist.all_gather(sizes, torch.tensor([tensor.shape[0]]), group=self.control)
        width = max(int(s) for s in sizes)
        with torch.no_grad():
            rows = tensor.shape[0]
            padded = torch.cat([tensor, tensor.new_zeros((width - rows, *tensor.shape[1:]))]) if rows < width \
                else tensor.contiguous()
            blocks = [torch.empty_like(padded) for _ in range(self.size)]
            dist.all_gather(blocks, padded, group=group)
        return [block[:int(n)] for block, n in zip(blocks, sizes)]

    def sum_float(self, value: float) -> float:
        """The sum of ``value`` over the ranks (float64, host side)."""
        if self.size == 1:
            return float(value)
        total = torch.tensor([float(value)], dtype=torch.float64)
        dist.all_reduce(total, group=self.control)
        return float(total)

    def max_ints(self, values: Sequence[int]) -> list[int]:
        """The largest of each value over the ranks (a flag one rank raised is everyone's), in one exchange."""
        if self.size == 1:
            return [int(v) for v in values]
        top = torch.tensor([int(v) for v in values], dtype=torch.long)
        dist.all_reduce(top, op=dist.ReduceOp.MAX, group=self.control)
        return [int(v) for v in top]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled; for checkpoints and small records)."""
        if self.size == 1:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def gather_objects(self, obj: Any) -> list:
        """``obj`` of every rank, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        out: list = [None] * self.size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier(group=self.control)

    def close(self) -> None:
        """Leave the process group if :func:`join` opened it."""
        if self.owned and dist.is_initialized():
            dist.destroy_process_group()
            self.owned = False


#: the world of a single process
SINGLE = World()


def join(device: torch.device) -> tuple[World, torch.device]:
    """This process's :class:`World` and device: under torchrun with several processes, the process
    group opened (or the one already open) with NCCL for a CUDA device, gloo otherwise, and a GPU
    run on ``cuda:LOCAL_RANK``; else :data:`SINGLE` and ``device`` unchanged."""
    if not launched():
        return SINGLE, device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is not None:
            raise KgprobeError(f"--device {device} names one GPU, but each of the processes takes its own "
                               "(cuda:LOCAL_RANK): use --device cuda or auto")
        if local_rank >= torch.cuda.device_count():
            raise KgprobeError(f"process {local_rank} of this node has no GPU of its own "
                               f"({torch.cuda.device_count()} visible)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group(backend=backend, device_id=device if device.type == "cuda" else None)
    world = World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, backend=backend,
                  owned=owned)
    world.gather_group = dist.new_group(backend=backend)
    world.control = dist.new_group(backend="gloo")
    return world, device


def lost_peers(err: BaseException) -> bool:
    """Whether ``err`` is a collective failing because another rank is gone (a closed connection,
    a distributed backend's error): that rank's end, not this one's."""
    if isinstance(err, getattr(dist, "DistError", ())):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(mark in text for mark in ("gloo/transport", "Connection closed",
                                                                        "Connection reset", "NCCL"))


def available_slots(device: torch.device) -> tuple[int, str]:
    """How many processes ``--nproc`` may start here and what limits it: the CUDA devices for a GPU
    run, else the CPU cores this process may use (its affinity mask; ``os.cpu_count()`` elsewhere)."""
    if device.type == "cuda":
        count = torch.cuda.device_count()
        return count, f"{count} CUDA device{'s' if count != 1 else ''}"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, f"{cores} CPU core{'s' if cores != 1 else ''}"


def check_nproc(nproc: int, device: torch.device) -> None:
    """One process per GPU, or per CPU core: more is a :class:`KgprobeError`."""
    slots, what = available_slots(device)
    if nproc > slots:
        raise KgprobeError(f"--nproc {nproc}: this machine has {what} for the run's device, one process each "
                           f"at most (use --nproc {slots} or fewer)")
    if device.type == "cuda" and device.index is not None:
        raise KgprobeError(f"--device {device} names one GPU, but with --nproc each process takes its own: "
                           "use --device cuda or auto")


def launch(nproc: int, args: Sequence[str], *, module: str = "kgprobe") -> int:
    """Run ``python -m module ARGS`` as ``nproc`` processes under ``torch.distributed.run
    --standalone`` (this machine, a free port) and return the exit code: 0, or that of the first
    rank that failed (``128 + N`` for a rank ended by signal ``N``). Each rank prints its own
    errors; torchrun's own failure report is silenced. Unless ``OMP_NUM_THREADS`` is set, every rank
    gets an equal share of the CPU cores (torchrun's default is one thread per rank)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(max(1, available_slots(torch.device("cpu"))[0] // nproc))
    for name in list(logging.root.manager.loggerDict):  # torchrun's loggers set their own levels
        if name.startswith(("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", module, *args]))
    except SignalException as err:  # torchrun passed it on to the ranks, which saved and said so
        return 128 + int(err.sigval)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()  # the root cause: the others are stopped after it
        code = failure.exitcode
        if code < 0:  # a rank ended by a signal prints nothing itself
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            print(f"kgprobe: error: process {rank} of {nproc} ended by {name}; run the same command "
                  "again to resume from the last checkpoint", file=sys.stderr)
            return 128 - code
        return code or 1
    return 0
