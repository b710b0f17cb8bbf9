"""SupCon: the loss against the paper's Eq. 2 written out (through the method's own ``training_losses``),
anchors without a positive, the global batch under DDP, labels required, one-line errors, the presets."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.core.registry import DATASETS, METHODS
from contrastive.engine.method import DataInfo
from contrastive.losses.supcon import supcon_from_parts, supcon_loss
from tests.conftest import SMALL_HEADS

load_builtin_methods()
DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)


def _eq2_written_out(z, labels, t, scale=1.0):
    """Eq. 2: mean over anchors i of -1/|P(i)| sum_{p in P(i)} log exp(z_i.z_p/t) / sum_{a != i} exp(z_i.z_a/t),
    over every view of every image (``z``: list of vectors, ``labels``: their labels); anchors with no
    positive are left out."""
    terms = []
    for i in range(len(z)):
        others = [a for a in range(len(z)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / t) for a in others)
        terms.append(-sum(math.log(math.exp(float(z[i] @ z[p]) / t) / denominator) for p in positives) / len(positives))
    return scale * sum(terms) / len(terms)


def _multiviewed(features, labels):
    """``[B, V, D]`` and ``[B]`` -> the multiviewed batch as lists (every view of every image)."""
    b, v, _ = features.shape
    return [features[j, k] for k in range(v) for j in range(b)], [int(labels[j]) for k in range(v) for j in range(b)]


def test_loss_matches_eq2_with_a_class_of_one_image_and_two_views():
    g = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(6, 2, 5, generator=g), dim=2)  # [B, V, D]
    labels = torch.tensor([0, 1, 0, 2, 1, 0])  # class 2 has a single image: its only positive is its other view
    z, y = _multiviewed(features, labels)
    assert supcon_loss(features, labels, 0.5).item() == pytest.approx(_eq2_written_out(z, y, 0.5), rel=1e-5)
    # losses.py's scale temperature / base_temperature
    assert supcon_loss(features, labels, 0.1, 0.07).item() == pytest.approx(_eq2_written_out(z, y, 0.1, 0.1 / 0.07), rel=1e-5)


def test_anchors_without_a_positive_are_left_out_of_the_mean():
    g = torch.Generator().manual_seed(1)
    features = F.normalize(torch.randn(5, 1, 4, generator=g), dim=2)  # one view: image 4 has no positive at all
    labels = torch.tensor([3, 1, 3, 1, 7])
    z, y = _multiviewed(features, labels)
    loss = supcon_loss(features, labels, 0.2)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(_eq2_written_out(z, y, 0.2), rel=1e-5)


def test_each_process_contrasts_with_the_global_batch():
    """Two processes' anchors against the gathered batch (rank r: rows r*B .. r*B + B - 1) average to the
    loss of the whole batch in one process, and each differs from its local-only loss."""
    g = torch.Generator().manual_seed(2)
    features = F.normalize(torch.randn(8, 2, 4, generator=g), dim=2)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    whole = supcon_loss(features, labels, 0.3)
    parts = [supcon_from_parts(features[r * 4:(r + 1) * 4], labels[r * 4:(r + 1) * 4], features, labels, r * 4, 0.3)
             for r in range(2)]
    assert ((parts[0] + parts[1]) / 2).item() == pytest.approx(whole.item(), rel=1e-5)
    assert parts[0].item() != pytest.approx(supcon_loss(features[:4], labels[:4], 0.3).item(), rel=1e-3)


def _model(*overrides):
    cfg = load_config(["method=supcon", "backbone.kwargs.width=4", "batch_size=8", *SMALL_HEADS["supcon"], *overrides])
    METHODS.get("supcon").validate_config(cfg, DATA)
    torch.manual_seed(0)
    return METHODS.get("supcon")(cfg, DATA).train()


@pytest.mark.parametrize("normalize_representation", [True, False])
def test_training_losses_is_eq2_of_the_methods_own_projections(normalize_representation):
    model = _model(f"method.normalize_representation={str(normalize_representation).lower()}")
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([0, 1, 0, 2, 1, 1, 0, 3])
    views, labels = model.make_views(images, labels)
    loss = model.training_losses(views, labels, torch.arange(8))["loss"]
    with torch.no_grad():  # the same forward, written out: r (normalised or not) -> Proj -> unit sphere
        z = []
        for v in views:
            r = model.backbone(v)
            r = F.normalize(r, dim=1) if normalize_representation else r
            z.append(F.normalize(model.projection_head(r), dim=1))
    z, y = _multiviewed(torch.stack(z, dim=1), labels)
    expected = _eq2_written_out(z, y, float(model.cfg.method.temperature), 0.1 / 0.07)
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_projection_is_the_papers_mlp_or_one_linear_layer():
    mlp = _model("method.projection.batch_norm=false", "method.projection.hidden_dim=32").projection_head
    assert [type(m).__name__ for m in mlp] == ["Linear", "ReLU", "Linear"] and mlp[0].out_features == 32
    assert isinstance(_model("method.projection.num_layers=1").projection_head, torch.nn.Linear)


@pytest.mark.parametrize("override, message", [
    ("method.temperature=0", "method.temperature must be > 0, got 0"),
    ("method.base_temperature=-1", "method.base_temperature must be > 0 or null"),
    ("method.projection.num_layers=3", "method.projection.num_layers=3 is not valid; choose one of 1 (linear), 2"),
])
def test_bad_settings_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        METHODS.get("supcon").validate_config(load_config(["method=supcon", override]), DATA)


def test_a_dataset_without_labels_is_an_error(tmp_path):
    from contrastive.engine.run import prepare_run

    @DATASETS.register("synthetic_unlabeled_supcon")
    def unlabeled(cfg):
        splits = DATASETS.get("synthetic")(cfg)
        splits.train.labels[:] = -1
        return splits

    try:
        cfg = load_config(["method=supcon", "dataset.name=synthetic_unlabeled_supcon", "dataset.num_train=64",
                           "dataset.num_val=16", "batch_size=8", f"output_dir={tmp_path}"])
        with pytest.raises(ConfigError, match="'supcon' is supervised but dataset 'synthetic_unlabeled_supcon' has unlabeled"):
            prepare_run(cfg)
        assert not list(tmp_path.iterdir())
    finally:
        DATASETS.unregister("synthetic_unlabeled_supcon")


def test_presets_compose_with_the_papers_values():
    imagenet = load_config(["experiment=supcon_imagenet"])
    assert (imagenet.global_batch_size, imagenet.method.temperature, imagenet.trainer.max_epochs) == (6144, 0.1, 350)
    assert imagenet.optimizer.name == "lars" and imagenet.backbone.name == "resnet50"
    cifar = load_config(["experiment=supcon_cifar10"])
    assert (cifar.global_batch_size, cifar.optimizer.lr, cifar.method.temperature, cifar.augment.min_scale) == (1024, 0.5, 0.1, 0.2)
    assert cifar.method.normalize_representation is False and cifar.method.projection.batch_norm is False
