"""Datasets by name (``dataset=<name>``). Importing this package registers the built-in ones."""

from contrastive.data.sources import cifar_c, imagenet, standard, synthetic  # noqa: F401  (register)
