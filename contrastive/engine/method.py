"""The base class of every method: the shared 90% so a method file holds only its idea.

A method subclasses :class:`Method`, registers itself with ``@METHODS.register``,
and implements :meth:`Method.training_losses`. The base class builds the backbone
and the on-device augmentation, turns uint8 batches into views (every storage's batch
becomes one :class:`~contrastive.data.batch.ViewBatch` first, so a method's
:meth:`Method.training_views` never looks at the loader's tensor layout), builds the
optimizer and schedule from the config, attaches the non-finite loss guard
(:class:`~contrastive.engine.nonfinite.NonFiniteCallback`), runs the kNN monitor and stores
the resolved config in every checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Sequence, Tuple

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from contrastive.augment.pipelines import EvalTransform
from contrastive.augment.views import ViewAugments, build_view_augments, multicrop_local_count
from contrastive.backbones.factory import create_backbone
from contrastive.config.batch import describe_batch
from contrastive.core.errors import ConfigError
from contrastive.core.hardware import resolve_channels_last
from contrastive.data.batch import ViewBatch
from contrastive.engine.gather import gather_padded  # noqa: F401 (public here: methods import it from this module)
from contrastive.engine.headline import Headline
from contrastive.engine.knn_monitor import knn_monitor_accuracy
from contrastive.engine.nonfinite import TERMS_KEY, NonFiniteCallback, NonFiniteLossError, format_terms  # noqa: F401 (NonFiniteLossError: public here)
from contrastive.engine.optim import build_optimizer, build_scheduler, scaled_lr

log = logging.getLogger(__name__)

Batch = Tuple[Any, torch.Tensor, torch.Tensor]  # (images or views, labels [B], sample indices [B])


@dataclass
class DataInfo:
    """What a method needs to know about its dataset (saved in checkpoints)."""

    num_classes: int
    image_size: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    num_train: int
    train_fully_labeled: bool = True


class Method(pl.LightningModule):
    """Base class of all methods.

    Args:
        cfg: The full resolved run config (``method``, ``backbone``, ``augment``,
            ``optimizer``, ``scheduler``, ``knn``, ``batch_size``...).
        data: Facts about the dataset.
    """

    #: Whether the method needs labels to train (ImCLR) - checked before training.
    supervised: bool = False
    #: Strong views per image of the default :meth:`training_views` (the two-view methods: SimCLR, SPCL).
    VIEWS: int = 2
    #: Whether the method takes multi-crop local views (``augment.multicrop.num_local > 0``) after its 2 global views.
    MULTICROP: bool = False
    #: The metric the run reports first (printed last, ``summary.json``'s ``headline``, ``curves.png``).
    HEADLINE: Headline = Headline(key="knn_top1", label="kNN top-1 %", mode="max")

    def __init__(self, cfg: DictConfig, data: DataInfo) -> None:
        super().__init__()
        self.cfg, self.data = cfg, data
        self.backbone = create_backbone(
            cfg.backbone.name, data.image_size, small_stem=cfg.backbone.small_stem, **dict(cfg.backbone.kwargs or {})
        )
        augment_cfg = OmegaConf.to_container(cfg.augment)
        if multicrop_local_count(augment_cfg) and not self.MULTICROP:
            raise ConfigError(f"augment.multicrop.num_local={multicrop_local_count(augment_cfg)}: method "
                              f"'{cfg.method.name}' cannot use local crops; set augment.multicrop.num_local=0 "
                              "(multi-crop methods: swav, dino, deepclusterv2)")
        self.augment = build_view_augments(augment_cfg, data.image_size, data.mean, data.std)
        self.eval_transform = EvalTransform(data.image_size, data.mean, data.std)
        # auto: where measured faster (contrastive/core/hardware.py); inputs only, the weights keep their layout
        self.channels_last = resolve_channels_last(cfg.trainer.channels_last, cfg.trainer.accelerator)
        self._compiled = False
        self._knn_outputs: Dict[int, List[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = {}

    # ---------------------------------------------------------------- hooks for methods
    @classmethod
    def validate_config(cls, cfg: DictConfig, data: DataInfo) -> None:
        """Raise :class:`ConfigError` for impossible method settings (override and call super)."""

    def training_losses(self, views: List[torch.Tensor], labels: torch.Tensor, indices: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Return a dict of named loss terms, the total under ``"loss"``."""
        raise NotImplementedError

    def training_views(self, batch: ViewBatch) -> Tuple[Any, torch.Tensor]:
        """A training batch -> (the input of :meth:`training_losses`, its labels). Default:
        ``method.num_views`` strong views, float ``[B, 3, S, S]`` each; view ``v`` of a streamed
        batch takes the workers' crop ``v`` (multi-crop: the local crops after the global ones)."""
        local = self.augment.num_local if isinstance(self.augment, ViewAugments) else 0
        if batch.precropped and (batch.crops_per_image, batch.num_local) != (self.crops_per_image(), local):
            raise ConfigError(f"a streamed batch carries {batch.crops_per_image} crops per image ({batch.num_local} local), "
                              f"method '{self.cfg.method.name}' takes {self.crops_per_image()} ({local} local)")
        views = [self._to_memory_format(batch.augmented(self.view_augment(v), crop=v)) for v in range(self.crops_per_image())]
        return views, batch.labels

    def view_augment(self, v: int) -> torch.nn.Module:
        """The augmentation of view ``v``: per view for asymmetric and multi-crop recipes
        (:class:`~contrastive.augment.views.ViewAugments`), else the one shared transform."""
        return self.augment.view(v) if isinstance(self.augment, ViewAugments) else self.augment

    def make_views(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None) -> Tuple[Any, torch.Tensor]:
        """:meth:`training_views` of uint8 ``images`` (full ``[B, 3, H, W]`` or streamed crops
        ``[B, V, 3, S, S]``): for scripts and tests that hold plain tensors."""
        return self.training_views(ViewBatch.of(images, labels, indices))

    def crops_per_image(self) -> int:
        """Crops per image a streamed training batch carries (``[B, V, 3, S, S]``, local crops ``[B, L, 3, s, s]``):
        one per view. Default: :attr:`VIEWS`, plus the ``L`` local crops of a multi-crop method; a method whose
        view count is a setting overrides this (SimCLIC: ``method.num_views``)."""
        if isinstance(self.augment, ViewAugments):
            return self.VIEWS + self.augment.num_local
        return self.VIEWS

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Representation of normalised float images ``[B,3,H,W]`` -> ``[B, D]``, used by the
        kNN monitor and ``linear_eval.py``. Methods with another test-time input override it."""
        return self.backbone(images)

    def input_size(self) -> Tuple[int, int]:
        """(height, width) of what the backbone sees in training (checked before training)."""
        return self.data.image_size, self.data.image_size

    def batch_sampler_factory(self) -> Any:
        """``None`` for shuffled batches, or ``(num_samples, batch_size, seed, rank, world) -> sampler``."""
        return None

    def sampler_device(self) -> torch.device | None:
        """Where a batch sampler keeps the epoch's indices: the in-memory images' device (a batch is a slice
        of a tensor there, no host sync), or None (Python lists) for streamed data or without a trainer."""
        dm = self._trainer.datamodule if self._trainer is not None else None
        train = dm.splits.train if dm is not None else None
        return None if train is None or train.streamed else train.images.device

    def trainable_modules(self) -> Sequence[torch.nn.Module]:
        """Modules the optimizer updates."""
        return [self]

    def has_unused_parameters(self) -> bool:
        """Whether some training steps leave trainable parameters without a gradient by design (then DDP is built with
        ``find_unused_parameters=True``, one graph traversal per step: :func:`contrastive.engine.trainer.build_trainer`)."""
        return False

    def configure_model(self) -> None:
        """``trainer.compile=true``: compile the backbone in place (state-dict keys unchanged)."""
        if self.cfg.trainer.compile and not self._compiled:
            self.backbone.compile(backend=str(self.cfg.trainer.compile_backend))
            self._compiled = True

    # ---------------------------------------------------------------- data
    def _to_memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Training: ``(views, labels, indices)`` from :meth:`training_views` of the batch, the same
        for every storage; evaluation: normalised ``[B, 3, S, S]`` images."""
        images, labels, indices = batch
        if self.trainer is not None and self.trainer.training:
            views, labels = self.training_views(ViewBatch.of(images, labels, indices))
            return views, labels, indices
        return self._to_memory_format(self.eval_transform(images)), labels, indices

    # ---------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        """Re-seed the augmentation RNG from (seed, epoch, rank): the random views of an
        epoch do not depend on whether the run was interrupted and resumed before it.
        Methods overriding this hook call ``super().on_train_epoch_start()`` first."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        torch.manual_seed((int(self.cfg.seed) * 1_000_003 + self.current_epoch * 1009 + rank) % (2**63))

    def on_before_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        """Re-seed the RNG before every training batch from (seed, step, rank): the views of
        a batch do not depend on earlier batches, so a run resumed mid-epoch (from a SIGTERM
        checkpoint) continues exactly. Overrides call ``super().on_before_batch_transfer``."""
        trainer = self._trainer
        if trainer is not None and trainer.training:
            rank = trainer.global_rank
            torch.manual_seed((int(self.cfg.seed) * 1_000_003 + (self.global_step + 1) * 7919 + rank * 104_729) % (2**63))
        return batch

    def _loss_is_finite(self, loss: torch.Tensor) -> bool:
        """Finite on every process (under DDP all processes then raise or skip together)."""
        finite = bool(torch.isfinite(loss.detach()).all())
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:
            finite = bool(trainer.strategy.reduce_boolean_decision(finite, all=True))
        return finite

    def training_step(self, batch: Batch, batch_idx: int) -> Dict[str, Any] | None:
        """The loss, and every term (detached) for :class:`NonFiniteCallback` and the logs."""
        views, labels, indices = batch
        losses = self.training_losses(views, labels, indices)
        loss = losses["loss"]
        policy = self.cfg.trainer.on_nonfinite
        if policy == "skip" and not self._loss_is_finite(loss):  # must know before the optimizer step: syncs
            log.warning("step %d: non-finite loss (%s); step skipped", self.global_step, format_terms(losses))
            self.log("skipped_steps", 1.0, reduce_fx="sum", on_step=False, on_epoch=True)
            return None
        batch_size = len(indices)
        # No prog_bar: Lightning would read it to the host every step (engine/trainer.py LossProgressBar reads it at refresh).
        for name, value in losses.items():
            key = "train_loss" if name == "loss" else f"train/{name}"
            self.log(key, value.detach(), on_step=True, on_epoch=True, batch_size=batch_size, sync_dist=False)
        return {"loss": loss, TERMS_KEY: {k: v.detach() for k, v in losses.items()}}

    def configure_callbacks(self) -> List[pl.Callback]:
        """``trainer.on_nonfinite=error``: the guard as a callback (no sync per step; checked at the
        logging interval, epoch ends, validation and checkpoints), which no method's override of a
        training hook can switch off. Methods that add callbacks extend ``super()``'s list."""
        return [NonFiniteCallback()] if self.cfg.trainer.on_nonfinite == "error" else []

    def configure_optimizers(self) -> Any:
        world = self.trainer.world_size if self.trainer is not None else 1  # batch_size is per process: scale by the global batch
        lr = scaled_lr(float(self.cfg.optimizer.lr), int(self.cfg.batch_size) * world, str(self.cfg.optimizer.lr_scaling))
        log.info("learning rate %.4g (base %.4g, %s scaling, batch %s)", lr, self.cfg.optimizer.lr,
                 self.cfg.optimizer.lr_scaling, describe_batch(int(self.cfg.batch_size), world))
        optimizer = build_optimizer(self.cfg.optimizer, self.trainable_modules(), lr)
        # Lightning's estimate honours max_epochs, max_steps, limit_train_batches and
        # accumulate_grad_batches: the schedule spans the optimizer steps the run will take.
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        batches, accumulate = self.trainer.num_training_batches, int(self.trainer.accumulate_grad_batches)  # set by the estimate
        steps_per_epoch = total_steps if batches == float("inf") else max(1, -(-int(batches) // accumulate))
        schedule = build_scheduler(self.cfg.scheduler, optimizer, steps_per_epoch, total_steps)
        return {"optimizer": optimizer, "lr_scheduler": schedule}

    # ---------------------------------------------------------------- kNN monitor
    def on_validation_epoch_start(self) -> None:
        self._knn_outputs = {0: [], 1: []}

    def validation_step(self, batch: Batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        images, labels, indices = batch
        features = self.embed(images).float()  # [B, D]
        self._knn_outputs[dataloader_idx].append((features, labels, indices))

    def on_validation_epoch_end(self) -> None:
        if not self._knn_outputs.get(1):
            return
        top1, top5 = knn_monitor_accuracy(self, self._knn_outputs[0], self._knn_outputs[1], self.data.num_classes,
                                          int(self.cfg.knn.k), float(self.cfg.knn.temperature))
        self.log_dict({"knn_top1": top1, "knn_top5": top5}, prog_bar=True, rank_zero_only=False, sync_dist=False)
        self._knn_outputs = {}

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: Dict[str, Any]) -> None:
        # (NonFiniteCallback checks before any checkpoint is written.) Plain containers only, so the file loads with torch.load(weights_only=True).
        checkpoint["contrastive"] = {
            "method": str(self.cfg.method.name),
            "config": OmegaConf.to_container(self.cfg, resolve=True),
            "data": {**asdict(self.data), "mean": list(self.data.mean), "std": list(self.data.std)},
            "feature_dim": int(self.backbone.feature_dim),
        }


def check_batch_size(cfg: DictConfig, minimum: int, why: str) -> None:
    """Shared validation: per-process batch size must be at least ``minimum``."""
    if int(cfg.batch_size) < minimum:
        raise ConfigError(f"batch_size={cfg.batch_size} is too small: {why} needs at least {minimum}")
