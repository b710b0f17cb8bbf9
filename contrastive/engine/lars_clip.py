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
lightly's :class:`lightly.utils.lars.LARS`: groups with ``weight_decay`` 0 (biases and
normalisation parameters when ``exclude_bias_and_norm``) get no adaptation and no decay,
and a layer whose weights or gradient are all zero takes the plain SGD step.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from lightly.utils.lars import LARS


class ClippedLARS(LARS):
    """lightly's LARS whose trust ratio, relative to the group lr, is capped at 1 (LARC clipping).

    Takes the same arguments as :class:`lightly.utils.lars.LARS` (``trust_coefficient``
    is LARC's/solo-learn's ``eta``). The clip is what sets this class apart, so it holds
    no extra key in the parameter groups and its state dict is lightly's.

    Example:
        >>> net = torch.nn.Linear(3, 2)
        >>> opt = ClippedLARS([{"params": [net.weight], "weight_decay": 1e-4}], lr=0.1,
        ...                   momentum=0.9, trust_coefficient=0.02)
    """

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        """One optimisation step with the clipped layer-wise rate.

        Args:
            closure: Optional closure that re-evaluates the model and returns the loss.

        Returns:
            The closure's loss, or ``None`` without a closure.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict) -> None:
        """Apply one step to parameter ``p`` of ``group`` (no grad mode)."""
        wd, lr, momentum = group["weight_decay"], group["lr"], group["momentum"]
        d_p = p.grad
        if wd != 0:
            p_norm, g_norm = torch.norm(p), torch.norm(p.grad)
            if p_norm != 0 and g_norm != 0:
                trust = group["trust_coefficient"] * p_norm / (g_norm + wd * p_norm + group["eps"])
                # LARC clip: relative to the group lr, capped at 1 (lr 0 gives inf -> 1, a zero step).
                local = torch.clamp(trust / lr, max=1.0) if lr > 0 else torch.ones_like(trust)
                d_p = d_p.add(p, alpha=wd).mul_(local)
        if momentum != 0:
            state = self.state[p]
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = torch.clone(d_p).detach()
            else:
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(d_p, alpha=1 - group["dampening"])
            d_p = d_p.add(buf, alpha=momentum) if group["nesterov"] else buf
        p.add_(d_p, alpha=-lr)
