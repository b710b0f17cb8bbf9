"""Datasets held in memory as uint8 tensors, and the samplers that batch them."""

from contrastive.data.base import DatasetSplits, ImageArray, IndexedBatches, RandomBatchSampler, class_balanced_subset
from contrastive.data.datasets import build_dataset
from contrastive.data import imagenet as _imagenet  # noqa: F401,E402  (registers imagenet, imagenet100)
from contrastive.data import cifar_c as _cifar_c  # noqa: F401,E402  (registers cifar100_c)
from contrastive.data import shards as _shards  # noqa: F401,E402  (registers shards)

__all__ = ["DatasetSplits", "ImageArray", "IndexedBatches", "RandomBatchSampler", "build_dataset", "class_balanced_subset"]
