"""InsDis: Unsupervised Feature Learning via Non-Parametric Instance Discrimination (Wu, Xiong,
Yu, Lin, CVPR 2018, https://arxiv.org/abs/1805.01978).

Every training image is its own class: a memory bank holds one l2-normalised 128-d feature per
image, refreshed with momentum 0.5 ("v_i <- m v_i + (1 - m) f_i", Sec. 3.3), and each feature is
classified against its own bank entry among ``m`` randomly drawn entries with the non-parametric
softmax ``exp(v_i . f / tau) / sum_j exp(v_j . f / tau)`` (Eq. 2) at ``tau = 0.07``, ``m = 4096``.
The paper approximates the softmax over all N with NCE (Eq. 4-6); here the softmax is taken over
the positive and the ``m`` sampled negatives (InfoNCE, the form MoCo and solo-learn use), so no
normalising constant ``Z`` is estimated: our choice, because it is exact over the drawn set and
removes NCE's constant. The bank is :class:`~contrastive.memory.feature_bank.FeatureBank`.

The paper does not say how the bank starts. ``method.bank_init=random`` starts it with random
unit vectors (the authors' released code); ``network`` fills it, before the first epoch, with
one no-grad pass of a training view of every image through the initial network (as DeepCluster
v2 fills its memory), so the first epoch's positives already describe their images: a random
bank gives each image an arbitrary target until its entry has been refreshed a few times, one
refresh per epoch, which on a short run is most of the run.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F

from contrastive.backbones.heads import linear_projection
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.embedding import embed_split
from contrastive.engine.method import DataInfo, Method
from contrastive.losses.self_supervised import info_nce_with_queue
from contrastive.memory.feature_bank import FeatureBank
from contrastive.memory.queue import gather_keys


BANK_INITS = ("random", "network")


@METHODS.register("insdis")
class InsDis(Method):
    """Instance discrimination with a per-sample memory bank, one view per image."""

    VIEWS = 1

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        dim = int(m.output_dim)
        self.projection_head = linear_projection(self.backbone.feature_dim, dim, bool(m.batch_norm))  # InsDis: fc to 128-d
        # momentum 0: the bank stores what training_losses writes, which applies InsDis' momentum step
        # and its re-normalisation itself (a bank momentum too would apply the step twice)
        self.bank = FeatureBank(data.num_train, dim, momentum=0.0)
        g = torch.Generator().manual_seed(int(cfg.seed))
        self.bank.features = F.normalize(torch.randn(data.num_train, dim, generator=g), dim=1)  # random unit init
        # bank_init=network: marked empty, so fill_bank() replaces it as the first epoch starts (outside a
        # trainer, e.g. a hand-written loop, the random start stays)
        self.bank.filled.fill_(str(m.bank_init) == "random")

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """l2-normalised 128-d features ``[B, d]``."""
        return F.normalize(self.projection_head(self.backbone(images)), dim=1)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if not float(m.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if not 0.0 <= float(m.bank_momentum) < 1.0:
            raise ConfigError(f"method.bank_momentum={m.bank_momentum} is outside [0, 1)")
        if str(m.bank_init) not in BANK_INITS:
            raise ConfigError(f"method.bank_init='{m.bank_init}' is unknown; valid choices: {', '.join(BANK_INITS)}")
        if not 1 <= int(m.num_negatives) <= data.num_train:
            raise ConfigError(f"method.num_negatives={m.num_negatives} must be in [1, {data.num_train}] (the training set size)")

    def on_train_epoch_start(self) -> None:
        """``bank_init=network``: fill the bank before the first step (a resumed run has it filled)."""
        super().on_train_epoch_start()
        if not bool(self.bank.filled.all()):
            self.fill_bank()

    @torch.no_grad()
    def fill_bank(self) -> None:
        """One training view of every image through the current network, in dataset order."""
        images = self.trainer.datamodule.splits.train.images
        features = embed_split(self, images, self.augment, self.project, int(self.cfg.method.embed_batch_size))  # [N, d]
        self.bank.update(torch.arange(len(images), device=self.device), features.to(self.device))

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        m = self.cfg.method
        f = self.project(views[0])  # [B, d]
        # The draw is a function of (seed, step): a resumed run draws what the straight run drew.
        draw = torch.Generator(device=f.device).manual_seed(int(self.cfg.seed) * 1_000_003 + self.global_step)
        drawn = torch.randint(0, self.data.num_train, (int(m.num_negatives),), device=f.device, generator=draw)  # [m]
        negatives, _ = self.bank.lookup(drawn)  # [m, d]
        positives, _ = self.bank.lookup(indices)  # [B, d], the images' own entries
        # An image's own entry is no negative of it: with 5,000 images and m = 4,096 draws it is among them
        # for most images (1.28M ImageNet images make that rare, and the paper's text does not treat it)
        own = drawn.unsqueeze(0) == indices.to(drawn.device).unsqueeze(1)  # [B, m]
        loss = info_nce_with_queue(f, positives, negatives, float(m.temperature), exclude=own)
        with torch.no_grad():
            refreshed = F.normalize(float(m.bank_momentum) * positives + (1.0 - float(m.bank_momentum)) * f.detach(), dim=1)
        # InsDis re-normalises after the momentum step; under DDP every process writes the global batch
        self.bank.update(gather_keys(indices.to(f.device)), gather_keys(refreshed))
        return {"loss": loss}
