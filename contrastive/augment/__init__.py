"""Augmentations on uint8/float image batches on the device: the paper pipelines (``pipelines``),
their ops (``ops``, ``photometric``) and batch mixing (``mixing``: ImCLR's concatenation, CutMix)."""
