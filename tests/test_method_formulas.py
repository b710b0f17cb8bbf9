"""Each baseline's loss through its own ``training_losses``, built from its YAML (small heads), against the
formula written out here with the values read from ``cfg``: once at the method's defaults and once with every
formula value moved off its default, so a method that ignores a configured value (and falls back to the
library's default, often the same number) fails. The library losses alone: tests/test_baseline_losses.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from tests.conftest import SMALL_HEADS
from tests.test_baseline_losses import _sinkhorn_written_out

load_builtin_methods()
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
B = 8


def _step(name, *extra):
    """``(model, views, loss)``: the method from its YAML defaults plus ``extra``, one ``training_losses`` call."""
    cfg = load_config([f"method={name}", "backbone.kwargs.width=4", f"batch_size={B}", *SMALL_HEADS[name], *extra])
    METHODS.get(name).validate_config(cfg, DATA)
    torch.manual_seed(0)
    model = METHODS.get(name)(cfg, DATA).train()
    images = torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    views, labels = model.make_views(images, torch.zeros(B, dtype=torch.long))
    return model, views, lambda: model.training_losses(views, labels, torch.arange(B))["loss"]


def _no_grad(fn, *views):
    with torch.no_grad():
        return [fn(v).float() for v in views]


# ---------------------------------------------------------------- Barlow Twins
@pytest.mark.parametrize("extra", [[], ["method.lambda_offdiag=0.3"]], ids=["default", "lambda"])
def test_barlow_twins_step_is_its_formula_with_the_configured_lambda(extra):
    """Eq. 1: sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2, C the cross-correlation of the batch-standardised
    projections of the two views."""
    model, views, step = _step("barlowtwins", *extra)
    loss = float(step().detach())
    lam = float(model.cfg.method.lambda_offdiag)
    z = _no_grad(lambda v: model.projection_head(model.backbone(v)), *views[:2])
    a, b = ((x - x.mean(0)) / x.std(0, unbiased=False) for x in z)  # [B, d]
    c = a.t() @ b / B  # [d, d]
    expected = float(((1 - c.diagonal()) ** 2).sum() + lam * (c ** 2).sum() - lam * (c.diagonal() ** 2).sum())
    assert loss == pytest.approx(expected, rel=1e-3)  # lightly standardises with BatchNorm's eps 1e-5


# ---------------------------------------------------------------- SimCLR (NT-Xent)
@pytest.mark.parametrize("extra", [[], ["method.temperature=0.2"]], ids=["default", "temperature"])
def test_simclr_step_is_nt_xent_at_the_configured_temperature(extra):
    """NT-Xent: l(i, j) = -log exp(s_ij / T) / sum_{k != i} exp(s_ik / T) over the 2B cosine similarities,
    averaged over all 2B views."""
    model, views, step = _step("simclr", *extra)
    loss = float(step().detach())
    t = float(model.cfg.method.temperature)
    # Both views in one batch (BatchNorm over the 2B views), as google-research/simclr's model.py runs them.
    z = F.normalize(_no_grad(lambda v: model.projection_head(model.backbone(v)), torch.cat(views[:2]))[0], dim=1)  # [2B, d]
    s = z @ z.t()
    total = 0.0
    for i in range(2 * B):
        j = (i + B) % (2 * B)
        total += -math.log(math.exp(s[i, j] / t) / sum(math.exp(s[i, k] / t) for k in range(2 * B) if k != i))
    assert loss == pytest.approx(total / (2 * B), rel=1e-4)


# ---------------------------------------------------------------- MoCo v3
@pytest.mark.parametrize("extra", [[], ["method.temperature=0.5"]], ids=["default", "temperature"])
def test_mocov3_step_is_its_symmetrised_infonce_scaled_by_2t(extra):
    """Alg. 1: ctr(q, k) = CrossEntropy(q k^T / T, arange(B)) x 2T; loss = ctr(q1, k2) + ctr(q2, k1), q from the
    predictor, k from the momentum encoder, all l2-normalised. T is never 1 here, so /T and 2T both show."""
    model, views, step = _step("mocov3", *extra)
    loss = float(step().detach())
    t = float(model.cfg.method.temperature)
    assert t != 1.0
    q = [F.normalize(x, dim=1) for x in _no_grad(lambda v: model.prediction_head(model.projection_head(model.backbone(v))), *views[:2])]
    k = [F.normalize(x, dim=1) for x in _no_grad(lambda v: model.momentum[1](model.momentum[0](v)), *views[:2])]

    def ctr(qq, kk):
        logits = qq @ kk.t() / t
        return sum(-math.log(math.exp(logits[i, i]) / float(logits[i].exp().sum())) for i in range(B)) / B * 2 * t

    assert loss == pytest.approx(ctr(q[0], k[1]) + ctr(q[1], k[0]), rel=1e-4)


# ---------------------------------------------------------------- SwAV
SWAV_OFF_DEFAULT = ["method.temperature=0.3", "method.sinkhorn_epsilon=0.1", "method.sinkhorn_iterations=5"]


@pytest.mark.parametrize("extra", [[], SWAV_OFF_DEFAULT], ids=["default", "temperature-epsilon-iterations"])
def test_swav_step_is_the_swapped_prediction_over_unit_prototypes(extra):
    """Eq. 1-3: each global crop's Sinkhorn codes (cfg's epsilon and iterations) predicted from every other crop,
    -sum_k q_k log softmax(z . c_k / T), z and the prototypes c l2-normalised. The prototypes start off the unit
    sphere here: the step normalises them before its forward, so the loss is that of unit prototypes."""
    model, views, step = _step("swav", *extra)
    with torch.no_grad():
        model.prototypes.weight.mul_(torch.linspace(0.5, 3.0, model.prototypes.weight.shape[0]).unsqueeze(1))
    unit = F.normalize(model.prototypes.weight.detach(), dim=1).clone()  # [K, d]
    loss = float(step().detach())
    m = model.cfg.method
    t, eps, iters = float(m.temperature), float(m.sinkhorn_epsilon), int(m.sinkhorn_iterations)
    scores = [F.normalize(x, dim=1) @ unit.t() for x in _no_grad(lambda v: model.projection_head(model.backbone(v)), *views)]
    expected = 0.0
    for i in range(2):
        codes = _sinkhorn_written_out(scores[i], iters, eps)  # [B, K]
        others = [v for v in range(len(views)) if v != i]
        expected += sum(float(-(codes * torch.log_softmax(scores[v] / t, dim=1)).sum(1).mean()) for v in others) / len(others)
    assert len(views) == 4  # 2 global + the default 2 local crops
    assert loss == pytest.approx(expected / 2, rel=1e-4)
    assert torch.allclose(model.prototypes.weight.norm(dim=1), torch.ones(8), atol=1e-6)


def test_swav_prototypes_are_bias_free_and_checkpointed_under_their_prefix():
    """SwAV's src/resnet50.py: nn.Linear(output_dim, nmb_prototypes, bias=False)."""
    model, _, _ = _step("swav")
    assert model.prototypes.bias is None
    assert sorted(k for k in model.state_dict() if k.startswith("prototypes.")) == ["prototypes.weight"]
    old = dict(model.state_dict())  # a checkpoint of lightly's SwaVPrototypes (heads.0.weight and .bias) still loads
    old["prototypes.heads.0.weight"], old["prototypes.heads.0.bias"] = old.pop("prototypes.weight") + 1.0, torch.ones(8)
    model.load_state_dict(old)
    assert torch.equal(model.prototypes.weight, old["prototypes.heads.0.weight"])


# ---------------------------------------------------------------- DINO
DINO_OFF_DEFAULT = ["method.student_temperature=0.2", "method.warmup_teacher_temperature=0.05", "method.center_momentum=0.5"]


@pytest.mark.parametrize("extra", [[], DINO_OFF_DEFAULT], ids=["default", "temperatures-centre"])
def test_dino_step_is_its_cross_entropy_and_updates_the_centre_at_the_configured_rate(extra):
    """Eq. 1-4: H(P_t, P_s) over every (teacher global crop, other student crop) pair, averaged, with
    P_t = softmax((g_t - c) / T_t) (T_t at epoch 0: the warm-up's start), P_s = softmax(g_s / T_s); then
    c <- m c + (1 - m) mean(teacher outputs)."""
    model, views, step = _step("dino", *extra)
    m = model.cfg.method
    assert int(m.warmup_teacher_temperature_epochs) > 0  # epoch 0: the teacher temperature is the warm-up's start
    t_s, t_t, rate = float(m.student_temperature), float(m.warmup_teacher_temperature), float(m.center_momentum)
    centre = torch.randn(1, int(m.head.output_dim), generator=torch.Generator().manual_seed(2)) * 0.5
    model.criterion.center.copy_(centre)
    loss = float(step().detach())
    teacher = _no_grad(lambda v: model.momentum[1](model.momentum[0](v)), *views[:2])  # 2 x [B, K]
    student = _no_grad(lambda v: model.projection_head(model.backbone(v)), *views)  # V x [B, K]
    terms = []
    for j in range(2):
        p_t = torch.softmax((teacher[j] - centre) / t_t, dim=1)
        terms += [float(-(p_t * torch.log_softmax(student[v] / t_s, dim=1)).sum(1).mean()) for v in range(len(views)) if v != j]
    assert loss == pytest.approx(sum(terms) / len(terms), rel=1e-4)
    batch_centre = torch.cat(teacher).mean(dim=0, keepdim=True)  # [1, K]
    assert torch.allclose(model.criterion.center, rate * centre + (1 - rate) * batch_centre, atol=1e-5)


# ---------------------------------------------------------------- DeepCluster v2 (SwAV's prototype pattern)
def test_deepclusterv2_classifies_against_bias_free_unit_centroids():
    """main_deepclusterv2.py copies l2-normalised centroids into bias-free prototype layers: here the classifier
    is the centroids alone (no bias, not learned), unit-norm as the clustering returns them."""
    model, _, _ = _step("deepclusterv2")
    model.memory.update(torch.arange(64), torch.randn(64, 32, generator=torch.Generator().manual_seed(3)))
    _, centroids, _ = model.cluster_memory()
    assert [tuple(c.shape) for c in centroids] == [(8, 16), (8, 16)]
    assert all(torch.allclose(c.norm(dim=1), torch.ones(8), atol=1e-5) for c in centroids)
    assert not any("bias" in k for k in model.state_dict() if k.startswith("centroids"))
    assert not any(p.requires_grad for p in model.centroids)
