"""Backbones: image encoders (:class:`Encoder`) mapping ``[B, 3, H, W]`` images to ``[B, D]`` features.

Importing this package registers every built-in family in ``BACKBONES``; build one with
:func:`create_backbone`.
"""

from contrastive.backbones import cifar_resnet, keras, resnet, small_cnn, timm_models  # noqa: F401  (register)
from contrastive.backbones.base import Encoder, ModuleEncoder, PooledEncoder, count_parameters
from contrastive.backbones.factory import check_input_size, create_backbone, resolve_small_stem

__all__ = ["Encoder", "ModuleEncoder", "PooledEncoder", "check_input_size", "count_parameters", "create_backbone",
           "resolve_small_stem"]
