"""LARS with LARC clipping (``optimizer.clip_lr``) against hand-computed steps."""

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.engine.lars import LARS
from contrastive.engine.lars_clip import ClippedLARS
from contrastive.engine.optim import build_optimizer, validate_optim_config

LR, ETA, WD, EPS = 0.1, 0.02, 0.01, 1e-8


def _toy():
    """Three parameters with set gradients: ``big`` (trust ratio above lr), ``small`` (below), ``bias``."""
    big = nn.Parameter(torch.tensor([3.0, 4.0]))       # ||w|| 5, ||g|| 0.001: trust 0.02*5/0.051 = 1.96 > lr
    small = nn.Parameter(torch.tensor([0.6, 0.8]))     # ||w|| 1, ||g|| 5: trust 0.02/5.01 = 0.004 < lr
    bias = nn.Parameter(torch.tensor([1.0, -2.0]))     # weight_decay 0: no adaptation
    big.grad, small.grad, bias.grad = torch.tensor([6e-4, 8e-4]), torch.tensor([3.0, 4.0]), torch.tensor([0.5, 0.25])
    groups = [{"params": [big, small], "weight_decay": WD}, {"params": [bias], "weight_decay": 0.0}]
    return (big, small, bias), groups


def _trust(w, g):
    return ETA * w.norm() / (g.norm() + WD * w.norm() + EPS)


def _step(opt_class):
    params, groups = _toy()
    before = [(p.detach().clone(), p.grad.clone()) for p in params]
    opt_class(groups, lr=LR, momentum=0.9, trust_coefficient=ETA).step()   # first step: the buffer is d_p
    return params, before


def test_clip_caps_the_layer_rate_at_lr_and_leaves_zero_decay_groups_alone():
    (big, small, bias), [(w_big, g_big), (w_small, g_small), (w_bias, g_bias)] = _step(ClippedLARS)
    assert _trust(w_big, g_big) > LR and _trust(w_small, g_small) < LR
    # Above the cap: min(trust / lr, 1) = 1, the step is lr * (g + wd * w), plain SGD with decay.
    assert torch.allclose(big, w_big - LR * (g_big + WD * w_big))
    assert torch.allclose(big, torch.tensor([3.0 - 0.1 * 0.0306, 4.0 - 0.1 * 0.0408]))
    # Below the cap: lr * (trust / lr) * (g + wd * w), the layer's rate is the trust ratio itself.
    assert torch.allclose(small, w_small - _trust(w_small, g_small) * (g_small + WD * w_small))
    # weight_decay 0: exactly lr * g, as lightly's LARS.
    assert torch.allclose(bias, w_bias - LR * g_bias)


def test_unclipped_step_is_lightlys_lars():
    (big, small, bias), [(w_big, g_big), (w_small, g_small), (w_bias, g_bias)] = _step(LARS)
    assert torch.allclose(big, w_big - LR * _trust(w_big, g_big) * (g_big + WD * w_big))
    assert torch.allclose(small, w_small - LR * _trust(w_small, g_small) * (g_small + WD * w_small))
    assert torch.allclose(bias, w_bias - LR * g_bias)


def test_always_clipped_is_sgd_with_momentum_and_decay_over_steps():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(3, 2))
    b = nn.Parameter(a.detach().clone())
    lars = ClippedLARS([{"params": [a], "weight_decay": WD}], lr=LR, momentum=0.9, trust_coefficient=1e6)
    sgd = torch.optim.SGD([{"params": [b], "weight_decay": WD}], lr=LR, momentum=0.9)
    for _ in range(3):
        grad = torch.randn(3, 2)
        a.grad, b.grad = grad.clone(), grad.clone()
        lars.step()
        sgd.step()
    assert torch.allclose(a, b, atol=1e-6)


def _cfg(clip_lr):
    return OmegaConf.create(dict(name="lars", lr=LR, momentum=0.9, weight_decay=WD, trust_coefficient=ETA,
                                 clip_lr=clip_lr, exclude_bias_and_norm=True, bias_norm_lr_ratio=1.0))


def test_build_optimizer_picks_the_clipped_lars_only_with_clip_lr():
    net = nn.Linear(2, 2)
    assert type(build_optimizer(_cfg(True), [net], LR)) is ClippedLARS
    assert type(build_optimizer(_cfg(False), [net], LR)) is LARS


def test_clip_lr_must_be_a_bool():
    sched = OmegaConf.create(dict(name="constant"))
    validate_optim_config(_cfg(True), sched, 1)
    with pytest.raises(ConfigError, match="optimizer.clip_lr must be true or false, got 'yes'"):
        validate_optim_config(_cfg("yes"), sched, 1)
