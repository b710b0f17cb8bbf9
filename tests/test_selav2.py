"""SeLa v2: the whole-set Sinkhorn-Knopp labels against the algorithm written out (the equal-partition
transport plan, SwAV's normalisation order), the loss written out through training_losses, the memory
and the prototypes' norm, and one-line bad inputs."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.clustering.sinkhorn import sinkhorn_labels
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _written_out(features, prototypes, eps, iterations):
    """The plan Q [K, N] = exp(S^T / eps) / sum, then per round: every cluster's (row's) mass to 1 / K,
    every sample's (column's) mass to 1 / N; the label of sample i is argmax_k Q[k, i]."""
    n, k = features.shape[0], prototypes.shape[0]
    q = torch.exp(prototypes @ features.t() / eps)  # [K, N]
    q = q / q.sum()
    for _ in range(iterations):
        q = q / q.sum(dim=1, keepdim=True) / k  # equal partition: cluster k holds 1 / K of the mass
        q = q / q.sum(dim=0, keepdim=True) / n  # every sample holds 1 / N
    return q


@pytest.mark.parametrize("iterations", [1, 3, 20])
def test_whole_set_sinkhorn_labels_match_the_algorithm_written_out(iterations):
    features, prototypes = _unit(37, 6, seed=1), _unit(4, 6, seed=2)
    plan = _written_out(features, prototypes, 0.3, iterations)
    expected = plan.argmax(dim=0)
    assert torch.equal(sinkhorn_labels(features, prototypes, 0.3, iterations, chunk_size=5), expected)  # over 8 chunks
    assert torch.allclose(plan.sum(dim=0), torch.full((37,), 1 / 37, dtype=torch.float64))  # one unit per sample


def test_sinkhorn_spreads_a_set_that_argmax_puts_in_one_cluster():
    prototypes = _unit(3, 4, seed=3)
    features = F.normalize(prototypes[0] + 0.3 * _unit(30, 4, seed=4), dim=1)  # all nearest to prototype 0
    assert torch.equal((features @ prototypes.t()).argmax(dim=1), torch.zeros(30, dtype=torch.long))
    labels = sinkhorn_labels(features, prototypes, 0.01, 2000)  # near the hard optimum: small eps, converged
    assert torch.bincount(labels, minlength=3).tolist() == [10, 10, 10]  # the equal partition N / K


def _model(*extra):
    cfg = load_config(["method=selav2", "backbone.kwargs.width=4", "batch_size=16", *SMALL_HEADS["selav2"], *extra])
    METHODS.get("selav2").validate_config(cfg, DATA)
    torch.manual_seed(0)
    return METHODS.get("selav2")(cfg, DATA).train()


def test_loss_is_the_cross_entropy_of_every_crop_against_its_images_label():
    model = _model()
    model.normalize_prototypes()
    model.assignments.copy_(torch.stack([torch.arange(64) % 8, (torch.arange(64) * 3) % 8]))  # [H, N]
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views, labels = model.make_views(images, torch.zeros(16, dtype=torch.long))
    indices = torch.arange(16) * 4  # [B]
    loss = float(model.training_losses(views, labels, indices)["loss"].detach())
    with torch.no_grad():
        z = [F.normalize(model.projection_head(model.backbone(v)), dim=1) for v in views]  # 4 crops
    t, heads = 0.1, []
    for j, head in enumerate(model.prototypes):
        scores = [(zi @ head.weight.t()).tolist() for zi in z]  # z . c, [B, K] per crop (unit rows c)
        targets = model.assignments[j, indices].tolist()
        terms = [-math.log(math.exp(s[b][targets[b]] / t) / sum(math.exp(v / t) for v in s[b]))
                 for s in scores for b in range(16)]
        heads.append(sum(terms) / len(terms))
    assert loss == pytest.approx(sum(heads) / len(heads), rel=1e-4)


def test_prototypes_are_unit_rows_and_the_memory_holds_the_steps_global_crops():
    model = _model()
    model.assignments.zero_()
    model.on_train_batch_start(None, 0)
    assert all(torch.allclose(h.weight.norm(dim=1), torch.ones(h.weight.shape[0])) for h in model.prototypes)
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    views, labels = model.make_views(images, torch.zeros(16, dtype=torch.long))
    model.training_losses(views, labels, torch.arange(16))
    with torch.no_grad():
        expected = torch.cat([model.project(views[0]), model.project(views[1])], dim=1)  # [B, 2d]
    stored, filled = model.memory.lookup(torch.arange(16))
    assert filled.all() and torch.allclose(stored, expected, atol=1e-5)


@pytest.mark.parametrize("override, message", [
    ("method.num_prototypes=[8,100]", r"method.num_prototypes=\[8, 100\] is not valid.*\[2, 64\]"),
    ("method.sinkhorn_epsilon=0", r"method.sinkhorn_epsilon must be > 0, got 0"),
    ("method.sinkhorn_iterations=0", r"method.sinkhorn_iterations and method.embed_batch_size must be >= 1, got 0"),
])
def test_bad_selav2_settings_get_one_line(override, message):
    cfg = load_config(["method=selav2", "batch_size=16", *SMALL_HEADS["selav2"], override])
    with pytest.raises(ConfigError, match=message) as err:
        METHODS.get("selav2").validate_config(cfg, DATA)
    assert "\n" not in str(err.value)
