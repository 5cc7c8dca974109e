"""Data-parallel training over the processes ``torchrun`` starts: the process group, ranks, DDP.

torchrun starts one copy of ``vaelab train`` per device and tells each its place through the
environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` and the rendezvous address). Every process loads
the same data, builds the same model from the same seed and draws the same random numbers for each
*global* batch; it computes the loss of its own rows, and DistributedDataParallel averages the
gradients. The weights therefore stay identical on every process and equal to those of a
single-process run, up to float rounding. Only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from vaelab.config import ConfigError
from vaelab.errors import VaelabError
from vaelab.data.pipeline import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes; the defaults describe a single process."""

    rank: int = 0  # 0 .. world_size - 1; rank 0 writes the run directory
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """This process's rows of a global batch: rank r of W takes [r ceil(B/W), (r+1) ceil(B/W)).

        The last share may be shorter, or empty for a short last batch of the epoch.
        """
        share = -(-batch // self.world_size)
        return slice(self.rank * share, (self.rank + 1) * share)

    def gather_objects(self, items: list[T]) -> list[T]:
        """Every process's ``items``, concatenated in rank order (``items`` itself for one process)."""
        if self.world_size == 1:
            return items
        gathered: list[list[T] | None] = [None] * self.world_size
        dist.all_gather_object(gathered, items)
        return [item for part in gathered for item in (part or [])]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over all processes, in place (unchanged for a single process)."""
        if self.world_size > 1:
            dist.all_reduce(tensor)
        return tensor


def is_main_process() -> bool:
    """Whether this process is rank 0 (or alone): for the CLI, before any process group exists."""
    return os.environ.get("RANK", "0") == "0"


def _environment() -> tuple[int, int, int]:
    """``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` as torchrun sets them (1, 0, 0 without torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        raise VaelabError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None


def _device(name: str, local_rank: int) -> torch.device:
    """One GPU per process on a node (``cuda:LOCAL_RANK``) when CUDA is asked for or ``auto`` finds it."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank)
    device = resolve_device(name)
    if device.type != "cpu":
        raise ConfigError("device", f"{name!r} would put every process on one device; use auto, cuda or cpu with torchrun")
    return device


@contextlib.contextmanager
def session(device_name: str) -> Iterator[Processes]:
    """The processes of this run, with the process group initialised (gloo on CPU, NCCL on CUDA) when
    torchrun started several, and destroyed afterwards. A group the caller already initialised is
    used and left alone. On success every process waits for the others before leaving, so that no
    process returns before rank 0 has finished writing the run directory."""
    world_size, rank, local_rank = _environment()
    if world_size <= 1:
        yield Processes(device=resolve_device(device_name))
        return
    device = _device(device_name, local_rank)
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads_per_process())
    owned = not dist.is_initialized()
    if owned:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield Processes(rank=rank, world_size=world_size, device=device)
        dist.barrier()
    finally:
        if owned:
            dist.destroy_process_group()


def cpu_threads_per_process() -> int:
    """Intra-op threads for each of the processes torchrun started on this machine: the cores shared
    out (two busy processes with two threads each on two cores run 10-30x slower); ``VAELAB_THREADS``
    overrides it."""
    if "VAELAB_THREADS" in os.environ:
        try:
            return max(1, int(os.environ["VAELAB_THREADS"]))
        except ValueError:
            raise VaelabError(f"VAELAB_THREADS must be an integer, got {os.environ['VAELAB_THREADS']!r}") from None
    local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))
    return max(1, (os.cpu_count() or 1) // max(local, 1))


def from_main(processes: Processes, make: Callable[[], T]) -> T:
    """``make()`` run on rank 0 only, its result handed to every process: for what must agree but
    may differ between processes (the default run directory name holds the time), or may be done
    once only (creating that directory). The broadcast doubles as the barrier after it. An error on
    rank 0 is raised on every process, so none waits forever."""
    if processes.world_size == 1:
        return make()
    message: list[object] = [None]
    error: Exception | None = None
    if processes.is_main:
        try:
            message[0] = ("ok", make())
        except Exception as exc:  # re-raised below, once the others have been told
            error, message[0] = exc, ("error", str(exc))
    dist.broadcast_object_list(message, src=0)
    if error is not None:
        raise error
    kind, value = message[0]  # type: ignore[misc]
    if kind == "error":
        raise VaelabError(f"rank 0: {value}")
    return value  # type: ignore[return-value]


def wrap(module: torch.nn.Module, processes: Processes) -> torch.nn.Module:
    """``module`` in DistributedDataParallel when there are several processes, else as it is.

    Buffers are not re-sent at each step: training never changes them.
    """
    if processes.world_size == 1:
        return module
    device_ids = [processes.device.index] if processes.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)
