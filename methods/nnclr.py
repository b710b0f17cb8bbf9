"""NNCLR: "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of Visual
Representations" (Dwibedi, Aytar, Tompson, Sermanet, Zisserman, ICCV 2021, https://arxiv.org/abs/2104.14548).

SimCLR's two views, but the positive of a view's projection ``z_i`` is its nearest neighbour
``NN(z_i, Q)`` in a support set ``Q`` of projections of earlier batches, contrasted with the
prediction ``p^+`` of the other view against the batch's other predictions
(:func:`contrastive.losses.nearest_neighbour.nnclr_info_nce`), symmetrised over the two views.

Heads: lightly's ``NNCLRProjectionHead`` ("3 fully connected layers of sizes [2048, 2048, d] ... All
fully-connected layers are followed by batch-normalization ... All the batch-norm layers except the last
layer are followed by ReLU", the paper's Sec. 4 as lightly's docstring quotes it) and ``NNCLRPredictionHead``
("2 fully-connected layers of size [4096, d]"): they match the paper. Not lightly's other pieces:

- The support set is :class:`contrastive.memory.queue.KeyQueue`, not lightly's ``NNMemoryBankModule``:
  lightly's reads its write position with ``int(self.bank_ptr)`` (a host sync every step on a GPU), keeps
  the bank in non-persistent buffers (a resumed run would restart from random vectors) and, by default,
  enqueues only this process's batch under DDP. The queue here is in ``state_dict()`` (exact resume), keeps
  its pointer on the host and writes the global batch (identical on every process).
- The loss is the paper's cross-entropy over the ``n`` predictions of the other view, not lightly's
  ``NTXentLoss(nn, p)``, which also makes the predictions anchors and adds ``nn . nn`` and ``p . p``
  negatives (``2n - 1`` logits).

What the paper leaves open (lightly's and solo-learn's choices): the support set starts as random unit
vectors, and it is updated after the step with the first view's projections (one batch per step).
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from lightly.models.modules import NNCLRPredictionHead, NNCLRProjectionHead

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.losses.nearest_neighbour import nearest_neighbours, nnclr_info_nce
from contrastive.memory.queue import KeyQueue


@METHODS.register("nnclr")
class NNCLR(Method):
    """NNCLR with lightly's heads, a support-set :class:`KeyQueue` and the paper's symmetric loss."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        out = int(m.projection.output_dim)
        self.projection_head = NNCLRProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim), out)
        self.prediction_head = NNCLRPredictionHead(out, int(m.predictor.hidden_dim), out)
        self.support = KeyQueue(int(m.support_size), out, seed=int(cfg.seed))  # Q, [K, d] unit vectors
        self._pending: torch.Tensor | None = None  # this step's projections, enqueued after backward

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if not float(m.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        support, batch = int(m.support_size), int(cfg.batch_size)
        if support < batch or support % batch:
            raise ConfigError(f"method.support_size={support} must be a positive multiple of the global batch "
                              f"(batch_size={batch} x processes): each step replaces one batch of the support set")
        check_batch_size(cfg, 2, "BatchNorm in the projector and predictor")

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        m = self.cfg.method
        z = [self.projection_head(self.backbone(v)) for v in views[:2]]  # 2 x [B, d]
        p = [self.prediction_head(zv) for zv in z]  # 2 x [B, d]
        unit = [F.normalize(zv.detach().float(), dim=1) for zv in z]
        support = self.support.keys.to(unit[0].device)  # [K, d], the projections of earlier batches
        nn0, nn1 = nearest_neighbours(unit[0], support), nearest_neighbours(unit[1], support)
        t, gather = float(m.temperature), bool(m.gather_distributed)
        # Symmetrised: NN(z_i) against the second view's predictions, and NN(z_i^+) against the first's.
        loss = 0.5 * (nnclr_info_nce(nn0, p[1], t, gather) + nnclr_info_nce(nn1, p[0], t, gather))
        self._pending = unit[0]
        return {"loss": loss}

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self._pending is not None:
            self.support.enqueue(self._pending)
            self._pending = None
