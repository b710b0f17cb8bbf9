"""Loss arithmetic in float32 under mixed precision.

Under ``torch.autocast`` a matrix product runs in the autocast dtype (bf16: 8 bits of mantissa)
even when its inputs were cast with ``.float()`` just before it: autocast casts them back. A
similarity logit ``z_i . z_j / 0.1`` of unit vectors then carries an error of about ``0.04``, and
a Barlow Twins or VICReg correlation summed over ``D^2`` entries more. :func:`float32` runs a
loss (or the score matmul that feeds one) with autocast disabled on its inputs' device and its
floating inputs in float32, so it computes exactly what it computes without autocast; outside
autocast it calls the function unchanged.

Example:
    >>> f = float32(lambda a, b: a @ b.t())
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     f(torch.randn(2, 3), torch.randn(4, 3)).dtype
    torch.float32
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterable, Set, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])


def _tensors(values: Iterable[Any]) -> Iterable[torch.Tensor]:
    for v in values:
        if isinstance(v, torch.Tensor):
            yield v
        elif isinstance(v, (list, tuple)):
            yield from _tensors(v)


def _to_float32(value: Any) -> Any:
    """Floating tensors (also inside lists / tuples) in float32; anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() and value.dtype != torch.float64 else value
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float32(v) for v in value)
    return value


def autocast_devices(*values: Any) -> Set[str]:
    """The device types of the tensors in ``values`` on which autocast is enabled now."""
    types = {t.device.type for t in _tensors(values)}
    return {d for d in types if torch.amp.is_autocast_available(d) and torch.is_autocast_enabled(d)}  # meta: no autocast


def float32(fn: F) -> F:
    """``fn`` with autocast off on its tensor arguments' devices and their floating ones in float32.

    Use on a loss function (a pure function of tensors, lists of tensors and numbers) or on a
    module's call (``float32(self.criterion)(z0, z1)``). Gradients flow through the casts.
    """

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        devices = autocast_devices(args, tuple(kwargs.values()))
        if not devices:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device in sorted(devices):
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return fn(*_to_float32(args), **{k: _to_float32(v) for k, v in kwargs.items()})

    return wrapped  # type: ignore[return-value]
