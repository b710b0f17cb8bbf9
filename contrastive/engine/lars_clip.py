"""LARS with the layer-wise rate clipped at the learning rate (``optimizer.clip_lr=true``).

LARS (You et al. 2017) scales each layer's step by the trust ratio
``eta * ||w|| / (||g|| + wd * ||w||)``. The LARC variant (NVIDIA apex, ``LARC(clip=True)``;
solo-learn's ``LARS(clip_lr=True)``, used by all its CIFAR LARS recipes with ``eta 0.02``)
divides that ratio by the group's current learning rate and caps it at 1, so a layer never
steps faster than plain SGD at the scheduled rate:

    local = min(eta * ||w|| / (||g|| + wd * ||w|| + eps) / lr, 1)
    d = local * (g + wd * w);  v = momentum * v + d;  w = w - lr * v

that is, the layer's effective rate is ``min(eta * ratio, lr)`` where lightly's unclipped LARS
uses ``lr * eta * ratio``: below the cap the two differ by the factor ``lr``, so a
``trust_coefficient`` tuned for one mode does not carry over (solo-learn's clipped CIFAR
recipes use 0.02, the unclipped default here is 0.001). Everything else is
lightly's LARS (:class:`contrastive.engine.lars.LARS`, the same update without host syncs): groups with ``weight_decay`` 0 (biases and
normalisation parameters when ``exclude_bias_and_norm``) get no adaptation and no decay,
and a layer whose weights or gradient are all zero takes the plain SGD step.
"""

from __future__ import annotations

import torch

from contrastive.engine.lars import LARS


class ClippedLARS(LARS):
    """LARS whose trust ratio, relative to the group lr, is capped at 1 (LARC clipping).

    Takes the same arguments as :class:`~contrastive.engine.lars.LARS` (lightly's; ``trust_coefficient``
    is LARC's/solo-learn's ``eta``). The clip is what sets this class apart, so it holds
    no extra key in the parameter groups and its state dict is lightly's.

    Example:
        >>> net = torch.nn.Linear(3, 2)
        >>> opt = ClippedLARS([{"params": [net.weight], "weight_decay": 1e-4}], lr=0.1,
        ...                   momentum=0.9, trust_coefficient=0.02)
    """

    def local_rate(self, trust: torch.Tensor, group: dict) -> torch.Tensor:
        """LARC clip: ``min(trust / lr, 1)``, relative to the group lr (lr 0 gives inf -> 1, a zero step)."""
        lr = group["lr"]
        return torch.clamp(trust / lr, max=1.0) if lr > 0 else torch.ones_like(trust)
