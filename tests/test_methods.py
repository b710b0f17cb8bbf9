"""Every registered method: one optimisation step from a uint8 batch gives a finite loss and a
gradient on every trainable parameter (no dead head, no detached branch by mistake), and the
same training input whether the batch comes from memory or from the streaming workers."""

from types import SimpleNamespace

import pytest
import torch

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.augment.views import ViewAugments
from contrastive.data.batch import ViewBatch
from contrastive.engine.method import DataInfo
from contrastive.core.registry import METHODS
from tests.conftest import SMALL_HEADS

load_builtin_methods()

#: Small heads so a step takes well under a second on 2 CPU cores.
SMALL = {**SMALL_HEADS, "spcl": [], "imclr": []}


def _build(name):
    cfg = load_config([f"method={name}", "backbone.kwargs.width=4", "batch_size=16", *SMALL.get(name, [])])
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    cls = METHODS.get(name)
    cls.validate_config(cfg, data)
    torch.manual_seed(0)
    return cls(cfg, data).train()


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_one_step_has_finite_loss_and_a_gradient_everywhere(name):
    model = _build(name)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=g)  # [B, 3, H, W]
    labels = torch.arange(16) % 10  # [B]
    indices = torch.arange(16)  # [B]
    if name in ("spcl", "deepclusterv2", "pclv2", "pcl", "selav2"):  # as after a clustering pass: every loss term is on
        model.assignments.copy_((torch.arange(64) % min(model.ks)).expand_as(model.assignments))
        clustered = {"deepclusterv2": lambda: list(model.centroids), "pclv2": lambda: [model.prototypes(j)[0] for j in
                                                                                    range(len(model.ks))]}
        clustered["pcl"] = clustered["pclv2"]
        for centroids in clustered.get(name, list)():  # random unit prototypes in place of k-means centroids
            centroids.data.copy_(torch.nn.functional.normalize(torch.randn_like(centroids), dim=1))
    views, labels = model.make_views(images, labels)
    losses = model.training_losses(views, labels, indices)
    loss = losses["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    loss.backward()
    trainable = [(n, p) for module in model.trainable_modules() for n, p in module.named_parameters() if p.requires_grad]
    assert trainable
    dead = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not dead, f"{name}: no gradient reaches {dead[:5]}"


def _layout(x):
    """Types, shapes and dtypes of a (nested) training input: what a method's loss sees."""
    if isinstance(x, torch.Tensor):
        return ("tensor", tuple(x.shape), x.dtype)
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_layout(v) for v in x])
    return type(x).__name__


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_memory_and_streamed_batches_reach_the_method_in_one_layout(name, monkeypatch):
    """A method's training_views gets a ViewBatch whatever the storage, and its loss the same
    layout from full uint8 images [B, 3, H, W] (memory, shards) as from the workers' crops
    [B, V, 3, S, S] (dataset.storage=stream)."""
    model = _build(name)
    received = []
    original = type(model).training_views
    monkeypatch.setattr(type(model), "training_views", lambda self, batch: received.append(batch) or original(self, batch))
    g = torch.Generator().manual_seed(0)
    full = torch.randint(0, 256, (16, 3, 40, 40), dtype=torch.uint8, generator=g)  # [B, 3, H, W], any H, W
    local = model.augment.num_local if isinstance(model.augment, ViewAugments) else 0
    crops = torch.randint(0, 256, (16, model.crops_per_image() - local, 3, 32, 32), dtype=torch.uint8, generator=g)  # [B, V, 3, S, S]
    if local:  # multi-crop: the workers' local crops [B, L, 3, s, s] travel beside the global ones
        size = model.augment.view(model.augment.num_global).image_size
        crops = (crops, torch.randint(0, 256, (16, local, 3, size, size), dtype=torch.uint8, generator=g))
    labels, indices = torch.arange(16) % 10, torch.arange(16)
    model._trainer = SimpleNamespace(training=True)  # what Lightning's training loop looks like to the hook
    try:
        torch.manual_seed(1)  # ImCLR's partners (its soft targets) are drawn first: the same for both
        memory = model.on_after_batch_transfer((full, labels, indices), 0)
        torch.manual_seed(1)
        streamed = model.on_after_batch_transfer((crops, labels, indices), 0)
    finally:
        model._trainer = None
    assert [type(b) for b in received] == [ViewBatch, ViewBatch] and [b.precropped for b in received] == [False, True]
    assert _layout(memory) == _layout(streamed)
    assert torch.equal(memory[1], streamed[1]) and torch.equal(memory[2], streamed[2])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\] or streamed crops \[B, V, 3, S, S\], got shape \(16, 32, 32\)"):
        ViewBatch.of(full[:, 0, :32, :32], labels, indices)


def test_a_streamed_row_takes_the_crop_it_names():
    model = _build("imclr")  # supervised augmentation: the photometric part is the normalisation
    crops = torch.arange(3, dtype=torch.uint8).mul(100).view(1, 3, 1, 1, 1).expand(4, 3, 3, 8, 8).contiguous()
    batch = ViewBatch.of(crops, torch.zeros(4, dtype=torch.long))
    x = batch.augmented(model.augment, rows=torch.tensor([3, 0, 1]), crop=torch.tensor([2, 0, 1]))  # [3, 3, 8, 8]
    pixels = (x * 0.25 + 0.5) * 255  # undo the normalisation (mean 0.5, std 0.25)
    assert torch.allclose(pixels.mean(dim=(1, 2, 3)), torch.tensor([200.0, 0.0, 100.0]), atol=1e-3)
    assert torch.allclose(batch.augmented(model.augment, crop=1), x[2:3].expand(4, 3, 8, 8))
