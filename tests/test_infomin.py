"""InfoMin Aug.: the batched RandAugment ops against PIL's (the ops InfoMin's released code calls), the
loss written out through training_losses (MoCo's InfoNCE of the query and of the jigsaw query against
the same key and queue, mixed by beta), the jigsaw geometry, and one-line bad inputs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from PIL import Image, ImageEnhance, ImageOps

from contrastive.augment import randaugment as ra
from contrastive.augment.pipelines import build_augment
from contrastive.augment.views import build_view_augments
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from contrastive.methods.infomin import jigsaw_patches, jigsaw_sizes
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


def _images(n=4, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(20, 230, (n, 3, size, size), dtype=torch.uint8, generator=g)  # [n, 3, H, W]


def _pil(x, i):
    return Image.fromarray(x[i].permute(1, 2, 0).numpy())


def _tensor(img):
    return torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1) / 255.0  # [3, H, W]


PIL_OPS = [  # (our op id, magnitude, PIL's op at that magnitude, tolerance in levels of 255)
    (0, 10.0, ImageOps.autocontrast, 1.0),
    (1, 10.0, ImageOps.equalize, 0.0),
    (2, 10.0, ImageOps.invert, 0.0),
    (4, 7.0, lambda im: ImageOps.posterize(im, 2), 0.0),          # int(4 x 7 / 10) = 2 bits
    (5, 5.0, lambda im: ImageOps.solarize(im, 128), 0.0),         # int(256 x 5 / 10) = 128
    (7, 10.0, lambda im: ImageEnhance.Color(im).enhance(1.9), 1.0),
    (9, 5.0, lambda im: ImageEnhance.Brightness(im).enhance(1.0), 0.0),
    (10, 10.0, lambda im: ImageEnhance.Sharpness(im).enhance(1.9), 1.0),
]


@pytest.mark.parametrize("op, magnitude, pil_op, tolerance", PIL_OPS)
def test_randaugment_ops_match_pil(op, magnitude, pil_op, tolerance):
    x = _images(size=40)  # 1,600 pixels: equalize's step is 6, its rounding offset matters
    n = x.shape[0]
    ours = ra.apply_op(x.float() / 255.0, torch.full((n,), op), torch.full((n,), magnitude), torch.ones(n),
                       torch.zeros(3), prob=1.0)
    expected = torch.stack([_tensor(pil_op(_pil(x, i))) for i in range(n)])
    assert (ours * 255.0 - expected * 255.0).abs().max() <= tolerance + 0.51


def test_solarize_add_and_translate_match_the_code():
    x = _images()
    n = x.shape[0]
    ours = ra.apply_op(x.float() / 255.0, torch.full((n,), 6), torch.full((n,), 10.0), torch.ones(n), torch.zeros(3), prob=1.0)
    q = x.float()
    assert torch.equal((ours * 255).round(), torch.where(q < 128, (q + 110).clamp(max=255), q))  # SolarizeAdd int(110)
    # TranslateXRel at magnitude 10 / 0.45 x 16 px = 7.2 px; at magnitude 250 / 36 it is exactly 5 px (16 x 0.45 x 25 / 36 = 5)
    mag = torch.full((n,), 10.0 * 5.0 / 7.2)
    fill = torch.tensor([0.1, 0.2, 0.3])
    moved = ra.apply_op(x.float() / 255.0, torch.full((n,), 13), mag, torch.ones(n), fill, prob=1.0)
    # PIL: output pixel (u, v) reads input (u + 5, v): the image moves left by 5, the right 5 columns are fill
    assert torch.allclose(moved[..., :11], x[..., 5:].float() / 255.0, atol=1e-5)
    assert torch.allclose(moved[..., 11:], fill.view(1, 3, 1, 1).expand(n, 3, 16, 5), atol=1e-5)


def test_each_image_gets_only_the_op_it_drew():
    x = _images(8).float() / 255.0
    op = torch.tensor([2, -1, 2, -1, 9, 2, -1, -1])
    out = ra.apply_op(x, op, torch.full((8,), 10.0), torch.ones(8), torch.zeros(3))
    assert torch.allclose(out[op == 2], 1.0 - x[op == 2]) and torch.equal(out[op == -1], x[op == -1])
    assert ra.capacity(256, 0.5 / 15) < 64  # an op is computed on a fraction of the batch, not all of it


def test_infomin_augmentation_draws_per_image_ops():
    aug = build_augment({"name": "infomin", "min_scale": 0.2}, 32, (0.5,) * 3, (0.25,) * 3)
    params = aug.sample_params(4096, 32, 32, generator=torch.Generator().manual_seed(0))
    ran = params.ra_op >= 0
    assert params.ra_op.shape == (4096, 2) and abs(float(ran.float().mean()) - 0.5) < 0.03  # prob 0.5 per layer
    assert len(torch.unique(params.ra_op[ran])) == 15  # every op drawn
    assert float(params.ra_magnitude.max()) <= 10.0 and 9.5 < float(params.ra_magnitude.mean()) < 9.9  # N(10, 0.5) clipped
    out = aug(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
    assert out.shape == (8, 3, 32, 32) and torch.isfinite(out).all()


def test_jigsaw_geometry_is_the_codes_at_224_px():
    assert jigsaw_sizes(224) == (255, 85, 64)  # RandomResizedCrop(255), JigsawCrop(n_grid=3, img_size=255, crop_size=64)
    patches = jigsaw_patches(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), 32, 0.6)
    assert patches.shape == (2, 9, 3, 9, 9)


def _model(*extra):
    cfg = load_config(["method=infomin", "backbone.kwargs.width=4", "batch_size=16", *SMALL_HEADS["infomin"], *extra])
    METHODS.get("infomin").validate_config(cfg, DATA)
    torch.manual_seed(0)
    return METHODS.get("infomin")(cfg, DATA).train()


def _info_nce(q, k, queue, t):
    q, k, queue = q.tolist(), k.tolist(), queue.tolist()
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    total = 0.0
    for b in range(len(q)):
        pos = math.exp(dot(q[b], k[b]) / t)
        total += -math.log(pos / (pos + sum(math.exp(dot(q[b], n) / t) for n in queue)))
    return total / len(q)


def test_loss_is_the_beta_mix_of_the_instance_and_jigsaw_infonce():
    model = _model("method.jigsaw.weight=0.3")  # asymmetric: a swapped mix fails
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    views, labels = model.make_views(images, torch.zeros(16, dtype=torch.long))
    torch.manual_seed(7)  # the jigsaw head's patch shuffle
    losses = model.training_losses(views, labels, torch.arange(16))
    with torch.no_grad():
        q = F.normalize(model.projection_head(model.backbone(views[0])), dim=1)
        k = F.normalize(model.momentum[1](model.momentum[0](views[1])), dim=1)
        torch.manual_seed(7)
        q_jig = model.jigsaw_head(model.backbone(views[2]))
    queue, t, beta = model.queue.keys, 0.15, 0.3
    expected = (1 - beta) * _info_nce(q, k, queue, t) + beta * _info_nce(q_jig, k, queue, t)
    assert float(losses["loss"].detach()) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("override, message", [
    ("method.jigsaw.weight=1.0", r"method.jigsaw.weight must be in \[0, 1\).*got 1.0"),
    ("augment.ra_magnitude=11", r"augment.ra_magnitude must be in \[0.0, 10.0\], got 11"),
    ("augment.ra_num_ops=-1", r"augment.ra_num_ops must be an integer >= 0, got -1"),
])
def test_bad_infomin_settings_get_one_line(override, message):
    cfg = load_config(["method=infomin", "batch_size=16", *SMALL_HEADS["infomin"], override])
    with pytest.raises(ConfigError, match=message) as err:
        METHODS.get("infomin").validate_config(cfg, DATA)
        build_view_augments(OmegaConf.to_container(cfg.augment), 32, (0.5,) * 3, (0.25,) * 3)
    assert "\n" not in str(err.value)
