"""Optimizers and learning-rate schedules.

Schedules are pure functions of the step (nanoGPT style): resuming a run at step
``t`` gives exactly the learning rate the uninterrupted run had at ``t``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Iterable, List, Sequence

import torch
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.engine.lars import LARS
from contrastive.engine.lars_clip import ClippedLARS

log = logging.getLogger("contrastive")

OPTIMIZERS = ("lars", "sgd", "adamw")
SCHEDULERS = ("warmup_cosine", "step", "constant")

_NORM_TYPES = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


def scaled_lr(base_lr: float, global_batch_size: int, rule: str = "linear") -> float:
    """SimCLR's learning-rate scaling: ``base_lr * global_batch / 256`` (``linear``),
    ``base_lr * sqrt(global_batch)`` (``sqrt``, SimCLR's small-batch variant) or ``base_lr`` (``none``)."""
    if rule == "linear":
        return base_lr * global_batch_size / 256
    if rule == "sqrt":
        return base_lr * math.sqrt(global_batch_size)
    if rule == "none":
        return base_lr
    raise ConfigError(f"optimizer.lr_scaling='{rule}' is not valid; choose one of linear, sqrt, none")


def split_decay_parameters(modules: Iterable[nn.Module]) -> tuple[List[nn.Parameter], List[nn.Parameter]]:
    """Split parameters into (weights with decay, biases and normalisation params without).

    SimCLR/BYOL exclude biases and BN parameters from weight decay and from LARS
    adaptation; lightly's LARS skips adaptation for groups with ``weight_decay=0``,
    so the second list goes in a group with zero decay.
    """
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for sub in module.modules():
            for name, param in sub.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                is_norm = isinstance(sub, _NORM_TYPES)
                (no_decay if is_norm or name == "bias" or param.ndim <= 1 else decay).append(param)
    return decay, no_decay


def build_optimizer(cfg: Any, modules: Sequence[nn.Module], lr: float) -> torch.optim.Optimizer:
    """Build ``cfg.name`` (lars | sgd | adamw) over ``modules`` at learning rate ``lr``.

    Args:
        cfg: The ``optimizer`` config (``name``, ``momentum``, ``weight_decay``,
            ``exclude_bias_and_norm``, ``bias_norm_lr_ratio``, ``trust_coefficient``, ``clip_lr``, ``betas``). LARS with
            ``clip_lr`` is :class:`~contrastive.engine.lars_clip.ClippedLARS` (LARC clipping),
            without it :class:`~contrastive.engine.lars.LARS` (lightly's update without host syncs).
        modules: Modules whose trainable parameters are optimised.
        lr: The already scaled learning rate.
    """
    decay, no_decay = split_decay_parameters(modules)
    wd = float(cfg.weight_decay)
    if cfg.exclude_bias_and_norm:  # the scheduler's LambdaLR scales each group's own lr, so the ratio holds throughout
        groups = [{"params": decay, "weight_decay": wd},
                  {"params": no_decay, "weight_decay": 0.0, "lr": lr * float(cfg.bias_norm_lr_ratio)}]
    else:
        groups = [{"params": decay + no_decay, "weight_decay": wd}]
    groups = [g for g in groups if g["params"]]
    if cfg.name == "lars":
        lars = ClippedLARS if cfg.clip_lr else LARS
        return lars(groups, lr=lr, momentum=float(cfg.momentum), trust_coefficient=float(cfg.trust_coefficient))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(cfg.momentum), nesterov=bool(cfg.nesterov))
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg.betas))
    raise ConfigError(f"unknown optimizer '{cfg.name}'; valid choices: {', '.join(OPTIMIZERS)}")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr: linear warm-up from ``1/warmup`` to 1, then cosine to ``final_ratio``.

    ``step`` counts optimizer steps from 0; after ``total_steps`` the value stays at
    ``final_ratio``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


#: Units a step schedule's milestones count in (``scheduler.milestone_unit``).
MILESTONE_UNITS = ("epoch", "step")


def step_decay(step: int, steps_per_epoch: int, milestones: Sequence[int], gamma: float, unit: str = "epoch") -> float:
    """Multiplier ``gamma ** (number of milestones passed)`` (ResNet/ImCLR recipes).

    Args:
        step: Optimizer step, from 0.
        steps_per_epoch: Optimizer steps per epoch (used only when ``unit`` is ``"epoch"``).
        milestones: Where the lr is multiplied by ``gamma``, in ``unit``s.
        gamma: The factor.
        unit: ``"epoch"`` (a milestone ``m`` is passed from step ``m x steps_per_epoch`` on) or
            ``"step"`` (from optimizer step ``m`` on: "by a factor of 0.2 at 130,000 iterations").

    Raises:
        ConfigError: ``unit`` is not one of :data:`MILESTONE_UNITS`.
    """
    if unit not in MILESTONE_UNITS:
        raise ConfigError(f"unknown scheduler.milestone_unit '{unit}'; valid choices: {', '.join(MILESTONE_UNITS)}")
    position = step if unit == "step" else step // max(1, steps_per_epoch)
    return gamma ** sum(position >= m for m in milestones)


#: A warm-up longer than the run is cut to this share of the run (one warning line).
MAX_WARMUP_SHARE = 0.1


def warmup_steps(cfg: Any, steps_per_epoch: int, total_steps: int) -> int:
    """Warm-up length in optimizer steps: ``warmup_epochs x steps_per_epoch``, cut to
    ``MAX_WARMUP_SHARE`` of the run when it would last as long as the run or longer
    (a ``trainer.max_epochs=1`` smoke run of a 10-warm-up-epoch recipe just works)."""
    steps = int(float(cfg.warmup_epochs) * steps_per_epoch)
    if steps >= total_steps:
        return int(MAX_WARMUP_SHARE * total_steps)
    return steps


def lr_multiplier(cfg: Any, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """The ``scheduler`` config's multiplier at optimizer step ``step`` of a run of
    ``total_steps`` optimizer steps (``trainer.max_steps`` or epochs x steps per epoch)."""
    if cfg.name == "warmup_cosine":
        return warmup_cosine(step, total_steps, warmup_steps(cfg, steps_per_epoch, total_steps), float(cfg.final_lr_ratio))
    if cfg.name == "step":
        return step_decay(step, steps_per_epoch, list(cfg.milestones), float(cfg.gamma), str(cfg.milestone_unit))
    if cfg.name == "constant":
        return 1.0
    raise ConfigError(f"unknown scheduler '{cfg.name}'; valid choices: {', '.join(SCHEDULERS)}")


def build_scheduler(cfg: Any, optimizer: torch.optim.Optimizer, steps_per_epoch: int, total_steps: int) -> Dict[str, Any]:
    """A per-step ``LambdaLR`` wrapped in Lightning's scheduler dict."""
    steps_per_epoch, total_steps = max(1, int(steps_per_epoch)), max(1, int(total_steps))
    if cfg.name == "warmup_cosine" and warmup_steps(cfg, steps_per_epoch, total_steps) < int(float(cfg.warmup_epochs) * steps_per_epoch):
        log.warning("scheduler.warmup_epochs=%s (%d steps) is not shorter than the run (%d steps): warm-up cut to %d steps "
                    "(%d%% of the run)", cfg.warmup_epochs, int(float(cfg.warmup_epochs) * steps_per_epoch), total_steps,
                    warmup_steps(cfg, steps_per_epoch, total_steps), round(100 * MAX_WARMUP_SHARE))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(cfg, step, steps_per_epoch, total_steps)
    )
    return {"scheduler": schedule, "interval": "step", "frequency": 1}


def validate_optim_config(opt: Any, sched: Any, max_epochs: int) -> None:
    """Reject impossible optimizer/scheduler values before training starts."""
    if opt.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer '{opt.name}'; valid choices: {', '.join(OPTIMIZERS)}")
    if not opt.lr > 0:
        raise ConfigError(f"optimizer.lr must be > 0, got {opt.lr}")
    if opt.weight_decay < 0:
        raise ConfigError(f"optimizer.weight_decay must be >= 0, got {opt.weight_decay}")
    if not 0 <= opt.momentum < 1:
        raise ConfigError(f"optimizer.momentum must be in [0, 1), got {opt.momentum}")
    if not opt.bias_norm_lr_ratio > 0:
        raise ConfigError(f"optimizer.bias_norm_lr_ratio must be > 0, got {opt.bias_norm_lr_ratio}")
    if opt.bias_norm_lr_ratio != 1 and not opt.exclude_bias_and_norm:
        raise ConfigError(f"optimizer.bias_norm_lr_ratio={opt.bias_norm_lr_ratio} needs optimizer.exclude_bias_and_norm=true "
                          "(biases and normalisation parameters get their own lr only in their own group)")
    if opt.name == "lars" and not isinstance(opt.clip_lr, bool):
        raise ConfigError(f"optimizer.clip_lr must be true or false, got {opt.clip_lr!r}")
    if sched.name not in SCHEDULERS:
        raise ConfigError(f"unknown scheduler '{sched.name}'; valid choices: {', '.join(SCHEDULERS)}")
    if sched.name == "warmup_cosine" and not sched.warmup_epochs >= 0:
        raise ConfigError(f"scheduler.warmup_epochs must be >= 0, got {sched.warmup_epochs}")
    if sched.name == "step" and not 0 < sched.gamma <= 1:
        raise ConfigError(f"scheduler.gamma must be in (0, 1], got {sched.gamma}")
