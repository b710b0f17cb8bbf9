"""``backbone=timm``: any model of the timm library as an encoder (optional extra
``pip install 'contrastive[timm]'``).

``backbone=timm backbone.kwargs.model_name=<name>`` builds ``timm.create_model(name,
num_classes=0)``: timm's own way to drop the classifier and return pooled
``[B, num_features]`` features. Weights start random (``pretrained=false``, nothing is
downloaded); other constructor arguments go in ``backbone.kwargs`` with ``+``, e.g.
``+backbone.kwargs.drop_path_rate=0.1``.
"""

from __future__ import annotations

import difflib
import importlib.util
from typing import Any

from contrastive.backbones.base import ModuleEncoder
from contrastive.core.errors import ConfigError
from contrastive.core.registry import BACKBONES


@BACKBONES.register("timm")
def timm_backbone(small_stem: bool = False, model_name: str = "resnet18", pretrained: bool = False,
                  **model_kwargs: Any) -> ModuleEncoder:
    """A timm model without its classifier (``num_classes=0``), adapted by :class:`ModuleEncoder`
    (its ``state_dict`` keys are timm's own).

    Args:
        small_stem: Must be False (or ``auto``): a timm model keeps its own stem (choose one,
            e.g. ``resnet18d``); an explicit ``true`` is rejected by ``create_backbone``.
        model_name: Any name of ``timm.list_models()``.
        pretrained: timm's pretrained weights (downloaded from the Hugging Face Hub).
        **model_kwargs: Passed to ``timm.create_model``.
    """
    if importlib.util.find_spec("timm") is None:
        raise ConfigError("backbone 'timm' needs the timm package: pip install 'contrastive[timm]'")
    import timm

    if model_name not in timm.list_models() and model_name not in timm.list_models(pretrained=True):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5, cutoff=0.6)
        raise ConfigError(f"backbone.kwargs.model_name='{model_name}' is not a timm model"
                          + (f"; close names: {', '.join(close)}" if close else "; see timm.list_models()"))
    model = timm.create_model(model_name, pretrained=bool(pretrained), num_classes=0, **model_kwargs)
    reductions = [int(info.get("reduction", 0)) for info in getattr(model, "feature_info", []) if isinstance(info, dict)]
    return ModuleEncoder(model, int(model.num_features), max(reductions) if reductions else 32, small_stem=False)
