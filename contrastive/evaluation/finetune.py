"""Fine-tuning: the whole encoder and a new linear head trained on labeled images.

The standard supervised augmentation (padded random crop + flip, or a random
resized crop; :class:`contrastive.augment.pipelines.SupervisedAugment`) is applied batch-wise
on the device. SGD with Nesterov momentum, cosine decay, separate learning rates for
the pretrained encoder (small) and the new head (large), weight decay on weights
only (``eval.finetune`` in ``configs/eval.yaml``). BatchNorm runs in train mode.
The checkpoint's model is not modified: a copy is fine-tuned.
"""

from __future__ import annotations

import copy
from typing import Any, Tuple

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from tqdm.auto import trange

from contrastive.augment.pipelines import EvalTransform, SupervisedAugment
from contrastive.data import ImageArray, RandomBatchSampler
from contrastive.metrics.knn import topk_accuracy
from contrastive.engine.method import Method
from contrastive.engine.optim import split_decay_parameters
from contrastive.evaluation.probe import cosine_lr


def _optimizer(backbone: nn.Module, head: nn.Module, cfg: Any, batch: int) -> torch.optim.SGD:
    """Four groups: (backbone, head) x (decayed weights, biases and norms without decay)."""
    groups = []
    for module, lr in ((backbone, float(cfg.backbone_lr)), (head, float(cfg.head_lr))):
        decay, no_decay = split_decay_parameters([module])
        base = lr * batch / 256
        groups += [{"params": decay, "weight_decay": float(cfg.weight_decay), "base_lr": base},
                   {"params": no_decay, "weight_decay": 0.0, "base_lr": base}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.SGD(groups, lr=groups[0]["base_lr"], momentum=float(cfg.momentum),
                           nesterov=bool(cfg.nesterov) and float(cfg.momentum) > 0)


def finetune(model: Method, train: ImageArray, test: ImageArray, num_classes: int, transform: EvalTransform, cfg: Any,
             device: torch.device, amp: bool = False, seed: int = 0, progress: bool = True, eval_batch_size: int = 512) -> Tuple[float, float]:
    """Fine-tune a copy of ``model`` (its ``embed`` + a new linear head) and test it.

    Args:
        model: The pretrained method; left unchanged.
        train: Labeled training images (uint8 ``[N, 3, H, W]``, labels ``[N]``).
        test: Test images and labels.
        num_classes: ``C``.
        transform: The test-time transform (its size and normalisation are reused for training).
        cfg: ``eval.finetune`` (epochs, batch_size, backbone_lr, head_lr, momentum, nesterov,
            weight_decay, augment).
        device: Where to train.
        amp: bf16 autocast.
        seed: Seed of the head init, the batches and the augmentation.

    Returns:
        Top-1 and top-5 test accuracy in %.
    """
    torch.manual_seed(seed)
    net = copy.deepcopy(model).to(device)
    augment = SupervisedAugment(transform.image_size, tuple(transform.mean.flatten().tolist()),
                                tuple(transform.std.flatten().tolist()), **OmegaConf.to_container(cfg.augment)).to(device)
    transform = transform.to(device)
    with torch.no_grad():
        net.eval()
        dim = net.embed(transform(test.images[:2].to(device))).shape[1]
    head = nn.Linear(dim, num_classes).to(device)
    batch = min(int(cfg.batch_size), len(train))
    optimizer = _optimizer(net.backbone, head, cfg, batch)
    sampler = RandomBatchSampler(len(train), batch, seed=seed, shuffle=True, drop_last=True)
    total, step = int(cfg.epochs) * len(sampler), 0
    images, labels = train.images, train.labels.to(device)
    net.train()
    for epoch in trange(int(cfg.epochs), desc="fine-tune", disable=not progress, leave=False):
        sampler.set_epoch(epoch)
        for idx in sampler:
            index = torch.as_tensor(idx)
            x = augment(images[index].to(device, non_blocking=True))  # [B, 3, S, S]
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(group["base_lr"], step, total)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = head(net.embed(x))  # [B, C]
            loss = F.cross_entropy(logits.float(), labels[index.to(device)])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    return _test(net, head, test, transform, device, amp, eval_batch_size)


@torch.no_grad()
def _test(net: Method, head: nn.Linear, test: ImageArray, transform: EvalTransform, device: torch.device,
          amp: bool, batch_size: int) -> Tuple[float, float]:
    net.eval()
    scores = []
    for start in range(0, len(test), batch_size):
        x = transform(test.images[start : start + batch_size].to(device))  # [B, 3, S, S]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            scores.append(head(net.embed(x)).float())  # [B, C]
    return topk_accuracy(torch.cat(scores), test.labels.to(device))
