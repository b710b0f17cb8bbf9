"""The baselines' losses taken from lightly (Barlow Twins, SwAV, DINO) and our VICReg loss, each against its
formula written out here with explicit sums, on small tensors."""

import math

import pytest
import torch
from lightly.loss import BarlowTwinsLoss, DINOLoss, SwaVLoss, VICRegLoss

from contrastive.losses.redundancy import vicreg_loss


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_barlow_twins_loss_matches_its_formula():
    """Barlow Twins Eq. 1-2: C_ij = sum_b a_bi b_bj / (sqrt(sum_b a_bi^2) sqrt(sum_b b_bj^2)) of the batch-centred
    embeddings; loss = sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2."""
    a, b, lam = _randn(6, 3, seed=1), _randn(6, 3, seed=2), 0.005
    a, b = a - a.mean(0), b - b.mean(0)
    expected = 0.0
    for i in range(3):
        for j in range(3):
            c = float((a[:, i] * b[:, j]).sum() / (a[:, i].pow(2).sum().sqrt() * b[:, j].pow(2).sum().sqrt()))
            expected += (1 - c) ** 2 if i == j else lam * c ** 2
    # lightly standardises with BatchNorm's eps 1e-5, hence the tolerance.
    assert BarlowTwinsLoss(lambda_param=lam)(a, b).item() == pytest.approx(expected, rel=1e-4)


def test_vicreg_loss_matches_its_formula_and_lightlys_values_and_gradients():
    """VICReg Eq. 6 with the authors' code's scaling: lambda mean_{b,d}(z - z')^2 + mu [v(Z) + v(Z')] / 2 +
    nu [c(Z) + c(Z')], v(Z) = mean_j max(0, 1 - sqrt(Var(z_j) + eps)), c(Z) = sum_{i != j} Cov(Z)_ij^2 / d."""
    z_a, z_b = _randn(5, 4, seed=3) * 0.5, _randn(5, 4, seed=4) * 2.0  # some dimensions under std 1, some over
    n, d, eps = 5, 4, 1e-4

    def v(z):
        return sum(max(0.0, 1 - math.sqrt(float(z[:, j].var(unbiased=True)) + eps)) for j in range(d)) / d

    def c(z):
        z = z - z.mean(0)
        return sum(float((z[:, i] * z[:, j]).sum() / (n - 1)) ** 2 for i in range(d) for j in range(d) if i != j) / d

    invariance = float(((z_a - z_b) ** 2).sum()) / (n * d)
    expected = 25 * invariance + 25 * (v(z_a) + v(z_b)) / 2 + 1 * (c(z_a) + c(z_b))
    ours = vicreg_loss(z_a, z_b, 25.0, 25.0, 1.0)
    assert ours.item() == pytest.approx(expected, rel=1e-5)
    a1, b1 = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
    a2, b2 = z_a.clone().requires_grad_(), z_b.clone().requires_grad_()
    ours = vicreg_loss(a1, b1)
    reference = VICRegLoss()(a2, b2)
    (ours + reference).backward()
    assert ours.item() == pytest.approx(reference.item(), rel=1e-6)
    assert torch.allclose(a1.grad, a2.grad, atol=1e-6) and torch.allclose(b1.grad, b2.grad, atol=1e-6)


def _sinkhorn_written_out(scores, iterations=3, epsilon=0.05):
    """SwAV's Algorithm (its Appendix A.1): Q = exp(S^T / eps) normalised to sum 1, then rows to 1/K and
    columns to 1/B in turn; the codes are B x Q^T (each sample's row sums to 1)."""
    q = torch.exp(scores / epsilon).t().double()  # [K, B]
    q /= q.sum()
    k, b = q.shape
    for _ in range(iterations):
        q /= q.sum(dim=1, keepdim=True) * k
        q /= q.sum(dim=0, keepdim=True) * b
    return (q * b).t().float()  # [B, K]


def test_swav_loss_matches_the_swapped_prediction_formula():
    """SwAV Eq. 1-2 over multi-crop: each global crop i's Sinkhorn codes q_i are predicted from every other crop v,
    -sum_k q_ik log softmax(z_v / T)_k, averaged over the samples, the (crops - 1) predictors and the globals."""
    scores = [_randn(6, 5, seed=s) * 0.3 for s in range(4)]  # 2 global + 2 local crops, [B, K] each
    t = 0.1
    expected = 0.0
    for i in range(2):
        codes = _sinkhorn_written_out(scores[i])
        assert torch.allclose(codes.sum(dim=1), torch.ones(6), atol=1e-5)
        per_crop = [-(codes * torch.log_softmax(scores[v] / t, dim=1)).sum(dim=1).mean() for v in range(4) if v != i]
        expected += float(sum(per_crop)) / 3
    loss = SwaVLoss(temperature=t, sinkhorn_iterations=3, sinkhorn_epsilon=0.05)(scores[:2], scores[2:])
    assert loss.item() == pytest.approx(expected / 2, rel=1e-4)


def test_dino_loss_matches_its_formula_and_updates_the_centre():
    """DINO Eq. 1-4: H(P_t(x), P_s(x')) with P_t = softmax((g_t - c) / T_t), P_s = softmax(g_s / T_s) over every
    (teacher crop, student crop) pair of different crops, averaged; then c <- m c + (1 - m) mean(teacher outputs)."""
    teacher = [_randn(3, 4, seed=10 + j) for j in range(2)]  # 2 global crops, [B, K]
    student = [_randn(3, 4, seed=20 + v) for v in range(3)]  # the 2 globals + 1 local crop
    criterion = DINOLoss(output_dim=4, student_temp=0.1, center_momentum=0.9)
    centre = _randn(1, 4, seed=30) * 0.1
    criterion.center.copy_(centre)
    t_t = 0.04
    terms = []
    for j in range(2):
        p_t = torch.softmax((teacher[j] - centre) / t_t, dim=1)
        for v in range(3):
            if v != j:
                terms.append(float(-(p_t * torch.log_softmax(student[v] / 0.1, dim=1)).sum(dim=1).mean()))
    assert criterion(teacher, student, teacher_temp=t_t).item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    batch_centre = torch.cat(teacher).mean(dim=0, keepdim=True)  # [1, K]
    assert torch.allclose(criterion.center, 0.9 * centre + 0.1 * batch_centre, atol=1e-6)
