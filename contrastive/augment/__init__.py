"""Augmentations on uint8/float image batches on the device: the paper pipelines (``pipelines``),
their ops (``ops``, ``photometric``), batch mixing (``mixing``: CutMix, MixUp, AutoAugment) and
ImCLR's ``k``-image input (``concat``)."""

from contrastive.augment.infomin import InfoMinAugment
from contrastive.augment.pipelines import AUGMENTATIONS

# InfoMin Aug. (Tian et al. 2020) subclasses SimCLRAugment, so it registers here, once both modules exist.
AUGMENTATIONS["infomin"] = InfoMinAugment
