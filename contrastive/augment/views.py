"""Per-view augmentation: asymmetric recipes (BYOL) and multi-crop (SwAV, DINO).

Most methods augment every view with the same transform. Two families differ:

- **Asymmetric views** (BYOL, Grill et al. 2020, Table 6: blur probability 1.0 / 0.1 and
  solarisation 0.0 / 0.2 for the two views): ``augment.per_view`` lists one mapping of
  overrides per global view, applied on top of the shared keys.
- **Multi-crop** (SwAV, Caron et al. 2020, Sec. 3.2: "two standard resolution crops and ...
  V additional low resolution crops that cover only small parts of the image"):
  ``augment.multicrop.{num_local, size, min_scale, max_scale}`` adds ``num_local`` crops of
  ``size`` pixels after the two global views.

:func:`build_view_augments` returns the plain transform when neither is set, else a
:class:`ViewAugments` whose :meth:`ViewAugments.view` gives the transform of view ``v``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from contrastive.augment.pipelines import build_augment
from contrastive.core.errors import ConfigError

GLOBAL_VIEWS = 2


class ViewAugments(torch.nn.Module):
    """One augmentation per view: ``view(v)`` for ``v < len(self)``.

    Args:
        augments: The per-view transforms, global views first, then the local crops.
        num_global: How many of them are global (full-resolution) views.
    """

    def __init__(self, augments: Sequence[torch.nn.Module], num_global: int) -> None:
        super().__init__()
        self.augments = torch.nn.ModuleList(augments)
        self.num_global = int(num_global)

    def __len__(self) -> int:
        return len(self.augments)

    @property
    def num_local(self) -> int:
        return len(self.augments) - self.num_global

    def view(self, v: int) -> torch.nn.Module:
        """The transform of view ``v`` (views past the list reuse the last global one)."""
        return self.augments[v] if v < len(self.augments) else self.augments[self.num_global - 1]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return self.augments[0].normalise(x)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The first view's transform (for callers that want one augmented view)."""
        return self.augments[0](images, generator)


def multicrop_local_count(cfg: Mapping) -> int:
    """``augment.multicrop.num_local`` (0 when the augment has no multi-crop setting)."""
    multicrop = cfg["multicrop"] if "multicrop" in cfg else None
    return int(multicrop["num_local"]) if multicrop else 0


def _local_settings(multicrop: Mapping, image_size: int) -> dict:
    unknown = set(multicrop) - {"num_local", "size", "min_scale", "max_scale"}
    if unknown:
        raise ConfigError(f"augment.multicrop has unknown keys {sorted(unknown)}; valid keys: num_local, size, min_scale, max_scale")
    size, num_local = int(multicrop["size"]), int(multicrop["num_local"])
    if num_local < 0:
        raise ConfigError(f"augment.multicrop.num_local must be >= 0, got {num_local}")
    if not 8 <= size <= image_size:
        raise ConfigError(f"augment.multicrop.size={size} must be between 8 and the image size {image_size}: "
                          "a local crop cannot be larger than the image")
    return {"min_scale": float(multicrop["min_scale"]), "max_scale": float(multicrop["max_scale"])}


def build_view_augments(cfg: Mapping, image_size: int, mean: Sequence[float], std: Sequence[float]) -> torch.nn.Module:
    """The training augmentation of ``cfg`` (the ``augment`` config as a plain mapping).

    Args:
        cfg: ``name`` and the transform's keywords, plus optionally ``per_view`` (null or a list
            of override mappings, one per global view) and ``multicrop`` (see the module doc).
        image_size, mean, std: As for :func:`contrastive.augment.pipelines.build_augment`.

    Returns:
        The transform itself when every view is augmented alike, else a :class:`ViewAugments`.
    """
    base = dict(cfg)
    per_view = base.pop("per_view", None)
    multicrop = base.pop("multicrop", None)
    num_local = int(multicrop["num_local"]) if multicrop else 0
    if per_view is None and num_local == 0:
        return build_augment(base, image_size, mean, std)
    if per_view is not None and (isinstance(per_view, (str, Mapping)) or len(per_view) != GLOBAL_VIEWS):
        raise ConfigError(f"augment.per_view must be null or a list of {GLOBAL_VIEWS} override mappings (one per "
                          f"global view), got {per_view!r}")
    globals_ = [build_augment({**base, **dict(o)}, image_size, mean, std) for o in (per_view or [{}] * GLOBAL_VIEWS)]
    locals_ = []
    if num_local:
        local = {**base, **_local_settings(multicrop, image_size)}
        locals_ = [build_augment(local, int(multicrop["size"]), mean, std) for _ in range(num_local)]
    return ViewAugments(globals_ + locals_, num_global=GLOBAL_VIEWS)
