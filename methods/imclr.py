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
from torch import Tensor, nn

from contrastive.backbones.factory import check_input_size
from contrastive.core.errors import ConfigError
from contrastive.engine.method import DataInfo, Method
from contrastive.augment.mixing import MIXES, BatchMix, PerImageAutoAugment
from contrastive.losses.classification import one_hot, soft_target_cross_entropy
from contrastive.core.registry import METHODS

CONTROLS = ("none", "same_image")
TTAS = ("none", "flip")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def concat_height(images: Tensor, k: int) -> Tensor:
    """``[k*B, C, S, S]`` grouped by slot (slot 0 first) -> ``[B, C, k*S, S]``, slot 0 on top."""
    kb, c, h, w = images.shape
    b = kb // k
    return images.view(k, b, c, h, w).permute(1, 2, 0, 3, 4).reshape(b, c, k * h, w)


@METHODS.register("imclr")
class ImCLR(Method):
    """ImCLR: a linear classifier on the backbone, trained on k-image concatenations with soft targets."""

    supervised = True

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.k, self.control, self.tta = int(m.k), str(m.control), str(m.tta)
        self.num_classes = int(data.num_classes)
        if hasattr(self.backbone, "configure_input"):  # a flatten head: size it for the k*S x S input
            self.backbone.configure_input(*self.input_size())
        self.classifier = nn.Linear(self.backbone.feature_dim, self.num_classes)
        self.mix = BatchMix(str(m.mix), float(m.mix_alpha), float(m.mix_prob))
        self.autoaugment = PerImageAutoAugment("cifar10", int(m.autoaugment_group)) if bool(m.autoaugment) else None
        self._check_backbone_input()
        self._val_counts: Tensor | None = None
        self.val_metrics: Dict[str, float] = {}  # last val_top1 / val_error, for scripts

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

    def stream_views(self) -> int:
        """Streamed batches carry ``k`` crops per image: one for each slot it may fill."""
        return self.k

    def input_size(self) -> Tuple[int, int]:
        """``(k*S, S)``: k images of ``S x S`` stacked along the height."""
        return self.k * self.data.image_size, self.data.image_size

    def _check_backbone_input(self) -> None:
        """A clear error if the backbone cannot take the concatenated input (too small, or a
        backbone without global pooling that needs square inputs / a fixed size)."""
        h, w = self.input_size()
        what = f"ImCLR's {h}x{w} input (k={self.k} images of {w}x{w} stacked along the height)"
        try:
            check_input_size(self.backbone, h, w)
        except ConfigError as err:
            raise ConfigError(f"{err}; it cannot take {what}") from None
        name = getattr(self.backbone, "name", type(self.backbone).__name__)
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
    def draw_indices(self, batch: int, device=None) -> Tensor:
        """long ``[k, B]``: row 0 is ``0..B-1``; rows 1.. are partners drawn with replacement from
        the other images of the batch (``control=same_image``: the image itself)."""
        first = torch.arange(batch, device=device)  # [B]
        if self.k == 1 or self.control == "same_image" or batch == 1:
            return first.expand(self.k, batch)
        offsets = torch.randint(1, batch, (self.k - 1, batch), device=device)  # [k-1, B] in [1, B-1]
        return torch.cat([first.unsqueeze(0), (first + offsets) % batch])  # [k, B]

    def make_views(self, images: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """uint8 ``[B, 3, H, W]``, labels ``[B]`` -> input ``[B, 3, k*S, S]`` and soft targets ``[B, C]``."""
        b = images.shape[0]
        idx = self.draw_indices(b, images.device).reshape(-1)  # [k*B], slot-major
        picked = images if self.k == 1 else images.index_select(0, idx)  # uint8 [kB, 3, H, W]
        if images.ndim == 5:  # dataset.storage=stream: [B, k, 3, S, S] crops made per image in the workers
            from contrastive.augment.photometric import slot_views

            x = slot_views(self.augment, self.autoaugment, picked, b)  # float [kB, 3, S, S]
        elif self.autoaugment is not None:  # crop/flip, then AutoAugment, then normalisation (paper Sec. 3.5)
            x = self.augment(picked, normalise=False)  # float [kB, 3, S, S] in [0, 1]
            x = self.autoaugment(x.mul(255.0).round_().to(torch.uint8))  # uint8 [kB, 3, S, S]
            x = self.augment.normalise(x.float().div_(255.0))  # [kB, 3, S, S]
        else:
            x = self.augment(picked)  # float [kB, 3, S, S], independent crop/flip per image
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

    # ---------------------------------------------------------------- test-time input
    def test_input(self, images: Tensor, tta: str | None = None) -> Tensor:
        """Normalised ``[B, 3, S, S]`` -> ``[B, 3, k*S, S]``: k copies (``tta=flip``: the image,
        its flip, the image, ... alternating from the top)."""
        tta = self.tta if tta is None else tta
        if self.k == 1:
            return images
        flipped = images.flip(-1) if tta == "flip" else images
        return self._to_memory_format(torch.cat([flipped if i % 2 else images for i in range(self.k)], dim=2))

    def _base_flips(self, tta: str | None) -> bool:
        """k=1 with tta=flip: Table 9's "Base + flips" (average over the image and its flip)."""
        return self.k == 1 and (self.tta if tta is None else tta) == "flip"

    def embed(self, images: Tensor, tta: str | None = None) -> Tensor:
        """Backbone features ``[B, D]`` of the test-time input (used by kNN and linear_eval.py);
        for "Base + flips" the mean of the image's and its flip's features."""
        if self._base_flips(tta):
            return 0.5 * (self.backbone(images) + self.backbone(images.flip(-1)))  # [B, D]
        return self.backbone(self.test_input(images, tta))

    def predict(self, images: Tensor, tta: str | None = None) -> Tensor:
        """Class scores ``[B, C]`` of normalised ``[B, 3, S, S]`` images: logits, or for "Base +
        flips" the log of the mean softmax output of the image and its flip (the paper's Table 9)."""
        if self._base_flips(tta):
            logits = torch.stack([self.classifier(self.backbone(v)) for v in (images, images.flip(-1))])  # [2, B, C]
            return logits.float().softmax(-1).mean(0).log()  # [B, C]
        return self.classifier(self.embed(images, tta))

    # ---------------------------------------------------------------- validation: kNN + classifier
    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._val_counts = torch.zeros(2, device=self.device)  # (correct, total)

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().validation_step(batch, batch_idx, dataloader_idx)  # kNN features
        if dataloader_idx != 1:  # 0 is the labeled train split (the kNN bank)
            return
        images, labels, _ = batch
        correct = (self.predict(images).argmax(dim=1) == labels).sum()
        self._val_counts += torch.stack([correct.float(), self._val_counts.new_tensor(float(labels.numel()))])

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        counts, self._val_counts = self._val_counts, None
        if counts is None:
            return
        if self.trainer is not None and self.trainer.world_size > 1:
            counts = self.trainer.strategy.reduce(counts, reduce_op="sum")
        if counts[1] == 0:
            return
        top1 = 100.0 * counts[0] / counts[1]
        self.val_metrics = {"val_top1": float(top1), "val_error": float(100.0 - top1)}
        self.log_dict({"val_top1": top1, "val_error": 100.0 - top1}, prog_bar=True, rank_zero_only=False, sync_dist=False)
