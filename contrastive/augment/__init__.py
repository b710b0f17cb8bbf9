"""Augmentations on uint8/float image batches on the device: the paper pipelines (``pipelines``),
their ops (``ops``, ``photometric``), batch mixing (``mixing``: CutMix, MixUp, AutoAugment) and
ImCLR's ``k``-image input (``concat``)."""
