"""SimCLIC: A Simple Framework for Contrastive Learning of Image Classification.

Yang & Li, Journal of Systems Science and Information 11(2), 2023
(https://doi.org/10.21078/JSSI-2023-204-15).

A simplified siamese network without negative pairs and without a momentum encoder.
The two branches differ mainly because the target is built from a *perturbed* copy of
the encoder's representation ``h``::

    online:  p = predictor(projector(h))
    target:  t = stop_gradient(projector(perturb(h)))        loss = -cos(p, t)

``method.perturbation`` (``perturb``):
    history  the representation this sample had when it was last seen: a per-sample
             bank (:class:`contrastive.memory.feature_bank.FeatureBank`) refreshed after every step
             with ``bank[i] = m * bank[i] + (1 - m) * h_i``; a sample not seen yet
             falls back to its current representation (no perturbation for it).
    dropout  dropout with rate ``dropout_p`` on ``h`` (inverted dropout, like nn.Dropout).
    noise    ``h + noise_sigma * rms(h) * N(0, I)``, ``rms`` per sample: sigma is relative
             to the representation's scale.
    none     no perturbation: the plain two-view siamese baseline (SimSiam).

Views (``method.num_views``): with ``2`` (the default) the input is augmented twice, each
view's prediction is compared with the target built from the *other* view's perturbed
representation, and the loss is symmetrised (lightly's ``NegativeCosineSimilarity`` on
both pairs, averaged); with ``1`` the perturbation is the only difference between the
branches. Two views are the default because the perturbation acts on ``h`` *after* the
encoder: with one view and ``dropout``/``noise`` both branches share the same crop, so
the loss can be met by the projector/predictor undoing the perturbation while the encoder
gets no signal to map different augmentations of an image together (the invariance the
kNN/linear evaluation rewards); ``history`` with one view still compares different
augmentations, but only across epochs. ``num_views=1`` halves the encoder cost per step
and is kept for the ablation (``benchmarks/reproduce/simclic/RESULTS.md`` has the measured effect).

The paper's CIFAR-10 results are its Table 2 (linear error: history 5.97, dropout 6.00,
noise 5.92); its Table 3 is training details (1000 epochs, batch 128). The perturbation's
parameters (``dropout_p``, ``noise_sigma``, ``history_momentum``), the predictor and projection
widths and the cross-entropy temperature are not stated in the paper: configs/method/simclic.yaml
gives our choice and why.

Ablation switches of the paper's tables: ``predictor`` (none | linear: Table 4's "1-layer MLP" |
mlp2: its "2-layer MLP" | fixed_random: its "Fixed random init", the mlp2 predictor frozen at its
initialisation), ``stop_gradient`` (Table 5), ``loss`` (cosine | cross_entropy: Table 6). Which
perturbation the ablations used is not stated; we infer noise (their reference 5.92 is Table 2's
noise value). The collapse monitor
``train/output_std`` (std over the batch of the L2-normalised projections ``z``, averaged
over dimensions: ~1/sqrt(d) when healthy, -> 0 on collapse; SimSiam Fig. 2) is logged
every epoch, next to the base class's kNN monitor.

Bad input (``validate_config``, before training): unknown perturbation/predictor/loss,
``dropout_p`` outside [0, 1), ``noise_sigma < 0``, ``history_momentum`` outside [0, 1),
and ``history`` without a training-set size to size the bank by (``num_train < 1``).
Every dataset of this package is served as ``(images, labels, indices)`` batches
(``IndexedBatches``), so ``history`` always has its sample indices there; a batch without
integer indices of the right length (a custom loop or data module) is rejected with a
``ConfigError`` at the first step, before any weight is updated.
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.memory.feature_bank import FeatureBank
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.metrics.collapse import normalized_output_std
from contrastive.core.registry import METHODS

PERTURBATIONS = ("history", "dropout", "noise", "none")
PREDICTORS = ("none", "linear", "mlp2", "fixed_random")
LOSSES = ("cosine", "cross_entropy")


def tempered_cross_entropy(prediction: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """``H(softmax(target / T), softmax(prediction / T))`` over the feature dimension, batch mean
    (the DINO form, with one temperature and no centering)."""
    return -(F.softmax(target / temperature, dim=1) * F.log_softmax(prediction / temperature, dim=1)).sum(1).mean()


def fixed_random_predictor(dim: int, hidden_dim: int) -> nn.Module:
    """Table 4's "Fixed random init" predictor: the ``mlp2`` predictor at its random
    initialisation, never updated.

    Its parameters do not require gradients (so :func:`contrastive.engine.optim.build_optimizer`,
    which skips such parameters, gives them to no optimizer, and weight decay never touches
    them), and its BatchNorm keeps no running statistics: it normalises with the batch
    statistics, as the trained ``mlp2`` does in training, and has no buffers to update."""
    head = SimSiamPredictionHead(dim, hidden_dim, dim)
    for module in head.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False  # batch statistics in train and eval mode alike
            module.running_mean = module.running_var = module.num_batches_tracked = None
    head.requires_grad_(False)
    return head


def _choice(cfg, key: str, valid) -> None:
    value = cfg.method[key]
    if value not in valid:
        raise ConfigError(f"method.{key}='{value}' is not valid; choose one of {', '.join(valid)}")


@METHODS.register("simclic")
class SimCLIC(Method):
    """SimCLIC with lightly's SimSiam heads; see the module docstring."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.perturbation, self.stop_gradient = str(m.perturbation), bool(m.stop_gradient)
        self.dropout_p, self.noise_sigma = float(m.dropout_p), float(m.noise_sigma)
        dim, feature_dim = int(m.projection.output_dim), self.backbone.feature_dim
        self.projector = SimSiamProjectionHead(feature_dim, int(m.projection.hidden_dim), dim)
        self.predictor = {
            "none": nn.Identity,
            "linear": lambda: nn.Linear(dim, dim),
            "mlp2": lambda: SimSiamPredictionHead(dim, int(m.predictor_hidden_dim), dim),
            "fixed_random": lambda: fixed_random_predictor(dim, int(m.predictor_hidden_dim)),
        }[str(m.predictor)]()
        if m.loss == "cosine":
            self.criterion = NegativeCosineSimilarity()
        else:
            temperature = float(m.ce_temperature)
            self.criterion = lambda p, t: tempered_cross_entropy(p, t, temperature)
        # The history bank is a buffer: checkpointed with the weights, so a resumed run is exact.
        self.bank = FeatureBank(data.num_train, feature_dim, float(m.history_momentum)) if self.perturbation == "history" else None

    def crops_per_image(self) -> int:
        """``method.num_views`` augmented views (and streamed crops) per image: 1 or 2."""
        return int(self.cfg.method.num_views)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        for key, valid in (("perturbation", PERTURBATIONS), ("predictor", PREDICTORS), ("loss", LOSSES)):
            _choice(cfg, key, valid)
        if not isinstance(m.stop_gradient, bool):
            raise ConfigError(f"method.stop_gradient must be true or false, got '{m.stop_gradient}'")
        if int(m.num_views) not in (1, 2):
            raise ConfigError(f"method.num_views must be 1 or 2, got {m.num_views}")
        if m.perturbation == "none" and int(m.num_views) != 2:
            raise ConfigError("method.perturbation=none needs method.num_views=2 (with one view both branches see the same input)")
        if not 0.0 <= float(m.dropout_p) < 1.0:
            raise ConfigError(f"method.dropout_p must be in [0, 1), got {m.dropout_p}")
        if not float(m.noise_sigma) >= 0.0:
            raise ConfigError(f"method.noise_sigma must be >= 0, got {m.noise_sigma}")
        if not 0.0 <= float(m.history_momentum) < 1.0:
            raise ConfigError(f"method.history_momentum must be in [0, 1), got {m.history_momentum}")
        if not float(m.ce_temperature) > 0:
            raise ConfigError(f"method.ce_temperature must be > 0, got {m.ce_temperature}")
        dims = {"projection.hidden_dim": m.projection.hidden_dim, "projection.output_dim": m.projection.output_dim,
                "predictor_hidden_dim": m.predictor_hidden_dim}
        for key, value in dims.items():
            if int(value) < 1:
                raise ConfigError(f"method.{key} must be >= 1, got {value}")
        if m.perturbation == "history" and data.num_train < 1:
            raise ConfigError("method.perturbation=history needs a training set with sample indices (num_train >= 1)")
        check_batch_size(cfg, 2, "BatchNorm in the projection head")

    # ------------------------------------------------------------------ the idea
    def perturb(self, h: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """The perturbed representation ``[B, D]`` the target is built from."""
        if self.perturbation == "dropout":
            return F.dropout(h, self.dropout_p, training=True)
        if self.perturbation == "noise":
            rms = h.detach().pow(2).mean(dim=1, keepdim=True).sqrt()
            return h + self.noise_sigma * rms * torch.randn_like(h)
        if self.perturbation == "history":
            stored, filled = self.bank.lookup(indices)  # this sample's representation from an earlier step
            return torch.where(filled.unsqueeze(1), stored.to(h.dtype), h)
        return h

    def target(self, h: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Target branch: ``projector(perturb(h))``, under stop-gradient unless disabled."""
        if not self.stop_gradient:
            return self.projector(self.perturb(h, indices))
        with torch.no_grad():
            return self.projector(self.perturb(h.detach(), indices))

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        if self.bank is not None:
            self._check_indices(indices, len(views[0]))
        hs = [self.backbone(v) for v in views]  # representations [B, D]
        zs = [self.projector(h) for h in hs]  # online projections [B, d]
        ps = [self.predictor(z) for z in zs]  # predictions [B, d]
        pairs = [(0, 0)] if len(views) == 1 else [(0, 1), (1, 0)]  # (prediction, target) views
        if self.perturbation == "none":  # SimSiam: the target is the other view's projection
            targets = [z.detach() if self.stop_gradient else z for z in zs]
        else:
            targets = [self.target(h, indices) for h in hs]
        loss = sum(self.criterion(ps[i], targets[j]) for i, j in pairs) / len(pairs)
        if self.bank is not None:  # refresh after the loss: this step's targets used older entries
            self._remember(indices, torch.stack(hs).mean(0).detach())
        if self._trainer is not None:
            std = normalized_output_std(zs[0])
            self.log("train/output_std", std, on_step=False, on_epoch=True, batch_size=len(indices), sync_dist=True)
        return {"loss": loss}

    # ------------------------------------------------------------------ history bank
    def _remember(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Write the view-averaged representations; under DDP gather every process's batch
        first (batches have equal sizes: the sampler drops the last incomplete one)."""
        if self._trainer is not None and self.trainer.world_size > 1:
            indices, features = self.all_gather(indices).flatten(0, 1), self.all_gather(features).flatten(0, 1)
        self.bank.update(indices, features)

    def _check_indices(self, indices, batch_size: int) -> None:
        if not isinstance(indices, torch.Tensor) or indices.ndim != 1 or len(indices) != batch_size or indices.is_floating_point():
            got = "None" if indices is None else f"{type(indices).__name__} {tuple(getattr(indices, 'shape', ()))}"
            raise ConfigError(
                f"method.perturbation=history needs the integer sample index of every training image "
                f"(batches of (images, labels, indices [B])), got {got}; use method.perturbation=dropout|noise|none"
            )
