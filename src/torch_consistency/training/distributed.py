"""torch.distributed set-up for runs started by `torchrun` (gloo on CPU, NCCL on GPU)."""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's place in the run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, global_batch: int) -> slice:
        """The rows of the global batch that this rank computes."""
        per_rank = global_batch // self.world_size
        return slice(self.rank * per_rank, (self.rank + 1) * per_rank)


def setup(device_name: str) -> Distributed:
    """Join the process group when started by torchrun (WORLD_SIZE > 1) and pick this rank's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device_name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, device)


def barrier(place: Distributed) -> None:
    if place.world_size > 1:
        dist.barrier()


def teardown(place: Distributed) -> None:
    if place.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def assert_in_sync(place: Distributed, module: torch.nn.Module) -> None:
    """Raise if the ranks' copies of `module` differ (compares a float64 fingerprint of all weights)."""
    if place.world_size == 1:
        return
    with torch.no_grad():
        fingerprint = torch.stack(
            [
                torch.stack([p.double().sum() for p in module.parameters()]).sum(),
                torch.stack([p.double().square().sum() for p in module.parameters()]).sum(),
            ]
        ).to(place.device)
    gathered = [torch.empty_like(fingerprint) for _ in range(place.world_size)]
    dist.all_gather(gathered, fingerprint)
    if any(not torch.equal(gathered[0], other) for other in gathered[1:]):
        raise RuntimeError(f"the ranks' weights have diverged: fingerprints {[g.tolist() for g in gathered]}")


def global_mean(place: Distributed, value: torch.Tensor) -> torch.Tensor:
    """The mean of a per-rank scalar over all ranks (for logging the loss of the whole global batch)."""
    if place.world_size == 1:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / place.world_size
