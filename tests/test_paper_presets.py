"""The baselines' paper presets compose to the values their authors' papers and released code state
(each row names its source), and the heads of MoCo v3 and SimCLR v2 are built as the released code
builds them."""

import functools

import pytest
import torch
from omegaconf import OmegaConf

from contrastive.augment.views import build_view_augments
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo

DECAY_ALL = {"optimizer.exclude_bias_and_norm": False}  # torch.optim.SGD(model.parameters(), weight_decay=...)

# preset -> {dotted key: the source's value}
PRESETS = {
    # facebookresearch/moco main_moco.py: RandomResizedCrop(224, scale=(0.2, 1.)) for v1 and --aug-plus (v2)
    "mocov1_imagenet": {"augment.min_scale": 0.2, **DECAY_ALL},
    "mocov2_imagenet": {"augment.min_scale": 0.2, "augment.blur_prob": 0.5, **DECAY_ALL},
    # salesforce/PCL main_pcl.py and facebookresearch/simsiam main_simsiam.py: the same crop and SGD
    "pclv2_imagenet": {"augment.min_scale": 0.2, **DECAY_ALL},
    "simsiam_imagenet": {"augment.min_scale": 0.2, **DECAY_ALL},
    # zhirongw/lemniscate.pytorch main.py: SGD over model.parameters()
    "insdis_imagenet": {"augment.min_scale": 0.2, **DECAY_ALL},
    # facebookresearch/swav main_swav.py / main_deepclusterv2.py: LARC around SGD(model.parameters())
    "swav_imagenet": {"optimizer.name": "lars", "optimizer.clip_lr": False, **DECAY_ALL},
    "deepclusterv2_imagenet": {"optimizer.name": "lars", "optimizer.clip_lr": False, **DECAY_ALL},
    # facebookresearch/moco-v3 CONFIG.md "ResNet-50, 100-epoch pre-training" (--moco-m-cos --crop-min=.2) and
    # main_moco.py's defaults; moco/builder.py MoCo_ResNet: a 2-layer projector
    "mocov3_imagenet": {"trainer.max_epochs": 100, "global_batch_size": 4096, "optimizer.name": "lars", "optimizer.lr": 0.6,
                        "optimizer.lr_scaling": "linear", "optimizer.weight_decay": 1e-6, "optimizer.momentum": 0.9,
                        "optimizer.trust_coefficient": 0.001, "optimizer.exclude_bias_and_norm": True,
                        "scheduler.warmup_epochs": 10, "method.momentum.base": 0.99, "method.momentum.final": 1.0,
                        "method.momentum.schedule": "cosine", "augment.min_scale": 0.2, "method.temperature": 1.0,
                        "method.projection.num_layers": 2, "method.projection.hidden_dim": 4096,
                        "method.projection.output_dim": 256, "method.predictor.hidden_dim": 4096},
    # facebookresearch/dino README's ResNet-50 command and main_dino.py's defaults
    "dino_imagenet": {"optimizer.name": "sgd", "optimizer.lr": 0.03, "optimizer.lr_scaling": "linear",
                      "optimizer.momentum": 0.9, "optimizer.weight_decay": 1e-4, "method.weight_decay_start": 1e-4,
                      "method.weight_decay_end": 1e-4, "optimizer.exclude_bias_and_norm": True, "global_batch_size": 512,
                      "trainer.max_epochs": 100, "scheduler.warmup_epochs": 10, "augment.min_scale": 0.14,
                      "augment.multicrop.num_local": 8, "augment.multicrop.size": 96,
                      "augment.multicrop.min_scale": 0.05, "augment.multicrop.max_scale": 0.14,
                      "method.head.batch_norm": False, "method.head.output_dim": 65536,
                      "method.teacher_temperature": 0.04, "method.warmup_teacher_temperature_epochs": 0,
                      "method.momentum.base": 0.996},
    # LARS without decay or adaptation for biases and norms: BYOL's byol_experiment.py, Barlow Twins' main.py,
    # VICReg's main_vicreg.py, SimCLR's tf2/model.py build_optimizer
    **{p: {"optimizer.name": "lars", "optimizer.exclude_bias_and_norm": True}
       for p in ("byol_imagenet", "barlowtwins_imagenet", "vicreg_imagenet", "simclr_imagenet_rn50", "simclrv2_imagenet")},
    # the CIFAR presets' sources: solo-learn symmetric_weak.yaml / asymmetric.yaml (0.08), MoCo's CIFAR demo
    # (RandomResizedCrop(32): torchvision's 0.08), SimSiam's released crop (0.2, as the preset says)
    "mocov1_cifar10": {"augment.min_scale": 0.08},
    "mocov2_cifar10": {"augment.min_scale": 0.08},
    "pclv2_cifar10": {"augment.min_scale": 0.08},
    "mocov3_cifar10": {"augment.min_scale": 0.08, "method.projection.num_layers": 2},
    "simsiam_cifar10": {"augment.min_scale": 0.2},
}


@functools.lru_cache(maxsize=None)
def _preset(name):
    return load_config([f"experiment={name}"])


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_paper_presets_compose_to_their_sources_values(preset):
    cfg = _preset(preset)
    got = {key: OmegaConf.select(cfg, key) for key in PRESETS[preset]}
    assert got == pytest.approx(PRESETS[preset]), preset


def test_dino_preset_blurs_local_crops_with_p_half_and_global_crops_as_byol():
    """DataAugmentationDINO: GaussianBlur 1.0 / 0.1 on the global crops (solarisation 0.2 on the second),
    p 0.5 on the local crops, which are not solarised."""
    cfg = _preset("dino_imagenet")
    views = build_view_augments(cfg.augment, 224, (0.5,) * 3, (0.25,) * 3)
    assert [a.blur_prob for a in views.augments] == [1.0, 0.1] + [0.5] * 8
    assert [a.solarize_prob for a in views.augments] == [0.0, 0.2] + [0.0] * 8


def _model(method, *overrides):
    load_builtin_methods()
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    cfg = load_config([f"method={method}", "backbone.kwargs.width=4", *overrides])
    return METHODS.get(method)(cfg, data).train(), cfg, data


def _layers(head):
    return [m for m in head.modules() if isinstance(m, (torch.nn.Linear, torch.nn.BatchNorm1d, torch.nn.ReLU))]


def test_mocov3_heads_are_the_released_resnet_code():
    """moco-v3 moco/builder.py MoCo_ResNet: projector _build_mlp(2, ...) = Linear-BN-ReLU-Linear-BN(affine=False),
    predictor _build_mlp(2, ..., last_bn=False) = Linear-BN-ReLU-Linear, every Linear without bias."""
    model, cfg, data = _model("mocov3", "method.projection.hidden_dim=32", "method.predictor.hidden_dim=32")
    proj, pred = _layers(model.projection_head), _layers(model.prediction_head)
    assert [type(m).__name__ for m in proj] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert [type(m).__name__ for m in pred] == ["Linear", "BatchNorm1d", "ReLU", "Linear"]
    assert all(m.bias is None for m in proj + pred if isinstance(m, torch.nn.Linear))
    assert proj[1].affine and not proj[-1].affine and pred[1].affine
    assert [type(m).__name__ for m in _layers(model.momentum[1])] == [type(m).__name__ for m in proj]
    z = model.projection_head(torch.randn(16, model.backbone.feature_dim))  # [16, 256]: standardised, no affine
    assert torch.allclose(z.mean(0), torch.zeros(256), atol=1e-5)
    three, _, _ = _model("mocov3", "method.projection.hidden_dim=32", "method.predictor.hidden_dim=32",
                         "method.projection.num_layers=3")  # the paper's text / ViT code
    assert sum(isinstance(m, torch.nn.Linear) for m in three.projection_head.modules()) == 3
    with pytest.raises(ConfigError, match="method.projection.num_layers must be >= 2"):
        METHODS.get("mocov3").validate_config(load_config(["method=mocov3", "method.projection.num_layers=1"]), data)


def test_simclrv2_head_ends_in_a_batch_norm_with_a_scale_and_no_shift():
    """google-research/simclr tf2/model.py ProjectionHead: the output LinearLayer has use_bias=False, so its
    BatchNormRelu has center=False (no beta) and scale=True (gamma); hidden layers keep both and a ReLU."""
    model, _, _ = _model("simclrv2", "method.projection.hidden_dim=32", "method.projection.output_dim=8")
    layers = _layers(model.projection_head)
    assert [type(m).__name__ for m in layers] == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "ScaleOnlyBatchNorm1d"]
    last = layers[-1]
    assert [name for name, _ in last.named_parameters()] == ["weight"] and "bias" not in last.state_dict()
    assert all(m.bias is None for m in layers if isinstance(m, torch.nn.Linear))
    with torch.no_grad():
        last.weight.copy_(torch.tensor([0.5, 2.0, 1.0, 3.0, 0.1, 1.5, 0.7, 1.2]))
    z = model.projection_head(torch.randn(64, model.backbone.feature_dim))  # [64, 8]
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)  # no shift: every dimension centred
    assert torch.allclose(z.std(0, unbiased=False), last.weight.detach(), rtol=1e-3)  # the scale gamma
