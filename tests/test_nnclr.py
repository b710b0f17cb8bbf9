"""NNCLR: the loss written out (nearest neighbours found by a loop over the support set) against the method's own
``training_losses``, the support set's update, the lookup without host syncs, one-line errors, the presets."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from contrastive.losses.nearest_neighbour import nearest_neighbours, nnclr_info_nce
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


def _model(*overrides):
    cfg = load_config(["method=nnclr", "backbone.kwargs.width=4", "batch_size=8", *SMALL_HEADS["nnclr"], *overrides])
    METHODS.get("nnclr").validate_config(cfg, DATA)
    torch.manual_seed(0)
    return METHODS.get("nnclr")(cfg, DATA).train()


def _nearest_written_out(z, support):
    """NN(z, Q) = argmin_{q in Q} ||z/|z| - q|| over the rows of Q, by a loop."""
    z = z / z.norm()
    distances = [float((z - q).norm()) for q in support]
    return support[distances.index(min(distances))]


def _direction_written_out(neighbours, predictions, t):
    """mean_i -log exp(nn_i . p_i / t) / sum_k exp(nn_i . p_k / t), cosine similarities."""
    total = 0.0
    for i, nn in enumerate(neighbours):
        sims = [float(nn @ p / (nn.norm() * p.norm())) / t for p in predictions]
        total += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    return total / len(neighbours)


def test_training_losses_is_the_papers_symmetric_loss_with_neighbours_from_the_support_set():
    model = _model()
    g = torch.Generator().manual_seed(1)
    model.support.keys = F.normalize(torch.randn(64, 16, generator=g), dim=1)  # Q: 64 unit vectors
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=g)
    views, labels = model.make_views(images, torch.zeros(8, dtype=torch.long))
    loss = model.training_losses(views, labels, torch.arange(8))["loss"]
    with torch.no_grad():  # the same forward (BatchNorm on batch statistics), then the loss by loops
        z = [model.projection_head(model.backbone(v)) for v in views]
        p = [model.prediction_head(zv) for zv in z]
    nn = [torch.stack([_nearest_written_out(zi, model.support.keys) for zi in zv]) for zv in z]
    t = float(model.cfg.method.temperature)
    expected = 0.5 * (_direction_written_out(nn[0], p[1], t) + _direction_written_out(nn[1], p[0], t))
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    # The positive is the neighbour, not the view itself: another support set gives another loss.
    model.support.keys = model.support.keys[:8].clone()
    assert model.training_losses(views, labels, torch.arange(8))["loss"].item() != pytest.approx(loss.item(), rel=1e-3)


def test_nearest_neighbours_and_the_loss_on_hand_made_vectors():
    support = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    queries = F.normalize(torch.tensor([[0.9, 0.1], [-0.2, 1.0], [-1.0, -0.3]]), dim=1)
    assert torch.equal(nearest_neighbours(queries, support), support)
    neighbours, predictions = support[:2], torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    # cosine 1 with the own prediction, 0 with the other: -log e^(1/t) / (e^(1/t) + e^0)
    assert nnclr_info_nce(neighbours, predictions, 0.5).item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + 1)), rel=1e-6)


def test_the_support_set_takes_the_first_views_projections_after_the_step_and_wraps():
    model = _model()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    before = model.support.keys.clone()
    views, labels = model.make_views(images, torch.zeros(8, dtype=torch.long))
    model.training_losses(views, labels, torch.arange(8))
    assert torch.equal(model.support.keys, before)  # the loss read Q as it was; nothing written yet
    with torch.no_grad():
        z0 = F.normalize(model.projection_head(model.backbone(views[0])), dim=1)
    model.on_train_batch_end(None, None, 0)
    assert torch.allclose(model.support.keys[:8], z0, atol=1e-6) and torch.equal(model.support.keys[8:], before[8:])
    assert int(model.support.pointer) == 8 and "support.keys" in model.state_dict()


def test_the_lookup_and_the_loss_never_wait_on_the_device(monkeypatch):
    """No .item() / .tolist() / .cpu() / bool() / float() / int() of a tensor in a training step (each a host sync on a GPU)."""
    model = _model()
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    views, labels = model.make_views(images, torch.zeros(8, dtype=torch.long))

    def sync(*args, **kwargs):
        raise AssertionError("host sync")

    for name in ("item", "tolist", "cpu", "__bool__", "__float__", "__int__", "nonzero"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    model.training_losses(views, labels, torch.arange(8))["loss"].backward()
    model.on_train_batch_end(None, None, 0)


@pytest.mark.parametrize("overrides, message", [
    (["method.support_size=4"], "method.support_size=4 must be a positive multiple of the global batch (batch_size=8"),
    (["method.support_size=12"], "method.support_size=12 must be a positive multiple of the global batch"),
    (["method.temperature=0"], "method.temperature must be > 0, got 0"),
])
def test_bad_settings_are_one_line_errors(overrides, message):
    cfg = load_config(["method=nnclr", "batch_size=8", *overrides])
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        METHODS.get("nnclr").validate_config(cfg, DATA)


def test_presets_compose_with_the_papers_values():
    imagenet = load_config(["experiment=nnclr_imagenet"])
    assert (imagenet.global_batch_size, imagenet.method.support_size, imagenet.method.temperature) == (4096, 98304, 0.1)
    assert (imagenet.optimizer.name, imagenet.optimizer.lr * imagenet.global_batch_size / 256) == ("lars", 4.8)
    assert (imagenet.method.projection.hidden_dim, imagenet.method.projection.output_dim,
            imagenet.method.predictor.hidden_dim) == (2048, 256, 4096)
    cifar = load_config(["experiment=nnclr_cifar10"])
    assert (cifar.batch_size, cifar.method.support_size, cifar.method.temperature, cifar.optimizer.lr) == (256, 65536, 0.2, 0.4)
