"""Datasets held in memory as uint8 tensors, and the samplers that batch them."""

from contrastive.data.base import DatasetSplits, ImageArray, IndexedBatches, RandomBatchSampler, class_balanced_subset
from contrastive.data.datasets import build_dataset

__all__ = ["DatasetSplits", "ImageArray", "IndexedBatches", "RandomBatchSampler", "build_dataset", "class_balanced_subset"]
