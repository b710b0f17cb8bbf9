"""ImCLR: Implicit Contrastive Learning for Image Classification.

Chen, Sinha & Kyrillidis, 2020 (https://arxiv.org/abs/2011.12618).

Supervised training in which every input is ``k`` independently augmented images sampled with
replacement and concatenated along the height (image 1 on top), and the target is the mean of
their one-hot labels; loss (cross-entropy, here with soft targets), hyper-parameters and
architecture are those of the base recipe, only the input is ``k*S x S``. ``k=1`` is standard
supervised training. At test time an image is concatenated with itself (``k`` copies);
``method.tta=flip`` alternates it with its horizontal flip; with ``k=1`` it is the paper's Table 9
"Base + flips": the mean output (softmax) of an image and its flipped counterpart.
``method.control=same_image`` is the paper's control: ``k`` independent augmentations of the
*same* image.

Networks. The paper's nets (Appendix Table 10; ``contrastive/backbones/keras.py``) end in a fixed
average pooling and a Flatten for RN20/RN56/VGG16/WRN-16-8: on the ``k*S x S`` input their head
sees a ``k x 1`` map, so the classifier (``Dense``) has ``k`` times the inputs and the top and the
bottom image reach different weights. Such a backbone is re-sized here for ``k*S x S``
(``configure_input``); the kNN monitor and ``linear_eval.py`` get its features of the
self-concatenated test input through :meth:`ImCLR.embed`.

Sampling. The paper samples the ``k`` images of an input from the dataset with replacement. Here
slot 1 (the top image) of the ``B`` inputs of a step is the shuffled batch itself, in order, so
every training image is a top image once per epoch, and each of the ``k-1`` other slots is an
independent uniform draw from the *other* ``B-1`` images of the batch. Since the batch is a
uniform random subset of the dataset, each partner is marginally a uniform random training image
other than the top one, as in the paper, where a partner equals the top image with probability
``1/N`` (negligible; drawing from the whole batch instead would make ``1/B`` of the pairs, e.g.
1.6% at B=64, accidental same-image controls). Partners of different slots may coincide (with
replacement). The only difference from dataset-level sampling is that the images of one step are
correlated (each batch image appears ``k`` times on average), which does not change the expected
loss.

Strong augmentation (``method.mix``, ``method.autoaugment``) is applied to each image before the
concatenation. The paper applies AutoAugment (Table 7) "after other augmentations, and before
normalization and ImCLR": here the crop/flip comes first (un-normalised, then rounded to uint8 for
torchvision's AutoAugment), then AutoAugment, then normalisation, then CutMix/MixUp within each
of the ``k`` slots (one torchvision call per slot: its own coefficient and box; each image mixes
with the previous image of its slot), then the concatenation, whose target is the mean of the
``k`` (soft) targets.

Validation logs, next to the kNN monitor of the base class, the classifier's accuracy and test
error on the val split (``val_top1``, ``val_error`` in %) with the same test-time input.
"""

from __future__ import annotations

from typing import Dict, Tuple

import torch
from torch import Tensor

from contrastive.augment.concat import CONTROLS, TTAS, concat_height
from contrastive.augment.mixing import MIXES, BatchMix, PerImageAutoAugment
from contrastive.backbones.factory import check_input_size
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.data.batch import ViewBatch
from contrastive.engine.method import DataInfo
from contrastive.engine.supervised import ClassifierMethod
from contrastive.losses.classification import one_hot, soft_target_cross_entropy


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@METHODS.register("imclr")
class ImCLR(ClassifierMethod):
    """ImCLR: a linear classifier on the backbone, trained on k-image concatenations with soft targets.

    The input, the classifier, the test-time input and the validation accuracy are
    :class:`~contrastive.engine.supervised.ClassifierMethod`'s; this class adds the mixing,
    AutoAugment and the soft targets."""

    supervised = True

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.mix = BatchMix(str(m.mix), float(m.mix_alpha), float(m.mix_prob))
        self.autoaugment = PerImageAutoAugment("cifar10", int(m.autoaugment_group)) if bool(m.autoaugment) else None
        self._check_backbone_input()

    # ---------------------------------------------------------------- config
    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if not _is_int(m.k) or m.k < 1:
            raise ConfigError(f"method.k must be an integer >= 1 (images per concatenated input; 1 = standard training), got {m.k!r}")
        if m.control not in CONTROLS:
            raise ConfigError(f"method.control='{m.control}' is not valid; choose one of {', '.join(CONTROLS)}")
        if m.tta not in TTAS:
            raise ConfigError(f"method.tta='{m.tta}' is not valid; choose one of {', '.join(TTAS)}")
        if bool(m.autoaugment) is True and str(cfg.augment.name) != "supervised":
            raise ConfigError(f"method.autoaugment=true runs between the crop/flip and the normalisation of augment=supervised, "
                              f"got augment={cfg.augment.name}")
        if m.mix not in MIXES:
            raise ConfigError(f"method.mix='{m.mix}' is not valid; choose one of {', '.join(MIXES)}")
        if not float(m.mix_alpha) > 0 or not 0 <= float(m.mix_prob) <= 1:
            raise ConfigError(f"method.mix_alpha must be > 0 and method.mix_prob in [0, 1], got {m.mix_alpha} and {m.mix_prob}")
        if not isinstance(m.autoaugment, bool):
            raise ConfigError(f"method.autoaugment must be true or false, got {m.autoaugment!r}")
        if not _is_int(m.autoaugment_group) or m.autoaugment_group < 1:
            raise ConfigError(f"method.autoaugment_group must be an integer >= 1, got {m.autoaugment_group!r}")
        if data.num_classes < 2:
            raise ConfigError(f"ImCLR needs a labeled dataset with at least 2 classes, got {data.num_classes}")

    def _check_backbone_input(self) -> None:
        """A clear error if the backbone cannot take the concatenated input (too small, or a
        backbone without global pooling that needs square inputs / a fixed size)."""
        h, w = self.input_size()
        what = f"ImCLR's {h}x{w} input (k={self.k} images of {w}x{w} stacked along the height)"
        try:
            check_input_size(self.backbone, h, w)
        except ConfigError as err:
            raise ConfigError(f"{err}; it cannot take {what}") from None
        name = self.backbone.name
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                param = next(self.backbone.parameters(), None)
                probe = torch.zeros(1, 3, h, w, device=param.device if param is not None else None)
                out = self.backbone(probe)
        except RuntimeError as err:
            raise ConfigError(f"backbone '{name}' cannot take {what}: {str(err).splitlines()[0]}") from None
        finally:
            self.backbone.train(was_training)
        if tuple(out.shape) != (1, self.backbone.feature_dim):
            raise ConfigError(
                f"backbone '{name}' gives features of shape {tuple(out.shape)} for {what}, expected "
                f"(1, {self.backbone.feature_dim}); ImCLR needs a backbone that ends in global pooling or a "
                "head sized with configure_input(height, width)"
            )

    # ---------------------------------------------------------------- training input
    def training_views(self, batch: ViewBatch) -> Tuple[Tensor, Tensor]:
        """A batch of ``B`` images (labels ``[B]``) -> input ``[B, 3, k*S, S]`` and soft targets ``[B, C]``.

        Crop/flip (or the streamed crop of each slot), AutoAugment on uint8 when on (paper
        Sec. 3.4: after the crop, before normalisation), CutMix/MixUp within each slot, then
        the concatenation; the target is the mean of the ``k`` (mixed) one-hots."""
        b = len(batch)
        idx = self.slot_indices(torch.arange(b, device=batch.images.device))  # [k*B], slot-major
        x = self.slot_images(batch, idx, uint8_op=self.autoaugment)  # float [kB, 3, S, S]
        labels = batch.labels
        targets = one_hot(labels.index_select(0, idx) if self.k > 1 else labels, self.num_classes)  # [kB, C]
        if self.mix.transform is not None:  # CutMix / MixUp within each slot, before concatenation
            parts = [self.mix(xs, ts) for xs, ts in zip(x.split(b), targets.split(b))]
            x, targets = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        inputs = concat_height(x, self.k)  # [B, 3, k*S, S]
        targets = targets.view(self.k, b, self.num_classes).mean(dim=0)  # [B, C]
        return self._to_memory_format(inputs), targets

    def training_losses(self, views: Tensor, labels: Tensor, indices: Tensor) -> Dict[str, torch.Tensor]:
        logits = self.classifier(self.backbone(views))  # [B, C]
        return {"loss": soft_target_cross_entropy(logits, labels)}
