"""Per-step and per-epoch value schedules that some methods need, as pure functions.

DINO (Caron et al., ICCV 2021) warms its teacher temperature up linearly and raises the weight
decay on a cosine; the momentum schedules are in :mod:`contrastive.engine.momentum`.
"""

from __future__ import annotations

import math


def linear_warmup(epoch: int, warmup_epochs: int, start: float, end: float) -> float:
    """DINO's teacher temperature: "linear warm-up from 0.04 to 0.07 during the first 30 epochs".

    Returns ``start`` at epoch 0, ``end`` from ``warmup_epochs`` on (``end`` at once when
    ``warmup_epochs`` is 0), linear in between.
    """
    if warmup_epochs <= 0 or epoch >= warmup_epochs:
        return end
    return start + (end - start) * max(int(epoch), 0) / warmup_epochs


def cosine_ramp(step: int, total_steps: int, start: float, end: float) -> float:
    """A half cosine from ``start`` (step 0) to ``end`` (``total_steps``): DINO's weight decay
    ("follows a cosine schedule from 0.04 to 0.4"); the same curve as BYOL's momentum."""
    total = max(1, int(total_steps))
    k = min(max(int(step), 0), total)
    return end - (end - start) * (math.cos(math.pi * k / total) + 1.0) / 2.0
