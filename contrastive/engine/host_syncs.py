"""Count the operations that make the host wait for the device (host syncs).

On a GPU each of these stalls the training step until every kernel queued before it has
finished: the CPU stops running ahead and the GPU idles while Python catches up.
:class:`HostSyncCounter` is a ``TorchDispatchMode`` that sees every ATen operation and
counts those that need a value on the host:

``scalar``
    ``aten._local_scalar_dense``: ``.item()``, ``bool()``, ``float()``, ``int()``, an ``if``
    on a tensor, a tensor used as a Python index.
``shape``
    Operations whose output size depends on values: ``nonzero`` (``torch.where(mask)``,
    ``argwhere``), ``masked_select``, every ``unique`` variant, indexing with a boolean mask
    (``index.Tensor``, and ``index_put_`` with a bool index unless it is ``x[mask] = number``,
    which PyTorch turns into ``masked_fill_``) and ``repeat_interleave`` without
    ``output_size``.
``copy``
    A copy between the host and a device (``_to_copy`` / ``copy_`` across devices; on a GPU
    ``.cpu()``, ``.tolist()`` and ``.numpy()`` dispatch to it) and a tensor built from Python
    data on a device (``torch.tensor(list, device="cuda")``: a blocking host-to-device copy).
``host``
    On the CPU, ``.cpu()``, ``.tolist()`` and ``.numpy()`` dispatch no operation at all, so
    they are counted where they are called (wrapped methods of ``torch.Tensor``) for tensors
    on the CPU; a GPU run counts them as ``copy``.

What a CPU run cannot see: ``.to("cpu")`` of a CPU tensor (a no-op dispatching nothing;
indistinguishable from ``x.to(y.device)``), a tensor built from Python data (``torch.tensor``,
``torch.as_tensor`` of a list) that on a GPU run would be built on the device, and a device
sync that happens outside PyTorch's operators (``torch.cuda.synchronize``, CUDA events).
``masked_scatter`` is not counted: its CUDA kernel checks sizes on the device, without a sync. Nor
is ``.item()`` of a CPU tensor inside ``torch.optim`` (Adam's step count: a host tensor on a GPU too).

Example:
    >>> counter = HostSyncCounter()
    >>> with counter:
    ...     _ = torch.ones(2).sum().item()
    >>> counter.total, dict(counter.kinds)
    (1, {'scalar': 1})
"""

from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten

#: Output size depends on the values: the host reads a count from the device.
#: (``nonzero_static`` is not among them: its size is given.)
_SHAPE_OPS = {
    aten.nonzero.default, aten.masked_select.default, aten._unique.default, aten._unique2.default,
    aten.unique_dim.default, aten.unique_consecutive.default, aten.unique_dim_consecutive.default,
}
_COPY_OPS = {aten._to_copy.default, aten.copy_.default}
#: Tensor methods that dispatch nothing for a CPU tensor (counted where they are called).
_HOST_METHODS = ("cpu", "tolist", "numpy")
_TORCH_DIR = str(Path(torch.__file__).parent)
_TORCH_OPTIM = str(Path(torch.__file__).parent / "optim")
_THIS_FILE = str(Path(__file__))


def _has_bool_index(indices: Any) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in (indices or ()))


def sync_kind(func: Any, args: tuple, kwargs: Dict[str, Any]) -> str | None:
    """The kind of host sync ATen operator ``func`` makes on ``args``, or ``None``."""
    if func is aten._local_scalar_dense.default:
        return "scalar"
    if func in _SHAPE_OPS:
        return "shape"
    if func is aten.index.Tensor and _has_bool_index(args[1]):
        return "shape"
    if func in (aten.index_put_.default, aten.index_put.default, aten._index_put_impl_.default) and _has_bool_index(args[1]):
        # ``x[mask] = scalar`` becomes masked_fill_ (no sync) when the mask is the only index and the value one host number.
        value, only_mask = args[2], len(args[1]) == 1
        if not (only_mask and value.numel() == 1 and value.device.type == "cpu"):
            return "shape"
    if func in (aten.repeat_interleave.Tensor, aten.repeat_interleave.self_Tensor) and kwargs.get("output_size") is None:
        return "shape"
    if func is aten._to_copy.default:
        target = kwargs.get("device")
        if target is not None and torch.device(target).type != args[0].device.type:
            return "copy"
    if func is aten.copy_.default and args[0].device.type != args[1].device.type:
        return "copy"
    if func is aten.lift_fresh.default and args[0].device.type != "cpu":
        return "copy"
    return None


def _in_torch_optim() -> bool:
    """Whether the innermost code outside this module and torch's internals is a ``torch.optim`` optimizer."""
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(_TORCH_OPTIM):
            return True
        if frame.filename != _THIS_FILE and not frame.filename.startswith(_TORCH_DIR):
            return False
    return False


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch and this module: where the value was asked for."""
    for frame in reversed(traceback.extract_stack()):
        if not frame.filename.startswith(_TORCH_DIR) and frame.filename != _THIS_FILE:
            return f"{Path(frame.filename).name}:{frame.lineno}"
    return "?"


class HostSyncCounter(TorchDispatchMode):
    """A dispatch mode counting host syncs (see the module docstring for what counts).

    Counting can be paused (``counter.active = False``) while the mode stays entered, so a test
    can count only parts of a run (e.g. the steps between logging intervals).

    Attributes:
        active: Whether syncs are counted now while the mode is entered (``True`` unless set).
        entered: Whether the mode is entered now (it can be entered again and again, counting on).
        kinds: Syncs by kind (``scalar``, ``shape``, ``copy``, ``host``).
        where: Syncs by ``"file:line (op)"`` of the code that asked for them.
        stacks: With ``keep_stacks=True``, the Python stack of the first sync at each place.
    """

    def __init__(self, keep_stacks: bool = False) -> None:
        super().__init__()
        self.active = True
        self.entered = False
        self.stacks: Dict[str, str] = {} if keep_stacks else None  # type: ignore[assignment]
        self.kinds: Counter = Counter()
        self.where: Counter = Counter()
        self._originals: Dict[str, Callable] = {}

    @property
    def total(self) -> int:
        return sum(self.kinds.values())

    def record(self, kind: str, name: str) -> None:
        """Count one sync of ``kind`` made by ``name`` (an op or method), at its caller."""
        if self.active:
            self.kinds[kind] += 1
            place = f"{_caller()} ({name})"
            self.where[place] += 1
            if self.stacks is not None and place not in self.stacks:
                self.stacks[place] = "".join(traceback.format_stack())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = sync_kind(func, args, kwargs)
        if kind == "scalar" and args[0].device.type == "cpu" and _in_torch_optim():
            kind = None  # torch's optimizers keep step counts on the host on every device: no sync there
        if kind is not None:
            self.record(kind, str(func.overloadpacket.__name__))
        return func(*args, **kwargs)

    def _wrap(self, name: str) -> Callable:
        original = self._originals[name]

        def counted(tensor: torch.Tensor, *args, **kwargs):
            if tensor.device.type == "cpu":  # elsewhere the copy to the host is a counted operator
                self.record("host", name)
            return original(tensor, *args, **kwargs)
        return counted

    def __enter__(self):
        self.entered = True
        for name in _HOST_METHODS:
            self._originals[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._wrap(name))
        return super().__enter__()

    def __exit__(self, *exc):
        self.entered = False
        try:
            return super().__exit__(*exc)
        finally:
            for name, original in self._originals.items():
                setattr(torch.Tensor, name, original)
            self._originals = {}

    def summary(self) -> str:
        """One line: the total, by kind, and where."""
        places = ", ".join(f"{w} x{n}" for w, n in self.where.most_common())
        return f"{self.total} host syncs {dict(self.kinds)}: {places or 'none'}"
