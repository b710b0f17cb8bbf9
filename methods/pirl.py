"""PIRL: Self-Supervised Learning of Pretext-Invariant Representations (Misra and van der Maaten,
CVPR 2020, https://arxiv.org/abs/1912.01991), with the jigsaw pretext transformation.

Two inputs per image: the image view ``v_I`` and a jigsaw of a second crop ``I^t`` (nine patches,
one random crop inside each cell of a 3 x 3 grid, in a random order; contrastive/augment/jigsaw.py).
``f(v_I)`` is the backbone's pooled features and a linear projection to 128-d; ``g(v_{I^t})`` passes
each patch through the same backbone and its own linear projection to 128-d, concatenates the nine in
their random order and projects the concatenation to 128-d (Sec. 2.3: "concatenate the patch
representations in random order and apply a second linear projection"; Supp. A.1: 2048-d res5 features
per patch, 128-d each, concatenated to 1152-d, one linear layer to 128-d; the authors' VISSL config
``configs/config/pretrain/pirl/pirl_jigsaw_4node_resnet50.yaml``: head 0 ``mlp [2048, 128]``,
``siamese_concat_view`` of 9, ``mlp [1152, 128]``; head 1 ``mlp [2048, 128]``).

A memory bank holds ``m_I``, an exponential moving average of ``f(v_I)`` (Sec. 2.3: "use a weight of 0.5
to compute the exponential moving averages in the memory bank"; re-normalised, as InsDis), and the loss
is Eq. 5 (Sec. 2.3: "Unless stated otherwise, we use λ = 0.5 in Equation 5")::

    L = lambda * L_NCE(m_I, g(v_{I^t})) + (1 - lambda) * L_NCE(m_I, f(v_I)),  lambda = 0.5

each term contrasting against ``N`` bank entries (Sec. 3, training details: "using N = 32,000 negative
samples in Equation 3"; Supp. A: "the negatives are sampled randomly for each data point in the batch"),
Sec. 2.1's D_N, "drawn uniformly at random from dataset D excluding image I", at Sec. 2.3's temperature
("we set the temperature in Equation 3 to τ = 0.07"). The paper's L_NCE is the binary noise-contrastive
estimator (Eq. 3-4); here each term is the softmax over the positive and the drawn negatives (the
form InsDis in this project and MoCo use; VISSL's ``nce_loss_with_memory`` offers it as
``loss_type: cross_entropy``): our choice, because it is exact over the drawn set and needs no
estimate of NCE's normalising constant. The bank is :class:`~contrastive.memory.feature_bank.FeatureBank`.

The draw of negatives is a function of (seed, step, rank): a resumed run draws what the straight run drew.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.augment.jigsaw import check_jigsaw, jigsaw_patches
from contrastive.backbones.heads import linear_projection
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.data.batch import ViewBatch
from contrastive.engine.embedding import NetworkFilledBank
from contrastive.engine.method import DataInfo, Method
from contrastive.losses.memory_bank import bank_info_nce, draw_negatives
from contrastive.memory.feature_bank import FeatureBank
from contrastive.memory.queue import gather_keys

BANK_INITS = ("random", "network")


@METHODS.register("pirl")
class PIRL(NetworkFilledBank, Method):
    """Pretext-invariant representations: an image and its jigsaw against a per-sample memory bank."""

    VIEWS = 2  # view 0: the image v_I; view 1: the crop the jigsaw cuts (a streamed batch's crop 1)

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m, j = cfg.method, cfg.method.jigsaw
        dim, feat = int(m.output_dim), self.backbone.feature_dim
        self.grid, self.crop_size, self.patch_size = int(j.grid), int(j.crop_size), int(j.patch_size)
        self.image_head = linear_projection(feat, dim)  # f: pooled features -> 128-d
        self.patch_head = linear_projection(feat, dim)  # g, first part: each patch -> 128-d
        self.jigsaw_head = nn.Linear(self.grid ** 2 * dim, dim)  # g, second part: the concatenation -> 128-d
        # momentum 0: training_losses applies PIRL's momentum step and re-normalises itself
        self.bank = FeatureBank(data.num_train, dim, momentum=0.0)
        g = torch.Generator().manual_seed(int(cfg.seed))
        self.bank.features = F.normalize(torch.randn(data.num_train, dim, generator=g), dim=1)  # random unit start
        self.bank.filled.fill_(str(m.bank_init) == "random")  # network: fill_bank() as the first epoch starts

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if not float(m.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if not 0.0 <= float(m.bank_momentum) < 1.0:
            raise ConfigError(f"method.bank_momentum={m.bank_momentum} is outside [0, 1)")
        if not 0.0 <= float(m.jigsaw_weight) <= 1.0:
            raise ConfigError(f"method.jigsaw_weight={m.jigsaw_weight} (the paper's lambda) is outside [0, 1]")
        if str(m.bank_init) not in BANK_INITS:
            raise ConfigError(f"method.bank_init='{m.bank_init}' is unknown; valid choices: {', '.join(BANK_INITS)}")
        if int(m.num_negatives) < 1 or data.num_train < 2:
            raise ConfigError(f"method.num_negatives={m.num_negatives} must be >= 1 and the training set needs >= 2 "
                              f"images (it has {data.num_train}): negatives are other images' bank entries")
        check_jigsaw(int(m.jigsaw.grid), int(m.jigsaw.crop_size), int(m.jigsaw.patch_size))

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """``f(v_I)``: l2-normalised ``[B, d]``."""
        return F.normalize(self.image_head(self.backbone(images)), dim=1)

    def project_jigsaw(self, patches: torch.Tensor) -> torch.Tensor:
        """``g(v_{I^t})`` of patches ``[B * K, 3, p, p]`` (each image's K patches in their shuffled
        order): per-patch 128-d, concatenated ``[B, K * d]``, projected; l2-normalised ``[B, d]``."""
        per_patch = self.patch_head(self.backbone(patches))  # [B*K, d]
        k = self.grid ** 2
        return F.normalize(self.jigsaw_head(per_patch.reshape(-1, k * per_patch.shape[1])), dim=1)

    def training_views(self, batch: ViewBatch) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """``[image view [B, 3, S, S], patches [B * K, 3, p, p]]``: the jigsaw cuts the second view
        (a fresh crop of the full image, or a streamed batch's crop 1) after its photometric augmentation."""
        (image, crop), labels = super().training_views(batch)
        patches = jigsaw_patches(crop, self.grid, self.crop_size, self.patch_size)  # [B, K, 3, p, p]
        return [image, self._to_memory_format(patches.flatten(0, 1))], labels

    def bank_on(self, device: torch.device) -> torch.Tensor:
        """The bank's ``[N, d]`` features on ``device`` (moved once; FeatureBank follows its inputs the same way)."""
        if self.bank.features.device != device:
            self.bank.features, self.bank.filled = self.bank.features.to(device), self.bank.filled.to(device)
        return self.bank.features

    def draw_generator(self, device: torch.device) -> torch.Generator:
        """The negatives' generator, seeded by (seed, step, rank)."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        seed = int(self.cfg.seed) * 1_000_003 + self.global_step * 7919 + rank * 104_729
        return torch.Generator(device=device).manual_seed(seed % (2**63))

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        m = self.cfg.method
        f = self.project(views[0])  # [B, d]
        g = self.project_jigsaw(views[1])  # [B, d]
        indices = indices.to(f.device)
        bank = self.bank_on(f.device)  # [N, d]
        memory = bank.index_select(0, indices)  # [B, d], m_I
        negatives = draw_negatives(indices, self.bank.size, int(m.num_negatives), self.draw_generator(f.device))  # [B, M]
        # a copy: the backward pass of the scores needs the bank as it was, and the update below writes it in place
        bank, t, lam = bank.clone(), float(m.temperature), float(m.jigsaw_weight)
        jigsaw = bank_info_nce(g, memory, bank, negatives, t)
        image = bank_info_nce(f, memory, bank, negatives, t)
        with torch.no_grad():  # m_I <- momentum * m_I + (1 - momentum) * f(v_I), re-normalised
            refreshed = F.normalize(float(m.bank_momentum) * memory + (1.0 - float(m.bank_momentum)) * f.detach(), dim=1)
        # under DDP every process writes the global batch; the rows are the loader's sample indices, so the
        # write skips FeatureBank.update's bounds check (a host sync per step)
        self.bank.features.index_copy_(0, gather_keys(indices), gather_keys(refreshed).to(self.bank.features.dtype))
        return {"loss": lam * jigsaw + (1.0 - lam) * image, "jigsaw": jigsaw, "image": image}
