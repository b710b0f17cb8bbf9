"""Types and choices of the framework's own config blocks, as Hydra structured configs.

``configs/train.yaml``'s ``trainer:`` block and every ``configs/optimizer/*`` and
``configs/scheduler/*`` option list a schema from here first in their defaults list, so
Hydra checks each value's type (``trainer.max_epochs=abc``) and choice
(``trainer.on_nonfinite=maybe``, ``optimizer.lr_scaling=cubic``) while it composes, and
:func:`contrastive.config.compose.load_config` turns its report into one line.

The schemas hold types only: every default, with its comment, stays in the YAML (a field
left out of a YAML is an error: ``MISSING``). Blocks that plugins extend with keys of their
own (``method``, ``dataset``, ``backbone``, ``augment``) have no schema: their values are
checked against the type of their YAML default (:func:`contrastive.config.compose.check_value_types`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, List, Tuple

from omegaconf import MISSING


class OnNonfinite(str, Enum):
    error = "error"
    skip = "skip"
    off = "off"


class DataOnDevice(str, Enum):
    auto = "auto"
    always = "always"
    never = "never"


class MilestoneUnit(str, Enum):
    epoch = "epoch"
    step = "step"


class LrScaling(str, Enum):
    linear = "linear"
    sqrt = "sqrt"
    none = "none"


def choices(enum: type) -> Tuple[str, ...]:
    """The valid values of a choice, as strings (``("error", "skip", "off")``)."""
    return tuple(member.value for member in enum)


@dataclass
class TrainerSchema:
    """``trainer:`` of configs/train.yaml; ``+trainer.<Lightning argument>=...`` adds more keys."""

    max_epochs: int = MISSING
    max_steps: int = MISSING
    accelerator: str = MISSING
    devices: Any = MISSING  # an int, a list of device ids or "auto"
    num_nodes: int = MISSING
    strategy: Any = MISSING
    precision: Any = MISSING  # auto, or any precision Lightning takes ("32-true", 16, ...)
    sync_batchnorm: bool = MISSING
    log_every_n_steps: int = MISSING
    on_nonfinite: OnNonfinite = MISSING
    deterministic: bool = MISSING
    channels_last: Any = MISSING  # auto | true | false (contrastive/core/hardware.py checks it)
    compile: bool = MISSING
    compile_backend: str = MISSING
    data_on_device: DataOnDevice = MISSING
    progress_bar: bool = MISSING
    num_sanity_val_steps: int = MISSING


@dataclass
class OptimizerSchema:
    name: str = MISSING
    lr: float = MISSING
    lr_scaling: LrScaling = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING
    exclude_bias_and_norm: bool = MISSING
    bias_norm_lr_ratio: float = MISSING


@dataclass
class LarsSchema(OptimizerSchema):
    trust_coefficient: float = MISSING
    clip_lr: bool = MISSING


@dataclass
class SgdSchema(OptimizerSchema):
    nesterov: bool = MISSING


@dataclass
class AdamwSchema(OptimizerSchema):
    betas: List[float] = MISSING


@dataclass
class SchedulerSchema:
    name: str = MISSING


@dataclass
class WarmupCosineSchema(SchedulerSchema):
    warmup_epochs: int = MISSING
    final_lr_ratio: float = MISSING


@dataclass
class StepSchema(SchedulerSchema):
    milestones: List[int] = MISSING
    gamma: float = MISSING
    milestone_unit: MilestoneUnit = MISSING


#: ConfigStore name -> schema; a YAML names one in its defaults list (``- /schema_trainer@trainer``).
SCHEMAS = {
    "schema_trainer": TrainerSchema,
    "schema_optimizer_lars": LarsSchema, "schema_optimizer_sgd": SgdSchema, "schema_optimizer_adamw": AdamwSchema,
    "schema_scheduler_constant": SchedulerSchema, "schema_scheduler_warmup_cosine": WarmupCosineSchema,
    "schema_scheduler_step": StepSchema,
}


@functools.lru_cache(maxsize=1)
def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore (once; before anything composes a config).

    Top-level names, not a config group, so ``--help`` does not list them as options."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, schema in SCHEMAS.items():
        store.store(name=name, node=schema)


def declared_trainer_keys() -> List[str]:
    """The keys of train.yaml's ``trainer:`` block (the other ``trainer.*`` keys are Trainer arguments)."""
    return [f.name for f in fields(TrainerSchema)]
