"""Backbones: image encoders that map ``[B, 3, H, W]`` images to pooled ``[B, D]`` features.

Every backbone is a factory registered in :data:`contrastive.core.registry.BACKBONES` and
built with :func:`create_backbone`. A factory is called as ``factory(small_stem=bool,
**kwargs)`` and returns a module whose ``forward`` ends in global average pooling
(so non-square inputs such as ImCLR's 64x32 concatenations work) or, for the ImCLR
paper's flatten heads, has ``configure_input(height, width)``, which sizes the head and
``feature_dim`` for one input size (see :mod:`contrastive.backbones.keras`), and that has two
int attributes:

* ``feature_dim``: the size ``D`` of the output vector;
* ``min_input_size``: the smallest image side it can take, i.e. its total
  downsampling factor, at which the last stage sees a 1x1 map (smaller inputs
  crash in un-padded pooling or leave the last stages looking only at padding).

:func:`create_backbone` adds ``name`` and ``small_stem`` attributes.

This module builds and checks backbones; the networks live beside it (``resnet``,
``small_cnn``, ``cifar_resnet``, ``keras``, ``timm_models``) and register on import
of :mod:`contrastive.backbones`.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Union

from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.core.registry import BACKBONES

log = logging.getLogger(__name__)

#: ``small_stem="auto"`` picks the small stem for images up to this size (CIFAR, STL at 64, Tiny-ImageNet).
SMALL_STEM_MAX_SIZE = 64


# ----------------------------------------------------------------------------- public API
def create_backbone(name: str, image_size: int, small_stem: Union[bool, str] = "auto", **kwargs: Any) -> nn.Module:
    """Build a registered backbone.

    Args:
        name: Registered backbone name (see ``BACKBONES.names()``).
        image_size: Side of the (square) training images; only used to resolve
            ``small_stem="auto"``. Inputs of other sizes, including non-square ones,
            work as long as both sides are at least ``min_input_size``.
        small_stem: ``True`` for a 3x3 stride-1 stem without max-pool (for
            CIFAR/Tiny-ImageNet sized images), ``False`` for the ImageNet stem,
            ``"auto"`` for ``image_size <= 64``. The CIFAR nets always have a small
            stem and ignore it.
        **kwargs: Passed to the backbone's factory (e.g. ``zero_init_residual``, ``width``, ``dropout``).

    Returns:
        A module mapping float ``[B, 3, H, W]`` to ``[B, feature_dim]`` with int
        attributes ``feature_dim`` and ``min_input_size`` and attributes ``name``
        and ``small_stem``.

    Raises:
        ConfigError: (a ``ValueError``) for an unknown name (the message lists the
            choices), an invalid ``small_stem`` or a keyword the backbone does not take.
    """
    try:
        factory = BACKBONES.get(name)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    use_small = resolve_small_stem(small_stem, image_size)
    try:  # check the keywords here so a config typo gives a clear message, not a TypeError deep inside
        inspect.signature(factory).bind(small_stem=use_small, **kwargs)
    except TypeError as err:
        params = [p for p in inspect.signature(factory).parameters if p != "small_stem"]
        raise ConfigError(f"backbone '{name}': {err}; it accepts: {', '.join(params) or '(no keywords)'}") from None
    model = factory(small_stem=use_small, **kwargs)
    if hasattr(model, "configure_input"):  # a flatten head is sized for the input (keras.HeadedEncoder)
        model.configure_input(int(image_size), int(image_size))
    model.name = name
    if not hasattr(model, "small_stem"):
        model.small_stem = use_small
    elif model.small_stem and not use_small and str(small_stem).lower() != "auto":
        log.warning("backbone '%s' always uses a small 3x3 stride-1 stem; small_stem=False is ignored", name)
    model.feature_dim = int(model.feature_dim)
    model.min_input_size = int(getattr(model, "min_input_size", 1))
    return model


def resolve_small_stem(small_stem: Union[bool, str], image_size: int) -> bool:
    """Turn ``True``/``False``/``"auto"`` (or ``"true"``/``"false"`` strings) into a bool."""
    if isinstance(small_stem, bool):
        return small_stem
    value = str(small_stem).strip().lower()
    if value == "auto":
        return int(image_size) <= SMALL_STEM_MAX_SIZE
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"small_stem must be true, false or 'auto', got {small_stem!r}")


def check_input_size(backbone: nn.Module, height: int, width: int) -> None:
    """Raise if ``backbone`` cannot take ``height x width`` images.

    Raises:
        ConfigError: (a ``ValueError``) e.g. "backbone 'resnet50' (small_stem=False)
            needs inputs of at least 32x32, got 16x16".
    """
    need = int(getattr(backbone, "min_input_size", 1))
    if height < need or width < need:
        name = getattr(backbone, "name", type(backbone).__name__)
        raise ConfigError(
            f"backbone '{name}' (small_stem={getattr(backbone, 'small_stem', '?')}) "
            f"needs inputs of at least {need}x{need}, got {height}x{width}"
        )
