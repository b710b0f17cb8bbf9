"""Registry, losses, optimizer groups, schedules, kNN and samplers."""

import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from torch import nn

from contrastive.data.base import RandomBatchSampler, class_balanced_subset
from contrastive.metrics.knn import knn_accuracy, knn_scores
from contrastive.engine.optim import build_optimizer, scaled_lr, split_decay_parameters, step_decay, warmup_cosine
from contrastive.core.registry import Registry
from omegaconf import OmegaConf


def test_registry_errors_list_choices_and_reject_duplicates():
    reg = Registry("thing")

    @reg.register("a")
    def a():
        return 1

    assert reg.create("a") == 1 and reg.names() == ["a"]
    with pytest.raises(ValueError, match="unknown thing 'b'; valid choices: a"):
        reg.get("b")
    with pytest.raises(ValueError, match="already registered"):

        @reg.register("a")
        def other():
            return 2


def nt_xent_by_formula(z0, z1, t):
    """SimCLR eq. (1): l(i,j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), averaged over all 2N anchors."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    n = z0.shape[0]
    sim = z @ z.T
    total = 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(math.exp(sim[i, k].item() / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sim[i, j].item() / t) / denom)
    return total / (2 * n)


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_ntxent_matches_formula(t):
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    assert NTXentLoss(temperature=t)(z0, z1).item() == pytest.approx(nt_xent_by_formula(z0, z1, t), rel=1e-5)


def test_lars_groups_exclude_bias_and_norm():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    decay, no_decay = split_decay_parameters([net])
    assert {id(p) for p in decay} == {id(net[0].weight), id(net[3].weight)}
    assert {id(p) for p in no_decay} == {id(net[0].bias), id(net[1].weight), id(net[1].bias), id(net[3].bias)}
    cfg = OmegaConf.create(dict(name="lars", momentum=0.9, weight_decay=1e-6, trust_coefficient=1e-3, clip_lr=False,
                                exclude_bias_and_norm=True, bias_norm_lr_ratio=1.0))
    opt = build_optimizer(cfg, [net], lr=0.5)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-6, 0.0]
    assert all(g["lr"] == 0.5 for g in opt.param_groups)
    # lightly's LARS leaves groups with weight_decay 0 unadapted: a bias moves by exactly lr * grad.
    bias_before = net[3].bias.detach().clone()
    net(torch.randn(2, 3, 3, 3)).sum().backward()
    grad = net[3].bias.grad.clone()
    opt.step()
    assert torch.allclose(net[3].bias, bias_before - 0.5 * grad)


def test_bias_norm_lr_ratio_gives_biases_and_norms_their_own_lr_through_the_schedule():
    """Barlow Twins' "0.2 for the weights and 0.0048 for the biases and batch normalization parameters": the
    no-decay group starts at lr x ratio and the per-step schedule keeps the ratio."""
    from contrastive.core.errors import ConfigError
    from contrastive.engine.optim import build_scheduler, validate_optim_config

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    cfg = OmegaConf.create(dict(name="sgd", momentum=0.9, nesterov=False, weight_decay=1e-6, exclude_bias_and_norm=True,
                                bias_norm_lr_ratio=0.024))
    opt = build_optimizer(cfg, [net], lr=0.2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.2, 0.0048])
    sched = build_scheduler(OmegaConf.create(dict(name="warmup_cosine", warmup_epochs=1, final_lr_ratio=0.0)), opt, 4, 8)
    for _ in range(5):
        opt.step()
        sched["scheduler"].step()
    weights, others = (g["lr"] for g in opt.param_groups)  # step 5 of 8, after 4 warm-up steps
    assert weights == pytest.approx(0.2 * 0.5 * (1 + math.cos(math.pi * 1 / 4)))
    assert others == pytest.approx(0.024 * weights)
    steady = OmegaConf.create(dict(name="constant"))
    for bad, message in [(dict(bias_norm_lr_ratio=0.0), "optimizer.bias_norm_lr_ratio must be > 0, got 0.0"),
                         (dict(exclude_bias_and_norm=False), "optimizer.bias_norm_lr_ratio=0.024 needs optimizer.exclude_bias_and_norm=true")]:
        with pytest.raises(ConfigError, match=message):
            validate_optim_config(OmegaConf.merge(cfg, dict(lr=0.2, **bad)), steady, 1)


def test_lr_scaling():
    assert scaled_lr(0.3, 512) == pytest.approx(0.6)
    assert scaled_lr(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert scaled_lr(0.1, 999, "none") == 0.1


def test_warmup_cosine_values():
    # 10 warm-up steps of 100: (step+1)/10 during warm-up, then 0.5(1+cos(pi*p)).
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(4, 100, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(55, 100, 10) == pytest.approx(0.5)  # halfway through the cosine
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine(55, 100, 10, final_ratio=0.1) == pytest.approx(0.55)
    assert step_decay(0, 10, [40, 60], 0.1) == 1.0
    assert step_decay(400, 10, [40, 60], 0.1) == pytest.approx(0.1)
    assert step_decay(650, 10, [40, 60], 0.1) == pytest.approx(0.01)


def test_knn_on_hand_made_toy_set():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = torch.tensor([0, 0, 1, 1])
    queries = torch.tensor([[1.0, 0.05], [0.05, 1.0]])
    scores = knn_scores(bank, labels, queries, num_classes=2, k=2, temperature=0.1)
    assert scores.argmax(1).tolist() == [0, 1]
    # with k=1 the vote weight is exp(cos/t) of the single nearest neighbour
    s1 = knn_scores(bank, labels, queries[:1], num_classes=2, k=1, temperature=0.5)
    cos = F.cosine_similarity(queries[:1], bank[:1]).item()
    assert s1[0, 0].item() == pytest.approx(math.exp(cos / 0.5), rel=1e-5) and s1[0, 1] == 0
    top1, top5 = knn_accuracy(bank, labels, queries, torch.tensor([0, 0]), 2, k=2)
    assert top1 == pytest.approx(50.0) and top5 == pytest.approx(100.0)
    with pytest.raises(ValueError, match="k=5"):
        knn_scores(bank, labels, queries, 2, k=5)


def test_batch_sampler_shards_and_is_reproducible():
    full = RandomBatchSampler(20, 4, seed=3, rank=0, world_size=1)
    r0 = RandomBatchSampler(20, 2, seed=3, rank=0, world_size=2)
    r1 = RandomBatchSampler(20, 2, seed=3, rank=1, world_size=2)
    for b, b0, b1 in zip(full, r0, r1):
        assert b == b0 + b1  # the 2-process global batch is the 1-process batch
    assert list(full) == list(RandomBatchSampler(20, 4, seed=3))
    full.set_epoch(1)
    assert list(full) != list(RandomBatchSampler(20, 4, seed=3))
    assert len(full) == 5


def test_class_balanced_subset():
    labels = torch.arange(10).repeat(20)  # 10 classes x 20
    idx = class_balanced_subset(labels, 0.1, seed=1)
    assert torch.bincount(labels[idx]).tolist() == [2] * 10
    assert torch.equal(idx, class_balanced_subset(labels, 0.1, seed=1))
    with pytest.raises(ValueError, match="label fraction"):
        class_balanced_subset(labels, 1.5)
