"""Fine-tuned transfer (``eval.transfer.mode=finetune``): the whole encoder plus a linear head,
SGD with Nesterov momentum over a grid of learning rates and weight decays.

Protocol (Kornblith, Shlens and Le 2019, followed by SimCLR Appendix B.8, as the protocol is
summarised from them; their text is not in our copy of the papers): SGD with Nesterov momentum, the learning rate and weight decay chosen on
validation, then trained on train + validation and scored once on test. The grid, the
step count and the batch size are ``eval.transfer.finetune`` (defaults: 20,000 steps of
batch 256, as the protocol summarises the papers' recipe; tests use a few steps).

Not stated in the paper: our choices because they keep the grid cheap and deterministic:
cosine decay of the learning rate to 0 over the steps, momentum 0.9, no weight decay on
biases and normalisation parameters, random horizontal flips as the only augmentation, and
images decoded once into memory at the encoder's input size. Each grid point starts from
the checkpoint's weights (a fresh copy), seeded with ``seed``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from contrastive.augment.pipelines import EvalTransform
from contrastive.evaluation.features import frozen_encoder
from contrastive.evaluation.transfer.datasets import METRICS, TransferData
from contrastive.evaluation.transfer.extract import _Resized

Images = Tuple[torch.Tensor, torch.Tensor]  # uint8 [N, 3, S, S], labels


def decode(dataset, size: int, workers: int) -> Images:
    """Every image of ``dataset`` as uint8 ``[N, 3, S, S]`` with its labels."""
    xs, ys = zip(*DataLoader(_Resized(dataset, size), batch_size=256, num_workers=workers))
    return torch.cat(xs), torch.cat(ys)


def _param_groups(model: nn.Module, weight_decay: float):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)  # biases and norm scales: no decay
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_and_score(encoder: nn.Module, dim: int, train: Images, evaluate: Images, num_classes: int, metric_name: str,
                    transform: EvalTransform, lr: float, weight_decay: float, f, device: torch.device,
                    seed: int) -> float:
    """Fine-tune a fresh copy of ``encoder`` plus a linear head on ``train``; score on ``evaluate``."""
    torch.manual_seed(seed)
    net = nn.Sequential(copy.deepcopy(encoder), nn.Linear(dim, num_classes)).to(device)
    opt = torch.optim.SGD(_param_groups(net, weight_decay), lr=lr, momentum=float(f.momentum), nesterov=True)
    steps, batch = int(f.steps), int(f.batch_size)
    gen = torch.Generator().manual_seed(seed)
    x, y = train
    net.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(x), (min(batch, len(x)),), generator=gen)
        images = x[idx].to(device)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        images[flip] = images[flip].flip(-1)
        logits = net(transform(images))  # [B, C]
        target = y[idx].to(device)
        loss = (F.binary_cross_entropy_with_logits(logits, target.float()) if target.is_floating_point()
                else F.cross_entropy(logits, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(transform(evaluate[0][i:i + 256].to(device))).float().cpu()
                            for i in range(0, len(evaluate[0]), 256)])
    return METRICS[metric_name](logits, evaluate[1])


def finetune_transfer(loaded, data: TransferData, cfg, device: torch.device) -> Dict[str, Any]:
    """Grid on validation (fit on train), then train + validation -> test (read once, last).

    Returns:
        ``{"chosen": {"lr", "weight_decay"}, "val_score", "test_score", "val_scores"}``.
    """
    t, f = cfg.eval.transfer, cfg.eval.transfer.finetune
    d = loaded.run_cfg.dataset
    size = int(t.image_size) if t.image_size is not None else int(loaded.model.data.image_size)
    transform = EvalTransform(size, tuple(d.mean), tuple(d.std)).to(device)
    encoder = _Embedder(loaded.model)
    with frozen_encoder(loaded.model):
        dim = int(loaded.model.embed(transform(torch.zeros(2, 3, size, size, dtype=torch.uint8))).shape[1])
    train, val = decode(data.splits["train"], size, int(t.workers)), decode(data.splits["val"], size, int(t.workers))
    scores = {}
    for lr in f.lrs:
        for wd in f.weight_decays:
            scores[(float(lr), float(wd))] = train_and_score(encoder, dim, train, val, data.num_classes, data.metric,
                                                             transform, float(lr), float(wd), f, device, int(cfg.seed))
    best = max(scores, key=lambda k: (scores[k], -k[0]))
    both = (torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]))
    test = decode(data.splits["test"], size, int(t.workers))
    test_score = train_and_score(encoder, dim, both, test, data.num_classes, data.metric, transform, best[0], best[1],
                                 f, device, int(cfg.seed))
    return {"chosen": {"lr": best[0], "weight_decay": best[1]}, "val_score": scores[best], "test_score": test_score,
            "val_scores": {f"lr={k[0]},wd={k[1]}": v for k, v in scores.items()}}


class _Embedder(nn.Module):
    """``model.embed`` as a module (what is fine-tuned: the method's test-time embedding)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.embed(x)
