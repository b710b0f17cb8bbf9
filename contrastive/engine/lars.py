"""LARS (You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional Networks") without host syncs.

The update is lightly's :class:`lightly.utils.lars.LARS` (same arguments, parameter groups and
state dict, so checkpoints of either load in the other; tests/test_lars.py checks equal values):

    trust = trust_coefficient * ||w|| / (||g|| + weight_decay * ||w|| + eps)
    d = trust * (g + weight_decay * w)   where ||w|| != 0 and ||g|| != 0, else d = g
    v = momentum * v + (1 - dampening) * d;  w = w - lr * v   (Nesterov: w = w - lr * (d + momentum * v))

Groups with ``weight_decay`` 0 (biases and normalisation parameters, SimCLR/BYOL) get neither
the trust ratio nor decay. lightly decides "``||w|| != 0 and ||g|| != 0``" with a Python ``if`` per
parameter: on a GPU each one waits for the device (two per parameter, every step). Here the choice
is a ``torch.where`` on the device and the norms are one ``torch._foreach_norm`` per group.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling, lightly's update with no host sync.

    Args:
        params: Parameters or parameter groups.
        lr: Learning rate.
        momentum: Momentum factor.
        dampening: Dampening of the momentum.
        weight_decay: Weight decay; a group with 0 gets no layer-wise adaptation.
        nesterov: Nesterov momentum.
        trust_coefficient: ``eta`` of the trust ratio (lightly's default 0.001).
        eps: Added to the ratio's denominator.

    Example:
        >>> net = torch.nn.Linear(3, 2)
        >>> opt = LARS([{"params": [net.weight], "weight_decay": 1e-6}], lr=0.3, momentum=0.9)
    """

    def __init__(self, params: Any, lr: float, momentum: float = 0, dampening: float = 0, weight_decay: float = 0,
                 nesterov: bool = False, trust_coefficient: float = 0.001, eps: float = 1e-8) -> None:
        if lr < 0.0 or momentum < 0.0 or weight_decay < 0.0:
            raise ValueError(f"LARS needs lr, momentum and weight_decay >= 0, got lr={lr}, momentum={momentum}, "
                             f"weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        trust_coefficient=trust_coefficient, eps=eps)
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("nesterov", False)

    def local_rate(self, trust: torch.Tensor, group: dict) -> torch.Tensor:
        """The factor of ``g + weight_decay * w`` given the trust ratios ``trust [P]`` of a group's parameters."""
        return trust

    def _factors(self, params: List[torch.Tensor], grads: List[torch.Tensor], group: dict):
        """Per-parameter ``(decay, rate)`` with ``d = rate * (g + decay * w)`` (see the module docstring), as
        device tensors ``[P]``: the norms are one ``_foreach_norm`` each and nothing is read on the host."""
        wd = group["weight_decay"]
        p_norm = torch.stack(torch._foreach_norm(params))  # [P]
        g_norm = torch.stack(torch._foreach_norm(grads))  # [P]
        trust = p_norm / (g_norm + p_norm * wd + group["eps"]) * group["trust_coefficient"]  # [P], lightly's order
        adapt = (p_norm != 0) & (g_norm != 0)  # [P]; where not, d = g: decay 0 and rate 1
        rate = torch.where(adapt, self.local_rate(trust, group), 1.0)  # [P]
        return (adapt.to(trust.dtype) * wd).unbind(), rate.unbind()

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        """One optimisation step.

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
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            # Groups with weight decay 0 (biases, norms) take the plain gradient: no trust ratio, no decay.
            factors = zip(*self._factors(params, grads, group)) if group["weight_decay"] != 0 else None
            # One parameter at a time, so only one new direction is alive: holding all of them at once (a whole
            # model's worth of fresh memory every step) made the step ~1.3x slower than lightly's on a CPU.
            for p, g in zip(params, grads):
                d = g
                if factors is not None:
                    decay, rate = next(factors)
                    d = torch.addcmul(g, p, decay).mul_(rate)
                if group["momentum"] != 0:
                    d = self._momentum(p, d, group)
                p.add_(d, alpha=-group["lr"])
        return loss

    def _momentum(self, p: torch.Tensor, d: torch.Tensor, group: dict) -> torch.Tensor:
        state = self.state[p]
        if "momentum_buffer" not in state:
            buf = state["momentum_buffer"] = torch.clone(d).detach()
        else:
            buf = state["momentum_buffer"]
            buf.mul_(group["momentum"]).add_(d, alpha=1 - group["dampening"])
        return d.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
