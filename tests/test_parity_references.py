"""The parity references of SwAV, DINO, Barlow Twins, VICReg and NNCLR (benchmarks/reproduce/parity/references).

Each reference is built from a :class:`Settings` made from our resolved config of its method; its
transform gives the right views, one step trains, and its loss on a fixed batch equals the method's
formula written out here (from the papers and the authors' code, not from lightly's or our losses).
The config values that reach the losses are set to unusual numbers, so a value that is not passed on,
or passed to the wrong place, changes the loss.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from benchmarks.reproduce.parity.references import load_all
from benchmarks.reproduce.parity.references.base import Settings
from contrastive.config.compose import load_config
from contrastive.core.errors import ConfigError

FEATURES = 8  # the tiny backbone's width
BATCH, EPOCHS, STEPS = 8, 2, 3
IMAGE, LOCAL = 16, 8  # global and local crop sides

#: Per method: small heads (fast) and unusual values for everything the loss reads.
OVERRIDES = {
    "barlowtwins": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.lambda_offdiag=0.03",
                    "optimizer.bias_norm_lr_ratio=0.024"],
    "vicreg": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.invariance_weight=3.0",
               "method.variance_weight=5.0", "method.covariance_weight=7.0"],
    "swav": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.num_prototypes=10",
             "method.temperature=0.2", "method.sinkhorn_epsilon=0.1", "method.sinkhorn_iterations=4",
             f"augment.multicrop.size={LOCAL}", "augment.multicrop.num_local=3"],
    "dino": ["method.head.hidden_dim=32", "method.head.bottleneck_dim=16", "method.head.output_dim=64",
             "method.student_temperature=0.2", "method.warmup_teacher_temperature=0.05", "method.teacher_temperature=0.07",
             "method.warmup_teacher_temperature_epochs=3", "method.center_momentum=0.8", "method.momentum.base=0.9",
             f"augment.multicrop.size={LOCAL}", "augment.multicrop.num_local=3"],
    "nnclr": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.predictor.hidden_dim=32",
              "method.temperature=0.2", "method.support_size=32", f"batch_size={BATCH}"],
}
METHODS = sorted(OVERRIDES)
pytestmark = [pytest.mark.usefixtures("one_thread"),  # tiny modules: one intra-op thread
              pytest.mark.filterwarnings("ignore:.*weight_norm.*:FutureWarning")]  # lightly's DINO head


@functools.lru_cache(maxsize=None)
def resolved(method: str) -> dict:
    """Our resolved config of ``method`` (composed once per method: composing takes a fraction of a second)."""
    cfg = load_config([f"method={method}", "dataset=synthetic", f"dataset.image_size={IMAGE}", *OVERRIDES[method]])
    return OmegaConf.to_container(cfg, resolve=True)


def settings(method: str, **augment) -> Settings:
    """The :class:`Settings` parity.py would fill from ``resolved(method)``, ``augment`` values replaced."""
    c = resolved(method)
    return Settings(batch_size=BATCH, epochs=EPOCHS, steps_per_epoch=STEPS, image_size=IMAGE, feature_dim=FEATURES,
                    mean=tuple(c["dataset"]["mean"]), std=tuple(c["dataset"]["std"]), method=c["method"],
                    optimizer=c["optimizer"], scheduler=c["scheduler"], augment={**c["augment"], **augment},
                    scaled_lr=float(c["optimizer"]["lr"]))


def tiny_backbone() -> nn.Module:
    """``[B, 3, H, W]`` -> ``[B, FEATURES]``."""
    return nn.Sequential(nn.Conv2d(3, FEATURES, 3, stride=2, padding=1), nn.BatchNorm2d(FEATURES), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def build(method: str, **augment):
    torch.manual_seed(0)
    return load_all()[method](tiny_backbone(), settings(method, **augment))


def num_views(method: str) -> int:
    return 2 + int(resolved(method)["augment"]["multicrop"]["num_local"])


def batch(method: str) -> list:
    g = torch.Generator().manual_seed(1)
    sides = [IMAGE, IMAGE] + [LOCAL] * (num_views(method) - 2)
    return [torch.randn(BATCH, 3, s, s, generator=g) for s in sides]


def test_every_method_has_a_reference():
    assert set(METHODS) <= set(load_all())


@pytest.mark.parametrize("method", METHODS)
def test_transform_gives_the_views(method):
    views = build(method).transform()(Image.fromarray(np.full((24, 20, 3), 90, dtype=np.uint8)))
    sides = [IMAGE, IMAGE] + [LOCAL] * (num_views(method) - 2)
    assert [tuple(v.shape) for v in views] == [(3, s, s) for s in sides]
    # Without colour jitter a grey image stays grey in every view, normalised with the dataset's mean and std.
    c = resolved(method)
    views = build(method, cj_prob=0.0).transform()(Image.fromarray(np.full((24, 20, 3), 90, dtype=np.uint8)))
    want = [(90 / 255 - m) / s for m, s in zip(c["dataset"]["mean"], c["dataset"]["std"])]
    assert all(torch.allclose(v, torch.tensor(want).view(3, 1, 1).expand_as(v), atol=1e-5) for v in views)


@pytest.mark.parametrize("method", METHODS)
def test_one_step_trains(method):
    ref = build(method)
    before = [p.detach().clone() for p in ref.backbone.parameters()]
    optimizer = torch.optim.SGD(ref.parameter_groups(), lr=0.1)
    loss = ref.training_loss(batch(method), 0)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    ref.after_optimizer_step(0)
    assert any(not torch.equal(b, p) for b, p in zip(before, ref.backbone.parameters()))


@pytest.mark.parametrize("method", ["barlowtwins", "vicreg", "nnclr", "dino"])
def test_per_view_solarisation_reaches_the_second_view_only(method):
    """``augment.per_view`` (BYOL's asymmetric views): solarising a bright grey image inverts only view 2."""
    per_view = [{"blur_prob": 0.0, "solarize_prob": 0.0}, {"blur_prob": 0.0, "solarize_prob": 1.0}]
    views = build(method, cj_prob=0.0, per_view=per_view).transform()(Image.fromarray(np.full((24, 20, 3), 200, np.uint8)))
    c = resolved(method)["dataset"]
    value = [[(x / 255 - m) / s for m, s in zip(c["mean"], c["std"])] for x in (200, 55)]  # 255 - 200: solarised
    for view, want in zip(views[:2], value):
        assert torch.allclose(view, torch.tensor(want).view(3, 1, 1).expand_as(view), atol=1e-5)


def test_bad_augment_is_refused():
    with pytest.raises(ConfigError, match="augment.solarize_prob"):
        build("nnclr", solarize_prob=0.2).transform()
    with pytest.raises(ConfigError, match="augment.solarize_prob"):
        build("dino", solarize_prob=0.2).transform()


# ---- the losses, written out ---------------------------------------------------------------------------------------


def standardise(z: torch.Tensor) -> torch.Tensor:
    """Each dimension to mean 0 and (biased) variance 1 over the batch (Barlow Twins' batch norm, eps 1e-5)."""
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)


def test_barlowtwins_loss_is_the_formula():
    ref, views = build("barlowtwins"), batch("barlowtwins")
    with torch.no_grad():
        z0, z1 = ref.embed(views[0]), ref.embed(views[1])
    c = standardise(z0).T @ standardise(z1) / BATCH  # [d, d] cross-correlation
    on = ((1 - c.diagonal()) ** 2).sum()  # Eq. 1: sum_i (1 - C_ii)^2
    off = (c ** 2).sum() - (c.diagonal() ** 2).sum()  # sum_i sum_{j != i} C_ij^2
    assert torch.allclose(ref.training_loss(views, 0), on + 0.03 * off, rtol=1e-5)


def test_barlowtwins_biases_and_norms_get_their_own_lr():
    ref = build("barlowtwins")
    weights, rest = ref.parameter_groups()
    lr = float(resolved("barlowtwins")["optimizer"]["lr"])
    assert "lr" not in weights and rest["lr"] == pytest.approx(lr * 0.024) and rest["weight_decay"] == 0.0
    assert all(p.ndim == 1 for p in rest["params"]) and all(p.ndim > 1 for p in weights["params"])


def test_vicreg_loss_is_the_formula():
    ref, views = build("vicreg"), batch("vicreg")
    with torch.no_grad():
        z0, z1 = ref.embed(views[0]), ref.embed(views[1])
    d = z0.shape[1]

    def variance(z):  # hinge on the std of each dimension, gamma 1, eps 1e-4
        return F.relu(1 - torch.sqrt(z.var(0) + 1e-4)).mean()

    def covariance(z):  # squared off-diagonal covariances / d
        zc = z - z.mean(0)
        cov = zc.T @ zc / (BATCH - 1)
        return ((cov ** 2).sum() - (cov.diagonal() ** 2).sum()) / d

    invariance = ((z0 - z1) ** 2).mean()
    # VICReg Eq. 6 with the authors' main_vicreg.py: the two variance terms are averaged, the covariances summed.
    want = 3.0 * invariance + 5.0 * (variance(z0) + variance(z1)) / 2 + 7.0 * (covariance(z0) + covariance(z1))
    assert torch.allclose(ref.training_loss(views, 0), want, rtol=1e-5)


def sinkhorn(scores: torch.Tensor, epsilon: float, iterations: int) -> torch.Tensor:
    """SwAV's codes ``[B, K]`` (the authors' main_swav.py): rows sum to 1/K, columns to 1/B, then x B."""
    q = torch.exp(scores / epsilon).T  # [K, B]
    q = q / q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / b
    return (q * b).T


def test_swav_loss_is_the_formula():
    ref, views = build("swav"), batch("swav")
    with torch.no_grad():
        layer = ref.prototypes.heads[0]
        prototypes = F.normalize(layer.weight, dim=1)  # [K, d] on the unit sphere (lightly's layer also has a bias)
        scores = [F.normalize(ref.projection_head(ref.backbone(v)), dim=1) @ prototypes.T + layer.bias for v in views]
    terms = []
    for i in range(2):  # codes from the global crops only
        q = sinkhorn(scores[i], 0.1, 4)
        swapped = [-(q * F.log_softmax(scores[v] / 0.2, dim=1)).sum(1).mean() for v in range(len(views)) if v != i]
        terms.append(sum(swapped) / (len(views) - 1))
    assert torch.allclose(ref.training_loss(views, 0), sum(terms) / 2, rtol=1e-5)


def test_swav_prototypes_are_frozen_in_the_first_epoch():
    ref, views = build("swav"), batch("swav")
    ref.training_loss(views, STEPS - 1).backward()  # last step of epoch 0
    assert ref.prototypes.heads[0].weight.grad is None and ref.projection_head.layers[0].weight.grad is not None
    ref.after_optimizer_step(STEPS - 1)
    assert ref.prototypes.heads[0].weight.requires_grad  # trainable between steps: parameter_groups sees them
    ref.training_loss(views, STEPS).backward()  # first step of epoch 1
    assert ref.prototypes.heads[0].weight.grad is not None


def dino_formula(ref, views, teacher_temperature: float, center: torch.Tensor) -> torch.Tensor:
    """DINO Eq. 1 over crop pairs: teacher (global crops, centred, sharpened) vs student (every other crop)."""
    with torch.no_grad():
        teacher = [ref.teacher_head(ref.teacher_backbone(v)) for v in views[:2]]
        student = [ref.projection_head(ref.backbone(v)) for v in views]
    terms = [-(F.softmax((teacher[i] - center) / teacher_temperature, dim=1)
               * F.log_softmax(student[j] / 0.2, dim=1)).sum(1).mean()
             for i in range(2) for j in range(len(views)) if j != i]
    return sum(terms) / len(terms), torch.stack(teacher).mean((0, 1))


def test_dino_loss_is_the_formula_with_centre_and_temperature_warmup():
    ref, views = build("dino"), batch("dino")
    want, teacher_mean = dino_formula(ref, views, 0.05, 0.0)  # epoch 0: the warm-up's first temperature, centre 0
    assert torch.allclose(ref.training_loss(views, 0), want, rtol=1e-5)
    center = 0.2 * teacher_mean  # centre momentum 0.8: c = 0.8 c + 0.2 mean(teacher)
    assert torch.allclose(ref.criterion.center.flatten(), center, atol=1e-6)
    want, _ = dino_formula(ref, views, 0.06, center)  # epoch 1 of a 3-epoch warm-up 0.05 -> 0.07
    assert torch.allclose(ref.training_loss(views, STEPS), want, rtol=1e-5)


def test_dino_teacher_follows_the_cosine_momentum_and_last_layer_is_frozen():
    ref, views = build("dino"), batch("dino")
    optimizer = torch.optim.SGD(ref.parameter_groups(), lr=0.5)
    ref.training_loss(views, 0).backward()
    last = ref.projection_head.last_layer
    assert all(p.grad is None for p in last.parameters()) and ref.backbone[0].weight.grad is not None
    optimizer.step()
    teacher, student = ref.teacher_backbone[0].weight.clone(), ref.backbone[0].weight.detach().clone()
    assert not torch.equal(teacher, student)
    ref.after_optimizer_step(0)
    assert all(p.requires_grad for p in ref.parameter_groups()[0]["params"]) and last.weight_v.requires_grad
    # lightly's cosine_schedule: base 0.9 at step 0 -> final 1 at the last step (EPOCHS x STEPS - 1); before step 1:
    m = 1.0 - (1.0 - 0.9) * (math.cos(math.pi * 1 / (EPOCHS * STEPS - 1)) + 1) / 2
    assert torch.allclose(ref.teacher_backbone[0].weight, m * teacher + (1 - m) * student, atol=1e-6)
    optimizer.zero_grad()
    ref.training_loss(views, STEPS).backward()  # epoch 1: the last layer trains
    assert any(p.grad is not None for p in last.parameters())


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent over the 2n rows of ``a`` and ``b`` (pairs a_i, b_i; every other row a negative)."""
    x = F.normalize(torch.cat([a, b]), dim=1)  # [2n, d]
    n = a.shape[0]
    logits = (x @ x.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(logits, positives)


def test_nnclr_loss_is_the_formula():
    ref, views = build("nnclr"), batch("nnclr")
    support = ref.memory_bank.bank.clone()  # [K, d]
    with torch.no_grad():
        (z0, p0), (z1, p1) = ref.embed(views[0]), ref.embed(views[1])

    def nearest(z):  # NNCLR Eq. 2: the support set's row of highest cosine similarity
        return support[(F.normalize(z, dim=1) @ F.normalize(support, dim=1).T).argmax(1)]

    want = 0.5 * (nt_xent(nearest(z0), p1, 0.2) + nt_xent(nearest(z1), p0, 0.2))
    assert torch.allclose(ref.training_loss(views, 0), want, rtol=1e-5)
    assert torch.allclose(ref.memory_bank.bank[:BATCH], z1, atol=1e-6)  # the second view's projections went in
