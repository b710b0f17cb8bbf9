"""SimCLR: projection heads 0/1/2+, the Table 2 losses against their formulas,
un-normalised logits, wider ResNet-50s, the augmented linear probe."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import NTXentLoss
from omegaconf import OmegaConf
from torch import nn

from contrastive.config.compose import load_config
from contrastive.data import ImageArray
from contrastive.core.errors import ConfigError
from contrastive.losses.pairwise import margin_triplet, nt_logistic, nt_xent, nt_xent_views, view_similarities
from contrastive.engine.method import DataInfo
from tests.conftest import FAST

DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=512)
SMALL = ["backbone.kwargs.width=4", "method.projection.hidden_dim=32", "method.projection.output_dim=16"]


@functools.lru_cache(maxsize=None)
def _base():
    return load_config(FAST + ["method=simclr"] + SMALL)


def _simclr(*overrides):
    from contrastive.methods.simclr import SimCLR

    cfg = OmegaConf.merge(_base(), OmegaConf.from_dotlist(list(overrides)))
    SimCLR.validate_config(cfg, DATA)
    torch.manual_seed(0)
    return SimCLR(cfg, DATA)


def _views(model, n=8):
    x = model.eval_transform(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
    return [x, x.flip(3)]


# ---------------------------------------------------------------- the losses, written out
def _pairs(z0, z1, normalize=True):
    """All 2B views; view k's positive is view (k + B) mod 2B, every other view is a negative."""
    u = torch.cat([z0, z1])
    u = F.normalize(u, dim=1) if normalize else u
    n = len(u)
    return [(u[k], u[(k + n // 2) % n], [u[j] for j in range(n) if j not in (k, (k + n // 2) % n)]) for k in range(n)]


def _inputs(b=5, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)


@pytest.mark.parametrize("normalize", [True, False])
def test_nt_xent_against_its_formula_and_lightly(normalize):
    z0, z1 = _inputs()
    t = 0.5
    terms = []
    for u, v_pos, negs in _pairs(z0, z1, normalize):  # -u.v+/t + log sum_{v in {v+, v-}} exp(u.v/t)
        terms.append(-(u @ v_pos) / t + torch.log(torch.exp(u @ v_pos / t) + sum(torch.exp(u @ v / t) for v in negs)))
    expected = torch.stack(terms).mean()
    pos, neg = view_similarities(z0, z1, normalize)
    assert torch.allclose(nt_xent(pos, neg, t), expected, atol=1e-4)
    assert torch.allclose(nt_xent(pos, neg, t, "sum"), torch.stack(terms).sum(), atol=1e-3)
    if normalize:
        assert torch.allclose(nt_xent(pos, neg, t), NTXentLoss(t)(z0, z1), atol=1e-5)


@pytest.mark.parametrize("t", [0.5, 0.1])
def test_nt_xent_views_gives_lightlys_values_and_gradients_and_the_formula(t):
    """Masking a view's similarity to itself (no boolean indexing) instead of removing it changes nothing."""
    z0, z1 = _inputs()
    ours = [z.clone().requires_grad_() for z in (z0, z1)]
    theirs = [z.clone().requires_grad_() for z in (z0, z1)]
    loss = nt_xent_views(*ours, t)
    reference = NTXentLoss(t)(*theirs)
    loss.backward()
    reference.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    terms = [-(u @ v_pos) / t + torch.log(torch.exp(u @ v_pos / t) + sum(torch.exp(u @ v / t) for v in negs))
             for u, v_pos, negs in _pairs(z0, z1, True)]
    torch.testing.assert_close(loss.detach(), torch.stack(terms).mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nt_xent_views(z0, z1, t, reduction="sum"), torch.stack(terms).sum(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("semi_hard", [False, True])
def test_nt_logistic_against_its_formula(semi_hard):
    # SimCLR Table 2: maximise log s(u.v+/t) + log s(-u.v-/t); loss = -(...), negatives averaged.
    z0, z1 = _inputs(seed=1)
    t = 0.2
    terms = []
    for u, v_pos, negs in _pairs(z0, z1):
        s_pos = u @ v_pos
        chosen = [v for v in negs if u @ v < s_pos] if semi_hard else negs  # semi-hard: farther than the positive
        chosen = chosen or negs
        neg_term = sum(math.log(1 / (1 + math.exp(float(u @ v) / t))) for v in chosen) / len(chosen)
        terms.append(-math.log(1 / (1 + math.exp(-float(s_pos) / t))) - neg_term)
    pos, neg = view_similarities(z0, z1)
    assert nt_logistic(pos, neg, t, semi_hard).item() == pytest.approx(sum(terms) / len(terms), rel=1e-4)


@pytest.mark.parametrize("semi_hard", [False, True])
def test_margin_triplet_against_its_formula(semi_hard):
    # SimCLR Table 2: maximise -max(u.v- - u.v+ + m, 0); loss = max(...), negatives averaged.
    z0, z1 = _inputs(seed=2)
    m = 0.4
    terms = []
    for u, v_pos, negs in _pairs(z0, z1):
        s_pos = float(u @ v_pos)
        chosen = [v for v in negs if s_pos - m < float(u @ v) < s_pos] if semi_hard else negs  # FaceNet's semi-hard
        chosen = chosen or negs
        terms.append(sum(max(float(u @ v) - s_pos + m, 0.0) for v in chosen) / len(chosen))
    pos, neg = view_similarities(z0, z1)
    assert margin_triplet(pos, neg, m, semi_hard).item() == pytest.approx(sum(terms) / len(terms), rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------- heads and switches
def test_projection_heads_none_linear_mlp():
    assert isinstance(_simclr("method.projection.num_layers=0").projection_head, nn.Identity)
    linear = _simclr("method.projection.num_layers=1").projection_head
    assert isinstance(linear, nn.Linear) and linear.out_features == 16
    mlp = _simclr("method.projection.num_layers=3").projection_head
    assert sum(isinstance(m, nn.Linear) for m in mlp.modules()) == 3


@pytest.mark.parametrize("num_layers, loss", [(0, "nt_xent"), (1, "nt_xent"), (1, "margin_triplet")])
def test_no_head_and_linear_head_train(num_layers, loss):
    model = _simclr(f"method.projection.num_layers={num_layers}", f"method.loss={loss}")
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    backbone = [p.detach().clone() for p in model.backbone.parameters()]
    head = [p.detach().clone() for p in model.projection_head.parameters()]
    for _ in range(2):
        out = model.training_losses(_views(model), None, torch.arange(8))["loss"]
        assert torch.isfinite(out)
        optimizer.zero_grad()
        out.backward()
        optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(backbone, model.backbone.parameters()))  # the encoder learns
    assert all(not torch.equal(a, b) for a, b in zip(head, model.projection_head.parameters()))  # and the head, if any
    z = model.project(_views(model)[0])
    assert z.shape == (8, model.backbone.feature_dim if num_layers == 0 else 16)  # num_layers=0: the loss is on h


def test_unnormalised_logits_change_the_loss():
    model = _simclr()
    z0, z1 = _inputs()
    normalised = model.contrastive_loss(z0, z1)
    model.cfg.method.normalize = False
    pos, neg = view_similarities(z0, z1, normalize=False)
    t = float(model.cfg.method.temperature)
    assert torch.allclose(model.contrastive_loss(z0, z1), nt_xent(pos, neg, t)) and not torch.allclose(normalised, nt_xent(pos, neg, t))


@pytest.mark.parametrize("overrides, message", [
    (["method.projection.num_layers=-1"], "method.projection.num_layers must be >= 0"),
    (["method.loss=hinge"], "method.loss='hinge' is not valid; choose one of nt_xent, nt_logistic, margin_triplet"),
    (["method.semi_hard=true"], "semi_hard=true applies to method.loss=nt_logistic|margin_triplet"),
    (["method.margin=-1"], "method.margin must be >= 0"),
])
def test_bad_settings(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("|", r"\|").replace("(", r"\(")):
        _simclr(*overrides)


# ---------------------------------------------------------------- wider ResNet-50s, presets
def test_resnet50_width_multipliers_have_the_papers_parameter_counts():
    from contrastive.backbones.factory import create_backbone

    counts = {}
    for width in (1, 2, 4):
        with torch.device("meta"):  # no memory, no initialisation cost
            model = create_backbone("resnet50", 224, small_stem=False, width=width)
        counts[width] = sum(p.numel() for p in model.parameters()) / 1e6
        assert model.feature_dim == 2048 * width
    # SimCLR (Fig. 1, Table 8): ResNet-50 (1x / 2x / 4x) 24M / 94M / 375M parameters (encoder, no classifier)
    assert round(counts[1]) == 24 and round(counts[2]) == 94 and round(counts[4]) == 375
    with pytest.raises(ConfigError, match="choose one of 1, 2, 4"):
        create_backbone("resnet50", 224, width=3)


def test_paper_presets_compose_with_ten_warmup_epochs():
    for name in ("simclr_cifar10", "simclr_cifar10_head_none", "simclr_cifar10_loss_nt_logistic", "simclr_imagenet_rn50x4"):
        cfg = load_config([f"experiment={name}"])
        assert cfg.method.name == "simclr" and int(cfg.scheduler.warmup_epochs) == 10, name


# ---------------------------------------------------------------- the augmented linear probe
def test_augmented_probe_keeps_the_encoder_frozen_and_in_eval_mode():
    from contrastive.evaluation.probe_augmented import train_augmented_probe

    model = _simclr()
    model.train()
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    train_set = ImageArray(images, torch.arange(32) % 4)
    cfg = OmegaConf.merge(load_config([], config_name="eval").eval.linear, {"epochs": 2, "batch_size": 16})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []
    real_embed = model.embed
    model.embed = lambda x: seen.append(x.shape) or real_embed(x)
    head = train_augmented_probe(model, train_set, 4, model.eval_transform, cfg, torch.device("cpu"), progress=False)
    assert isinstance(head, nn.Linear) and head.out_features == 4 and len(seen) == 1 + 2 * 2  # every step re-embeds
    assert model.training  # its mode is restored afterwards ...
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # ... and nothing changed
    model.embed = lambda x: model.backbone.train() and real_embed(x)  # an encoder that leaves eval mode is caught
    with pytest.raises(AssertionError, match="eval mode"):
        train_augmented_probe(model, train_set, 4, model.eval_transform, cfg, torch.device("cpu"), progress=False)


def test_linear_eval_with_augment_true_trains_the_probe_on_augmented_images(tmp_path, monkeypatch):
    import linear_eval
    import contrastive.evaluation.runner as runner

    calls = []
    real = runner.train_augmented_probe
    monkeypatch.setattr(runner, "train_augmented_probe", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    summary = linear_eval.main(["checkpoint=random", "backbone=small_cnn", "backbone.kwargs.width=4", f"output_dir={tmp_path}",
                                "dataset.num_train=64", "dataset.num_val=32", "eval.mode=linear", "eval.linear.augment=true",
                                "eval.linear.epochs=1", "eval.progress_bar=false", "eval.batch_size=64"])
    (row,) = summary["results"]
    assert calls == [64] and row["recipe"]["augment"] is True and 0.0 <= row["top1"] <= 100.0
