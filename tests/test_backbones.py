"""Tests of contrastive.backbones.factory and contrastive.backbones.cifar_resnet (CPU, batch size 2, tiny inputs)."""

import pytest
import torch
from torch import nn

from contrastive.backbones.factory import BACKBONES, check_input_size, create_backbone
from contrastive.backbones.base import count_parameters

EXPECTED = {
    "resnet18", "resnet50", "small_cnn",
    "resnet20", "resnet56", "preact_resnet18", "vgg16", "wrn_16_8", "wrn_28_2", "seresnet18",
    "resnet20_v1", "resnet56_v1",
}  # fmt: skip
# Every backbone this package registers (plugins registered by other tests are left out).
# The project's own nets. `timm` wraps a third-party model (timm zero-initialises each block's last
# BN, so some weights get no gradient at step 1 by design); tests/test_library.py covers it.
BUILTIN = [n for n in BACKBONES.names() if BACKBONES.get(n).__module__.startswith("contrastive.backbones.") and n != "timm"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_all_backbones_registered_on_import():
    assert EXPECTED <= set(BUILTIN)


@pytest.mark.parametrize("name", BUILTIN)
def test_output_shapes_and_sizes(name):
    # Batch size 1 in eval mode keeps the big nets cheap; the smallest accepted sizes are checked too.
    for image_size, shapes in ((32, [(32, 32), "min", "2min x min"]), (64, [(64, 64), (64, 32)])):
        model = create_backbone(name, image_size).eval()
        assert isinstance(model.feature_dim, int) and isinstance(model.min_input_size, int)
        assert model.name == name
        m = model.min_input_size
        shapes = [{"min": (m, m), "2min x min": (2 * m, m)}.get(s, s) for s in shapes]
        with torch.no_grad():
            for h, w in shapes:
                check_input_size(model, h, w)
                model.configure_input(h, w)  # a flatten head is sized for its input (ImCLR does this); others: no-op
                out = model(torch.randn(1, 3, h, w))
                assert out.shape == (1, model.feature_dim), (name, h, w)
                assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", BUILTIN)
def test_sgd_step_reaches_every_parameter(name):
    model = create_backbone(name, 32).train()
    params = dict(model.named_parameters())
    before = {k: p.detach().clone() for k, p in params.items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    size = max(16, model.min_input_size)  # tiny inputs: the last stage sees 2x2 (1x1 for vgg16)
    out = model(torch.randn(2, 3, size, size))
    (out * torch.randn_like(out)).sum().backward()
    no_grad = [k for k, p in params.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f"{name}: no gradient for {no_grad[:5]}"
    opt.step()
    unchanged = [k for k, p in params.items() if torch.equal(p, before[k])]
    assert not unchanged, f"{name}: unchanged {unchanged[:5]}"


def test_small_stem_auto_for_torchvision_resnet():
    def stem(model):
        return model.conv1.kernel_size, model.conv1.stride, isinstance(model.maxpool, nn.MaxPool2d)

    small, large = ((3, 3), (1, 1), False), ((7, 7), (2, 2), True)
    m32, m224 = create_backbone("resnet18", 32), create_backbone("resnet18", 224)
    assert stem(m32) == small and m32.small_stem is True and m32.min_input_size == 8
    assert stem(m224) == large and m224.small_stem is False and m224.min_input_size == 32
    assert stem(create_backbone("resnet18", 64)) == small
    assert stem(create_backbone("resnet18", 96)) == large
    assert stem(create_backbone("resnet18", 224, small_stem=True)) == small
    assert stem(create_backbone("resnet18", 32, small_stem="false")) == large
    with pytest.raises(ValueError, match="small_stem"):
        create_backbone("resnet18", 32, small_stem="maybe")


def test_check_input_size():
    r50 = create_backbone("resnet50", 224)
    with pytest.raises(ValueError) as err:
        check_input_size(r50, 16, 16)
    msg = str(err.value)
    assert "'resnet50'" in msg and "small_stem=False" in msg and "32x32" in msg and "16x16" in msg
    assert "\n" not in msg
    check_input_size(r50, 32, 32)
    vgg = create_backbone("vgg16", 32)
    with pytest.raises(ValueError, match=r"'vgg16'.*got 64x16"):
        check_input_size(vgg, 64, 16)
    check_input_size(vgg, 64, 32)  # ImCLR's height-concatenated pair
    check_input_size(create_backbone("resnet20_v1", 32), 4, 4)


def test_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="valid choices") as err:
        create_backbone("resnet1337", 32)
    assert "resnet18" in str(err.value) and "wrn_28_2" in str(err.value)


def test_unknown_kwarg_is_a_clear_error():
    with pytest.raises(ValueError, match=r"'small_cnn'.*widht.*width"):
        create_backbone("small_cnn", 32, widht=16)


def test_kwargs():
    assert create_backbone("small_cnn", 32, width=16).feature_dim == 128
    wrn = create_backbone("wrn_28_2", 32, dropout=0.3)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.3 for m in wrn.modules())
    r18 = create_backbone("resnet18", 32, zero_init_residual=True)
    assert all(b.bn2.weight.abs().sum() == 0 for b in r18.layer1)
    assert count_parameters(create_backbone("resnet20_v1", 32, shortcut="B")) > count_parameters(create_backbone("resnet20_v1", 32))


@pytest.mark.parametrize(
    "name, published", [("resnet20_v1", 0.27e6), ("resnet56_v1", 0.85e6), ("wrn_28_2", 1.5e6)]
)  # He et al. 2016 Table 6; Oliver et al. 2018 / MixMatch for WRN-28-2 (classifier excluded here)
def test_parameter_counts(name, published):
    n = count_parameters(create_backbone(name, 32))
    assert abs(n - published) / published < 0.03, n


def test_every_backbone_is_an_encoder_and_a_fixed_stem_rejects_an_explicit_other_one():
    from contrastive.backbones.base import Encoder

    for name in BUILTIN:
        model = create_backbone(name, 32)
        assert isinstance(model, Encoder) and model.name == name and isinstance(model.small_stem, bool), name
    resnet = create_backbone("resnet18", 32, small_stem=False)
    assert isinstance(resnet, __import__("torchvision").models.ResNet)  # torchvision's class: its keys, its forward
    assert create_backbone("resnet20", 32, small_stem="auto").small_stem is True
    assert create_backbone("resnet20", 224, small_stem="auto").small_stem is True  # auto: the net's own stem
    with pytest.raises(ValueError, match=r"^backbone 'resnet20' always has a small 3x3 stride-1 stem: "
                                         r"backbone.small_stem=False cannot be honoured; use backbone.small_stem=auto or True$"):
        create_backbone("resnet20", 32, small_stem=False)


def test_a_plugin_backbone_must_be_an_encoder_and_the_adapter_keeps_its_keys():
    from contrastive.backbones.base import ModuleEncoder

    def plain(small_stem=True):
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def adapted(small_stem=True):
        return ModuleEncoder(plain(), feature_dim=4, small_stem=True)

    BACKBONES.register("plugin_plain")(plain)
    BACKBONES.register("plugin_adapted")(adapted)
    try:
        with pytest.raises(ValueError, match=r"^backbone 'plugin_plain': its factory returned a Sequential, not a "
                                             r"contrastive.backbones.Encoder; subclass Encoder or return ModuleEncoder"):
            create_backbone("plugin_plain", 32)
        encoder = create_backbone("plugin_adapted", 32)
        bare = plain()
        assert list(encoder.state_dict()) == list(bare.state_dict()) == [
            "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
        bare.load_state_dict(encoder.state_dict(), strict=True)  # exported weights load into the bare module ...
        encoder.load_state_dict(bare.state_dict(), strict=True)  # ... and back
        holder = nn.Module()
        holder.backbone = encoder  # as in a Method: nested keys keep the module's names too
        assert "backbone.0.weight" in holder.state_dict()
        holder.load_state_dict(holder.state_dict(), strict=True)
        x = torch.randn(2, 3, 8, 8)
        assert torch.equal(encoder.eval()(x), bare.eval()(x)) and encoder(x).shape == (2, encoder.feature_dim)
    finally:
        BACKBONES.unregister("plugin_plain")
        BACKBONES.unregister("plugin_adapted")
