"""PIRL: Eq. 5 written out through the method's own ``training_losses``, the per-image negatives
(never the image's own entry, a function of (seed, step)), the memory refresh, and the jigsaw
(one patch inside each grid cell, in a random order)."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.augment.jigsaw import jigsaw_patches
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from contrastive.losses.memory_bank import draw_negatives
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


def _model(*extra):
    cfg = load_config(["method=pirl", "backbone.kwargs.width=4", "batch_size=8", *SMALL_HEADS["pirl"], *extra])
    METHODS.get("pirl").validate_config(cfg, DATA)
    torch.manual_seed(0)
    return METHODS.get("pirl")(cfg, DATA).train()


def _batch(model, b=8):
    images = torch.randint(0, 256, (b, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return model.make_views(images, torch.zeros(b, dtype=torch.long))


def test_the_loss_is_eq5_with_a_softmax_per_term_and_the_bank_refreshes_once():
    model = _model("method.jigsaw_weight=0.3", "method.temperature=0.2", "method.bank_momentum=0.5")
    (image, patches), labels = _batch(model)
    indices = torch.arange(8) * 8  # [B] rows 0, 8, ..., 56
    bank = model.bank.features.clone()  # [N, d]
    with torch.no_grad():
        losses = model.training_losses([image, patches], labels, indices)
        f = F.normalize(model.image_head(model.backbone(image)), dim=1)  # f(v_I) [B, d]
        per_patch = model.patch_head(model.backbone(patches)).reshape(8, 9 * 16)  # 9 patches x 16-d (SMALL_HEADS), in shuffled order
        g = F.normalize(model.jigsaw_head(per_patch), dim=1)  # g(v_I^t) [B, d]
    negatives = draw_negatives(indices, 64, 32, model.draw_generator(torch.device("cpu")))  # [B, 32]

    def nce(q):  # -log exp(q.m_I/t) / (exp(q.m_I/t) + sum_{j in N_I} exp(q.m_j/t)), mean over the batch
        total = 0.0
        for i in range(8):
            pos = math.exp(float(q[i] @ bank[indices[i]]) / 0.2)
            neg = sum(math.exp(float(q[i] @ bank[j]) / 0.2) for j in negatives[i].tolist())
            total += -math.log(pos / (pos + neg))
        return total / 8

    jigsaw, plain = nce(g), nce(f)
    assert float(losses["jigsaw"]) == pytest.approx(jigsaw, rel=1e-4)
    assert float(losses["image"]) == pytest.approx(plain, rel=1e-4)
    assert float(losses["loss"]) == pytest.approx(0.3 * jigsaw + 0.7 * plain, rel=1e-4)  # lambda L(g) + (1 - lambda) L(f)
    # m_I <- 0.5 m_I + 0.5 f(v_I), re-normalised; other rows untouched
    assert torch.allclose(model.bank.features[indices], F.normalize(0.5 * bank[indices] + 0.5 * f, dim=1), atol=1e-5)
    assert torch.equal(model.bank.features[1:8], bank[1:8])


def test_negatives_never_hit_the_images_own_entry_cover_all_others_and_repeat_per_step():
    indices = torch.tensor([0, 5, 9])
    drawn = draw_negatives(indices, 10, 4000, torch.Generator().manual_seed(1))  # [3, 4000]
    for row, own in zip(drawn, indices.tolist()):
        assert set(row.tolist()) == set(range(10)) - {own}
    model = _model()
    again = [draw_negatives(indices, 64, 16, model.draw_generator(torch.device("cpu"))) for _ in range(2)]
    assert torch.equal(*again)  # a function of (seed, step): a resumed run draws the same
    model.cfg.seed = 1
    assert not torch.equal(again[0], draw_negatives(indices, 64, 16, model.draw_generator(torch.device("cpu"))))


def test_the_jigsaw_cuts_one_patch_inside_each_cell_in_a_random_order():
    grid, crop, patch = 3, 12, 3  # 4-px cells, 3-px patches: 2 positions per axis
    rows = torch.arange(crop).view(1, crop, 1).expand(crop, crop, crop).float()
    coords = torch.stack([rows[0], rows[0].t(), torch.zeros(crop, crop)]).unsqueeze(0).repeat(16, 1, 1, 1)  # [B, 3, S, S]: (y, x, 0)
    torch.manual_seed(0)
    patches = jigsaw_patches(coords, grid, crop, patch)  # [B, 9, 3, p, p]
    assert patches.shape == (16, 9, 3, patch, patch)
    orders = set()
    for b in range(16):
        cells = []
        for k in range(9):
            y, x = patches[b, k, 0], patches[b, k, 1]  # pixel coordinates of the patch
            top, left = int(y[0, 0]), int(x[0, 0])
            assert torch.equal(y, top + torch.arange(patch).float().view(-1, 1).expand(patch, patch))  # contiguous block
            assert torch.equal(x, left + torch.arange(patch).float().view(1, -1).expand(patch, patch))
            cell = (top // 4, left // 4)
            assert ((top + patch - 1) // 4, (left + patch - 1) // 4) == cell  # inside one cell
            cells.append(cell[0] * grid + cell[1])
        assert sorted(cells) == list(range(9))  # every cell once
        orders.add(tuple(cells))
    assert len(orders) >= 14  # a random order per image (16 draws of 9! orders)


def test_streamed_crops_are_jigsawed_like_fresh_crops():
    model = _model()
    crops = torch.randint(0, 256, (4, 2, 3, 32, 32), dtype=torch.uint8)  # [B, V, 3, S, S]: the workers' two crops
    (image, patches), _ = model.make_views(crops, torch.zeros(4, dtype=torch.long))
    assert image.shape == (4, 3, 32, 32) and patches.shape == (4 * 9, 3, 4, 4)  # SMALL_HEADS: 4-px patches
