"""Export a trained backbone as a plain ``state_dict`` for use without this project.

The file holds only tensors, keyed exactly like the backbone module, so it loads
with ``torch.load(path, weights_only=True)`` (and the ``.safetensors`` copy beside it
with ``safetensors.torch.load_file``) into:

* torchvision's ResNets (``resnet18``, ``resnet50``): ``torchvision.models.resnet18()``
  with ``fc = nn.Identity()`` (the backbone has no classifier) and, for a small-stem
  encoder, ``conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)`` and ``maxpool = nn.Identity()``;
* timm's ``resnet18``/``resnet50`` (``timm.create_model(name, num_classes=0)``, same
  key names; for a small stem the same ``conv1``/``maxpool`` replacement);
* the project's own nets: ``contrastive.backbones.factory.create_backbone(name, image_size, **kwargs)``.

A JSON file beside it records the architecture and the snippet that rebuilds it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import torch
from omegaconf import DictConfig, OmegaConf

TORCHVISION = ("resnet18", "resnet50")


def load_snippet(name: str, small_stem: bool, kwargs: Dict[str, Any], image_size: int, file: str) -> str:
    """Python that rebuilds the backbone and loads ``file`` (strict)."""
    if name in TORCHVISION:
        lines = ["import torch, torchvision", f"model = torchvision.models.{name}()", "model.fc = torch.nn.Identity()"]
        if small_stem:
            lines += ["model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)", "model.maxpool = torch.nn.Identity()"]
    else:
        args = "".join(f", {k}={v!r}" for k, v in kwargs.items())
        lines = ["import torch", "from contrastive.backbones.factory import create_backbone",
                 f"model = create_backbone({name!r}, {image_size}, small_stem={small_stem}{args})"]
    lines.append(f"model.load_state_dict(torch.load({file!r}, weights_only=True))")
    return "\n".join(lines)


def export_backbone(backbone: torch.nn.Module, backbone_cfg: DictConfig, image_size: int, path: Path,
                    source: Dict[str, Any]) -> Dict[str, Any]:
    """Write ``backbone.state_dict()`` (CPU tensors) to ``path`` and ``path.json`` beside it.

    Args:
        backbone: The trained encoder (``model.backbone``).
        backbone_cfg: Its ``backbone`` config (name, kwargs).
        image_size: Training image size (the ``small_stem="auto"`` decision).
        path: Target ``.pt`` file.
        source: Facts recorded in the JSON (checkpoint path and hash).

    Returns:
        The JSON record (architecture, feature dim, load snippet, paths).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    torch.save(state, path)
    from safetensors.torch import save_file

    save_file(state, str(path.with_suffix(".safetensors")), metadata={"backbone": str(backbone_cfg.name)})
    kwargs = OmegaConf.to_container(backbone_cfg.kwargs or OmegaConf.create({}))
    small_stem = bool(getattr(backbone, "small_stem", False))
    record = {
        "backbone": str(backbone_cfg.name), "small_stem": small_stem, "kwargs": kwargs,
        "feature_dim": int(backbone.feature_dim), "image_size": int(image_size), "path": str(path),
        "safetensors": str(path.with_suffix(".safetensors")),
        "load": load_snippet(str(backbone_cfg.name), small_stem, kwargs, image_size, str(path)), **source,
    }
    path.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record
