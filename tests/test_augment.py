"""Tests for contrastive.augment.pipelines: batched on-device augmentation vs torchvision."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

from contrastive.augment.pipelines import (
    EvalTransform,
    SimCLRAugment,
    SupervisedAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    gaussian_blur,
    resized_crop,
    sample_crop_params,
    solarize,
)
from contrastive.core.errors import ConfigError

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 8, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=_gen(seed))  # [B, 3, H, W]


def _smooth_images(b: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Natural-ish images (smooth colour fields) so that crops differ visibly."""
    low = torch.rand(b, 3, 4, 4, generator=_gen(seed))  # [B, 3, 4, 4]
    up = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return (up.clamp(0, 1) * 255).round().to(torch.uint8)  # [B, 3, S, S]


# ---------------------------------------------------------------- output contract


@pytest.mark.parametrize("hw", [(32, 32), (40, 48)])
def test_simclr_output_shape_dtype_range(hw):
    aug = SimCLRAugment(32, ZERO, ONE, blur_prob=0.5, solarize_prob=0.5)
    out = aug(_images(16, *hw), generator=_gen())
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    no_hue = SimCLRAugment(32, ZERO, ONE, cj_hue=0.0)(_images(4, *hw), generator=_gen())
    assert no_hue.shape == (4, 3, 32, 32) and no_hue.min() >= 0.0 and no_hue.max() <= 1.0


def test_normalisation_uses_mean_and_std():
    mean, std = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)
    x = _images(4)
    raw = SimCLRAugment(32, ZERO, ONE)(x, generator=_gen(3))
    out = SimCLRAugment(32, mean, std)(x, generator=_gen(3))
    expected = (raw - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("module", [SimCLRAugment(32, ZERO, ONE), SupervisedAugment(32, ZERO, ONE),
                                    EvalTransform(32, ZERO, ONE)])
def test_rejects_non_uint8_and_bad_shapes(module):
    with pytest.raises(TypeError, match="uint8"):
        module(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        module(torch.zeros(3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        module(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


# ---------------------------------------------------------------- independence and distributions


def test_per_sample_independence():
    aug = SimCLRAugment(32, ZERO, ONE)
    batch = _smooth_images(1).expand(64, -1, -1, -1)  # [64, 3, 32, 32] copies of one image
    out = aug(batch, generator=_gen()).flatten(1)  # [64, 3072]
    dist = torch.cdist(out, out) + torch.eye(64) * 1e9  # [64, 64]
    assert (dist > 1e-2).all(), "two samples of the batch got the same augmentation"
    crops = aug.sample_params(64, 32, 32, generator=_gen()).crop  # [64, 4]
    assert len(torch.unique(crops, dim=0)) >= 60


def _crop_stats(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top, left, h, w = boxes.double().unbind(1)
    area, log_ar = h * w / (height * width), torch.log(w / h)
    q = torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64)
    return torch.stack([torch.cat([v.mean().view(1), torch.quantile(v, q)]) for v in (area, log_ar)])  # [2, 6]


def test_crop_params_match_torchvision_distribution():
    n, height, width = 20_000, 32, 32
    torch.manual_seed(0)
    img = torch.zeros(3, height, width)
    ref = torch.tensor([T.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(n)])
    ours = sample_crop_params(n, height, width, generator=_gen(1))  # [N, 4]
    assert ours.shape == (n, 4)
    top, left, h, w = ours.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= height).all() and (left + w <= width).all()
    got, want = _crop_stats(ours, height, width), _crop_stats(ref, height, width)  # [2, 6]
    torch.testing.assert_close(got[:, 0], want[:, 0], atol=0.01, rtol=0)  # means, ~4 standard errors
    torch.testing.assert_close(got[:, 1:], want[:, 1:], atol=0.02, rtol=0)  # quantiles (area is discrete)
    # offsets are uniform on the feasible range in both
    torch.testing.assert_close(ours[:, :2].double().mean(0), ref[:, :2].double().mean(0), atol=0.2, rtol=0)


def test_crop_params_fallback_matches_torchvision():
    # No sampled box fits a 10x100 image at scale >= 0.9: center crop clamped to ratio 4/3.
    expected = T.RandomResizedCrop.get_params(torch.zeros(3, 10, 100), [0.9, 1.0], [3 / 4, 4 / 3])
    ours = sample_crop_params(16, 10, 100, scale=(0.9, 1.0), generator=_gen())  # [16, 4]
    assert (ours == torch.tensor(expected, dtype=ours.dtype)).all()


def test_param_probabilities():
    n = 20_000
    aug = SimCLRAugment(32, ZERO, ONE, hflip_prob=0.5, cj_prob=0.8, gray_prob=0.2, blur_prob=0.3,
                        solarize_prob=0.1, cj_strength=0.5)
    p = aug.sample_params(n, 32, 32, generator=_gen())
    for got, want in ((p.flip, 0.5), (p.jitter, 0.8), (p.gray, 0.2), (p.sigma > 0, 0.3), (p.solarize, 0.1)):
        assert abs(got.float().mean().item() - want) < 0.015
    assert (p.order.sort(dim=1).values == torch.arange(4)).all(), "order must be a permutation per sample"
    assert len(torch.unique(p.order, dim=0)) == 24
    jit = p.factors[p.jitter]  # [N', 4]
    assert (jit[:, :3] >= 0.6).all() and (jit[:, :3] <= 1.4).all() and (jit[:, 3].abs() <= 0.1).all()
    torch.testing.assert_close(jit.mean(0), torch.tensor([1.0, 1.0, 1.0, 0.0]), atol=0.01, rtol=0)
    assert (p.factors[~p.jitter] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()
    blurred = p.sigma[p.sigma > 0]
    assert blurred.min() >= 0.1 and blurred.max() <= 2.0


# ---------------------------------------------------------------- colour ops vs torchvision


@pytest.mark.parametrize("ours, theirs, low, high, atol", [
    (adjust_brightness, TF.adjust_brightness, 0.0, 2.0, 1e-5),
    (adjust_contrast, TF.adjust_contrast, 0.0, 2.0, 1e-5),
    (adjust_saturation, TF.adjust_saturation, 0.0, 2.0, 1e-5),
    (adjust_hue, TF.adjust_hue, -0.5, 0.5, 1e-3),
])
def test_color_ops_match_torchvision(ours, theirs, low, high, atol):
    x = _images(8).float() / 255  # [8, 3, 32, 32]
    factors = low + (high - low) * torch.rand(8, generator=_gen(1))  # [8]
    out = ours(x, factors)
    expected = torch.stack([theirs(x[i], factors[i].item()) for i in range(8)])
    torch.testing.assert_close(out, expected, atol=atol, rtol=0)


def test_color_jitter_order_matches_torchvision():
    x = _smooth_images(6).float() / 255  # [6, 3, 32, 32]
    g = _gen(2)
    factors = torch.cat([0.6 + 0.8 * torch.rand(6, 3, generator=g), 0.2 * torch.rand(6, 1, generator=g) - 0.1], 1)
    order = torch.stack([torch.randperm(4, generator=g) for _ in range(6)])  # [6, 4]
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    expected = []
    for i in range(6):
        y = x[i]
        for op in order[i].tolist():
            y = ops[op](y, factors[i, op].item())
        expected.append(y)
    torch.testing.assert_close(color_jitter(x, factors, order), torch.stack(expected), atol=1e-3, rtol=0)
    torch.testing.assert_close(color_jitter(x, torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 6), order), x)


def test_gaussian_blur_matches_torchvision_and_sigma_zero_is_identity():
    x = _images(4).float() / 255
    sigma = torch.tensor([0.3, 1.0, 2.0, 0.0])
    out = gaussian_blur(x, sigma, 5)
    for i in range(3):
        torch.testing.assert_close(out[i], TF.gaussian_blur(x[i], [5, 5], [sigma[i].item()] * 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[3], x[3], atol=0, rtol=0)


def test_solarize():
    x = torch.tensor([0.0, 0.49, 0.5, 0.9]).view(1, 1, 1, 4).expand(2, 3, 1, 4)
    out = solarize(x, torch.tensor([True, False]))
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([0.0, 0.49, 0.5, 0.1]))
    torch.testing.assert_close(out[1], x[1])


# ---------------------------------------------------------------- geometry


def test_full_box_is_identity_and_flip_is_torch_flip():
    x = _images(4).float() / 255
    full = torch.tensor([[0.0, 0.0, 32.0, 32.0]]).expand(4, 4)
    no, yes = torch.zeros(4, dtype=torch.bool), torch.ones(4, dtype=torch.bool)
    torch.testing.assert_close(resized_crop(x, full, no, 32), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(resized_crop(x, full, yes, 32), torch.flip(x, dims=[3]), atol=1e-5, rtol=0)
    quarter = torch.tensor([[8.0, 16.0, 16.0, 16.0]]).expand(4, 4)  # top 8, left 16, 16x16 box
    torch.testing.assert_close(resized_crop(x, quarter, no, 16), x[:, :, 8:24, 16:32], atol=1e-5, rtol=0)


def test_simclr_apply_with_identity_params_returns_input():
    aug = SimCLRAugment(32, ZERO, ONE, blur_prob=1.0, solarize_prob=1.0)
    x = _images(4)
    p = aug.sample_params(4, 32, 32, generator=_gen())
    p.crop[:] = torch.tensor([0.0, 0.0, 32.0, 32.0])
    p.flip[:], p.gray[:], p.solarize[:], p.sigma[:] = False, False, False, 0.0
    p.factors[:] = torch.tensor([1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(aug.apply(x, p), x.float() / 255, atol=1e-5, rtol=0)


def test_upsampling_crop_close_to_torchvision_resized_crop():
    x = _smooth_images(2).float() / 255
    box, no = torch.tensor([[4.0, 6.0, 20.0, 18.0]]).expand(2, 4), torch.zeros(2, dtype=torch.bool)
    expected = TF.resized_crop(x, 4, 6, 20, 18, [32, 32], antialias=True)
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # border pixels clamp differently
    torch.testing.assert_close(resized_crop(x, box, no, 32)[interior], expected[interior], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- determinism, eval, supervised


def test_determinism_with_seeded_generator_and_global_rng():
    aug, x = SimCLRAugment(32, ZERO, ONE, blur_prob=0.5), _images(8)
    torch.testing.assert_close(aug(x, generator=_gen(5)), aug(x, generator=_gen(5)), atol=0, rtol=0)
    assert not torch.equal(aug(x, generator=_gen(5)), aug(x, generator=_gen(6)))
    torch.manual_seed(11)
    first = aug(x)
    torch.manual_seed(11)
    torch.testing.assert_close(aug(x), first, atol=0, rtol=0)


def test_eval_transform_is_deterministic_and_matches_torchvision():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = _images(3, 40, 56)
    ev = EvalTransform(32, mean, std)
    out = ev(x)
    assert out.shape == (3, 3, 32, 32)
    torch.testing.assert_close(ev(x), out, atol=0, rtol=0)
    ref = TF.normalize(TF.center_crop(TF.resize(x.float() / 255, 32, antialias=True), [32, 32]), mean, std)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    same = _images(3)
    torch.testing.assert_close(EvalTransform(32, ZERO, ONE)(same), same.float() / 255)


def test_supervised_shift_within_padding():
    # R encodes the source row, G the source column, B marks real (non-padding) pixels.
    idx = torch.arange(32) * 8 + 4
    img = torch.stack([idx.view(32, 1).expand(32, 32), idx.view(1, 32).expand(32, 32),
                       torch.full((32, 32), 255)]).to(torch.uint8)  # [3, 32, 32]
    aug = SupervisedAugment(32, ZERO, ONE, padding=4, hflip_prob=0.0)
    out = (aug(img.expand(256, -1, -1, -1), generator=_gen()) * 255).round()  # [256, 3, 32, 32]
    real = out[:, 2] == 255  # [256, 32, 32]
    rows = torch.arange(32).view(1, 32, 1).float()
    cols = torch.arange(32).view(1, 1, 32).float()
    dy = torch.where(real, (out[:, 0] - 4) / 8 - rows, torch.nan)  # [256, 32, 32]
    dx = torch.where(real, (out[:, 1] - 4) / 8 - cols, torch.nan)
    assert ((out[:, :2] == 0) | real.unsqueeze(1)).all(), "padding must be zeros"
    shifts = []
    for d in (dy, dx):
        per_sample = d.flatten(1)  # [256, 1024]
        lo, hi = per_sample.nan_to_num(99).amin(1), per_sample.nan_to_num(-99).amax(1)
        assert (lo == hi).all(), "each sample must be a pure shift"
        assert (lo.abs() <= 4).all()
        shifts.append(lo)
    assert len(torch.unique(torch.stack(shifts, 1), dim=0)) >= 60  # 81 possible shifts


def test_supervised_flip_and_modes():
    x = _images(4)
    flip = SupervisedAugment(32, ZERO, ONE, padding=0, hflip_prob=1.0)(x)
    torch.testing.assert_close(flip, torch.flip(x.float() / 255, dims=[3]), atol=1e-5, rtol=0)
    out = SupervisedAugment(32, ZERO, ONE, random_resized_crop=True)(_images(4, 48, 40), generator=_gen())
    assert out.shape == (4, 3, 32, 32) and 0 <= out.min() and out.max() <= 1
    assert SupervisedAugment(24, ZERO, ONE)(_images(4, 40, 40)).shape == (4, 3, 24, 24)


def _ramp(size: int = 32) -> torch.Tensor:
    """R = 8 * row + 4, G = 8 * column + 4, B = 255: bilinear sampling of it is exact (linear ramps)."""
    idx = torch.arange(size) * 8 + 4
    return torch.stack([idx.view(size, 1).expand(size, size), idx.view(1, size).expand(size, size),
                        torch.full((size, size), 255)]).to(torch.uint8)  # [3, S, S]


def test_shift_with_nearest_fill_of_a_known_image():
    from contrastive.augment.ops import SHIFT_FILLS, shift_boxes

    x = _ramp().float().div(255).unsqueeze(0).expand(2, -1, -1, -1)  # [2, 3, 32, 32]
    # u -> shift (2u - 1) * 0.125 * 32: (dy, dx) = (2.5, -3.0) and (-4.0, 1.0) pixels
    shift = torch.tensor([[2.5, -3.0], [-4.0, 1.0]])
    boxes = shift_boxes((shift / 4.0 + 1.0) / 2.0, 32, shift_range=0.125)  # [2, 4]
    torch.testing.assert_close(boxes[:, :2], shift)
    out = resized_crop(x, boxes, torch.zeros(2, dtype=torch.bool), 32, SHIFT_FILLS["nearest"]) * 255  # [2, 3, 32, 32]
    pos = torch.arange(32.0)
    for n, (dy, dx) in enumerate(shift.tolist()):
        # output (i, j) = input (clamp(i + dy), clamp(j + dx)): the edge pixel repeated past the border
        torch.testing.assert_close(out[n, 0], ((pos + dy).clamp(0, 31) * 8 + 4).view(32, 1).expand(32, 32), atol=1e-3, rtol=0)
        torch.testing.assert_close(out[n, 1], ((pos + dx).clamp(0, 31) * 8 + 4).view(1, 32).expand(32, 32), atol=1e-3, rtol=0)
        assert (out[n, 2] - 255).abs().max() < 1e-3  # nothing uncovered is black
    ndimage = pytest.importorskip("scipy.ndimage")  # what Keras' apply_affine_transform calls (order 1, mode nearest)
    img = torch.rand(32, 32, generator=_gen())
    ours = resized_crop(img.view(1, 1, 32, 32), boxes[:1], torch.zeros(1, dtype=torch.bool), 32, "border")[0, 0]
    keras = ndimage.shift(img.double().numpy(), (-2.5, 3.0), order=1, mode="nearest")
    torch.testing.assert_close(ours.double(), torch.from_numpy(keras), atol=1e-5, rtol=0)


def test_continuous_shifts_are_uniform_within_the_range_and_zero_fill_stays():
    aug = SupervisedAugment(32, ZERO, ONE, padding=0, shift_range=0.125, shift_fill="nearest", hflip_prob=0.0)
    out = aug(_ramp().expand(2048, -1, -1, -1), generator=_gen()) * 255  # [2048, 3, 32, 32]
    dy, dx = (out[:, 0, 16, 16] - 4) / 8 - 16, (out[:, 1, 16, 16] - 4) / 8 - 16  # [2048] each; centre never clamped
    for d in (dy, dx):
        assert d.abs().max() <= 4.0 + 1e-3 and d.abs().max() > 3.9  # [-0.125 * 32, 0.125 * 32]
        assert (d - d.round()).abs().max() > 0.4  # continuous, not integer
        counts = torch.histc(d, bins=8, min=-4.0, max=4.0)  # uniform: 256 per bin
        assert (counts - 256).abs().max() < 70, counts
    assert (out[:, 2] - 255).abs().max() < 1e-3  # nearest fill: no black border
    assert torch.corrcoef(torch.stack([dy, dx]))[0, 1].abs() < 0.1  # rows and columns drawn independently
    zero = SupervisedAugment(32, ZERO, ONE, padding=0, shift_range=0.125, hflip_prob=0.0)  # default fill "zero"
    assert (zero(_ramp().expand(64, -1, -1, -1), generator=_gen())[:, 2] < 0.5).any()  # uncovered pixels are black


# ---------------------------------------------------------------- argument validation


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_size=4), "image_size"),
    (dict(hflip_prob=1.5), r"hflip_prob must be in \[0.0, 1.0\], got 1.5"),
    (dict(cj_prob=-0.1), "cj_prob"),
    (dict(gray_prob=2), "gray_prob"),
    (dict(blur_prob=-1), "blur_prob"),
    (dict(solarize_prob=1.1), "solarize_prob"),
    (dict(min_scale=0.0), "min_scale"),
    (dict(min_scale=0.5, max_scale=0.4), "min_scale"),
    (dict(max_scale=1.2), "max_scale"),
    (dict(cj_strength=-1), "cj_strength"),
    (dict(cj_hue=2.0), "cj_hue"),
    (dict(blur_sigma=(0.0, 1.0)), "blur_sigma"),
    (dict(mean=(0.5, 0.5)), "mean and std"),
    (dict(std=(0.5, 0.0, 0.5)), "std"),
])
def test_simclr_argument_validation(kwargs, match):
    args = dict(image_size=32, mean=ZERO, std=ONE) | kwargs
    with pytest.raises(ValueError, match=match):
        SimCLRAugment(**args)
    with pytest.raises(ConfigError):
        SimCLRAugment(**args)


@pytest.mark.parametrize("cls, kwargs, match", [
    (SupervisedAugment, dict(padding=-1), "padding"),
    (SupervisedAugment, dict(hflip_prob=3), "hflip_prob"),
    (SupervisedAugment, dict(min_scale=0), "min_scale"),
    (SupervisedAugment, dict(shift_fill="reflect"), "augment.shift_fill must be one of zero, nearest, got 'reflect'"),
    (SupervisedAugment, dict(padding=0, shift_range=1.5), r"augment.shift_range must be null or a fraction .* \(0, 1\), got 1.5"),
    (SupervisedAugment, dict(padding=0, shift_range=True), "augment.shift_range"),
    (SupervisedAugment, dict(padding=4, shift_range=0.1), "set augment.padding=0 or augment.shift_range=null"),
    (SupervisedAugment, dict(padding=0, shift_range=0.1, random_resized_crop=True), "random_resized_crop"),
    (EvalTransform, dict(image_size=7), "image_size"),
    (EvalTransform, dict(std=(1, 1, -1)), "std"),
])
def test_other_argument_validation(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**(dict(image_size=32, mean=ZERO, std=ONE) | kwargs))


def test_kernel_size_is_odd_and_about_ten_percent():
    for size, k in ((32, 3), (96, 9), (224, 23)):
        assert SimCLRAugment(size, ZERO, ONE).kernel_size == k
    assert math.isclose(SimCLRAugment(224, ZERO, ONE).kernel_size / 224, 0.1, abs_tol=0.01)


def test_hue_on_a_subset_equals_the_masked_whole_batch_path():
    from contrastive.augment.ops import _hue_slot

    g = torch.Generator().manual_seed(3)
    x = torch.rand(8, 3, 6, 6, generator=g)  # [B, 3, H, W]
    shift = torch.tensor([0.0, 0.3, 0.0, -0.2, 0.5, 0.0, 0.1, -0.5])  # [B]; 0 = not this slot
    subset, masked = _hue_slot(x, shift, subset=True), _hue_slot(x, shift, subset=False)
    torch.testing.assert_close(subset, masked)
    torch.testing.assert_close(subset[shift == 0], x[shift == 0])  # untouched where no shift
    assert not torch.allclose(subset[shift != 0], x[shift != 0])
