"""Every registered method: one optimisation step from a uint8 batch gives a finite loss and a
gradient on every trainable parameter (no dead head, no detached branch by mistake)."""

import pytest
import torch

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.engine.method import DataInfo
from contrastive.core.registry import METHODS

load_builtin_methods()

#: Small heads so a step takes well under a second on 2 CPU cores.
SMALL = {
    "simclr": ["method.projection.hidden_dim=32", "method.projection.output_dim=16"],
    "simclic": ["method.projection.hidden_dim=32", "method.projection.output_dim=32", "method.predictor_hidden_dim=8"],
    "spcl": [],
    "imclr": [],
}


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
    if name == "spcl":  # as after a clustering pass: prototypes assigned, so every loss term is on
        model.assignments.copy_((torch.arange(64) % model.ks[0]).expand_as(model.assignments))
    views, labels = model.make_views(images, labels)
    losses = model.training_losses(views, labels, indices)
    loss = losses["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss), f"{name}: loss {loss}"
    loss.backward()
    trainable = [(n, p) for module in model.trainable_modules() for n, p in module.named_parameters() if p.requires_grad]
    assert trainable
    dead = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert not dead, f"{name}: no gradient reaches {dead[:5]}"
