"""ImCLR's input: ``k`` images concatenated along the height (Chen, Sinha & Kyrillidis, "ImCLR:
Implicit Contrastive Learning for Image Classification", 2020, https://arxiv.org/abs/2011.12618).

Pure tensor functions shared by every method that trains on the ``k*S x S`` input (ImCLR, the
Π-model with ``method.k >= 2``): which images fill the ``k`` slots of an input, which of the
streamed crops each slot takes, the concatenation and the test-time input.

Slot-major layout: ``k*B`` rows ordered slot by slot (all slot-0 images, then all slot-1
images...); :func:`concat_height` stacks slot 0 on top.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: ``method.control``: ``same_image`` fills every slot with the image itself (the paper's control).
CONTROLS = ("none", "same_image")
#: ``method.tta``: ``flip`` alternates the test image with its horizontal flip.
TTAS = ("none", "flip")


def draw_slot_indices(batch: int, k: int, control: str = "none", device=None) -> Tensor:
    """Which image of a batch of ``batch`` fills each slot: int64 ``[k, batch]``.

    Row 0 is ``0..batch-1`` (every image is a top image once); rows ``1..k-1`` are partners
    drawn uniformly with replacement from the *other* images of the batch (``control=same_image``
    or ``batch == 1``: the image itself)."""
    first = torch.arange(batch, device=device)  # [B]
    if k == 1 or control == "same_image" or batch == 1:
        return first.expand(k, batch)
    offsets = torch.randint(1, batch, (k - 1, batch), device=device)  # [k-1, B] in [1, B-1]
    return torch.cat([first.unsqueeze(0), (first + offsets) % batch])  # [k, B]


def slot_crops(rows: int, k: int, first: int = 0, device=None) -> Tensor:
    """Which streamed crop each of ``rows`` slot-major rows takes: int64 ``[rows]``, ``first + slot``.

    So the ``k`` images of an input are independent crops even when one image fills several
    slots; ``first`` offsets a second pass (the Π-model's two passes take crops ``0..k-1`` and
    ``k..2k-1``)."""
    per_slot = max(1, rows // k)
    return torch.arange(rows, device=device) // per_slot + first


def concat_height(images: Tensor, k: int) -> Tensor:
    """``[k*B, C, S, S]`` grouped by slot (slot 0 first) -> ``[B, C, k*S, S]``, slot 0 on top."""
    kb, c, h, w = images.shape
    b = kb // k
    return images.view(k, b, c, h, w).permute(1, 2, 0, 3, 4).reshape(b, c, k * h, w)


def stacked_test_input(images: Tensor, k: int, tta: str = "none") -> Tensor:
    """Normalised ``[B, 3, S, S]`` -> ``[B, 3, k*S, S]``: ``k`` copies of each image (``tta=flip``:
    the image, its flip, the image, ... alternating from the top); ``k=1``: the images as they are."""
    if k == 1:
        return images
    flipped = images.flip(-1) if tta == "flip" else images
    return torch.cat([flipped if i % 2 else images for i in range(k)], dim=2)
