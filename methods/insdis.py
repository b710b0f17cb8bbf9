"""InsDis: Unsupervised Feature Learning via Non-Parametric Instance Discrimination (Wu, Xiong,
Yu, Lin, CVPR 2018, https://arxiv.org/abs/1805.01978).

Every training image is its own class: a memory bank holds one l2-normalised 128-d feature per
image, and each feature is classified against its own bank entry among ``m`` randomly drawn
entries with the non-parametric softmax ``exp(v_i . f / tau) / sum_j exp(v_j . f / tau)`` (Eq. 2)
at ``tau = 0.07``, ``m = 4096``. Every sample draws its own ``m`` negatives, uniformly over the
bank, as the authors' code does (github.com/zhirongw/lemniscate.pytorch, lib/NCEAverage.py: ``idx``
of shape ``[batchSize, K + 1]`` from a uniform ``AliasMethod``); an image's own entry, when drawn,
is left out of its negatives (our choice: it is its positive, not a negative; the code keeps it).
The draw is a function of ``(seed, step)`` over the global batch, each process taking its rows,
so a resumed run draws what the straight run drew and DDP draws what one process would.

The bank entry of each image in the batch is refreshed after the step with the authors' code's
momentum ``v_i <- m v_i + (1 - m) f_i``, re-normalised (lib/NCEAverage.py ``NCEFunction.backward``,
main.py ``--nce-m 0.5``); the paper's Sec. 3.3 is its proximal regularisation, not this rule.
The paper approximates the softmax over all N with NCE (Eq. 4-6); here the softmax is taken over
the positive and the ``m`` sampled negatives (InfoNCE, the form MoCo and solo-learn use, and the
authors' updated released model: README "trained with Softmax-CE loss ... instead of the original
NCE loss"), so no normalising constant ``Z`` is estimated. The bank is
:class:`~contrastive.memory.feature_bank.FeatureBank`.

How the bank starts: the paper's Sec. 3.1, "We initialize all the representations in the memory
bank V as unit random vectors": ``method.bank_init=random`` (the paper presets). ``network`` (our
choice for the short default run) fills it, before the first epoch, with one no-grad pass of a
training view of every image through the initial network (as DeepCluster v2 fills its memory),
so the first epoch's positives already describe their images: a random bank gives each image an
arbitrary target until its entry has been refreshed a few times, one refresh per epoch, which on
a short run is most of the run.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn.functional as F

from contrastive.backbones.heads import linear_projection
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.embedding import NetworkFilledBank
from contrastive.engine.method import DataInfo, Method
from contrastive.losses.self_supervised import info_nce_with_drawn_negatives
from contrastive.memory.feature_bank import FeatureBank
from contrastive.memory.queue import gather_keys


BANK_INITS = ("random", "network")


@METHODS.register("insdis")
class InsDis(NetworkFilledBank, Method):
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

    def draw_negatives(self, batch_size: int, device: torch.device) -> torch.Tensor:
        """This process's rows ``[B, m]`` of the global batch's per-sample draw, a function of ``(seed, step)``."""
        world, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_available() and dist.is_initialized() else (1, 0)
        draw = torch.Generator(device=device).manual_seed(int(self.cfg.seed) * 1_000_003 + self.global_step)
        shape = (world * batch_size, int(self.cfg.method.num_negatives))
        drawn = torch.randint(0, self.data.num_train, shape, device=device, generator=draw)  # [W x B, m]
        return drawn[rank * batch_size:(rank + 1) * batch_size]  # [B, m]

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        m = self.cfg.method
        f = self.project(views[0])  # [B, d]
        indices = indices.to(f.device)
        positives, _ = self.bank.lookup(indices)  # [B, d], the images' own entries (the bank follows f's device)
        drawn = self.draw_negatives(f.shape[0], f.device)  # [B, m]
        # An image's own entry is no negative of it: with 5,000 images and m = 4,096 draws it is among an
        # image's draws with probability 1 - (1 - 1/5000)^4096 = 0.56 (1.28M ImageNet images make that rare,
        # and the paper's text does not treat it)
        own = drawn == indices.unsqueeze(1)  # [B, m]
        loss = info_nce_with_drawn_negatives(f, positives, self.bank.features, drawn, float(m.temperature), exclude=own)
        with torch.no_grad():
            refreshed = F.normalize(float(m.bank_momentum) * positives + (1.0 - float(m.bank_momentum)) * f.detach(), dim=1)
        # InsDis re-normalises after the momentum step; under DDP every process writes the global batch
        self.bank.update(gather_keys(indices), gather_keys(refreshed))
        return {"loss": loss}
