"""Tests for the procedural ``synthetic`` dataset."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from contrastive.data.sources.synthetic import CLASS_NAMES, generate_shapes

NUM_TRAIN, NUM_TEST = 1000, 500


@pytest.fixture(scope="module")
def splits():
    """A train and a test split from different seeds, 32x32, 10 classes."""
    return generate_shapes(NUM_TRAIN, 32, 10, seed=0), generate_shapes(NUM_TEST, 32, 10, seed=1)


def _probe(train_x, train_y, test_x, test_y) -> float:
    """Test accuracy of a (standardised) sklearn logistic regression on few features."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(np.asarray(train_x), train_y.numpy())
    return float(model.score(np.asarray(test_x), test_y.numpy()))


def _torch_probe(train_x, train_y, test_x, test_y, iters=50, l2=1e-3) -> float:
    """Test accuracy of an L2-regularised logistic regression fitted with full-batch
    L-BFGS in float32: the same model as sklearn's, but several times faster on 3072
    raw-pixel features (it reaches ~100% train accuracy in these iterations)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-3
    x, xt = (train_x - mean) / std, (test_x - mean) / std
    w = torch.zeros(x.shape[1], int(train_y.max()) + 1, requires_grad=True)
    b = torch.zeros(w.shape[1], requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w + b, train_y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float(((xt @ w + b).argmax(1) == test_y).float().mean())


def _shape_features(images: torch.Tensor) -> torch.Tensor:
    """Colour-free, position-free shape statistics: how gradient orientations and
    magnitudes are distributed (harmonics of the edge orientation histogram, edge
    density), at two scales."""
    g = images.float().mean(1, keepdim=True)
    g = (g - g.mean((2, 3), keepdim=True)) / (g.std((2, 3), keepdim=True) + 1e-3)
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    feats = []
    for h in (g, F.avg_pool2d(g, 2)):
        gx, gy = F.conv2d(h, sobel[None, None]), F.conv2d(h, sobel.T[None, None])
        mag, theta = torch.hypot(gx, gy).flatten(1), torch.atan2(gy, gx).flatten(1)
        total = mag.sum(1) + 1e-6
        for k in (2, 4, 6, 8):  # even harmonics: invariant to the contrast's polarity
            re, im = (mag * torch.cos(k * theta)).sum(1) / total, (mag * torch.sin(k * theta)).sum(1) / total
            feats += [torch.hypot(re, im), re]
        feats += list(torch.quantile(mag, torch.tensor([0.5, 0.75, 0.9, 0.97]), dim=1))
    return torch.stack(feats, 1)


def test_class_names():
    assert len(CLASS_NAMES) >= 10
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES)


@pytest.mark.parametrize("size, classes", [(32, 10), (16, 2), (24, len(CLASS_NAMES))])
def test_shape_dtype_range(size, classes):
    images, labels = generate_shapes(97, size, classes, seed=3)
    assert images.shape == (97, 3, size, size) and images.dtype == torch.uint8
    assert labels.shape == (97,) and labels.dtype == torch.int64
    assert labels.min() >= 0 and labels.max() < classes
    assert images.float().std() > 20  # not blank


def test_deterministic_and_seed_dependent():
    state = torch.get_rng_state()
    # More than one internal chunk (4096 images), to cover the chunked path too.
    a_images, a_labels = generate_shapes(4100, 16, 10, seed=7)
    b_images, b_labels = generate_shapes(4100, 16, 10, seed=7)
    assert torch.equal(a_images, b_images) and torch.equal(a_labels, b_labels)
    assert torch.equal(torch.get_rng_state(), state), "global RNG state must not be touched"
    c_images, c_labels = generate_shapes(4100, 16, 10, seed=8)
    assert not torch.equal(a_labels, c_labels)
    assert (a_images != c_images).flatten(1).any(1).all(), "different seeds must give different images"


def test_splits_do_not_share_images(splits):
    (train_x, _), (test_x, _) = splits
    train = {bytes(x.numpy()) for x in train_x}
    assert not any(bytes(x.numpy()) in train for x in test_x)


@pytest.mark.parametrize("n, k", [(1003, 10), (50, 16), (1, 2)])
def test_classes_balanced(n, k):
    _, labels = generate_shapes(n, 16, k, seed=0)
    counts = torch.bincount(labels, minlength=k)
    assert counts.max() - counts.min() <= 1 and counts.sum() == n
    if n >= 2 * k:
        assert not torch.equal(labels, torch.arange(n) % k), "labels must be shuffled"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes"),
        ({"num_classes": len(CLASS_NAMES) + 1}, "num_classes"),
        ({"num_images": 0}, "num_images"),
        ({"image_size": 15}, "image_size"),
    ],
)
def test_invalid_arguments(kwargs, match):
    args = {"num_images": 10, "image_size": 32, "num_classes": 10, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate_shapes(**args)


def test_color_carries_no_class_information(splits):
    (train_x, train_y), (test_x, test_y) = splits
    mean_rgb = lambda x: x.float().mean((2, 3))  # noqa: E731
    acc = _probe(mean_rgb(train_x), train_y, mean_rgb(test_x), test_y)
    print(f"mean-colour logistic regression: {acc:.3f}")
    assert acc < 0.20


@pytest.mark.slow
def test_raw_pixels_are_a_weak_baseline(splits):
    (train_x, train_y), (test_x, test_y) = splits
    pixels = lambda x: x.flatten(1).float() / 255  # noqa: E731
    acc = _torch_probe(pixels(train_x), train_y, pixels(test_x), test_y)
    print(f"raw-pixel logistic regression: {acc:.3f}")
    assert acc < 0.40


def test_classes_are_learnable_from_shape(splits):
    (train_x, train_y), (test_x, test_y) = splits
    acc = _probe(_shape_features(train_x), train_y, _shape_features(test_x), test_y)
    print(f"shape-feature logistic regression: {acc:.3f}")
    assert acc > 0.80
