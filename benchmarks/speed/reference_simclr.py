"""The lightly reference of ``full_run.py``: SimCLR the way lightly's tutorials train it.

Same encoder, head, loss, optimizer and schedule as ``python train.py method=simclr``
with the same overrides; the data path is the standard one: ``SimCLRTransform`` on PIL
images in a ``DataLoader`` with workers. Only what a lightly user writes themselves.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
import torchvision.transforms as T
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from contrastive.backbones.factory import create_backbone
from contrastive.metrics.knn import knn_accuracy
from contrastive.engine.optim import scaled_lr


class PILImages(Dataset):
    """uint8 ``[N, 3, H, W]`` -> (transform(PIL image), label), per sample (what torchvision's CIFAR10 does)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        self.images = np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy())  # [N, H, W, 3]
        self.labels, self.transform = labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def simclr_transform(cfg, splits) -> SimCLRTransform:
    a = cfg.augment
    return SimCLRTransform(input_size=splits.image_size, cj_prob=a.cj_prob, cj_strength=a.cj_strength, cj_bright=a.cj_brightness,
                           cj_contrast=a.cj_contrast, cj_sat=a.cj_saturation, cj_hue=a.cj_hue, min_scale=a.min_scale,
                           random_gray_scale=a.gray_prob, gaussian_blur=a.blur_prob, hf_prob=a.hflip_prob,
                           normalize={"mean": list(splits.mean), "std": list(splits.std)})


def pil_loader(array, cfg, splits, workers: int, train: bool) -> DataLoader:
    if train:
        tf = simclr_transform(cfg, splits)
    else:
        tf = T.Compose([T.ToTensor(), T.Normalize(list(splits.mean), list(splits.std))])
    return DataLoader(PILImages(array.images, array.labels, tf), batch_size=int(cfg.batch_size) if train else 512,
                      shuffle=train, drop_last=train, num_workers=workers, persistent_workers=train and workers > 0)


class LightlySimCLR(pl.LightningModule):
    def __init__(self, cfg, splits) -> None:
        super().__init__()
        self.cfg = cfg
        b = cfg.backbone
        self.backbone = create_backbone(b.name, splits.image_size, small_stem=b.small_stem, **dict(b.get("kwargs") or {}))
        p = cfg.method.projection
        self.head = SimCLRProjectionHead(self.backbone.feature_dim, int(p.hidden_dim), int(p.output_dim), int(p.num_layers))
        self.criterion = NTXentLoss(temperature=float(cfg.method.temperature))
        self.steps_per_epoch = len(splits.train) // int(cfg.batch_size)

    def training_step(self, batch, batch_idx):
        (x0, x1), _ = batch
        loss = self.criterion(self.head(self.backbone(x0)), self.head(self.backbone(x1)))
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        o, s = self.cfg.optimizer, self.cfg.scheduler
        lr = scaled_lr(float(o.lr), int(self.cfg.batch_size), str(o.lr_scaling))
        optimizer = LARS(self.parameters(), lr=lr, momentum=float(o.momentum), weight_decay=float(o.weight_decay))
        total = int(self.cfg.trainer.max_epochs) * self.steps_per_epoch
        schedule = CosineWarmupScheduler(optimizer, warmup_epochs=min(total, int(s.warmup_epochs) * self.steps_per_epoch),
                                         max_epochs=total, end_value=float(s.final_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class KnnMonitor(pl.Callback):
    """Weighted kNN (k, t from ``cfg.knn``) every ``knn.every_n_epochs`` and after the last epoch."""

    def __init__(self, cfg, splits, workers: int) -> None:
        self.cfg, self.splits = cfg, splits
        self.bank = pil_loader(splits.train_labeled, cfg, splits, workers, train=False)
        self.queries = pil_loader(splits.val, cfg, splits, workers, train=False)
        self.first = self.last = None

    @torch.no_grad()
    def measure(self, module) -> float:
        was = module.training
        module.eval()
        device = next(module.parameters()).device
        feats = [(torch.cat([module.backbone(x.to(device, non_blocking=True)).float() for x, _ in dl]), torch.cat([y for _, y in dl]).to(device))
                 for dl in (self.bank, self.queries)]
        module.train(was)
        k = min(int(self.cfg.knn.k), len(feats[0][1]))
        top1 = knn_accuracy(feats[0][0], feats[0][1], feats[1][0], feats[1][1], self.splits.num_classes, k=k,
                            temperature=float(self.cfg.knn.temperature))[0]
        if self.first is None:
            self.first = top1
        self.last = top1
        return top1

    def on_train_epoch_end(self, trainer, module) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % int(self.cfg.knn.every_n_epochs) == 0 or epoch == trainer.max_epochs:
            module.log("knn_top1", self.measure(module))
