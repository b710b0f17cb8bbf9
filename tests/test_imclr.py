"""ImCLR (methods/imclr.py, contrastive/augment/mixing.py): input construction, targets, test-time input,
strong augmentation, bad input, the paper's backbones and recipes, one end-to-end run (CPU)."""

import copy
import csv
import functools

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

import train
from contrastive.augment.concat import draw_slot_indices
from contrastive.augment.pipelines import SupervisedAugment
from contrastive.backbones.base import ModuleEncoder
from contrastive.engine.checkpoint import load_checkpoint
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.engine.run import prepare_run
from contrastive.core.errors import ConfigError
from contrastive.engine.method import DataInfo
from contrastive.augment.mixing import PerImageAutoAugment
from contrastive.core.registry import BACKBONES, DATASETS, METHODS
from tests.conftest import FAST

load_builtin_methods()
ImCLR = METHODS.get("imclr")
PAPER_BACKBONES = ["resnet20", "resnet56", "preact_resnet18", "vgg16", "wrn_16_8", "wrn_28_2", "seresnet18"]
IDENTITY_AUG = ["augment.padding=0", "augment.hflip_prob=0.0"]  # the augmentation only normalises


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny ops on a shared CPU
    yield
    torch.set_num_threads(threads)


def _data(num_classes=10, size=32):
    return DataInfo(num_classes=num_classes, image_size=size, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


@functools.lru_cache(maxsize=None)
def _composed(groups: tuple):
    return load_config(list(groups))


def _config(*overrides):
    """``load_config`` for tests, faster: the group choices (``method=imclr``, ``backbone=...``) are
    composed once and cached (a Hydra compose takes ~0.3 s, twice with value overrides), the
    ``key=value`` overrides are merged on a copy (still struct: an unknown key is an error).
    The bad-value tests use ``load_config`` itself, whose type checks this skips."""
    groups = tuple(o for o in overrides if "." not in o.split("=", 1)[0])
    cfg = copy.deepcopy(_composed(groups))
    values = [o for o in overrides if o not in groups]
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(values)) if values else cfg


def _model(*overrides, data=None):
    small = [] if any(o.startswith("backbone=") for o in overrides) else ["backbone.kwargs.width=4"]
    cfg = _config("method=imclr", *small, *overrides)
    data = data or _data()
    ImCLR.validate_config(cfg, data)
    return ImCLR(cfg, data)


def _constant_images(n, size=32):
    """Image i is the constant 10 * (i + 1): a pixel value tells which image it came from."""
    return (10 * torch.arange(1, n + 1, dtype=torch.uint8)).view(n, 1, 1, 1).expand(n, 3, size, size).contiguous()


def _source(block):
    """Index of the constant image a normalised [3, S, S] block came from (identity augmentation)."""
    value = block * 0.25 + 0.5  # undo (x - 0.5) / 0.25
    assert torch.allclose(value, value.flatten()[0].expand_as(value), atol=1e-5)
    return int(round(float(value.flatten()[0]) * 255 / 10)) - 1


@pytest.mark.parametrize("k", [2, 3])
def test_concatenation_shape_order_and_targets(k):
    model = _model(f"method.k={k}", *IDENTITY_AUG)
    b, c = 8, 10
    images, labels = _constant_images(b), torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    torch.manual_seed(0)
    x, targets = model.make_views(images, labels)
    assert x.shape == (b, 3, k * 32, 32) and targets.shape == (b, c)
    assert model.input_size() == (k * 32, 32)
    for i in range(b):
        sources = [_source(x[i, :, s * 32:(s + 1) * 32]) for s in range(k)]
        assert sources[0] == i  # image 1 (the top) is the batch, in order
        assert all(0 <= j < b and j != i for j in sources[1:])  # partners: other images of the batch
        expected = F.one_hot(labels[sources], c).float().mean(0)
        assert torch.allclose(targets[i], expected)


def test_partners_are_drawn_with_replacement_from_the_rest_of_the_batch():
    model = _model("method.k=3")
    torch.manual_seed(0)
    draws = torch.stack([draw_slot_indices(4, model.k, model.control) for _ in range(300)])  # [300, 3, 4]
    assert (draws[:, 0] == torch.arange(4)).all()
    partners = draws[:, 1:]  # [300, 2, 4]
    assert (partners != torch.arange(4)).all()  # never the top image itself
    counts = torch.stack([(partners[:, :, 0] == j).sum() for j in (1, 2, 3)]).float()
    assert counts.min() > 150  # each of the 3 others ~200 of 600 times: uniform
    assert (partners[:, 0] == partners[:, 1]).any()  # two partners may coincide: with replacement


def test_targets_are_mean_of_one_hots_also_for_a_shared_class():
    model = _model("method.k=2")
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    _, same = model.make_views(images, torch.full((6,), 3))
    assert torch.equal(same, F.one_hot(torch.full((6,), 3), 10).float())  # 1.0 on class 3, not 0.5 + 0.5 lost
    _, two = model.make_views(images, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert torch.allclose(two.sum(1), torch.ones(6))
    assert set(two.unique().tolist()) <= {0.0, 0.5, 1.0} and (two == 0.5).any()
    k3 = _model("method.k=3")
    _, t3 = k3.make_views(images, torch.arange(6))
    assert torch.allclose((t3 * 3).round(), t3 * 3, atol=1e-6) and torch.allclose(t3.sum(1), torch.ones(6))


def test_same_image_control_concatenates_independent_augmentations_of_one_image():
    plain = _model("method.control=same_image", *IDENTITY_AUG)
    x, targets = plain.make_views(_constant_images(5), torch.arange(5))
    for i in range(5):
        assert _source(x[i, :, :32]) == i and _source(x[i, :, 32:]) == i
    assert torch.equal(targets, F.one_hot(torch.arange(5), 10).float())
    model = _model("method.control=same_image")  # shift + flip: the two copies differ
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    torch.manual_seed(1)
    x, _ = model.make_views(images, torch.arange(8))
    assert not torch.allclose(x[:, :, :32], x[:, :, 32:])


def test_k1_equals_standard_supervised_training_on_the_same_batch():
    model = _model("method.k=1")
    images, labels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (16,))
    torch.manual_seed(7)
    x, targets = model.make_views(images, labels)
    loss = model.training_losses(x, targets, torch.arange(16))["loss"]
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.manual_seed(7)
    standard_x = model.augment(images)
    assert isinstance(model.augment, SupervisedAugment) and torch.equal(x, standard_x)
    standard = F.cross_entropy(model.classifier(model.backbone(standard_x)), labels)
    assert torch.allclose(loss, standard, atol=1e-6)
    for g, h in zip(grads, torch.autograd.grad(standard, list(model.parameters()))):
        assert torch.allclose(g, h, atol=1e-6)


def test_test_embedding_is_the_self_concatenation():
    x = torch.randn(3, 3, 32, 32)
    for k in (2, 3):
        model = _model(f"method.k={k}").eval()
        with torch.no_grad():
            expected = model.backbone(torch.cat([x] * k, dim=2))
            assert torch.allclose(model.embed(x), expected, atol=1e-6)
            assert not torch.allclose(model.embed(x), model.backbone(x), atol=1e-3)  # not the single image
            assert torch.allclose(model.predict(x), model.classifier(expected), atol=1e-6)
    flip = _model("method.tta=flip").eval()
    with torch.no_grad():
        assert torch.allclose(flip.embed(x), flip.backbone(torch.cat([x, x.flip(-1)], dim=2)), atol=1e-6)
    single = _model("method.k=1").eval()
    with torch.no_grad():
        assert torch.allclose(single.embed(x), single.backbone(x))


@pytest.mark.parametrize("mix", ["cutmix", "mixup"])
def test_mix_then_imclr_targets_sum_to_one(mix):
    model = _model(f"method.mix={mix}", "method.mix_prob=1.0")
    plain = _model("method.mix=none")
    plain.load_state_dict(model.state_dict())
    images, labels = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 10
    for seed in range(3):
        torch.manual_seed(seed)
        x, targets = model.make_views(images, labels)
        torch.manual_seed(seed)
        x0, targets0 = plain.make_views(images, labels)
        assert x.shape == (16, 3, 64, 32)
        assert torch.allclose(targets.sum(1), torch.ones(16), atol=1e-5) and (targets >= 0).all()
        assert not torch.allclose(x, x0)  # the images were mixed ...
        assert not torch.allclose(targets, targets0)  # ... and so were the labels
        assert ((targets > 0).sum(1) > 2).any()  # up to 2 classes per slot: 4 per row


def test_autoaugment_draws_a_policy_per_image():
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8).expand(24, 3, 32, 32).contiguous()
    torch.manual_seed(0)
    out = PerImageAutoAugment("cifar10", group_size=1)(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert len({tuple(o.flatten().tolist()) for o in out}) > 4  # different policies per image
    model = _model("method.autoaugment=true", "method.mix=cutmix")
    x, targets = model.make_views(images[:8], torch.arange(8))
    assert x.shape == (8, 3, 64, 32) and torch.allclose(targets.sum(1), torch.ones(8))


@pytest.mark.parametrize(
    "override, message",
    [
        ("method.k=0", "method.k must be an integer >= 1"),
        ("method.k=-2", "method.k must be an integer >= 1"),
        ("method.k=2.5", "method.k=2.5 is not valid: expected an integer"),
        ("method.k=two", "method.k='two' is not valid"),
        ("method.k=true", "method.k must be an integer"),
        ("method.control=other", "method.control='other' is not valid; choose one of none, same_image"),
        ("method.tta=hflip", "method.tta='hflip' is not valid"),
        ("method.mix=cutout", "method.mix='cutout' is not valid; choose one of none, cutmix, mixup"),
        ("method.mix_alpha=0", "method.mix_alpha must be > 0"),
        ("method.autoaugment_group=0", "autoaugment_group must be an integer >= 1"),
    ],
)
def test_bad_method_values_are_clear_errors(override, message):
    # A wrong type is caught by load_config's type check, a wrong value by validate_config.
    type_error = "expected" in message or "'two'" in message
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        cfg = load_config(["method=imclr", override]) if type_error else _config("method=imclr", override)
        ImCLR.validate_config(cfg, _data())


def test_flip_tta_with_one_image_is_base_plus_flips():
    # accepted (Table 9's "Base + flips", test_imclr_paper.py) and built as such: the single image
    # is not concatenated, its features and class scores average the image and its flip
    model = _model("method.k=1", "method.tta=flip").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.test_input(x), x)
        image, flipped = model.backbone(x), model.backbone(x.flip(-1))
        assert not torch.allclose(image, flipped, atol=1e-3)  # the flip changes the features of these images
        assert torch.allclose(model.embed(x), (image + flipped) / 2, atol=1e-6)
        p, q = model.classifier(image).softmax(1), model.classifier(flipped).softmax(1)
        assert torch.allclose(model.predict(x), ((p + q) / 2).log(), atol=1e-5)


def test_dataset_without_labels_is_an_error(tmp_path):
    @DATASETS.register("synthetic_unlabeled_imclr")
    def unlabeled(cfg):
        splits = DATASETS.get("synthetic")(cfg)
        splits.train.labels[:] = -1
        return splits

    try:
        cfg = load_config(["method=imclr", "dataset.name=synthetic_unlabeled_imclr", "dataset.num_train=64",
                           "dataset.num_val=16", "batch_size=8", f"output_dir={tmp_path}"])
        with pytest.raises(ConfigError, match="'imclr' is supervised but dataset 'synthetic_unlabeled_imclr' has unlabeled"):
            prepare_run(cfg)
        assert not list(tmp_path.iterdir())  # nothing written
    finally:
        DATASETS.unregister("synthetic_unlabeled_imclr")


def test_backbone_that_cannot_take_the_concatenated_input_is_an_error():
    @BACKBONES.register("square32_imclr")
    def square32(small_stem=True, **kwargs):  # no global pooling: a flatten + linear sized for 32x32
        net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 32 * 32, 16))
        return ModuleEncoder(net, feature_dim=16, small_stem=True)  # a plugin's plain module, adapted

    try:
        with pytest.raises(ConfigError, match=r"backbone 'square32_imclr' cannot take ImCLR's 64x32 input \(k=2 images of 32x32"):
            _model("backbone=resnet20", "backbone.name=square32_imclr")
        _model("backbone=resnet20", "backbone.name=square32_imclr", "method.k=1")  # 32x32 works
    finally:
        BACKBONES.unregister("square32_imclr")
    with pytest.raises(ConfigError, match=r"'resnet18' \(small_stem=False\) needs inputs of at least 32x32, got 32x16.*ImCLR's 32x16"):
        _model("backbone=resnet18", "backbone.small_stem=false", data=_data(size=16))


@pytest.mark.parametrize("name", PAPER_BACKBONES)
@pytest.mark.slow
def test_paper_backbone_builds_at_32_and_64_and_trains_one_imclr_step(name):
    big = _model(f"backbone={name}", data=_data(100, 64))  # builds and probes a 128x64 input
    assert big.input_size() == (128, 64)
    model = _model(f"backbone={name}", data=_data(100, 32)).train()  # ... and a 64x32 one
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.manual_seed(0)
    x, targets = model.make_views(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.tensor([3, 71]))
    loss = model.training_losses(x, targets, torch.arange(2))["loss"]
    assert x.shape == (2, 3, 64, 32) and torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_presets_compose_with_the_paper_schedules():
    # preset: (dataset, backbone, lr, milestones, gamma, epochs, batch, (padding px, shift_range, fill));
    # the Keras presets shift continuously (ImageDataGenerator) with 'nearest' fill and no integer padding
    expected = {
        "imclr_rn56_tinyimagenet": ("tinyimagenet", "resnet56", 0.1, [40, 60], 0.1, 80, 64, (0, 0.125, "nearest")),  # "batch size of 64", "shift range of 0.125"
        "imclr_vgg16_cifar100": ("cifar100", "vgg16", 0.1, [150, 225], 0.1, 300, 128, (0, 0.1, "nearest")),  # "shift range 0.1"
        "imclr_prn18_cifar100": ("cifar100", "preact_resnet18", 0.1, [60, 120, 180], 0.2, 200, 128, (0, 0.1, "nearest")),  # "follow that of VGG16-CIFAR100"
        "imclr_srn18_cifar10": ("cifar10", "seresnet18", 0.1, [30, 60, 90], 0.1, 100, 128, (4, None, "zero")),  # "30-60-90 ... factor 0.1"
        "imclr_rn20_cifar10": ("cifar10", "resnet20", 0.08, [150, 225], 0.1, 300, 128, (0, 0.1, "nearest")),
        "imclr_wrn16_8_stl10": ("stl10", "wrn_16_8", 0.1, [50, 75], 0.1, 100, 64, (0, 0.1, "nearest")),  # "Data augmentation follows VGG16-CIFAR100"
    }
    for preset, (dataset, backbone, lr, milestones, gamma, epochs, batch, shift) in expected.items():
        cfg = _config(f"experiment={preset}")
        got = (cfg.dataset.name, cfg.backbone.name, cfg.optimizer.lr, list(cfg.scheduler.milestones),
               cfg.scheduler.gamma, cfg.trainer.max_epochs, cfg.batch_size,
               (cfg.augment.padding, cfg.augment.shift_range, cfg.augment.shift_fill))
        assert got == (dataset, backbone, lr, milestones, gamma, epochs, batch, shift), preset
        assert list(cfg.dataset.mean) == list(cfg.dataset.std) == [0.5] * 3  # "squishing min/max to -1/1"
        assert cfg.method.name == "imclr" and cfg.method.k == 2 and cfg.augment.name == "supervised"
        assert (cfg.optimizer.name, cfg.optimizer.momentum, cfg.optimizer.lr_scaling) == ("sgd", 0.9, "none")
        assert cfg.augment.hflip_prob == 0.5 and epochs % cfg.knn.every_n_epochs == 0  # shift/crop + flips
    base = load_config(["experiment=imclr_rn56_tinyimagenet", "method.k=1"])  # the base, same recipe
    assert base.method.k == 1 and list(base.scheduler.milestones) == [40, 60]
    assert _config("experiment=imclr_wrn16_8_stl10").dataset.use_unlabeled is False


@pytest.mark.slow
def test_end_to_end_logs_test_error_with_label_fraction(tmp_path):
    overrides = [o for o in FAST if not o.startswith("scheduler.")]  # the step schedule has no warm-up
    summary = train.main(overrides + ["method=imclr", f"output_dir={tmp_path}", "trainer.max_epochs=1",
                                      "knn.random_init_baseline=false", "dataset.label_fraction=0.5"])
    assert summary["method"] == "imclr" and summary["knn_top1"] is not None
    with open(f"{summary['run_dir']}/logs/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_error")]
    assert rows and abs(float(rows[-1]["val_error"]) + float(rows[-1]["val_top1"]) - 100) < 1e-4
    ckpt = load_checkpoint(summary["last_checkpoint"], expected_method="imclr")
    num_train = ckpt["contrastive"]["data"]["num_train"]
    assert 240 <= num_train <= 272  # about half of 512 (class-proportional, rounded per class)
    assert ckpt["contrastive"]["config"]["method"]["k"] == 2
