"""The momentum (exponential-moving-average) teacher shared by MoCo, BYOL, DINO and PCL v2.

The momentum API is ready: :func:`cosine_momentum`, :class:`MomentumCopy`, :class:`MomentumMethod`.

A method with a momentum teacher subclasses :class:`MomentumMethod`, builds its online
modules in ``__init__`` and then calls ``self.init_momentum(*online_modules)``; the base class
keeps the frozen copy (``self.momentum``), leaves it out of the optimizer, updates it once per
optimizer step and logs the momentum ``tau`` as ``train/momentum`` (at the logging interval). Its settings are
``cfg.method.momentum.{base, final, schedule}`` (defaults in each method's YAML):

    constant  ``tau = base`` every step (MoCo v1/v2: 0.999).
    cosine    ``tau`` rises from ``base`` to ``final`` over the run (BYOL, MoCo v3, DINO):
              :func:`cosine_momentum`.
"""

from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
from omegaconf import DictConfig
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.engine.method import DataInfo, Method

SCHEDULES = ("cosine", "constant")


def cosine_momentum(step: int, total_steps: int, base: float, final: float = 1.0) -> float:
    """BYOL (Grill et al., NeurIPS 2020, Sec. 3.2): "tau = 1 - (1 - tau_base) * (cos(pi k / K) + 1) / 2"
    with 1 generalised to ``final``: ``tau = final - (final - base) * (cos(pi * step / total_steps) + 1) / 2``.

    Args:
        step: The optimizer step ``k`` (0-based); clamped to ``[0, total_steps]``.
        total_steps: ``K``, the optimizer steps of the run (at least 1).
        base: ``tau`` at step 0.
        final: ``tau`` at step ``total_steps``.

    Returns:
        ``base`` at step 0, ``(base + final) / 2`` half way, ``final`` at the end.
    """
    total = max(1, int(total_steps))
    k = min(max(int(step), 0), total)
    return final - (final - base) * (math.cos(math.pi * k / total) + 1.0) / 2.0


def at_logging_step(trainer) -> bool:
    """Whether the loggers write this training step's values (every ``trainer.log_every_n_steps``, and the
    last): log Python numbers only then, since Lightning copies each one to the device (on a GPU: a wait)."""
    return trainer is not None and bool(trainer._logger_connector.should_update_logs)


class MomentumCopy(nn.Module):
    """A frozen exponential-moving-average copy of some modules.

    The copies are deep copies with ``requires_grad=False``; they are submodules, so they are
    in the owner's ``state_dict`` (checkpoints save and resume them) and move with it between
    devices. :class:`MomentumMethod` leaves them out of the optimizer.

    Args:
        *online: The online modules to follow, in the order :meth:`__getitem__` returns them.
        fresh: Optionally, newly built modules of the same architecture to use as the copies (they
            get the online weights): for modules ``copy.deepcopy`` cannot copy (the old
            ``torch.nn.utils.weight_norm`` in DINO's head).
    """

    def __init__(self, *online: nn.Module, fresh: Sequence[nn.Module] | None = None) -> None:
        super().__init__()
        if not online:
            raise ConfigError("MomentumCopy needs at least one module to copy; got none")
        if fresh is None:
            self.copies = nn.ModuleList(copy.deepcopy(m) for m in online)
        else:
            self.copies = nn.ModuleList(fresh)
            for c, m in zip(self.copies, online):
                c.load_state_dict(m.state_dict())
        for p in self.copies.parameters():
            p.requires_grad_(False)

    def __getitem__(self, i: int) -> nn.Module:
        return self.copies[i]

    def __len__(self) -> int:
        return len(self.copies)

    def forward(self, *args, **kwargs):  # noqa: D102 - a container: call the copies by index
        raise TypeError("MomentumCopy is a container: call momentum[i](x) on one of its copies")

    @torch.no_grad()
    def update(self, online: Sequence[nn.Module], tau: float) -> None:
        """``p_m <- tau * p_m + (1 - tau) * p_o`` for every parameter (``torch._foreach`` ops:
        one kernel per op for all parameters, not one per tensor).

        Buffers (BatchNorm running mean/var, ``num_batches_tracked``) are copied from the online
        modules, not averaged: the copy runs in train mode on the same kind of batches, and the
        online network's statistics describe activations of weights close to the copy's (MoCo's
        and lightly's ``update_momentum`` average only parameters too).

        Args:
            online: The online modules, in the order given to the constructor.
            tau: The momentum in ``[0, 1]``: 1 keeps the copy, 0 copies the online weights.
        """
        if len(online) != len(self.copies):
            raise ConfigError(f"MomentumCopy.update got {len(online)} modules; it copies {len(self.copies)}")
        m_params = [p for c in self.copies for p in c.parameters()]
        o_params = [p.detach() for m in online for p in m.parameters()]
        if len(m_params) != len(o_params):
            raise ConfigError("MomentumCopy.update: the online modules no longer match their copies")
        if m_params:
            torch._foreach_mul_(m_params, tau)
            torch._foreach_add_(m_params, o_params, alpha=1.0 - tau)
        for c, m in zip(self.copies, online):
            for b_m, b_o in zip(c.buffers(), m.buffers()):
                b_m.copy_(b_o)


class MomentumMethod(Method):
    """Base class of methods with a momentum teacher (BYOL, MoCo, DINO, PCL v2).

    The subclass builds its online modules, then calls :meth:`init_momentum` with them, which
    creates ``self.momentum`` (a :class:`MomentumCopy`). The copy is updated exactly once per
    optimizer step (after gradient accumulation; a step skipped for a non-finite loss updates
    nothing) in :meth:`on_train_batch_end`, with ``tau = self.current_momentum()``.

    Config: ``method.momentum.base`` and ``method.momentum.final`` in ``[0, 1]``,
    ``method.momentum.schedule`` one of ``cosine | constant``.
    """

    momentum: MomentumCopy

    def __init__(self, cfg: DictConfig, data: DataInfo) -> None:
        super().__init__(cfg, data)
        self._online: tuple = ()
        self._updated_at_step = -1

    @classmethod
    def validate_config(cls, cfg: DictConfig, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        m = cfg.method.momentum
        for key in ("base", "final"):
            value = float(m[key])
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"method.momentum.{key}={m[key]} is outside [0, 1]: the momentum must lie in [0, 1]")
        if str(m.schedule) not in SCHEDULES:
            raise ConfigError(f"method.momentum.schedule='{m.schedule}' is unknown; valid choices: {', '.join(SCHEDULES)}")

    def init_momentum(self, *online: nn.Module, fresh: Sequence[nn.Module] | None = None) -> None:
        """Create ``self.momentum``, the frozen copy of ``online`` (call once, after building them;
        ``fresh``: see :class:`MomentumCopy`)."""
        self._online = online  # a tuple is not registered: the modules stay owned where they are
        self.momentum = MomentumCopy(*online, fresh=fresh)

    def trainable_modules(self) -> Sequence[nn.Module]:
        """Every child module except the momentum copy."""
        return [m for m in self.children() if m is not self.momentum]

    def current_momentum(self) -> float:
        """``tau`` at ``self.global_step``: ``base`` (constant) or :func:`cosine_momentum` over
        the run's optimizer steps (``trainer.estimated_stepping_batches``)."""
        m = self.cfg.method.momentum
        base, final = float(m.base), float(m.final)
        if str(m.schedule) == "constant":
            return base
        trainer = self._trainer
        total = int(trainer.estimated_stepping_batches) if trainer is not None else 1
        return cosine_momentum(self.global_step, total, base, final)

    def on_train_start(self) -> None:
        super().on_train_start()
        # A resumed run starts at the checkpoint's step: the copy was already updated for it.
        self._updated_at_step = self.global_step

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """Update the copy when an optimizer step happened since the last update."""
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self.global_step <= self._updated_at_step:
            return  # gradient accumulation in progress, or the step was skipped
        self._updated_at_step = self.global_step
        tau = self.current_momentum()
        self.momentum.update(self._online, tau)
        if at_logging_step(self._trainer):  # a Python number: copied to the device when logged
            self.log("train/momentum", tau, on_step=True, on_epoch=False, batch_size=1, sync_dist=False)
