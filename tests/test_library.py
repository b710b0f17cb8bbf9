"""Library use: build_method in a plain pl.Trainer, timm backbones, safetensors export, plugin config folders,
and a one-epoch run of every method and every preset."""

import math
import os
import re
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from contrastive.config.compose import CONFIG_DIR, load_config
from tests.conftest import FAST, ROOT


class UserImages(torch.utils.data.Dataset):
    """A user's own dataset: uint8 images, labels, indices (what contrastive's methods take)."""

    def __init__(self, n=96, size=16):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
        self.labels = torch.arange(n) % 4

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.labels[i], torch.tensor(i)


def test_build_method_trains_in_a_plain_lightning_trainer(tmp_path):
    import contrastive

    data = {"num_classes": 4, "image_size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3, "num_train": 96}
    model = contrastive.build_method("simclr", overrides=["backbone.kwargs.width=4", "method.temperature=0.2",
                                                          "method.projection.hidden_dim=16",
                                                          "method.projection.output_dim=8"], data=data)
    assert isinstance(model, pl.LightningModule) and model.cfg.method.temperature == 0.2
    view = model.augment(UserImages()[0][0][None])  # uint8 [1,3,16,16] -> float view
    assert view.dtype == torch.float32 and view.shape == (1, 3, 16, 16)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    loader = torch.utils.data.DataLoader(UserImages(), batch_size=32, shuffle=True)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    with pytest.raises(contrastive.ConfigError, match="data must be a DataInfo or a mapping"):
        contrastive.build_method("simclr", data={"num_classes": 4})


@pytest.mark.slow
def test_timm_backbone_and_export_load_strictly_into_torchvision_and_timm(tmp_path):
    timm = pytest.importorskip("timm")
    import torchvision
    from omegaconf import OmegaConf
    from safetensors.torch import load_file

    from contrastive.backbones.factory import create_backbone
    from contrastive.evaluation.export import export_backbone

    net = create_backbone("timm", 32, small_stem=False, model_name="resnet18")
    assert net.feature_dim == 512 and net(torch.randn(2, 3, 32, 32)).shape == (2, 512)
    encoder = create_backbone("resnet18", 32, small_stem=True).eval()
    record = export_backbone(encoder, OmegaConf.create({"name": "resnet18", "kwargs": {}}), 32, tmp_path / "b.pt", {})
    state = load_file(record["safetensors"])
    x = torch.randn(2, 3, 32, 32)
    expected = encoder(x)
    tv = torchvision.models.resnet18()
    tv.fc = torch.nn.Identity()
    tv.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tv.maxpool = torch.nn.Identity()
    tv.load_state_dict(state, strict=True)
    tm = timm.create_model("resnet18", num_classes=0)
    tm.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    tm.maxpool = torch.nn.Identity()
    tm.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True), strict=True)
    assert torch.allclose(tv.eval()(x), expected, atol=1e-5) and torch.allclose(tm.eval()(x), expected, atol=1e-5)


def test_a_plugin_package_config_folder_is_found_through_its_entry_point(tmp_path, monkeypatch):
    dist = tmp_path / "simsiam_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: simsiam-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[contrastive.configs]\nsimsiam = file://{ROOT / 'tests' / 'plugins' / 'configs'}\n"
        "[contrastive.methods]\nsimsiam_lite = tests.plugins.simsiam_lite\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = load_config(["method=simsiam_lite"])  # no hydra.searchpath on the command line
    assert cfg.method.name == "simsiam_lite"


def _presets():
    return sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml") if p.stem != "none")


def _methods():
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.core.registry import METHODS

    load_builtin_methods()
    return [m for m in METHODS.names() if (CONFIG_DIR / "method" / f"{m}.yaml").is_file()]


ONE_EPOCH = ["trainer.max_epochs=1", "trainer.limit_train_batches=1", "knn.enabled=false", "dataset=synthetic",
             "dataset.num_train=64", "dataset.num_val=32", "batch_size=32", "trainer.progress_bar=false",
             "global_batch_size=null"]  # the presets' paper batch (over all processes) is not for 64 CPU images
#: Preset values that cannot hold on 64 CPU images: K=512 prototypes, 4,000 labels, SyncBatchNorm.
PRESET_SMALL_DATA = {"pimodel": ["method.num_labels=16", "method.labeled_per_batch=4"], "spcl": ["method.num_prototypes=[4]"],
                     "insdis": ["method.num_negatives=32"], "swav": ["method.num_prototypes=8"],
                     "pirl": ["method.num_negatives=32", "method.jigsaw.crop_size=15", "method.jigsaw.patch_size=4"],
                     "deepclusterv2": ["method.num_prototypes=[4,4]"], "selav2": ["method.num_prototypes=[4,4]"],
                     "pcl": ["method.num_prototypes=[4,8]", "method.num_negative_prototypes=2", "method.warmup_epochs=0"],
                     "imagenet": ["trainer.sync_batchnorm=false", "dataset.image_size=32"]}


def _small(choice):
    def matches(key):  # "pcl" (pcl's and pclv2's) starts a name or follows "=": not the one in spcl or deepcluster
        return bool(re.search(rf"(^|=){key}", choice)) if key == "pcl" else key in choice

    return [o for key, overrides in PRESET_SMALL_DATA.items() if matches(key) for o in overrides]


@pytest.mark.parametrize("choice", [f"method={m}" for m in _methods()] +
                         ["experiment=simclr_cifar10", "experiment=spcl_cifar100_resnet18", "experiment=imclr_rn20_cifar10"])
@pytest.mark.slow
def test_one_epoch_trains_for_every_method_and_the_longest_warmup_presets(tmp_path, choice, monkeypatch):
    """``trainer.max_epochs=1`` just works: a 10-epoch warm-up is cut, whatever the recipe says. The
    step's loss is finite, it moved the backbone's weights, and the checkpoint rebuilds the method
    from its own config and loads back into it strictly."""
    import train
    from omegaconf import OmegaConf

    from contrastive.core.registry import METHODS
    from contrastive.engine.checkpoint import load_checkpoint
    from contrastive.engine.method import DataInfo, Method

    seen = {"losses": []}
    monkeypatch.setattr(Method, "on_fit_start", lambda self: seen.__setitem__(
        "initial", {k: p.detach().clone() for k, p in self.backbone.named_parameters()}), raising=False)
    monkeypatch.setattr(Method, "on_train_batch_end",
                        lambda self, outputs, batch, i: seen["losses"].append(float(outputs["loss"])), raising=False)
    extra = FAST[3:4] if choice.startswith("method=") else []  # a narrow small_cnn for the bare methods
    summary = train.main([choice, *ONE_EPOCH, *extra, *_small(choice), f"output_dir={tmp_path}"])
    assert summary["epochs"] == 1 and Path(summary["last_checkpoint"]).is_file()
    assert len(seen["losses"]) == 1 and all(math.isfinite(v) for v in seen["losses"]), seen["losses"]
    ckpt = load_checkpoint(summary["last_checkpoint"])
    meta = ckpt["contrastive"]
    data = DataInfo(**{**meta["data"], "mean": tuple(meta["data"]["mean"]), "std": tuple(meta["data"]["std"])})
    method = METHODS.get(meta["method"])(OmegaConf.create(meta["config"]), data)
    method.load_state_dict(ckpt["state_dict"], strict=True)
    trained = dict(method.backbone.named_parameters())
    assert trained.keys() == seen["initial"].keys()
    unchanged = [k for k, v in seen["initial"].items() if torch.equal(v, trained[k])]
    assert not unchanged, f"{choice}: one step left {unchanged[:5]} at their initial values"
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("preset", _presets())
def test_every_preset_composes_validates_and_its_one_epoch_schedule_is_valid(preset):
    """Every preset, as a 1-epoch run: composed, every value checked (the checks train.py runs
    before any data), and its learning-rate schedule over that epoch finite and positive (the
    warm-up fits the run). Training is the test above, for the longest warm-ups (this one stays fast)."""
    from contrastive.config.plugins import import_plugins, load_builtin_methods
    from contrastive.engine.run import validate_config
    from contrastive.engine.method import DataInfo
    from contrastive.engine.optim import lr_multiplier
    from contrastive.core.registry import METHODS

    load_builtin_methods()
    cfg = load_config([f"experiment={preset}", *ONE_EPOCH, *_small(preset), "dataset.num_train=32", "batch_size=8"])
    import_plugins(cfg.plugins)
    validate_config(cfg)
    data = DataInfo(num_classes=10, image_size=int(cfg.dataset.image_size), mean=(0.5,) * 3, std=(0.25,) * 3,
                    num_train=32)
    METHODS.get(cfg.method.name).validate_config(cfg, data)
    values = [lr_multiplier(cfg.scheduler, step, 4, 4) for step in range(4)]
    assert all(0 < v <= 1 for v in values[:2]) and all(v == v for v in values), (preset, values)
