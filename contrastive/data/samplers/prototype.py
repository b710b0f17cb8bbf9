"""Prototype-aware batches (SPCL, Mo et al. 2022, Sec. 3.2).

Every local batch draws an *anchor prototype* ``c`` and fills ``anchor_fraction`` of
the batch with members of ``c``; the rest comes from the other prototypes. Such a
batch always holds many same-prototype pairs for the siamese metric loss and the
prototype heads, and many cross-prototype pairs as negatives.

Draws avoid repeats within an epoch as far as the composition allows: members of a
prototype come from a shuffled, cycled list of that prototype, the other samples from
a shuffled, cycled stream of the whole set that skips the anchor prototype. No batch
holds an index twice. The anchor prototype's members come first in every batch: SPCL's
metric loss reads the anchor prototype ``c`` from the batch's first sample (its pairs are
anchored on ``P_c`` only, Sec. 3).
"""

from __future__ import annotations

from typing import Callable, Iterator, List, Optional, Tuple

import torch

from contrastive.data.base import RandomBatchSampler

AssignmentsFn = Callable[[], Optional[torch.Tensor]]


class PrototypeBatchSampler:
    """Batches with an anchor prototype; the interface of :class:`RandomBatchSampler`.

    Args:
        num_samples, batch_size, seed, rank, world_size: As for :class:`RandomBatchSampler`;
            every process computes the same plan of ``world_size`` local batches per step
            from ``seed + epoch`` and takes its own.
        assignments: Called at the start of every iteration (after the method's
            ``on_train_epoch_start`` re-clustered): int64 ``[N]`` prototype of every
            sample, or ``None`` before the first clustering (then batches are random).
        anchor_fraction: Fraction of a batch drawn from the anchor prototype (rounded).
        min_anchor_size: Prototypes with fewer members are never anchors.
        device: As for :class:`RandomBatchSampler`: ``None``, batches are lists of ints (the epoch's
            plan made lists once); a device, int64 tensors on it (the plan moved there once per epoch).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        assignments: Optional[AssignmentsFn] = None,
        anchor_fraction: float = 0.5,
        min_anchor_size: int = 2,
        device: Optional[torch.device | str] = None,
    ) -> None:
        if not 0.0 <= anchor_fraction <= 1.0:
            raise ValueError(f"anchor_fraction must be in [0, 1], got {anchor_fraction}")
        if not 1 <= batch_size <= num_samples:
            raise ValueError(f"batch_size must be in [1, {num_samples}], got {batch_size}")
        self.random = RandomBatchSampler(num_samples, batch_size, seed, rank, world_size, device=device)
        self.device = None if device is None else torch.device(device)
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.assignments = assignments or (lambda: None)
        self.anchor_fraction, self.min_anchor_size = anchor_fraction, min_anchor_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.random.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.random)

    def __iter__(self) -> Iterator[List[int] | torch.Tensor]:
        # A generator: nothing runs (and the assignments are not read) before the first batch.
        assignments = self.assignments()
        if assignments is None:
            yield from self.random
            return
        mine = [local for _, local in self.plan(assignments.cpu())[self.rank :: self.world_size]]  # steps x [B]
        if mine:  # one conversion per epoch
            yield from (torch.stack(mine).tolist() if self.device is None else torch.stack(mine).to(self.device))

    def plan(self, assignments: torch.Tensor) -> List[Tuple[int, torch.Tensor]]:
        """``(anchor prototype, indices [B])`` of every local batch of the epoch, all ranks
        interleaved (batch ``s * world_size + r`` is rank ``r``'s batch of step ``s``)."""
        n, bsz = self.num_samples, self.batch_size
        if assignments.shape != (n,):
            raise ValueError(f"assignments must have shape [{n}], got {tuple(assignments.shape)}")
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g)  # the stream of "other" samples
        # Members of every prototype, each list in the shuffled order.
        by_proto = assignments[order].argsort(stable=True)
        sizes = torch.bincount(assignments, minlength=int(assignments.max()) + 1)
        starts = torch.cumsum(sizes, 0) - sizes
        members = order[by_proto]  # prototype c's members: members[starts[c] : starts[c] + sizes[c]]
        eligible = (sizes >= self.min_anchor_size).float() * sizes.float()
        steps = len(self) * self.world_size
        if eligible.sum() == 0:  # no prototype can anchor: random batches
            return [(-1, torch.as_tensor(b)) for b in self._all_random(steps)]
        anchors = torch.multinomial(eligible, steps, replacement=True, generator=g)  # prob. ~ size
        cursor = torch.zeros_like(sizes)  # next member to take, per prototype
        stream_pos = 0
        batches = []
        for c in anchors.tolist():
            size_c = int(sizes[c])
            n_other = min(bsz - min(round(self.anchor_fraction * bsz), size_c), n - size_c)
            n_anchor = bsz - n_other  # <= size_c because bsz <= n
            take = (int(cursor[c]) + torch.arange(n_anchor)) % size_c
            cursor[c] = (int(cursor[c]) + n_anchor) % size_c
            from_anchor = members[int(starts[c]) + take]
            others, stream_pos = _next_others(order, assignments, c, n_other, stream_pos)
            batches.append((c, torch.cat([from_anchor, others])))
        return batches

    def _all_random(self, steps: int) -> List[List[int]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=g)
        return [order[s * self.batch_size : (s + 1) * self.batch_size].tolist() for s in range(steps)]


def _next_others(order: torch.Tensor, assignments: torch.Tensor, anchor: int, count: int, pos: int) -> Tuple[torch.Tensor, int]:
    """The next ``count`` samples of the cyclic stream ``order`` outside prototype ``anchor``
    (distinct: the caller guarantees ``count <= N - size(anchor)``), and the new position."""
    n = len(order)
    found: List[torch.Tensor] = []
    have, window = 0, max(2 * count, 64)
    while have < count:
        window = min(window, n)  # a cyclic window of <= n positions has no repeats
        chunk = order[(pos + torch.arange(window)) % n]
        keep = (assignments[chunk] != anchor).nonzero().flatten()
        if have + len(keep) >= count:
            last = int(keep[count - have - 1])
            found.append(chunk[keep[: count - have]])
            return torch.cat(found), (pos + last + 1) % n
        found.append(chunk[keep])
        have += len(keep)
        pos = (pos + window) % n
        window *= 2
    return torch.cat(found) if found else order[:0], pos
