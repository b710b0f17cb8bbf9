"""Data: in-memory uint8 datasets and their samplers (``base``, ``module``), file streaming
(``stream``), shards, sources by name (``sources``), file reading (``io``), samplers.

Importing this package registers every built-in dataset in ``DATASETS``.
"""

from contrastive.data import sources  # noqa: F401  (registers the built-in datasets)
from contrastive.data.base import DatasetSplits, ImageArray, IndexedBatches, RandomBatchSampler, class_balanced_subset
from contrastive.data.shards import reader as _shards  # noqa: F401  (registers dataset=shards)
from contrastive.data.sources.standard import build_dataset

__all__ = ["DatasetSplits", "ImageArray", "IndexedBatches", "RandomBatchSampler", "build_dataset", "class_balanced_subset"]
