"""Losses under bf16 autocast equal their float32 values: every logits / correlation / prototype-score
matmul inside a loss runs with autocast off (contrastive/losses/precision.py), as each method calls it."""

import copy

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, DINOLoss, SwaVLoss

from contrastive.losses import clustering, memory_bank, nearest_neighbour, pairwise, redundancy, self_supervised, supcon
from contrastive.losses.precision import autocast_devices, float32

B, D, K, M = 16, 32, 24, 64


def _unit(*shape, seed):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def _labels(n, classes, seed):
    return torch.randint(0, classes, (n,), generator=torch.Generator().manual_seed(seed))


def _cases():
    """name -> (loss as the method calls it, inputs). Each call gets fresh copies (DINO's loss updates its centre)."""
    z0, z1, bank = _unit(B, D, seed=0), _unit(B, D, seed=1), _unit(M, D, seed=2)
    drawn = _labels(B * 8, M, 3).view(B, 8)
    protos = _unit(K, D, seed=4)
    scores = [clustering.prototype_scores(z, protos) for z in (z0, z1)]
    raw = torch.randn(B, D, generator=torch.Generator().manual_seed(5))
    return {
        "nt_xent_views": (pairwise.nt_xent_views, (z0, z1, 0.1)),
        "view_similarities": (lambda a, b: sum(s.sum() for s in pairwise.view_similarities(a, b)), (z0, z1)),
        "info_nce_with_queue": (self_supervised.info_nce_with_queue, (z0, z1, bank, 0.07)),
        "info_nce_with_drawn_negatives": (self_supervised.info_nce_with_drawn_negatives, (z0, z1, bank, drawn, 0.07)),
        "drawn_similarities": (lambda *a: self_supervised.drawn_similarities(*a).sum(), (z0, bank, drawn)),
        "batch_info_nce": (self_supervised.batch_info_nce, (z0, torch.cat([z1, bank]), 0.2)),
        "normalized_mse": (self_supervised.normalized_mse, (raw, z1)),
        "proto_nce": (clustering.proto_nce, (z0, protos, torch.rand(K, generator=torch.Generator().manual_seed(6)) * 0.5 + 0.1,
                                             _labels(B, K, 7), _labels(8, K, 8))),
        "prototype_scores+cross_entropy": (lambda s, p, t: clustering.prototype_cross_entropy(
            [clustering.prototype_scores(x, p) for x in s], t, 0.1), ([z0, z1], protos, _labels(B, K, 9))),
        "bank_info_nce": (memory_bank.bank_info_nce, (z0, z1, bank, drawn, 0.07)),
        "nnclr_info_nce": (nearest_neighbour.nnclr_info_nce, (z0, z1, 0.1)),
        "vicreg_loss": (redundancy.vicreg_loss, (raw, raw + z1)),
        "supcon_loss": (supcon.supcon_loss, (torch.stack([z0, z1], 1), _labels(B, 4, 10), 0.1)),
        "barlowtwins": (float32(BarlowTwinsLoss(lambda_param=5e-3, gather_distributed=True)), (raw, raw + z1)),
        "dino": (lambda t, s: float32(DINOLoss(output_dim=K, center_momentum=0.9))(t, s, teacher_temp=0.04),
                 ([x * 5 for x in scores], [x * 5 for x in scores])),
        "swav": (lambda h, l: float32(SwaVLoss(temperature=0.1))(h, l), (scores, scores[:1])),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_under_bf16_autocast_equals_its_float32_value(name):
    fn, args = CASES[name]
    reference = fn(*copy.deepcopy(args))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = fn(*copy.deepcopy(args))
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, reference, rtol=1e-5, atol=0), (name, float(mixed), float(reference))


def test_the_comparison_can_fail_without_the_helper():
    """The same NT-Xent without the helper (bf16 matmuls under autocast) is off by far more than 1e-5."""
    fn, args = CASES["nt_xent_views"]
    reference = fn(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = pairwise.nt_xent_views.__wrapped__(*args)
    assert not torch.allclose(mixed.float(), reference, rtol=1e-5, atol=0)


def test_helper_passes_through_outside_autocast_and_keeps_gradients():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.bfloat16)
    assert autocast_devices(a, [b]) == set() and autocast_devices(torch.zeros(1, device="meta")) == set()  # meta: no autocast
    out = float32(lambda x, y: x @ y.t())(a, b.float())  # outside autocast: called unchanged
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert autocast_devices(a, [b]) == {"cpu"}
        inside = float32(lambda x, y: x @ y.t())(a, b)  # inside: bf16 input cast to float32, float32 matmul
    assert inside.dtype == torch.float32 and torch.equal(inside, a @ b.float().t())
    inside.sum().backward()
    assert a.grad is not None and out.shape == (3, 5)
