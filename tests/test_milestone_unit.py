"""Step schedules with milestones in optimizer steps, Gaussian input noise, and the Π-model preset."""

import pytest
import torch

from contrastive.augment.pipelines import build_augment
from contrastive.config.compose import load_config
from contrastive.core.errors import ConfigError
from contrastive.engine.optim import lr_multiplier, step_decay


def test_step_milestones_count_optimizer_steps_or_epochs():
    # unit=step: x0.2 from step 130,000 on, whatever the epoch length (hand-computed)
    assert step_decay(129_999, 460, [130_000], 0.2, "step") == 1.0
    assert step_decay(130_000, 460, [130_000], 0.2, "step") == pytest.approx(0.2)
    assert step_decay(5, 10, [3, 5], 0.5, "step") == pytest.approx(0.25)
    # unit=epoch: milestone 3 of 10-step epochs = step 30
    assert step_decay(29, 10, [3], 0.5, "epoch") == 1.0 and step_decay(30, 10, [3], 0.5, "epoch") == 0.5
    with pytest.raises(ConfigError, match="milestone_unit 'iteration'; valid choices: epoch, step"):
        step_decay(0, 10, [3], 0.5, "iteration")


def test_the_pimodel_preset_is_imclr_section_3_3():
    cfg = load_config(["experiment=imclr_pimodel_wrn28_2_cifar10"])
    assert (cfg.batch_size, cfg.method.labeled_per_batch, cfg.method.num_labels, cfg.method.consistency) == (200, 100, 4000, 20.0)
    assert (cfg.trainer.max_steps, cfg.optimizer.name, cfg.optimizer.lr, list(cfg.optimizer.betas), cfg.optimizer.weight_decay) == (
        200_000, "adamw", 3e-4, [0.9, 0.999], 0.0)
    assert (cfg.scheduler.milestone_unit, list(cfg.scheduler.milestones), cfg.scheduler.gamma) == ("step", [130_000], 0.2)
    assert cfg.augment.name == "supervised_noise" and cfg.augment.noise_std > 0
    assert lr_multiplier(cfg.scheduler, 130_000, 460, 200_000) == pytest.approx(0.2)
    with pytest.raises(ConfigError, match="milestone_unit"):
        load_config(["experiment=imclr_pimodel_wrn28_2_cifar10", "scheduler.milestone_unit=iteration"])


def test_gaussian_noise_augment_adds_noise_of_its_std_after_normalising():
    images = torch.full((64, 3, 16, 16), 128, dtype=torch.uint8)
    cfg = {"name": "supervised_noise", "padding": 0, "hflip_prob": 0.0, "noise_std": 0.5}
    out = build_augment(cfg, 16, (0.5,) * 3, (0.5,) * 3)(images)
    clean = build_augment({**cfg, "noise_std": 0.0}, 16, (0.5,) * 3, (0.5,) * 3)(images)
    assert float((out - clean).std()) == pytest.approx(0.5, rel=0.05)
    with pytest.raises(ConfigError, match="noise_std must be a finite number >= 0, got -1"):
        build_augment({**cfg, "noise_std": -1}, 16, (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ConfigError, match="unexpected keyword argument 'sigma'"):
        build_augment({**cfg, "sigma": 1}, 16, (0.5,) * 3, (0.5,) * 3)
