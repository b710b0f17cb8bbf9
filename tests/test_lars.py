"""LARS without host syncs (contrastive/engine/lars.py) takes lightly's steps, and its state dict is lightly's."""

import pytest
import torch
from lightly.utils.lars import LARS as LightlyLARS
from torch import nn

from contrastive.engine.host_syncs import HostSyncCounter
from contrastive.engine.lars import LARS


def _params(seed=0):
    """A weight, a weight of zeros (no adaptation: ||w|| = 0), a weight whose gradient is zero and a bias."""
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(4, 3, generator=g)), nn.Parameter(torch.zeros(3, 2)),
            nn.Parameter(torch.randn(5, generator=g)), nn.Parameter(torch.randn(3, generator=g))]


def _groups(params):
    return [{"params": params[:3], "weight_decay": 1e-2}, {"params": params[3:], "weight_decay": 0.0}]


def _run(optimizer_class, steps=4, **kwargs):
    params = _params()
    optimizer = optimizer_class(_groups(params), lr=0.3, trust_coefficient=0.02, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.zeros_like(p) if i == 2 else torch.randn(p.shape, generator=g)
        optimizer.step()
    return params, optimizer


@pytest.mark.parametrize("kwargs", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True), dict(momentum=0.9, dampening=0.1),
                                    dict(momentum=0.0)], ids=["momentum", "nesterov", "dampening", "plain"])
def test_steps_are_lightlys(kwargs):
    ours, ours_opt = _run(LARS, **kwargs)
    theirs, theirs_opt = _run(LightlyLARS, **kwargs)
    assert not torch.equal(ours[0], _params()[0])  # it moved
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(ours_opt.state.values(), theirs_opt.state.values()):
        torch.testing.assert_close(a["momentum_buffer"], b["momentum_buffer"], rtol=1e-6, atol=1e-7)


def test_state_dicts_load_both_ways():
    ours, ours_opt = _run(LARS, momentum=0.9)
    theirs, theirs_opt = _run(LightlyLARS, momentum=0.9)
    restored = LARS(_groups(_params()), lr=0.3, trust_coefficient=0.02, momentum=0.9)
    restored.load_state_dict(theirs_opt.state_dict())
    assert restored.state_dict()["param_groups"] == theirs_opt.state_dict()["param_groups"]
    LightlyLARS(_groups(_params()), lr=0.3, momentum=0.9).load_state_dict(ours_opt.state_dict())


@pytest.mark.parametrize("optimizer_class, syncs", [(LARS, 0), (LightlyLARS, 6)], ids=["ours", "lightly"])
def test_a_step_makes_no_host_sync(optimizer_class, syncs):
    """lightly's `if p_norm != 0 and g_norm != 0` reads the 2 norms of each of the 3 decayed weights from
    the device: 6 syncs a step, none in ours."""
    optimizer = _run(optimizer_class, steps=1, momentum=0.9)[1]
    with HostSyncCounter() as counter:
        optimizer.step()
    assert counter.total == syncs and counter.kinds["scalar"] == syncs, counter.summary()
