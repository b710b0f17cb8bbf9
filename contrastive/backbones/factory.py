"""Backbones: image encoders that map ``[B, 3, H, W]`` images to pooled ``[B, D]`` features.

Every backbone is a factory registered in :data:`contrastive.core.registry.BACKBONES` and
built with :func:`create_backbone`. A factory is called as ``factory(small_stem=bool,
**kwargs)`` and returns an :class:`~contrastive.backbones.base.Encoder`: ``feature_dim``,
``min_input_size``, ``small_stem`` and ``configure_input(height, width)`` (which sizes the
ImCLR paper's flatten heads for one input size, :mod:`contrastive.backbones.keras`, and does
nothing for encoders that end in global pooling). A plugin with a plain ``nn.Module`` wraps it
in :class:`~contrastive.backbones.base.ModuleEncoder` (``state_dict`` keys unchanged);
:func:`create_backbone` rejects anything else with a one-line :class:`ConfigError`.

This module builds and checks backbones; the networks live beside it (``resnet``,
``small_cnn``, ``cifar_resnet``, ``keras``, ``timm_models``) and register on import
of :mod:`contrastive.backbones`.
"""

from __future__ import annotations

import inspect
from typing import Any, Union

from contrastive.backbones.base import Encoder
from contrastive.core.errors import ConfigError
from contrastive.core.registry import BACKBONES

#: ``small_stem="auto"`` picks the small stem for images up to this size (CIFAR, STL at 64, Tiny-ImageNet).
SMALL_STEM_MAX_SIZE = 64


# ----------------------------------------------------------------------------- public API
def create_backbone(name: str, image_size: int, small_stem: Union[bool, str] = "auto", **kwargs: Any) -> Encoder:
    """Build a registered backbone.

    Args:
        name: Registered backbone name (see ``BACKBONES.names()``).
        image_size: Side of the (square) training images; resolves ``small_stem="auto"`` and
            sizes a flatten head (``configure_input``). Inputs of other sizes, including
            non-square ones, work with global pooling as long as both sides are at least
            ``min_input_size``.
        small_stem: ``True`` for a 3x3 stride-1 stem without max-pool (for
            CIFAR/Tiny-ImageNet sized images), ``False`` for the ImageNet stem,
            ``"auto"`` for ``image_size <= 64``. A net whose stem is fixed (the CIFAR nets:
            small; timm models: their own) takes ``"auto"`` or its own value.
        **kwargs: Passed to the backbone's factory (e.g. ``zero_init_residual``, ``width``, ``dropout``).

    Returns:
        The :class:`Encoder`, with ``name`` set and sized for ``image_size x image_size``.

    Raises:
        ConfigError: (a ``ValueError``) for an unknown name (the message lists the
            choices), an invalid ``small_stem`` or one the net cannot honour, a keyword the
            backbone does not take, or a factory that does not return an :class:`Encoder`.
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
    encoder = factory(small_stem=use_small, **kwargs)
    check_encoder(name, encoder)
    encoder.name = name  # an Encoder attribute: the registered name, for messages and checkpoints
    if encoder.small_stem != use_small and str(small_stem).strip().lower() != "auto":
        stem = "a small 3x3 stride-1 stem" if encoder.small_stem else "its own (ImageNet-style) stem"
        raise ConfigError(f"backbone '{name}' always has {stem}: backbone.small_stem={use_small} cannot be "
                          f"honoured; use backbone.small_stem=auto or {encoder.small_stem}")
    encoder.configure_input(int(image_size), int(image_size))
    return encoder


def check_encoder(name: str, encoder: Any) -> None:
    """Raise a one-line :class:`ConfigError` unless a factory's result keeps the :class:`Encoder` contract."""
    if not isinstance(encoder, Encoder):
        raise ConfigError(f"backbone '{name}': its factory returned a {type(encoder).__name__}, not a "
                          "contrastive.backbones.Encoder; subclass Encoder or return "
                          "ModuleEncoder(module, feature_dim, min_input_size)")
    for attr, value in (("feature_dim", encoder.feature_dim), ("min_input_size", encoder.min_input_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"backbone '{name}': {type(encoder).__name__}.{attr} must be an int >= 1, got {value!r}")


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


def check_input_size(backbone: Encoder, height: int, width: int) -> None:
    """Raise if ``backbone`` cannot take ``height x width`` images.

    Raises:
        ConfigError: (a ``ValueError``) e.g. "backbone 'resnet50' (small_stem=False)
            needs inputs of at least 32x32, got 16x16".
    """
    need = backbone.min_input_size
    if height < need or width < need:
        raise ConfigError(f"backbone {backbone.label()} needs inputs of at least {need}x{need}, got {height}x{width}")
