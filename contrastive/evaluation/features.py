"""Frozen-encoder feature extraction and the on-disk feature cache.

Features are extracted once per (checkpoint, dataset) with the encoder in eval mode
under ``torch.inference_mode``, from center-cropped, normalised images (no
augmentation), through ``model.embed`` (methods decide how an image is embedded).
:func:`frozen_encoder` checks afterwards that no weight and no BatchNorm statistic
changed. The cache lives beside the checkpoint (``<ckpt>.eval/features/``) under a
key that hashes the checkpoint file, the dataset config and the extraction settings,
so a changed checkpoint or dataset never reuses stale features.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import torch
from omegaconf import OmegaConf
from torch import nn
from tqdm.auto import tqdm

from contrastive.data import ImageArray, class_balanced_subset
from contrastive.core.errors import ConfigError
from contrastive.core.hardware import resolve_eval_amp

log = logging.getLogger("contrastive")

#: Bump when extraction changes in a way that makes old caches wrong.
FEATURE_VERSION = 1


@dataclass
class FeatureSet:
    """Features of the labeled train split and the test split.

    Attributes:
        train, test: float32 ``[N, D]`` and ``[M, D]`` on the CPU.
        train_labels, test_labels: int64 ``[N]`` and ``[M]``.
        seconds: Extraction time; 0 when loaded from the cache.
        cached: Whether they were loaded from the on-disk cache.
    """

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    seconds: float = 0.0
    cached: bool = False

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])


def file_sha256(path: Path | str, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def config_sha256(obj: Any) -> str:
    """Hex SHA-256 of a JSON-serialisable object (keys sorted)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def labeled_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of the labeled images used for training probes / as the kNN bank.

    Args:
        labels: int64 ``[N]``, ``-1`` for unlabeled images (never chosen).
        fraction: In (0, 1]; below 1, a class-balanced subset (SimCLR Table 7) that depends
            only on ``labels``, ``fraction`` and ``seed``.
        seed: Subset seed.

    Returns:
        Sorted int64 indices ``[n]``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"eval.label_fraction={fraction} must be in (0, 1], e.g. 0.01 or 0.1")
    if fraction == 1.0:
        return torch.nonzero(labels >= 0).flatten()
    return class_balanced_subset(labels, fraction, seed=seed)


def snapshot_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """CPU copies of every parameter and buffer of ``model`` (BatchNorm running statistics and
    ``num_batches_tracked`` included); on the CPU so the model may move devices in between."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def assert_unchanged(model: nn.Module, before: Dict[str, torch.Tensor]) -> None:
    """Raises ``AssertionError`` naming the entries of ``model`` that differ (bitwise) from ``before``."""
    now = model.state_dict()
    changed = [k for k in before.keys() | now.keys()
               if k not in now or k not in before or not torch.equal(now[k].detach().cpu(), before[k])]
    if changed:
        raise AssertionError(f"the frozen encoder changed during evaluation: {', '.join(sorted(changed)[:5])}")


@contextmanager
def frozen_encoder(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``inference_mode`` inside; afterwards the train/eval mode is restored
    and every parameter and buffer (BatchNorm running statistics included) is checked.

    Raises:
        AssertionError: If any weight or buffer of ``model`` changed inside the block.
    """
    before = snapshot_state(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
    assert_unchanged(model, before)


def extract(embed: Callable[[torch.Tensor], torch.Tensor], array: ImageArray, transform: nn.Module, batch_size: int,
            device: torch.device, amp: bool = False, progress: bool = True, desc: str = "features") -> torch.Tensor:
    """Embed every image of ``array`` in order (call inside :func:`frozen_encoder`).

    Args:
        embed: float ``[B, 3, S, S]`` -> ``[B, D]`` (``model.embed``).
        array: uint8 images ``[N, 3, H, W]``.
        transform: uint8 -> normalised float (``EvalTransform``: resize + center crop).
        batch_size: Images per forward pass.
        device: Where the encoder runs.
        amp: bf16 autocast (:func:`use_amp`).

    Returns:
        float32 ``[N, D]`` on the CPU.
    """
    images = array.images
    if device.type == "cuda" and images.numel() < 4 << 30:
        images = images.to(device, non_blocking=True)  # one copy, then slices on the GPU
    out = []
    for start in tqdm(range(0, len(images), batch_size), desc=desc, disable=not progress, leave=False):
        x = transform(images[start : start + batch_size].to(device, non_blocking=True))  # [B, 3, S, S]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out.append(embed(x).float())  # [B, D]
    return torch.cat(out).cpu()


def use_amp(cfg: Any, device: torch.device) -> bool:
    """``eval.amp``: auto = bf16 autocast on a bf16 GPU and on a CPU with native bf16
    (AVX-512 BF16 / AMX), where it is faster; fp32 elsewhere (``contrastive.core.hardware``)."""
    return resolve_eval_amp(cfg.eval.amp, device)


def feature_key(checkpoint_sha256: str, dataset_cfg: Dict[str, Any], method: str, amp: bool) -> str:
    """Cache key: checkpoint bytes + dataset config + the embedding (whose ``embed``, autocast).

    The label fraction is deliberately not part of it: the cache holds the features of
    every labeled training image, and ``eval.label_fraction`` only selects rows of them,
    so one extraction serves every fraction and subset seed.
    """
    ignored = ("download", "on_bad_image", "cache_dir", "root")  # where data lives, not what it is
    dataset = {k: v for k, v in dataset_cfg.items() if k not in ignored}
    return config_sha256({"checkpoint": checkpoint_sha256, "dataset": dataset, "method": method,
                          "amp": amp, "version": FEATURE_VERSION})


class FeatureCache:
    """``<folder>/<dataset>-<checkpoint sha[:12]>-<key[:12]>.pt``, written atomically.

    Saving removes the files of the same dataset made from other checkpoint bytes
    (``last.ckpt`` is rewritten every epoch; those features can never be used again).
    """

    def __init__(self, folder: Path, dataset: str, checkpoint_sha256: str, key: str) -> None:
        self.folder, self.dataset, self.checkpoint_sha256, self.key = folder, dataset, checkpoint_sha256, key
        self.path = folder / f"{dataset}-{checkpoint_sha256[:12]}-{key[:12]}.pt"

    def load(self) -> Optional[FeatureSet]:
        if not self.path.is_file():
            return None
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
            if data.get("key") != self.key:
                raise ValueError("key mismatch")
            return FeatureSet(data["train"], data["train_labels"], data["test"], data["test_labels"], cached=True)
        except Exception as err:  # a broken cache is rebuilt, never trusted
            log.warning("ignoring unreadable feature cache %s (%s)", self.path, err)
            return None

    def save(self, features: FeatureSet) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        data = {"key": self.key, "train": features.train, "train_labels": features.train_labels,
                "test": features.test, "test_labels": features.test_labels}
        try:
            torch.save(data, tmp)
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        for stale in self.folder.glob(f"{self.dataset}-*.pt"):
            if stale != self.path and not stale.name.startswith(f"{self.dataset}-{self.checkpoint_sha256[:12]}-"):
                stale.unlink(missing_ok=True)


def features_for(setup: Any, progress: bool = True) -> FeatureSet:
    """Train (all labeled) and test features of ``setup``, from the cache when possible.

    Args:
        setup: An :class:`~contrastive.evaluation.loading.EvalSetup`.
    """
    cfg, model, splits, device = setup.cfg, setup.model, setup.splits, setup.device
    amp = use_amp(cfg, device)
    embedder = f"{type(model).__module__}.{type(model).__qualname__}"  # whose embed() made the features
    key = feature_key(setup.checkpoint_sha256, OmegaConf.to_container(setup.run_cfg.dataset), embedder, amp)
    cache = FeatureCache(setup.eval_dir / "features", str(setup.run_cfg.dataset.name), setup.checkpoint_sha256, key)
    found = cache.load() if cfg.eval.cache else None
    if found is not None and torch.equal(found.train_labels, splits.train_labeled.labels) \
            and torch.equal(found.test_labels, splits.val.labels):  # same images, same order
        log.info("features from cache %s", cache.path)
        return found
    start = time.perf_counter()
    model.to(device)
    transform = setup.transform.to(device)
    bs = int(cfg.eval.batch_size)
    with frozen_encoder(model):
        train = extract(model.embed, splits.train_labeled, transform, bs, device, amp, progress, "train features")
        test = extract(model.embed, splits.val, transform, bs, device, amp, progress, "test features")
    if device.type == "cuda":
        torch.cuda.synchronize()
    features = FeatureSet(train, splits.train_labeled.labels.clone(), test, splits.val.labels.clone(), time.perf_counter() - start)
    log.info("extracted %d + %d features of dim %d in %.1f s", len(train), len(test), features.dim, features.seconds)
    if cfg.eval.cache:
        cache.save(features)
    return features
