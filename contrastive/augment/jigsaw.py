"""The jigsaw transformation of PIRL (Misra and van der Maaten 2020, Sec. 2.3, Supp. A.1), batch-wise on the device.

PIRL's transformed image ``I^t`` is a jigsaw of a crop: Sec. 2.3, "extract nine patches from image I",
and Supp. A.1, "We resize this crop to 255 × 255, and then divide into a 3 × 3 grid. We extract a patch
of 64 × 64 from each of these grids"; each patch is a random crop inside its own cell (the place is not
stated by the paper: VISSL's), and the patches' representations are concatenated "in random order"
(Sec. 2.3). The authors' VISSL loader
(facebookresearch/vissl, ``ImgPilToPatchesAndImage`` in the PIRL config
``configs/config/pretrain/pirl/pirl_jigsaw_4node_resnet50.yaml``: ``crop_size_patches: 255``,
``num_patches: 9``; ``vissl/data/ssl_transforms/img_patches_tensor.py``, ``patch_jitter=21``) resizes the
crop to 255 pixels, i.e. 85-pixel cells, and cuts a 64-pixel patch at a random place inside each cell.

Where this differs from VISSL (our choices, so the jigsaw is one batch-wise pass on the device over the
method's second view): the crop is the method's own augmented view (its crop scale range, not the separate
one of Supp. A.1, "a random resized crop that occupies at least 60% of the image", VISSL's
``crop_scale_patches (0.6, 1.0)``), its colour augmentation is drawn once per crop (Supp. A.1 applies it "to
each patch independently", as VISSL does), and a patch may sit at any of the ``cell - patch + 1``
positions (VISSL's ``randint(0, 21)`` leaves out the last one).

What must divide what: the crop (``crop_size`` pixels square) is cut into ``grid x grid`` equal cells,
so ``grid`` must divide ``crop_size``; each patch (``patch_size`` pixels square) lies inside its cell,
so ``1 <= patch_size <= crop_size // grid``; it is placed uniformly at random in its cell
(``crop_size // grid - patch_size + 1`` positions per axis).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastive.core.errors import ConfigError

Tensor = torch.Tensor


def check_jigsaw(grid: int, crop_size: int, patch_size: int, prefix: str = "method.jigsaw") -> None:
    """Raise :class:`ConfigError` unless ``grid`` divides ``crop_size`` and a patch fits in a cell."""
    if grid < 1 or crop_size < 1:
        raise ConfigError(f"{prefix}.grid={grid} and {prefix}.crop_size={crop_size} must be >= 1")
    if crop_size % grid:
        below, above = crop_size - crop_size % grid, crop_size - crop_size % grid + grid
        raise ConfigError(f"{prefix}.crop_size={crop_size} is not a multiple of {prefix}.grid={grid}: the jigsaw cuts "
                          f"the crop into {grid}x{grid} equal cells (PIRL: 255 = 3 x 85); valid crop sizes near it: "
                          f"{', '.join(str(s) for s in (below, above) if s >= grid)}")
    cell = crop_size // grid
    if not 1 <= patch_size <= cell:
        raise ConfigError(f"{prefix}.patch_size={patch_size} does not fit a grid cell of {cell} pixels "
                          f"({prefix}.crop_size {crop_size} // {prefix}.grid {grid}): valid patch sizes are 1..{cell}")


def jigsaw_patches(crops: Tensor, grid: int, crop_size: int, patch_size: int) -> Tensor:
    """Nine (``grid**2``) shuffled patches of each crop.

    Args:
        crops: float ``[B, C, S, S]`` augmented crops; resized (bilinear) to ``crop_size`` when ``S`` differs.
        grid: Cells per side (PIRL: 3).
        crop_size: Side of the crop the grid is laid on; a multiple of ``grid`` (:func:`check_jigsaw`).
        patch_size: Side of each patch, at most ``crop_size // grid``.

    Returns:
        float ``[B, grid**2, C, patch_size, patch_size]``: for each image, its patches in a random
        order (one permutation per image). Draws from the global RNG on ``crops``' device (the
        ``Method`` base class seeds it per step).
    """
    check_jigsaw(grid, crop_size, patch_size)
    if crops.shape[-1] != crop_size or crops.shape[-2] != crop_size:
        crops = F.interpolate(crops, size=(crop_size, crop_size), mode="bilinear", align_corners=False, antialias=True)
    b, k, cell, device = crops.shape[0], grid * grid, crop_size // grid, crops.device
    offsets = torch.randint(0, cell - patch_size + 1, (b, k, 2), device=device)  # [B, K, (dy, dx)] inside each cell
    cells = torch.arange(k, device=device)
    top = (cells // grid) * cell + offsets[..., 0]  # [B, K], cell-major order
    left = (cells % grid) * cell + offsets[..., 1]  # [B, K]
    order = torch.rand(b, k, device=device).argsort(dim=1)  # [B, K]: output patch j is cell order[:, j]
    top, left = top.gather(1, order), left.gather(1, order)
    step = torch.arange(patch_size, device=device)
    rows = (top.unsqueeze(-1) + step).unsqueeze(-1)  # [B, K, p, 1]
    cols = (left.unsqueeze(-1) + step).unsqueeze(-2)  # [B, K, 1, p]
    batch = torch.arange(b, device=device).view(b, 1, 1, 1)
    patches = crops.permute(0, 2, 3, 1)[batch, rows, cols]  # [B, K, p, p, C]
    return patches.permute(0, 1, 4, 2, 3).contiguous()  # [B, K, C, p, p]
