"""DeepCluster v2 and PCL v2: their losses against the formulas written out, PCL's concentration
against hand-computed values, DeepCluster v2's memory after a step, bad inputs, and an exact
resume (memory, centroids, assignments, momentum encoder, queue) through a crash at an epoch end."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.clustering.concentration import concentration
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from contrastive.clustering.kmeans import kmeans
from contrastive.losses.clustering import draw_negative_prototypes, proto_nce, prototype_cross_entropy
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


def _unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_deepcluster_cross_entropy_matches_its_formula():
    z, c = [_unit(4, 8, seed=1), _unit(4, 8, seed=2)], _unit(5, 8, seed=3)  # 2 crops of 4 images, 5 centroids
    targets, t = torch.tensor([0, 3, 3, 1]), 0.1
    expected = sum(-math.log(math.exp(float(zi[b] @ c[targets[b]]) / t) / sum(math.exp(float(zi[b] @ c[j]) / t)
                                                                            for j in range(5)))
                   for zi in z for b in range(4)) / 8
    assert float(prototype_cross_entropy([zi @ c.t() for zi in z], targets, t)) == pytest.approx(expected, rel=1e-5)


def test_proto_nce_matches_pcls_formula_over_the_batch_prototypes_and_r_negatives():
    # PCL's pcl/builder.py: logits of query b over [c_{s_1} .. c_{s_B}, c_{n_1} .. c_{n_r}], each / phi, target b.
    q, c = _unit(3, 8, seed=4), _unit(7, 8, seed=5)
    phi = torch.tensor([0.1, 0.2, 0.3, 0.15, 0.25, 0.05, 0.12])
    targets, negatives = torch.tensor([0, 2, 2]), torch.tensor([4, 1, 6])  # images 1 and 2 share prototype 2
    total = 0.0
    for b in range(3):
        columns = targets.tolist() + negatives.tolist()  # repeats included, as the released code
        logits = [float(q[b] @ c[j]) / float(phi[j]) for j in columns]
        total += -math.log(math.exp(logits[b]) / sum(math.exp(v) for v in logits))
    assert float(proto_nce(q, c, phi, targets, negatives)) == pytest.approx(total / 3, rel=1e-5)
    # A negative marked invalid leaves every denominator.
    valid = torch.tensor([True, False, True])
    total = 0.0
    for b in range(3):
        columns = targets.tolist() + [4, 6]
        logits = [float(q[b] @ c[j]) / float(phi[j]) for j in columns]
        total += -math.log(math.exp(logits[b]) / sum(math.exp(v) for v in logits))
    assert float(proto_nce(q, c, phi, targets, negatives, valid)) == pytest.approx(total / 3, rel=1e-5)


def test_negative_prototypes_are_r_distinct_prototypes_no_image_of_the_batch_uses():
    targets = torch.tensor([3, 7, 3, 0])
    seen = set()
    for seed in range(50):
        ids, valid = draw_negative_prototypes(12, targets, 5, torch.Generator().manual_seed(seed))
        assert ids.shape == (5,) and len(set(ids.tolist())) == 5 and valid.all()
        assert not set(ids.tolist()) & {0, 3, 7}
        seen |= set(ids.tolist())
    assert seen == set(range(12)) - {0, 3, 7}  # every unused prototype can be drawn
    ids, valid = draw_negative_prototypes(6, torch.tensor([3, 0, 3, 1]), 5, torch.Generator().manual_seed(0))
    assert len(set(ids.tolist())) == 5 and int(valid.sum()) == 3  # 3 unused prototypes: the draw takes all of them
    assert set(ids[valid].tolist()) == {2, 4, 5} and not set(ids[~valid].tolist()) - {0, 1, 3}


def test_pcl_kmeans_is_euclidean_with_restarts_and_spcl_keeps_spherical(monkeypatch):
    import faiss

    calls = []
    real = faiss.Kmeans
    monkeypatch.setattr(faiss, "Kmeans", lambda d, k, **kw: calls.append(kw) or real(d, k, **kw))
    model = _model("pclv2")
    _, prototypes, _ = model.cluster(_unit(64, 16, seed=6))
    assert calls and all(c["spherical"] is False and c["nredo"] == 5 and c["min_points_per_centroid"] == 10
                         and c["max_points_per_centroid"] == 1000 and c["niter"] == 20 for c in calls)  # main_pcl.py
    for centroids, _ in prototypes:
        assert torch.allclose(centroids.norm(dim=1), torch.ones(len(centroids)), atol=1e-5)  # normalised after
    calls.clear()
    kmeans(_unit(64, 16, seed=6), 4, niter=2)
    assert calls[0]["spherical"] is True and calls[0]["nredo"] == 1  # SPCL and DeepCluster v2 unchanged


def test_pcl_imagenet_preset_draws_pcls_r():
    cfg = load_config(["experiment=pclv2_imagenet"])
    assert cfg.method.num_negative_prototypes == 16384 == cfg.method.queue_size  # --pcl-r 16384


def test_concentration_against_hand_computed_values():
    # Cluster 0: two points at distance 0.6 and 0.8 from its centroid; cluster 1: three at 0.1 each.
    centroids = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    features = torch.tensor([[1.0, 0.6], [1.0, -0.8], [0.1, 1.0], [-0.1, 1.0], [0.0, 1.1]])
    assignments = torch.tensor([0, 0, 1, 1, 1])
    phi0, phi1 = 1.4 / (2 * math.log(2 + 10)), 0.3 / (3 * math.log(3 + 10))  # sum ||v - c|| / (Z log(Z + alpha))
    # The 10th-90th percentile clip of two values, then the rescale to mean tau = 0.2.
    low, high = phi1 + 0.1 * (phi0 - phi1), phi1 + 0.9 * (phi0 - phi1)
    expected = torch.tensor([high, low]) * 0.2 / ((high + low) / 2)
    assert torch.allclose(concentration(features, assignments, centroids, alpha=10.0, temperature=0.2), expected, rtol=1e-5)


def _model(name, *extra):
    cfg = load_config([f"method={name}", "backbone.kwargs.width=4", "batch_size=16", *SMALL_HEADS[name], *extra])
    METHODS.get(name).validate_config(cfg, DATA)
    torch.manual_seed(0)
    return METHODS.get(name)(cfg, DATA).train()


def test_deepcluster_memory_holds_the_steps_global_crop_projections():
    model = _model("deepclusterv2")
    model.assignments.zero_()
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views, labels = model.make_views(images, torch.zeros(16, dtype=torch.long))
    indices = torch.arange(16) * 4  # [B] sample ids 0, 4, ..., 60
    model.training_losses(views, labels, indices)
    with torch.no_grad():
        expected = torch.cat([model.project(views[0]), model.project(views[1])], dim=1)  # [B, 2d]
    stored, filled = model.memory.lookup(indices)
    assert filled.all() and torch.allclose(stored, expected, atol=1e-5)
    assert not model.memory.filled[1:4].any()  # other rows untouched


@pytest.mark.parametrize("name, override, message", [
    ("deepclusterv2", "method.num_prototypes=[8,100]", r"method.num_prototypes=\[8, 100\] is not valid.*\[2, 64\]"),
    ("deepclusterv2", "method.temperature=0", r"method.temperature must be > 0, got 0"),
    ("pclv2", "method.num_negative_prototypes=4", r"method.num_negative_prototypes=4 must be in \[1, 3\]"),
    ("pclv2", "method.concentration_alpha=-1", r"method.concentration_alpha must be > 0, got -1"),
    ("pcl", "method.kmeans.nredo=0", r"method.kmeans.nredo, method.embed_batch_size >= 1, got 0, 20, 0, 1024"),
    ("pcl", "method.kmeans.min_points_per_centroid=2000", r"min_points_per_centroid=2000 and max_points_per_centroid=1000"),
    ("pcl", "method.num_prototypes=[4,100]", r"method.num_prototypes=\[4, 100\] is not valid.*\[2, 64\]"),
    ("mocov2", "trainer.sync_batchnorm=true", r"method.shuffle_bn=true needs per-process BatchNorm: set trainer.sync_batchnorm=false"),
    ("pcl", "trainer.sync_batchnorm=true", r"method.shuffle_bn=true needs per-process BatchNorm"),
])
def test_bad_clustering_settings_get_one_line(name, override, message):
    cfg = load_config([f"method={name}", "batch_size=16", *SMALL_HEADS[name], override])
    with pytest.raises(ConfigError, match=message) as err:
        METHODS.get(name).validate_config(cfg, DATA)
    assert "\n" not in str(err.value)


def test_pcl_v1_loss_is_moco_v1_infonce_plus_protonce_written_out():
    """PCL (v1) through its own training_losses: MoCo's InfoNCE of the linear head's query against its key and
    the queue, plus the mean over the clusterings of ProtoNCE (pcl/builder.py), each written out."""
    model = _model("pcl")
    linear = [m for m in model.projection_head.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1  # MoCo v1's fc, no hidden layer
    t, r = float(model.cfg.method.temperature), int(model.cfg.method.num_negative_prototypes)
    # Batch of 16 using prototypes {0, 1} of K=4 and {0..5} of K=8: the r=2 negatives are {2, 3} and {6, 7}.
    model.assignments.copy_(torch.stack([torch.arange(64) % 2, torch.arange(64) % 6]))
    for j in range(len(model.ks)):
        centroids, phi = model.prototypes(j)
        centroids.copy_(_unit(*centroids.shape, seed=10 + j))
        phi.copy_(torch.linspace(0.1, 0.3, len(phi)))
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    views, labels = model.make_views(images, torch.zeros(16, dtype=torch.long))
    indices = torch.arange(16)
    with torch.no_grad():
        losses = model.training_losses(views, labels, indices)
        q = F.normalize(model.projection_head(model.backbone(views[0])), dim=1)
        k = F.normalize(model.momentum[1](model.momentum[0](views[1])), dim=1)
        queue = model.queue.keys
        instance = sum(-math.log(math.exp(float(q[b] @ k[b]) / t) / (math.exp(float(q[b] @ k[b]) / t) + sum(
            math.exp(float(q[b] @ n) / t) for n in queue))) for b in range(16)) / 16
        proto = 0.0
        for j, negatives in enumerate(([2, 3], [6, 7])):
            centroids, phi = model.prototypes(j)
            columns = model.assignments[j, indices].tolist() + negatives  # the batch's prototypes, then r negatives
            for b in range(16):
                logits = [float(q[b] @ centroids[c]) / float(phi[c]) for c in columns]
                proto += -math.log(math.exp(logits[b]) / sum(math.exp(v) for v in logits)) / 16 / len(model.ks)
    assert r == 2
    assert float(losses["instance"]) == pytest.approx(instance, rel=1e-4)
    assert float(losses["prototype"]) == pytest.approx(proto, rel=1e-4)
    assert float(losses["loss"]) == pytest.approx(instance + proto, rel=1e-4)
