"""The run config an evaluation rebuilds its encoder and dataset from.

It is the checkpoint's saved config (or, for ``checkpoint=random``, ``configs/train.yaml``'s)
with the command line's ``dataset``/``backbone`` overrides: a group choice (``dataset=cifar10``)
brings that group fresh from ``configs/``, dotted values (``dataset.root=/data``) change the
saved group's keys. A ``backbone`` override must describe the checkpoint's own backbone.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from contrastive.backbones.factory import resolve_small_stem
from contrastive.config.compose import load_config
from contrastive.config.overrides import group_choice, group_values
from contrastive.core.errors import CheckpointError, ConfigError
from contrastive.core.registry import BACKBONES

RUN_GROUPS = ("dataset", "backbone")  # overrides that go to the run config, not eval.yaml


def _apply_dotted(node: DictConfig, dotted: Sequence[str], group: str) -> DictConfig:
    """``group.a.b=v`` overrides onto ``node`` (struct: an unknown key is an error, ``+`` adds one)."""
    node = OmegaConf.create(OmegaConf.to_container(node))
    OmegaConf.set_struct(node, True)
    for arg in dotted:
        key, _, value = arg.partition("=")
        name = key.lstrip("+~")
        try:
            patch = OmegaConf.from_dotlist([f"{name[len(group) + 1:]}={value}"])
            if key.startswith("+"):
                with open_dict(node):
                    node = OmegaConf.merge(node, patch)
            else:
                node = OmegaConf.merge(node, patch)
        except OmegaConfBaseException:
            raise ConfigError(f"unknown config key '{name}' (check its spelling; `+{name}=...` adds a new key)") from None
    return node


def build_run_config(ckpt_config: Optional[Dict[str, Any]], run_overrides: Sequence[str], hydra: Sequence[str], seed: int) -> DictConfig:
    """The run config: the checkpoint's (or, for ``checkpoint=random``, train.yaml's) with
    ``dataset=``/``backbone=`` group choices (fresh from configs/) and dotted overrides."""
    if ckpt_config is None:  # checkpoint=random
        if group_choice(run_overrides, "backbone") is None:
            raise ConfigError(f"checkpoint=random needs backbone=<name>; valid choices: {', '.join(BACKBONES.names())}")
        cfg = load_config(list(run_overrides) + list(hydra) + [f"seed={seed}"])
    else:
        cfg = OmegaConf.create(ckpt_config)
        for group in RUN_GROUPS:
            choice, dotted = group_choice(run_overrides, group), group_values(run_overrides, group)
            if choice is not None:  # a fresh group config, with this group's dotted overrides
                cfg[group] = load_config([f"{group}={choice}", *dotted, *hydra])[group]
            elif dotted:
                cfg[group] = _apply_dotted(cfg[group], dotted, group)
    with open_dict(cfg):
        cfg.dataset.label_fraction = 1.0  # the evaluator draws its own subset (eval.label_fraction)
    return cfg


def overrides_backbone(run_overrides: Sequence[str]) -> bool:
    """Whether the command line changes the backbone (``backbone=...`` or ``backbone.<key>=...``)."""
    return group_choice(run_overrides, "backbone") is not None or bool(group_values(run_overrides, "backbone"))


def check_backbone_matches(saved: Dict[str, Any], wanted: DictConfig, image_size: int, path: str) -> None:
    """A ``backbone`` override must describe the checkpoint's own backbone."""
    def describe(b: Any) -> Tuple[str, bool, Dict[str, Any]]:
        kwargs = b["kwargs"] or {}
        kwargs = OmegaConf.to_container(kwargs) if isinstance(kwargs, DictConfig) else dict(kwargs)
        return str(b["name"]), resolve_small_stem(b["small_stem"], image_size), kwargs

    have, want = describe(saved), describe(wanted)
    if have != want:
        raise CheckpointError(
            f"checkpoint '{path}' holds backbone '{have[0]}' (small_stem={have[1]}, kwargs={have[2]}), but the "
            f"override asks for '{want[0]}' (small_stem={want[1]}, kwargs={want[2]}); drop the backbone override, "
            "or use checkpoint=random for an untrained encoder"
        )
