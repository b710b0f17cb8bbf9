"""ImCLR as the paper built it: Table 10 parameter counts, the flatten head, the
AutoAugment order and Table 9's "Base + flips" (CPU, small inputs)."""

import copy
import functools
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from contrastive.backbones.factory import create_backbone
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.engine.method import DataInfo
from contrastive.core.registry import METHODS

load_builtin_methods()
ImCLR = METHODS.get("imclr")
ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@functools.lru_cache(maxsize=None)
def _composed(groups: tuple):
    return load_config(list(groups))


def _model(*overrides, size=32, classes=10):
    groups = tuple(o for o in overrides if "." not in o.split("=", 1)[0])
    cfg = copy.deepcopy(_composed(("method=imclr", *groups)))
    values = [o for o in overrides if o not in groups]
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(values)) if values else cfg
    data = DataInfo(num_classes=classes, image_size=size, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    ImCLR.validate_config(cfg, data)
    torch.manual_seed(0)
    return ImCLR(cfg, data)


# The paper's Appendix Table 10, shared with benchmarks/reproduce/imclr/imclr_params.py (which prints the table).
TABLE10 = yaml.safe_load((ROOT / "tests" / "data" / "imclr_table10.yaml").read_text())


@pytest.mark.parametrize("entry, k, paper", [pytest.param(e, k, n, id=f"{e['experiment']}-k{k}")
                                             for e in TABLE10 for k, n in e["params"].items()])
def test_table10_count_is_reproduced_exactly(entry, k, paper):
    cfg = copy.deepcopy(_composed((f"experiment={entry['preset']}",)))
    cfg.method.k = k
    data = DataInfo(num_classes=entry["classes"], image_size=entry["image_size"], mean=(0.5,) * 3, std=(0.5,) * 3,
                    num_train=50_000)
    # Shapes only: built on the meta device, without ImCLR's forward probe of one k*S x S input.
    with mock.patch.object(ImCLR, "_check_backbone_input", lambda self: None), torch.device("meta"):
        model = METHODS.get(cfg.method.name)(cfg, data)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == paper  # Keras' "Trainable params"


def test_flatten_head_gives_the_top_and_the_bottom_image_their_own_weights():
    model = _model("backbone=resnet20").eval()  # the paper's RN20: AveragePooling2D(8) + Flatten
    assert model.backbone.grid == (2, 1) and model.classifier.in_features == 2 * 256
    flat = _model("backbone=resnet20", "method.k=1").eval()
    assert flat.classifier.in_features == 256  # one-hot input: 1x1 map
    top, bottom = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)
    x = torch.cat([top, bottom], dim=2)  # [1, 3, 64, 32]
    with torch.no_grad():
        fmap = model.backbone.features(x)  # [1, 256, 16, 8]
        pooled = model.backbone.pooled_map(x)  # [1, 256, 2, 1]
        assert torch.allclose(pooled[:, :, 0, 0], fmap[:, :, :8].mean((2, 3)), atol=1e-5)  # rows of the top image
        assert torch.allclose(pooled[:, :, 1, 0], fmap[:, :, 8:].mean((2, 3)), atol=1e-5)  # rows of the bottom image
        assert torch.allclose(model.backbone(x), pooled.flatten(1))
    logits = model.classifier(model.backbone(x))
    logits[0, 3].backward()
    grad = model.classifier.weight.grad.view(10, 256, 2)  # [C, channels, slot]
    assert torch.allclose(grad[3, :, 0], pooled[0, :, 0, 0]) and torch.allclose(grad[3, :, 1], pooled[0, :, 1, 0])
    assert not torch.allclose(grad[3, :, 0], grad[3, :, 1])  # different weights see different images
    swapped = model.classifier(model.backbone(torch.cat([bottom, top], dim=2)))
    assert not torch.allclose(logits, swapped, atol=1e-4)  # the order matters to a flatten head
    pooled_net = _model("backbone=resnet20", "backbone.kwargs.head=global_pool")
    assert pooled_net.classifier.in_features == 256  # global pooling: one set of weights for both


def test_flatten_head_embeds_the_self_concatenation_and_rejects_other_sizes():
    model = _model("backbone=resnet20").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.embed(x).shape == (2, 512)  # kNN / linear_eval features of the 64x32 test input
        assert torch.allclose(model.embed(x), model.backbone(torch.cat([x, x], dim=2)), atol=1e-4)
        with pytest.raises(ValueError, match=r"sized for 64x32 inputs.*got 32x32"):
            model.backbone(x)
    with pytest.raises(ConfigError, match="head 'avg' is not valid; choose one of flatten, global_pool"):
        create_backbone("resnet20", 32, head="avg")


def test_autoaugment_comes_after_the_crop_flip_and_before_normalisation():
    model = _model("method.autoaugment=true", "backbone.kwargs.width=4", "augment.padding=4", "method.k=2")
    calls = []
    augment, autoaugment = model.augment.forward, model.autoaugment.forward

    def record_augment(images, generator=None, normalise=True):
        out = augment(images, generator, normalise)
        calls.append(("crop_flip", tuple(images.shape), normalise, out))
        return out

    def record_autoaugment(images):
        calls.append(("autoaugment", tuple(images.shape), images.dtype, images))
        return autoaugment(images)

    model.augment.forward, model.autoaugment.forward = record_augment, record_autoaugment
    raw = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)  # resized to 32, then shifted/flipped
    x, _ = model.make_views(raw, torch.arange(4))
    assert [c[0] for c in calls] == ["crop_flip", "autoaugment"]
    assert calls[0][2] is False  # crop/flip without normalisation ...
    assert calls[1][1] == (8, 3, 32, 32) and calls[1][2] == torch.uint8  # ... then AutoAugment on the cropped images
    assert torch.equal(calls[1][3], calls[0][3].mul(255).round().to(torch.uint8))
    pixels = (x * 0.25 + 0.5) * 255  # undo the normalisation: AutoAugment's uint8 values, so normalised last
    assert torch.allclose(pixels, pixels.round(), atol=1e-3) and x.shape == (4, 3, 64, 32)
    with pytest.raises(ConfigError, match="augment=supervised"):
        _model("method.autoaugment=true", "augment=simclr")


def test_base_plus_flips_averages_the_outputs_of_the_image_and_its_flip():
    model = _model("method.k=1", "method.tta=flip", "backbone.kwargs.width=4").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        p, q = (model.classifier(model.backbone(v)).softmax(1) for v in (x, x.flip(-1)))
        assert torch.allclose(model.predict(x).exp(), (p + q) / 2, atol=1e-6)
        assert torch.allclose(model.embed(x), (model.backbone(x) + model.backbone(x.flip(-1))) / 2, atol=1e-6)
        plain = model.predict(x, tta="none")
        assert torch.allclose(plain, model.classifier(model.backbone(x)))
        assert model.test_input(x).shape == (3, 3, 32, 32)  # k=1: no concatenation


@pytest.mark.parametrize("preset, parent, changed", [
    ("imclr_vgg16_cifar100_k3", "imclr_vgg16_cifar100", {"method.k": 3}),  # Table 8 (Table 10's k=3, 5 rows)
    ("imclr_vgg16_cifar100_k5", "imclr_vgg16_cifar100", {"method.k": 5}),
    ("imclr_rn20_cifar10_k3", "imclr_rn20_cifar10", {"method.k": 3}),
    ("imclr_rn20_cifar10_k5", "imclr_rn20_cifar10", {"method.k": 5}),
    ("imclr_rn56_tinyimagenet_cutmix", "imclr_rn56_tinyimagenet", {"method.mix": "cutmix", "method.mix_prob": 0.5}),  # Table 6
    ("imclr_vgg16_cifar100_cutmix", "imclr_vgg16_cifar100", {"method.mix": "cutmix", "method.mix_prob": 0.5}),
    ("imclr_prn18_cifar100_cutmix", "imclr_prn18_cifar100", {"method.mix": "cutmix", "method.mix_prob": 0.5}),
    ("imclr_prn18_cifar100_autoaugment", "imclr_prn18_cifar100", {"method.autoaugment": True}),  # Table 7
    ("imclr_prn18_cifar100_tta", "imclr_prn18_cifar100", {"method.tta": "flip"}),  # Table 9
    ("imclr_vgg16_cifar100_2x", "imclr_vgg16_cifar100", {"method.k": 1, "batch_size": 256, "optimizer.lr": 0.2,  # Table 2's
                                                         "scheduler.milestones": [300, 450], "trainer.max_epochs": 600,  # control
                                                         "knn.every_n_epochs": 50}),
])
def test_table_6_and_8_presets_are_their_table_2_recipe_plus_one_change(preset, parent, changed):
    got, base = (OmegaConf.to_container(_composed((f"experiment={p}",)), resolve=True) for p in (preset, parent))
    for key, value in changed.items():
        section, name = key.split(".") if "." in key else (None, key)
        g, p = (got[section], base[section]) if section else (got, base)
        assert g[name] == value and p[name] != value, key
        g.pop(name), p.pop(name)
    assert got == base  # everything else: the parent's recipe, reused through the defaults list
