"""SimCLR's linear evaluation protocol: a linear probe trained on *augmented* images.

Chen et al. 2020, Appendix B.6 ("Linear evaluation"): the linear classifier on the frozen
encoder is trained like the fine-tuning of Appendix B.5, "Only random cropping (with random
left-to-right flipping and resizing ...) is used for preprocessing", with "a larger learning
rate of 1.6 (following LearningRate = 0.1 x BatchSize/256) and longer training of 90
epochs" and no regularisation (no weight decay). ``eval.linear.augment=true`` selects it
(``configs/eval.yaml``); the default ``false`` is the MoCo v3 / MAE protocol of
:mod:`contrastive.evaluation.probe` on cached, un-augmented features.

Every step draws a fresh random resized crop (``eval.linear.augment_min_scale``) and flip of
each image (:class:`contrastive.augment.pipelines.SupervisedAugment`), embeds it with the encoder in
eval mode under ``no_grad`` (BatchNorm uses its running statistics; asserted at every
step, and every weight and buffer is checked unchanged at the end), and takes an SGD step on
the linear head only. The optimiser keys are ``eval.linear``'s (``epochs``, ``batch_size``,
``lr`` per 256, ``momentum``, ``nesterov``, ``weight_decay``); for the paper's values use
``eval.linear.epochs=90 eval.linear.weight_decay=0``. ``eval.linear.feature_norm`` is not
used here: the paper describes no feature normalisation for this protocol. Test accuracy is
measured on the un-augmented test images (the cached test features).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from contrastive.augment.pipelines import EvalTransform, SupervisedAugment
from contrastive.data import ImageArray, RandomBatchSampler
from contrastive.evaluation.features import assert_unchanged, snapshot_state
from contrastive.evaluation.probe import cosine_lr


def _assert_frozen(model: nn.Module) -> None:
    training = [name for name, m in model.named_modules() if m.training]
    if training:
        raise AssertionError(f"the encoder must stay in eval mode during the augmented probe; in train mode: {training[:3]}")


def train_augmented_probe(model: nn.Module, train: ImageArray, num_classes: int, transform: EvalTransform, cfg: Any,
                          device: torch.device, amp: bool = False, seed: int = 0, progress: bool = True) -> nn.Linear:
    """Train ``nn.Linear(D, C)`` on ``model.embed`` of randomly cropped and flipped ``train`` images.

    Args:
        model: The pretrained method (its ``embed``); frozen: eval mode, no gradients, and
            every parameter and buffer is asserted unchanged afterwards.
        train: Labeled training images (uint8 ``[N, 3, H, W]``, labels ``[N]`` in ``[0, C)``).
        num_classes: ``C``.
        transform: The test-time transform: its size and normalisation are reused.
        cfg: ``eval.linear`` (``epochs``, ``batch_size``, ``lr``, ``momentum``, ``nesterov``,
            ``weight_decay``, ``augment_min_scale``).
        device: Where to train.
        amp: bf16 autocast of the encoder's forward pass.
        seed: Seed of the head's initialisation, the batches and the augmentation.

    Returns:
        The trained head on ``device``; it takes raw ``embed`` features.
    """
    torch.manual_seed(seed)
    mean, std = tuple(transform.mean.flatten().tolist()), tuple(transform.std.flatten().tolist())
    augment = SupervisedAugment(transform.image_size, mean, std, padding=0, hflip_prob=0.5, random_resized_crop=True,
                                min_scale=float(cfg.augment_min_scale)).to(device)
    before = snapshot_state(model)
    was_training = model.training
    model.eval()
    images, labels = train.images, train.labels.to(device)
    with torch.no_grad():
        dim = model.embed(transform.to(device)(images[:2].to(device))).shape[1]
    head = nn.Linear(dim, num_classes).to(device)
    batch = min(int(cfg.batch_size), len(train))
    base_lr = float(cfg.lr) * batch / 256
    optimizer = torch.optim.SGD(head.parameters(), lr=base_lr, momentum=float(cfg.momentum),
                                nesterov=bool(cfg.nesterov) and float(cfg.momentum) > 0, weight_decay=float(cfg.weight_decay))
    sampler = RandomBatchSampler(len(train), batch, seed=seed, shuffle=True, drop_last=False)
    total, step = int(cfg.epochs) * len(sampler), 0
    try:
        for epoch in trange(int(cfg.epochs), desc="linear probe (augmented)", disable=not progress, leave=False):
            sampler.set_epoch(epoch)
            for idx in sampler:
                index = torch.as_tensor(idx)
                _assert_frozen(model)
                with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    h = model.embed(augment(images[index].to(device, non_blocking=True)))  # [B, D]
                for group in optimizer.param_groups:
                    group["lr"] = cosine_lr(base_lr, step, total)
                loss = F.cross_entropy(head(h.float()), labels[index.to(device)])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
    finally:
        model.train(was_training)
    assert_unchanged(model, before)
    return head
