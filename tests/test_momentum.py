"""The momentum teacher: schedule values, the EMA update, freezing and checkpointing of the copy."""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from contrastive.config.compose import load_config
from contrastive.core.errors import ConfigError
from contrastive.engine.method import DataInfo
from contrastive.engine.momentum import MomentumCopy, MomentumMethod, cosine_momentum
from contrastive.engine.optim import build_optimizer

DATA = DataInfo(num_classes=10, image_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), num_train=64)


def test_cosine_momentum_hand_computed():
    # tau = 1 - (1 - 0.99) * (cos(pi k / K) + 1) / 2 with K = 100
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)  # cos 0 = 1: (1 + 1) / 2 = 1
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)  # cos(pi/2) = 0: 1 - 0.01 / 2
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)  # cos(pi) = -1
    assert cosine_momentum(25, 100, 0.996, final=0.9) == pytest.approx(0.9 - (0.9 - 0.996) * (math.sqrt(0.5) + 1) / 2)
    assert cosine_momentum(500, 100, 0.99) == pytest.approx(1.0)  # past the end: stays at final


def _online():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)), nn.Linear(3, 2)


def test_update_is_the_ema_formula_and_copies_buffers():
    a, b = _online()
    ema = MomentumCopy(a, b)
    before = [p.clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in list(a.parameters()) + list(b.parameters()):
            p.add_(torch.randn_like(p))
    a.train()(torch.randn(8, 4))  # moves the BN running stats of the online module
    tau = 0.9
    ema.update([a, b], tau)
    online = list(a.parameters()) + list(b.parameters())
    for p_m_old, p_m, p_o in zip(before, ema.parameters(), online):
        assert torch.allclose(p_m, tau * p_m_old + (1 - tau) * p_o, atol=1e-6)
    assert torch.equal(ema[0][1].running_mean, a[1].running_mean)
    assert int(ema[0][1].num_batches_tracked) == int(a[1].num_batches_tracked) == 1


def test_copy_gets_no_gradient_and_state_dict_round_trips():
    a, b = _online()
    ema = MomentumCopy(a, b)
    assert all(not p.requires_grad for p in ema.parameters())
    assert not ema[1](ema[0](torch.randn(5, 4))).requires_grad  # no graph through the copy
    ema.update([a, b], 0.5)
    restored = MomentumCopy(*_online())
    restored.load_state_dict(ema.state_dict())
    for x, y in zip(ema.state_dict().values(), restored.state_dict().values()):
        assert torch.equal(x, y)


class _Tiny(MomentumMethod):
    def __init__(self, cfg, data):
        super().__init__(cfg, data)
        self.head = nn.Linear(int(self.backbone.feature_dim), 8)
        self.init_momentum(self.backbone, self.head)
        self.updates = []

    def training_losses(self, views, labels, indices):
        return {"loss": self.head(self.backbone(views[0])).pow(2).mean()}

    def on_train_batch_end(self, outputs, batch, batch_idx):
        before = self._updated_at_step
        super().on_train_batch_end(outputs, batch, batch_idx)
        if self._updated_at_step != before:
            self.updates.append((self.global_step, self.current_momentum()))


def _cfg(*extra):
    cfg = load_config(["backbone.kwargs.width=4"])
    OmegaConf.set_struct(cfg, False)
    cfg.method.momentum = OmegaConf.create({"base": 0.99, "final": 1.0, "schedule": "cosine"})
    for item in extra:
        key, value = item.split("=")
        OmegaConf.update(cfg, key, value)
    return cfg


def test_copy_is_not_in_the_optimizer_and_constant_schedule():
    model = _Tiny(_cfg(), DATA)
    optimizer = build_optimizer(model.cfg.optimizer, model.trainable_modules(), 0.1)
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in model.momentum.parameters()}
    assert {id(p) for p in model.head.parameters()} <= in_optimizer
    assert any(k.startswith("momentum.copies.1.") for k in model.state_dict())
    assert _Tiny(_cfg("method.momentum.schedule=constant"), DATA).current_momentum() == 0.99


@pytest.mark.parametrize("override, message", [
    ("method.momentum.base=1.5", "method.momentum.base=1.5 is outside [0, 1]"),
    ("method.momentum.final=-0.1", "method.momentum.final=-0.1 is outside [0, 1]"),
    ("method.momentum.schedule=linear", "method.momentum.schedule='linear' is unknown; valid choices: cosine, constant"),
])
def test_bad_momentum_settings_are_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        _Tiny.validate_config(_cfg(override), DATA)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_updates_once_per_optimizer_step_under_accumulation(tmp_path):
    import pytorch_lightning as pl

    model = _Tiny(_cfg("scheduler.warmup_epochs=0"), DATA)
    images = torch.randint(0, 256, (32, 3, 16, 16), dtype=torch.uint8)  # [N, 3, S, S]
    data = torch.utils.data.TensorDataset(images, torch.zeros(32, dtype=torch.long), torch.arange(32))
    loader = torch.utils.data.DataLoader(data, batch_size=4)  # 8 batches
    trainer = pl.Trainer(max_epochs=1, accumulate_grad_batches=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, loader)
    assert [s for s, _ in model.updates] == [1, 2, 3, 4]  # 8 batches / 2 accumulated = 4 optimizer steps
    assert [t for _, t in model.updates] == pytest.approx([cosine_momentum(k, 4, 0.99) for k in (1, 2, 3, 4)])
    assert all(p.grad is None for p in model.momentum.parameters())
