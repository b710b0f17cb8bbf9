"""Π-model (methods/pimodel.py): one step on a batch with a labelled fraction, the unsupervised
term on the unlabelled part only, the composition with ImCLR's input, the paired sampler."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.errors import ConfigError
from contrastive.engine.method import DataInfo
from contrastive.methods.pimodel import LabeledUnlabeledBatches, consistency_loss, rampup
from contrastive.core.registry import METHODS

load_builtin_methods()
PiModel = METHODS.get("pimodel")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _model(*overrides):
    cfg = load_config(["method=pimodel", "backbone.kwargs.width=4", "batch_size=8", *overrides])
    data = DataInfo(num_classes=4, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    PiModel.validate_config(cfg, data)
    torch.manual_seed(0)
    return PiModel(cfg, data).train()


def test_one_step_supervised_on_labelled_and_consistency_on_unlabelled():
    model = _model("method.consistency=3.0", "method.rampup_steps=0")
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2, 3, -1, -1, -1, -1])  # half labelled
    torch.manual_seed(1)
    (x_lab, targets, x_u1, x_u2), _ = model.make_views(images, labels)
    assert x_lab.shape == (4, 3, 16, 16) and x_u1.shape == x_u2.shape == (4, 3, 16, 16)
    assert torch.equal(targets, F.one_hot(torch.arange(4), 4).float())
    assert not torch.allclose(x_u1, x_u2)  # two independent augmentations of the same images
    losses = model.training_losses((x_lab, targets, x_u1, x_u2), labels, torch.arange(8))
    logits = model.classifier(model.backbone(torch.cat([x_lab, x_u1, x_u2])))  # the same BN batch
    sup = F.cross_entropy(logits[:4], torch.arange(4))
    cons = ((logits[4:8].softmax(1) - logits[8:].softmax(1)) ** 2).sum(1).mean() / 4  # mean over rows and classes
    assert torch.allclose(losses["supervised"], sup, atol=1e-5)
    assert torch.allclose(losses["consistency"], cons, atol=1e-6) and cons > 0
    assert torch.allclose(losses["loss"], sup + 3.0 * cons, atol=1e-5)
    # the unsupervised term sees only the unlabelled part: with fixed BatchNorm statistics (eval mode,
    # so no coupling through the batch) its gradient does not reach the labelled inputs at all. The
    # method's own loss is differentiated, with the consistency weight 3 and 0 (the same weights): the
    # difference of the input gradients is 3 x the consistency term's
    model.eval()
    no_consistency = _model("method.consistency=0.0", "method.rampup_steps=0").eval()
    no_consistency.load_state_dict(model.state_dict())
    grads = []
    for net in (model, no_consistency):
        xs = [x.clone().requires_grad_(True) for x in (x_lab, x_u1, x_u2)]
        out = net.training_losses((xs[0], targets, xs[1], xs[2]), labels, torch.arange(8))
        grads.append(torch.autograd.grad(out["loss"], xs))
    assert out["consistency"] > 0 and torch.count_nonzero(grads[1][1]) == 0  # weight 0: only the supervised term
    grad_lab, grad_u1, grad_u2 = (a - b for a, b in zip(*grads))
    assert grad_u1.abs().sum() > 0 and grad_u2.abs().sum() > 0
    assert torch.count_nonzero(grad_lab) == 0
    model.train()
    term = model.training_losses((x_lab, targets, x_u1, x_u2), labels, torch.arange(8))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    term["loss"].backward()
    opt.step()
    assert all(not torch.equal(p, q) for p, q in zip(model.parameters(), before))


def test_imclr_input_pairs_within_each_part_and_labels_are_hidden_by_the_mask():
    model = _model("method.k=2")
    images = torch.arange(8, dtype=torch.uint8).mul(30).view(8, 1, 1, 1).expand(8, 3, 16, 16).contiguous()
    labels = torch.tensor([0, 1, 2, 3, -1, -1, -1, -1])
    (x_lab, targets, x_u1, _), _ = model.make_views(images, labels)
    assert x_lab.shape == (4, 3, 32, 16) and x_u1.shape == (4, 3, 32, 16)  # two images stacked along the height
    assert torch.allclose(targets.sum(1), torch.ones(4)) and (targets == 0.5).any()  # mean of two one-hots
    model.labeled_mask[:] = False
    model.labeled_mask[[10, 11]] = True  # only training samples 10 and 11 keep their label
    model._trainer = SimpleNamespace(training=True)  # what Lightning's training loop looks like to the hook
    try:
        (x_lab, _, x_u1, _), seen, _ = model.on_after_batch_transfer((images, torch.arange(8) % 4, torch.arange(8, 16)), 0)
    finally:
        model._trainer = None
    assert seen.tolist() == [-1, -1, 2, 3, -1, -1, -1, -1] and x_lab.shape[0] == 2 and x_u1.shape[0] == 6
    assert model.embed(torch.randn(2, 3, 16, 16)).shape == (2, model.backbone.feature_dim)


def test_paired_sampler_rampup_and_bad_values():
    mask = torch.zeros(40, dtype=torch.bool)
    mask[:6] = True
    sampler = LabeledUnlabeledBatches(mask, labeled=2, batch_size=6, seed=0, rank=0, world=1)
    batches = list(sampler)  # lists of ints (no device), the labelled indices first
    assert len(batches) == len(sampler) == 34 // 4
    assert all([bool(mask[i]) for i in b] == [True] * 2 + [False] * 4 for b in batches)
    unl = [i for b in batches for i in b if not mask[i]]
    assert len(set(unl)) == len(unl)  # each unlabelled image at most once per epoch
    assert rampup(0, 100) == pytest.approx(float(torch.exp(torch.tensor(-5.0))))
    assert rampup(50, 100) == pytest.approx(float(torch.exp(torch.tensor(-1.25)))) and rampup(500, 100) == 1.0
    with pytest.raises(ConfigError, match="labeled_per_batch=8 must be in \\[0, batch_size=8\\)"):
        _model("method.labeled_per_batch=8")
    with pytest.raises(ConfigError, match="method.control='x' is not valid"):
        _model("method.control=x")


def test_streamed_batches_give_each_pass_and_slot_its_own_crop():
    """dataset.storage=stream / dataset=shards: a batch is [B, 2k, 3, S, S] crops; slot j of pass p
    takes crop j + p k (so the two passes of the consistency term see different crops)."""
    model = _model("method.k=2")  # supervised augmentation: the photometric part is the normalisation
    assert model.crops_per_image() == 4
    crops = torch.arange(4, dtype=torch.uint8).mul(60).view(1, 4, 1, 1, 1).expand(8, 4, 3, 16, 16).contiguous()
    labels = torch.tensor([0, 1, 2, 3, -1, -1, -1, -1])
    (x_lab, _, x_u1, x_u2), _ = model.make_views(crops, labels)  # [B, 3, 32, 16] each
    level = lambda x, slot: round(float(x[:, 0, 16 * slot : 16 * slot + 16].mean()) * 0.25 * 255 + 0.5 * 255)  # noqa: E731
    assert [level(x_lab, 0), level(x_lab, 1)] == [0, 60]  # pass 0: crops 0 and 1
    assert [level(x_u1, 0), level(x_u1, 1)] == [0, 60]
    assert [level(x_u2, 0), level(x_u2, 1)] == [120, 180]  # pass 1: crops 2 and 3
