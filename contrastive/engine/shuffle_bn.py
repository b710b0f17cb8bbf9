"""MoCo's shuffling BN for the key encoder (He, Fan, Wu, Xie, Girshick, CVPR 2020, Sec. 3.3).

"We resolve this problem by shuffling BN. We train with multiple GPUs and perform BN on the
samples independently for each GPU (as done in common practice). For the key encoder f_k, we
shuffle the sample order in the current mini-batch before distributing it among GPUs (and shuffle
back after encoding); the sample order of the mini-batch for the query encoder f_q is not altered."
Without it, a query and its positive key are normalised with the statistics of the same sub-batch,
a signal the model can use to find the positive ("cheat") instead of learning a good representation.

Under DDP, :func:`shuffled_keys` gathers the global batch of key images, encodes on this process
the rows a global permutation hands it, and gathers the outputs back into each process's original
order (the released code's ``_batch_shuffle_ddp`` / ``_batch_unshuffle_ddp``, facebookresearch/moco
moco/builder.py and salesforce/PCL pcl/builder.py lines 68-113). The permutation comes from a
generator seeded identically on every process (the same draw everywhere: no broadcast, and a
resumed run draws what the straight run drew). BatchNorm must be per process
(``trainer.sync_batchnorm=false``): a synchronised BN has one set of statistics for all processes
and nothing to shuffle.

On one process, permuting a batch does not change its BatchNorm statistics: the key encoder runs
on the batch as it is and the leak the shuffle avoids remains (MoCo's and PCL's code refuse to run
without DDP; MoCo's CIFAR demo splits the batch into 8 BN groups instead, not implemented here).
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.distributed as dist

from contrastive.memory.queue import gather_keys

Tensor = torch.Tensor


def process_count() -> int:
    """Processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@torch.no_grad()
def shuffled_keys(encoder: Callable[[Tensor], Tensor], images: Tensor,
                  generator: torch.Generator) -> Tuple[Tensor, Optional[Tensor]]:
    """``encoder(images)`` with the global batch shuffled across processes for its BatchNorm.

    Args:
        encoder: The key encoder, float ``[b, 3, S, S]`` -> ``[b, d]`` (runs without gradient).
        images: ``[B, 3, S, S]``, this process's key images (every process holds ``B``).
        generator: On ``images``' device, seeded the same on every process.

    Returns:
        ``(keys [B, d], permutation)``: the keys of ``images`` in their order, and the global
        permutation ``int64 [W * B]`` (process ``r`` encoded the gathered rows
        ``permutation[r * B:(r + 1) * B]``), ``None`` on one process (no shuffle).
    """
    world = process_count()
    if world == 1:
        return encoder(images), None
    b, rank = images.shape[0], dist.get_rank()
    gathered = gather_keys(images)  # [W * B, 3, S, S], rank order
    permutation = torch.randperm(world * b, device=images.device, generator=generator)  # [W * B]
    encoded = gather_keys(encoder(gathered[permutation[rank * b:(rank + 1) * b]]))  # [W * B, d], row p: sample perm[p]
    restored = torch.empty_like(encoded)
    restored[permutation] = encoded  # row i: sample i
    return restored[rank * b:(rank + 1) * b], permutation
