"""Π-model semi-supervised learning, optionally on ImCLR's concatenated input (ImCLR Table 5).

Π-model: Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017 (and
Sajjadi et al. 2016), in the benchmark setting of Oliver et al., "Realistic Evaluation of Deep
Semi-Supervised Learning Algorithms", NeurIPS 2018 (code: github.com/brain-research/
realistic-ssl-evaluation), for ImCLR's (Chen, Sinha & Kyrillidis 2020, arXiv 2011.12618) Table 5
row "WRN-CIFAR10-SSL" (Table 10: WRN-28-2), "the standard benchmark Π -model" (abstract). ImCLR
Sec. 3.3: "We follow the standard setup in [34] for the CIFAR10 dataset" ([34] = Oliver et al.);
the preset ``configs/experiment/imclr_pimodel_wrn28_2_cifar10.yaml`` quotes each value it takes
from Sec. 3.3 and says which ones (ramp-up, noise std, crop size) come from Oliver et al.'s code.

Every input goes through the network twice, with independent augmentation (and dropout/BatchNorm
noise); the loss is

    L = CE(f(x_l), y_l) + w(t) * mean_u || softmax(f(a1(x_u))) - softmax(f(a2(x_u))) ||^2 / C

over the labelled part ``l`` and the unlabelled part ``u`` of the batch (the unsupervised term is
on the unlabelled images only), with ``w(t) = w_max * exp(-5 (1 - t)^2)``, ``t`` = step /
``method.rampup_steps`` clipped to 1 (Laine & Aila's sigmoid ramp-up; not stated in ImCLR: Oliver
et al.'s code ramps it over 200k of 500k iterations, lib/hparams.py warmup_steps, train_model.py
training_length; the preset keeps that 40% share of ImCLR's 200,000 iterations).
``C`` = number of classes (the mean over classes, as Laine & Aila).

With ``method.k >= 2`` the input of both parts is ImCLR's (:class:`~contrastive.engine.supervised.ClassifierMethod`,
shared with ``contrastive.methods.imclr``): each
image concatenated along the height with ``k-1`` partners drawn from the *same part* of the batch
(labelled with labelled, unlabelled with unlabelled), the supervised target the mean of the
one-hots; the two passes of the consistency term share the partners and differ in augmentation.
At test time the image is concatenated with itself (as ImCLR).

Labels: ``method.num_labels=N`` keeps the labels of a class-balanced, seed-fixed subset of ``N``
training images (``dataset.subset_seed``) and treats the rest as unlabelled; ``0`` uses the
dataset's labels as they are (``-1`` = unlabelled). ``method.labeled_per_batch=L`` makes every
batch ``L`` labelled + ``batch_size - L`` unlabelled images (ImCLR Sec. 3.3: "a batch size of 200,
of which 100 are labeled and 100 are unlabeled"); an epoch is then one pass over the unlabelled images (the labelled
ones cycle).
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import Tensor

from contrastive.augment.concat import CONTROLS, concat_height
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.data.base import class_balanced_subset
from contrastive.data.batch import ViewBatch
from contrastive.engine.method import DataInfo
from contrastive.engine.supervised import ClassifierMethod
from contrastive.losses.classification import one_hot, soft_target_cross_entropy


def consistency_loss(p1_logits: Tensor, p2_logits: Tensor) -> Tensor:
    """Π-model term: mean over rows and classes of ``(softmax(a) - softmax(b))^2``; 0 for no rows."""
    if p1_logits.shape[0] == 0:
        return p1_logits.sum() * 0.0
    return (p1_logits.float().softmax(1) - p2_logits.float().softmax(1)).pow(2).mean()


def rampup(step: int, rampup_steps: int) -> float:
    """Laine & Aila's sigmoid ramp-up ``exp(-5 (1 - t)^2)``, ``t = min(step / rampup_steps, 1)``."""
    if rampup_steps <= 0:
        return 1.0
    t = min(max(step, 0) / rampup_steps, 1.0)
    return float(torch.exp(torch.tensor(-5.0 * (1.0 - t) ** 2)))


class LabeledUnlabeledBatches:
    """Batches of ``labeled`` labelled + ``batch_size - labeled`` unlabelled indices per process.

    An epoch is one pass over a permutation (``seed + epoch``) of the unlabelled indices; the
    labelled ones are taken from a repeated permutation. Each process takes its own slice. A batch
    holds its ``labeled`` labelled indices first (the Π-model splits it there without reading the
    labels on the host). With ``device`` the epoch's order is moved there once and a batch is an
    int64 tensor on that device (no host-to-device copy per step); without, a list of ints (the
    epoch's order made lists once: no tensor operation per step).
    """

    def __init__(self, mask: Tensor, labeled: int, batch_size: int, seed: int, rank: int, world: int,
                 device: Optional[torch.device] = None) -> None:
        self.lab, self.unl = torch.nonzero(mask).flatten(), torch.nonzero(~mask).flatten()
        self.labeled, self.unlabeled = labeled, batch_size - labeled
        if len(self.lab) == 0 or len(self.unl) < self.unlabeled * world:
            raise ConfigError(f"method.labeled_per_batch={labeled} needs labelled images and at least "
                              f"{self.unlabeled * world} unlabelled ones, got {len(self.lab)} and {len(self.unl)}")
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0
        self.device = device

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.unl) // (self.unlabeled * self.world)

    def __iter__(self) -> Iterator[Union[Tensor, List[int]]]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        unl = self.unl[torch.randperm(len(self.unl), generator=g)]
        need = len(self) * self.labeled * self.world
        reps = -(-need // len(self.lab))
        lab = torch.cat([self.lab[torch.randperm(len(self.lab), generator=g)] for _ in range(reps)])
        join = torch.cat if self.device is not None else (lambda parts: parts[0] + parts[1])
        if self.device is not None:
            lab, unl = lab.to(self.device), unl.to(self.device)  # once per epoch
        else:
            lab, unl = lab.tolist(), unl.tolist()
        for b in range(len(self)):
            i = b * self.world + self.rank
            yield join([lab[i * self.labeled:(i + 1) * self.labeled], unl[i * self.unlabeled:(i + 1) * self.unlabeled]])


@METHODS.register("pimodel")
class PiModel(ClassifierMethod):
    """Π-model: supervised CE on the labelled part + ramped consistency of two passes on the unlabelled part.

    The classifier, ImCLR's input (``method.k``), the test-time input and the validation accuracy
    are :class:`~contrastive.engine.supervised.ClassifierMethod`'s (``tta`` is always ``none``)."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.w_max, self.rampup_steps = float(m.consistency), int(m.rampup_steps)
        # True = this training image's label is used; filled in setup() when method.num_labels > 0.
        self.register_buffer("labeled_mask", torch.ones(max(1, int(data.num_train)), dtype=torch.bool))
        # Set in setup(): True / False when every training image is labelled / unlabelled (the parts of a
        # uniform batch are then known without looking at its labels); None for a mixed split.
        self.all_labeled: Optional[bool] = None

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if isinstance(m.k, bool) or not isinstance(m.k, int) or m.k < 1:
            raise ConfigError(f"method.k must be an integer >= 1 (1 = plain Π-model, 2 = with ImCLR's input), got {m.k!r}")
        if m.control not in CONTROLS:
            raise ConfigError(f"method.control='{m.control}' is not valid; choose one of {', '.join(CONTROLS)}")
        if not float(m.consistency) >= 0 or int(m.rampup_steps) < 0:
            raise ConfigError(f"method.consistency must be >= 0 and method.rampup_steps >= 0, got {m.consistency} and {m.rampup_steps}")
        if not 0 <= int(m.num_labels) <= max(data.num_train, 0) and data.num_train > 0:
            raise ConfigError(f"method.num_labels={m.num_labels} must be in [0, {data.num_train}] (0 = the dataset's labels)")
        if not 0 <= int(m.labeled_per_batch) < int(cfg.batch_size):
            raise ConfigError(f"method.labeled_per_batch={m.labeled_per_batch} must be in [0, batch_size={cfg.batch_size})")
        if data.num_classes < 2:
            raise ConfigError(f"the Π-model needs a labelled dataset with at least 2 classes, got {data.num_classes}")

    def setup(self, stage: str) -> None:
        """Choose the labelled subset (class-balanced, seed-fixed) from the training labels."""
        n = int(self.cfg.method.num_labels)
        dm = self._trainer.datamodule if self._trainer is not None else None
        if dm is None:
            return
        labels = dm.splits.train.labels.cpu()  # [N], -1 = unlabelled
        mask = labels >= 0
        if n > 0:
            keep = class_balanced_subset(labels, n / int(mask.sum()), seed=int(self.cfg.dataset.subset_seed))
            mask = torch.zeros_like(mask)
            mask[keep] = True
        self.labeled_mask = mask.to(self.labeled_mask.device)
        self.all_labeled = bool(mask.all()) if bool(mask.all() | ~mask.any()) else None  # once, at set-up

    def batch_sampler_factory(self):
        labeled = int(self.cfg.method.labeled_per_batch)
        if labeled == 0:
            return None

        return lambda n, bs, seed, rank, world: LabeledUnlabeledBatches(self.labeled_mask.cpu(), labeled, bs, seed, rank,
                                                                        world, self.sampler_device())

    # ---------------------------------------------------------------- training
    def crops_per_image(self) -> int:
        """Streamed batches carry ``2k`` crops per image: slot ``j`` of pass ``p`` takes crop ``j + p k``."""
        return 2 * self.k

    def stacked_input(self, batch: ViewBatch, idx: Tensor, pass_: int = 0) -> Tensor:
        """Slot-major rows ``idx`` ``[k*n]`` of the batch -> normalised ``[n, 3, k*S, S]``; ``pass_``
        picks the streamed crops of that pass (``pass_ * k + slot``)."""
        if idx.numel() == 0:  # no image of this part in the batch
            h, w = self.input_size()
            return batch.images.new_zeros((0, 3, h, w), dtype=torch.float32)
        x = self.slot_images(batch, idx, first_crop=pass_ * self.k)  # [kn, 3, S, S]
        return self._to_memory_format(concat_height(x, self.k))

    def training_views(self, batch: ViewBatch) -> Tuple[Tuple[Tensor, ...], Tensor]:
        """Returns ``(labelled input, its soft targets, unlabelled input pass 1, pass 2)`` and the
        labels; the parts are split by ``labels >= 0`` (``training_losses`` re-checks the mask)."""
        labels = batch.labels
        lab, unl = self.labeled_parts(labels)  # [Bl], [Bu]
        idx_lab, idx_unl = (self.slot_indices(part) if len(part) else part for part in (lab, unl))  # [k*Bp] each
        x_lab = self.stacked_input(batch, idx_lab)  # [Bl, 3, kS, S]
        targets = one_hot(labels.index_select(0, idx_lab).clamp(min=0), self.num_classes)  # [k*Bl, C]
        targets = targets.view(self.k, len(lab), self.num_classes).mean(0)  # [Bl, C]
        x_u1, x_u2 = self.stacked_input(batch, idx_unl, 0), self.stacked_input(batch, idx_unl, 1)  # [Bu, 3, kS, S] x 2
        return (x_lab, targets, x_u1, x_u2), labels

    def labeled_parts(self, labels: Tensor) -> Tuple[Tensor, Tensor]:
        """Batch rows of the labelled (``labels >= 0``) and the unlabelled images, int64 ``[Bl]``, ``[Bu]``.

        With ``method.labeled_per_batch=L`` in training, :class:`LabeledUnlabeledBatches` puts the ``L``
        labelled images first: the parts are ``0..L-1`` and ``L..B-1`` (fixed sizes, no host sync), and a
        batch not laid out so stops the run (checked on the device, without waiting for it). Otherwise
        their sizes depend on the labels: two ``nonzero`` (host syncs), unless every training image is
        labelled (or every one unlabelled), when the parts are the whole batch and nothing.
        """
        b, first = labels.shape[0], int(self.cfg.method.labeled_per_batch)
        if first > 0 and self.training:
            torch._assert_async(((labels[:first] >= 0).all() & (labels[first:] < 0).all()),
                                f"a Π-model batch with method.labeled_per_batch={first} must hold its labelled images first")
            rows = torch.arange(b, device=labels.device)
            return rows[:first], rows[first:]
        if self.all_labeled is not None and self.training:  # uniform batches of a fully (un)labelled split
            rows = torch.arange(b, device=labels.device)
            return (rows, rows[:0]) if self.all_labeled else (rows[:0], rows)
        return torch.nonzero(labels >= 0).flatten(), torch.nonzero(labels < 0).flatten()

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels, indices = batch
        if self._trainer is not None and self._trainer.training:  # hide the labels outside the labelled subset
            labels = torch.where(self.labeled_mask[indices.to(self.labeled_mask.device)].to(labels.device), labels, -1)
        return super().on_after_batch_transfer((images, labels, indices), dataloader_idx)

    def training_losses(self, views, labels: Tensor, indices: Tensor) -> Dict[str, Tensor]:
        x_lab, targets, x_u1, x_u2 = views
        n_lab, n_unl = x_lab.shape[0], x_u1.shape[0]
        logits = self.classifier(self.backbone(torch.cat([x_lab, x_u1, x_u2])))  # [Bl + 2 Bu, C]: one BN batch
        sup = soft_target_cross_entropy(logits[:n_lab], targets) if n_lab else logits.sum() * 0.0
        cons = consistency_loss(logits[n_lab:n_lab + n_unl], logits[n_lab + n_unl:])
        w = self.w_max * rampup(int(self.global_step), self.rampup_steps)
        return {"loss": sup + w * cons, "supervised": sup.detach(), "consistency": cons.detach(),
                "weight": torch.tensor(w), "labeled": torch.tensor(float(n_lab))}
