"""What the classification methods share: a linear classifier on the backbone, trained and
tested on ImCLR's ``k``-image input, and its validation accuracy.

ImCLR (Chen, Sinha & Kyrillidis 2020, https://arxiv.org/abs/2011.12618) and the Π-model on
ImCLR's input (Laine & Aila, ICLR 2017; ImCLR's Table 5) both subclass
:class:`ClassifierMethod`. It holds

* the input: ``k`` images of ``S x S`` stacked along the height (``k=1``: the image itself),
  the slot sampling of :mod:`contrastive.augment.concat`, a flatten head sized for it
  (``Encoder.configure_input``) and the streamed crop of every slot;
* the head: ``nn.Linear(feature_dim, num_classes)`` (``classifier``);
* test time: the image concatenated with itself (``method.tta=flip``: alternating with its
  flip; ``k=1`` with flip: Table 9's "Base + flips", the mean softmax of the image and its flip);
* validation: next to the base class's kNN monitor, the classifier's top-1 accuracy and test
  error on the val split (``val_top1``, ``val_error`` in %, also kept in ``val_metrics``).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from contrastive.augment.concat import draw_slot_indices, slot_crops, stacked_test_input
from contrastive.data.batch import Uint8Op, ViewBatch
from contrastive.engine.headline import Headline
from contrastive.engine.method import Batch, DataInfo, Method


class ClassifierMethod(Method):
    """A :class:`Method` with a linear classifier on ImCLR's ``k*S x S`` input.

    Reads ``method.k``, ``method.control`` and ``method.tta``.
    Subclasses implement :meth:`training_views` / :meth:`training_losses`.
    """

    #: The test error on the val split (ImCLR's tables and Figures 3-4); top-1 alongside.
    HEADLINE = Headline(key="val_error", label="test error %", mode="min",
                        summary_keys=(("val_error", "test_error"), ("val_top1", "test_top1")))

    def __init__(self, cfg: DictConfig, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.k, self.control, self.tta = int(m.k), str(m.control), str(m.tta)
        self.num_classes = int(data.num_classes)
        self.backbone.configure_input(*self.input_size())  # a flatten head: sized for the k*S x S input
        self.classifier = nn.Linear(self.backbone.feature_dim, self.num_classes)
        self._val_counts: Optional[Tensor] = None
        self.val_metrics: Dict[str, float] = {}  # last val_top1 / val_error, for scripts

    # ---------------------------------------------------------------- training input
    def input_size(self) -> Tuple[int, int]:
        """``(k*S, S)``: k images of ``S x S`` stacked along the height."""
        return self.k * self.data.image_size, self.data.image_size

    def crops_per_image(self) -> int:
        """Streamed batches carry ``k`` crops per image: one for each slot it may fill."""
        return self.k

    def slot_indices(self, rows: Tensor) -> Tensor:
        """int64 ``[k * n]``, slot-major: the rows of the batch that fill each slot of inputs
        whose top images are ``rows`` ``[n]`` (partners drawn among ``rows`` too)."""
        return rows[draw_slot_indices(len(rows), self.k, self.control, rows.device)].reshape(-1)

    def slot_images(self, batch: ViewBatch, idx: Tensor, first_crop: int = 0, uint8_op: Optional[Uint8Op] = None) -> Tensor:
        """Augmented images of slot-major rows ``idx`` ``[k*n]`` -> float ``[k*n, 3, S, S]``; a
        streamed row takes crop ``first_crop + slot`` (:func:`~contrastive.augment.concat.slot_crops`)."""
        return batch.augmented(self.augment, idx, slot_crops(len(idx), self.k, first_crop, idx.device), uint8_op)

    # ---------------------------------------------------------------- test time
    def test_input(self, images: Tensor, tta: Optional[str] = None) -> Tensor:
        """Normalised ``[B, 3, S, S]`` -> ``[B, 3, k*S, S]``: k copies (``tta=flip``: the image,
        its flip, the image, ... alternating from the top)."""
        if self.k == 1:
            return images
        return self._to_memory_format(stacked_test_input(images, self.k, self.tta if tta is None else tta))

    def _base_flips(self, tta: Optional[str]) -> bool:
        """k=1 with tta=flip: Table 9's "Base + flips" (average over the image and its flip)."""
        return self.k == 1 and (self.tta if tta is None else tta) == "flip"

    def embed(self, images: Tensor, tta: Optional[str] = None) -> Tensor:
        """Backbone features ``[B, D]`` of the test-time input (used by kNN and linear_eval.py);
        for "Base + flips" the mean of the image's and its flip's features."""
        if self._base_flips(tta):
            return 0.5 * (self.backbone(images) + self.backbone(images.flip(-1)))  # [B, D]
        return self.backbone(self.test_input(images, tta))

    def predict(self, images: Tensor, tta: Optional[str] = None) -> Tensor:
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

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        super().validation_step(batch, batch_idx, dataloader_idx)  # kNN features
        if dataloader_idx != 1 or self._val_counts is None:  # 0 is the labeled train split (the kNN bank)
            return
        images, labels, _ = batch
        correct = (self.predict(images).argmax(dim=1) == labels).sum().float()
        self._val_counts += torch.stack([correct, correct.new_tensor(float(labels.numel()))])

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
