"""What the lightly-built references of SwAV, DINO, Barlow Twins, VICReg and NNCLR share.

Registers no method. It maps our resolved ``augment:`` section onto the keyword arguments of lightly's
transforms (``lightly.transforms``: the same names under other spellings) and refuses, with a one-line
:class:`~contrastive.core.errors.ConfigError`, any value that a lightly transform cannot express, so a
reference never silently trains on other augmentations than ours. It also holds the step arithmetic
(epoch of a step, total steps) and the optimizer groups with ``optimizer.bias_norm_lr_ratio``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence

from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform

from contrastive.core.errors import ConfigError
from benchmarks.reproduce.parity.references.base import Reference, Settings

#: The keys of ``augment.per_view`` entries that lightly's per-view transforms (BYOL's, DINO's) can take.
PER_VIEW_KEYS = ("blur_prob", "solarize_prob")


def normalize(settings: Settings) -> Dict[str, List[float]]:
    """The dataset's normalisation in lightly's form ``{"mean": [...], "std": [...]}``."""
    return {"mean": [float(v) for v in settings.mean], "std": [float(v) for v in settings.std]}


def view_kwargs(settings: Settings) -> Dict[str, Any]:
    """The keyword arguments every lightly view transform takes, from our ``augment:`` section.

    Returns:
        hf_prob, cj_prob, cj_strength, cj_bright, cj_contrast, cj_sat, cj_hue, random_gray_scale, sigmas
        and normalize (lightly multiplies cj_bright/contrast/sat/hue by cj_strength, as our augment does).
    """
    a = settings.augment
    return {
        "hf_prob": float(a["hflip_prob"]),
        "cj_prob": float(a["cj_prob"]),
        "cj_strength": float(a["cj_strength"]),
        "cj_bright": float(a["cj_brightness"]),
        "cj_contrast": float(a["cj_contrast"]),
        "cj_sat": float(a["cj_saturation"]),
        "cj_hue": float(a["cj_hue"]),
        "random_gray_scale": float(a["gray_prob"]),
        "sigmas": tuple(float(s) for s in a["blur_sigma"]),
        "normalize": normalize(settings),
    }


def per_view(settings: Settings) -> List[Mapping[str, Any]] | None:
    """``augment.per_view`` (two mappings over :data:`PER_VIEW_KEYS`) or None; other keys are refused."""
    views = settings.augment.get("per_view")
    if views is None:
        return None
    if len(views) != 2:
        raise ConfigError(f"augment.per_view has {len(views)} entries; the parity references take 2 (one per global view)")
    for i, view in enumerate(views):
        extra = sorted(set(view) - set(PER_VIEW_KEYS))
        if extra:
            raise ConfigError(f"augment.per_view[{i}] sets {extra}; lightly's per-view transforms take only "
                              f"{list(PER_VIEW_KEYS)}")
    return list(views)


def view_value(settings: Settings, view: Mapping[str, Any] | None, key: str) -> float:
    """``view[key]`` where the per-view mapping sets it, else ``augment[key]``."""
    if view is not None and key in view:
        return float(view[key])
    return float(settings.augment[key])


def require(settings: Settings, transform: str, **allowed: Any) -> None:
    """Refuses augment values that ``transform`` cannot express: each ``key=value`` must hold.

    Example: ``require(s, "SimCLRTransform", max_scale=1.0, solarize_prob=0.0, per_view=None)``.
    """
    for key, want in allowed.items():
        got = settings.augment.get(key)
        if got != want and not (isinstance(want, float) and got is not None and float(got) == want):
            raise ConfigError(f"augment.{key}={got!r}: lightly's {transform} (this method's parity reference) "
                              f"supports only {want!r}")


def epoch_of(settings: Settings, step: int) -> int:
    """The epoch (0-based) that optimizer step ``step`` (0-based) belongs to."""
    return int(step) // max(int(settings.steps_per_epoch), 1)


def total_steps(settings: Settings) -> int:
    """Optimizer steps of the whole run (lightly's ``trainer.estimated_stepping_batches``)."""
    return int(settings.epochs) * int(settings.steps_per_epoch)


def set_trainable(params: Sequence, trainable: bool) -> None:
    """``requires_grad`` of ``params``: frozen parameters get no gradient, so the optimizer skips them."""
    for p in params:
        p.requires_grad_(trainable)


def byol_transform(settings: Settings) -> BYOLTransform:
    """lightly's two-view ``BYOLTransform`` with our values (``augment.per_view`` per view, if set)."""
    require(settings, "BYOLTransform", max_scale=1.0)
    views = per_view(settings) or [None, None]
    kwargs = view_kwargs(settings)

    def one(cls, view):
        return cls(input_size=settings.image_size, min_scale=float(settings.augment["min_scale"]),
                   gaussian_blur=view_value(settings, view, "blur_prob"),
                   solarization_prob=view_value(settings, view, "solarize_prob"), **kwargs)

    return BYOLTransform(view_1_transform=one(BYOLView1Transform, views[0]),
                         view_2_transform=one(BYOLView2Transform, views[1]))


class LightlyReference(Reference):
    """A reference whose optimizer groups also carry ``optimizer.bias_norm_lr_ratio``.

    lightly's Barlow Twins recipe gives the biases and normalisation parameters their own lr
    (``"lr": 0.0048 * lr_factor`` beside 0.2 for the weights); here that lr is
    ``scaled_lr x bias_norm_lr_ratio`` from :class:`Settings`, on the no-decay group of
    :meth:`Reference.parameter_groups` (a ratio of 1 changes nothing).
    """

    def parameter_groups(self) -> List[dict]:
        groups = super().parameter_groups()
        opt = self.settings.optimizer
        ratio = float(opt.get("bias_norm_lr_ratio", 1.0))
        if len(groups) == 2 and ratio != 1.0:
            groups[1]["lr"] = float(self.settings.scaled_lr) * ratio
        return groups
