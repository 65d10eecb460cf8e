"""Data-parallel training under torchrun: one process per device, DistributedDataParallel, rank 0 writes.

``torchrun --nproc-per-node N -m meshtalk train ...`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set; ``join`` makes them one process group (NCCL on CUDA, gloo
on CPU) and gives each its ``World``. Without these variables ``join`` gives the single-process world and the
trainer runs exactly as it does without torchrun.

N ranks take the step that one process takes on the whole batch of B windows:

- data: rank r reads samples ``step * B + r * B/N`` to ``step * B + (r + 1) * B/N - 1`` of the run's counter
  (``meshtalk.data.WindowSampler``), so together the ranks read the windows of one process's batch;
- random draws: every rank holds the same random streams (seeded alike, or restored from rank 0's checkpoint) and
  makes each draw for the whole batch, keeping its own rows: the Gumbel noise and the rolls of the stage-1 loss
  (``meshtalk.objectives.BatchShard``) and the dropout masks (``GlobalBatchDropout``). A draw of this rank's rows
  only, from streams every rank shares, would repeat on every rank;
- the roll: stage 1 decodes each sequence with another sequence's expression or audio code. The codes are gathered
  from every rank (``gather_rows``), so the partner is any sequence of the batch as in one process, and the
  gradient through the partner's code goes back to the rank that encoded it;
- gradients: each loss is a mean over the rank's rows, and DDP averages the ranks' gradients: the batch's mean.

Rank 0 alone writes the log, the checkpoints and the progress bar and runs validation and the monitors; the other
ranks wait for it in their next collective. The ranks agree at every step on whether to stop (a signal that any of
them received) and on the batch's mean losses (a non-finite one stops them all).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from facedata.errors import InputError
from meshtalk.device import resolve_device
from meshtalk.objectives import BatchShard

# torchrun sets all of them for every process it starts.
LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# Rank 0 validates and writes checkpoints while the others wait in their next collective; NCCL's default of
# 10 minutes could run out on a large validation set.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World:
    """The processes of a run: ``size`` ranks, this one ``rank`` (``local_rank`` on its node), on ``device``.

    ``launched`` is True under torchrun, also with a single rank: the trainer then goes through DDP.
    """

    device: torch.device
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the rank that writes the run directory."""
        return self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        """This rank's windows of a step of ``batch_size``.

        Raises:
            InputError: ``batch_size`` is not a multiple of the number of ranks.
        """
        if batch_size % self.size:
            raise InputError("config.batch_size", f"not divisible by the {self.size} ranks",
                             expected=f"a multiple of {self.size}", actual=batch_size)
        return batch_size // self.size

    def shard(self, batch_size: int) -> BatchShard | None:
        """This rank's rows of a batch of ``batch_size`` for the objective; None in a single process."""
        if not self.launched:
            return None
        local = self.local_batch(batch_size)
        return BatchShard(self.rank * local, (self.rank + 1) * local, batch_size, gather=gather_rows)

    def mean(self, values: list[Tensor]) -> list[float]:
        """Scalars averaged over the ranks: each rank's mean over its rows becomes the mean over the batch."""
        if not self.launched:
            return [value.detach().item() for value in values]
        stacked = torch.stack([value.detach().float() for value in values])
        dist.all_reduce(stacked)
        return (stacked / self.size).tolist()

    def agree_stop(self, signum: int | None) -> int | None:
        """The stop signal received by any rank (the largest number), or None: every rank stops at the same step."""
        if not self.launched:
            return signum
        flag = torch.tensor([signum or 0], device=self.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def continue_cuda_stream(self, states: list[Tensor]) -> None:
        """Set this rank's CUDA random stream to the one a checkpoint saved first: rank 0's (``cuda:0``).

        A checkpoint holds the streams of every device rank 0's process sees, but only its own was drawn from;
        every rank continues that one, so the ranks' streams stay the same.
        """
        if self.device.type == "cuda" and states:
            torch.cuda.set_rng_state(states[0], self.device)


def launch_environment() -> dict[str, int] | None:
    """``rank``, ``size`` and ``local_rank`` of a torchrun launch, or None outside one.

    A launch is recognised by ``RANK`` or ``WORLD_SIZE``; a cluster environment that only sets ``MASTER_ADDR`` and
    ``MASTER_PORT`` is not one.

    Raises:
        InputError: a launch without all of ``LAUNCH_VARIABLES``, or a rank that is not an integer.
    """
    if "RANK" not in os.environ and "WORLD_SIZE" not in os.environ:
        return None
    missing = [name for name in LAUNCH_VARIABLES if name not in os.environ]
    if missing:
        raise InputError("environment", "an incomplete torchrun launch", expected=", ".join(LAUNCH_VARIABLES),
                         actual=f"no {', '.join(missing)}")
    try:
        return {"rank": int(os.environ["RANK"]), "size": int(os.environ["WORLD_SIZE"]),
                "local_rank": int(os.environ["LOCAL_RANK"])}
    except ValueError as e:
        raise InputError("environment", "RANK, WORLD_SIZE and LOCAL_RANK are not integers", expected="integers",
                         actual=f"{os.environ['RANK']}, {os.environ['WORLD_SIZE']}, {os.environ['LOCAL_RANK']}"
                         ) from e


@contextlib.contextmanager
def join(device: str) -> Iterator[World]:
    """The run's world: the single process, or under torchrun this rank of a process group joined for the run.

    CUDA ranks use the GPU of their local rank and NCCL, CPU ranks gloo. A process group the caller started (say
    with ``torch.multiprocessing``) is used as it is and left to the caller; its local rank is ``LOCAL_RANK`` or 0.
    When the run ends normally every rank waits for the others (rank 0 writes the last checkpoint) before leaving:
    torchrun stops the remaining ranks as soon as one has exited with an error status, which a run stopped by a
    signal does.

    Raises:
        InputError: an incomplete torchrun environment, or a device index under torchrun.
    """
    launch = launch_environment()
    chosen = resolve_device(device)
    if launch is None and not dist.is_initialized():
        yield World(chosen)
        return
    local_rank = launch["local_rank"] if launch is not None else int(os.environ.get("LOCAL_RANK", 0))
    if chosen.type == "cuda":
        if device not in ("auto", "cuda"):
            raise InputError("--device", "under torchrun each rank uses the GPU of its local rank",
                             expected="auto or cuda", actual=device)
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    started = not dist.is_initialized()
    if started:
        dist.init_process_group("nccl" if chosen.type == "cuda" else "gloo", timeout=COLLECTIVE_TIMEOUT,
                                device_id=chosen if chosen.type == "cuda" else None)
    world = World(chosen, rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local_rank, launched=True)
    try:
        yield world
        dist.barrier()
    finally:
        if started:
            dist.destroy_process_group()


# --- the roll over the whole batch -----------------------------------------------------------------------------------


class _GatherRows(torch.autograd.Function):
    """Every rank's rows of a tensor in rank order (rows x ... -> ranks * rows x ...).

    Backward: every rank's loss may use every rank's rows, so each row's gradient is summed over the ranks and each
    rank keeps the gradient of its own rows. A sum, not a mean: DDP divides the parameters' gradients by the number
    of ranks afterwards.
    """

    @staticmethod
    def forward(ctx: Any, rows: Tensor) -> Tensor:
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows.contiguous())
        ctx.rows = rows.shape[0]
        return torch.cat(parts)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total)
        rank = dist.get_rank()
        return total[rank * ctx.rows : (rank + 1) * ctx.rows]


def gather_rows(rows: Tensor) -> Tensor:
    """Every rank's rows of ``rows`` (B_rank x ...), concatenated in rank order, with gradients to their owners."""
    return _GatherRows.apply(rows)


# --- dropout drawn for the whole batch -------------------------------------------------------------------------------


class GlobalBatchDropout(nn.Module):
    """Dropout whose mask is drawn for the whole batch and cut to this rank's rows.

    Every rank holds the same random streams, so a mask of this rank's rows alone would be the same on every rank.
    The mask here is ``F.dropout`` of ones of the whole batch's shape, the draw one process makes, so a rank's mask
    is the rows one process would use. The input's first dimension must be batch-major (B or B * T rows, as in the
    audio encoder) with this rank's rows ``rank * n`` to ``(rank + 1) * n - 1`` of the batch.
    """

    def __init__(self, p: float, *, rank: int, ranks: int):
        super().__init__()
        self.p, self.rank, self.ranks = p, rank, ranks

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x  # F.dropout draws nothing here either
        rows = x.shape[0]
        ones = torch.ones((rows * self.ranks, *x.shape[1:]), dtype=x.dtype, device=x.device)
        mask = F.dropout(ones, self.p, training=True)[self.rank * rows : (self.rank + 1) * rows]
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}, rank={self.rank} of {self.ranks}"


def shard_dropout(model: nn.Module, world: World) -> None:
    """Replace every ``nn.Dropout`` of ``model`` (in place) by a ``GlobalBatchDropout`` of this rank."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, GlobalBatchDropout(child.p, rank=world.rank, ranks=world.size))


# --- DistributedDataParallel -----------------------------------------------------------------------------------------


class _Step(nn.Module):
    """A step's forward as a module: DDP averages the gradients of a backward pass only after its own forward."""

    def __init__(self, model: nn.Module, forward: Callable[..., Any]):
        super().__init__()
        self.model = model
        self.step_forward = forward

    def forward(self, *args: Any) -> Any:
        return self.step_forward(*args)


class DataParallel:
    """``forward(*args)`` (a step's named loss terms, computed with ``model``) run through DDP.

    DDP registers the parameters that require gradients when it is built. Parameters no optimiser group holds
    (stage 1's context model) stop requiring them here, so they are not communicated. Some trained ones never get a
    gradient (the audio weights the context model's first and last layers own but do not use, as in the released
    model): with ``static_graph`` DDP finds them at the first step and skips them afterwards, without searching the
    autograd graph at every step. The graph must then stay the same from step to step; a recipe hook that freezes or
    unfreezes parameters changes it, and the wrapper is rebuilt at that step (every rank runs the same hooks, so all
    rebuild together; building broadcasts rank 0's weights, which every rank already has).
    """

    def __init__(self, model: nn.Module, forward: Callable[..., Any], *, trained: list[nn.Parameter],
                 device: torch.device):
        held = {id(p) for p in trained}
        for p in model.parameters():
            if id(p) not in held:
                p.requires_grad_(False)
        self.model = model
        self.module = _Step(model, forward)
        self.device_ids = [device.index] if device.type == "cuda" else None
        self.ddp: DistributedDataParallel | None = None
        self.trained: tuple[bool, ...] = ()

    def __call__(self, *args: Any) -> Any:
        trained = tuple(p.requires_grad for p in self.model.parameters())
        if self.ddp is None or trained != self.trained:
            self.ddp = None  # the old reducer's gradient hooks go with it
            self.ddp = DistributedDataParallel(self.module, device_ids=self.device_ids, static_graph=True)
            self.trained = trained
        return self.ddp(*args)
