"""Sync-free rewrites compute what the boolean-mask / data-dependent versions computed: each checked against the
earlier formulation (written out here) on fixed inputs, and counted with no host sync; samplers hand out batches
without a host sync after the first of the epoch."""

import pytest
import torch
import torch.nn.functional as F
from lightly.utils import dist

from contrastive.engine.host_syncs import HostSyncCounter
from contrastive.losses.pairwise import view_similarities


def _masked_view_similarities(z0, z1, normalize, rank, world, gathered):
    """SimCLR Table 2's similarities as first written: positives and negatives picked with a boolean mask."""
    if normalize:
        z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    b = z0.shape[0]
    z0_all, z1_all = gathered(z0, z1)
    diag = torch.zeros(b, b * world, dtype=torch.bool)
    diag[torch.arange(b), torch.arange(b) + rank * b] = True
    s00, s01, s10, s11 = z0 @ z0_all.T, z0 @ z1_all.T, z1 @ z0_all.T, z1 @ z1_all.T
    pos = torch.cat([s01[diag], s10[diag]])
    neg0 = torch.cat([s01[~diag].view(b, -1), s00[~diag].view(b, -1)], 1)
    neg1 = torch.cat([s10[~diag].view(b, -1), s11[~diag].view(b, -1)], 1)
    return pos, torch.cat([neg0, neg1])


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("rank, world", [(0, 1), (1, 3)], ids=["one_process", "rank1_of_3"])
def test_view_similarities_equal_the_masked_version_without_a_host_sync(monkeypatch, normalize, rank, world):
    g = torch.Generator().manual_seed(rank + 10 * world)
    z0, z1 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    others = [[torch.randn(6, 5, generator=g) for _ in range(2)] for _ in range(world - 1)]  # the other processes' views
    norm = (lambda x: F.normalize(x, dim=1)) if normalize else (lambda x: x)

    def global_view(view, mine):  # view 0 or 1 of the global batch, this process's rows at position `rank`
        return [norm(o[view]) for o in others[:rank]] + [mine] + [norm(o[view]) for o in others[rank:]]

    def gathered(a, b):
        return torch.cat(global_view(0, a)), torch.cat(global_view(1, b))

    if world > 1:  # lightly's dist helpers as on `rank` of `world` processes (gather: view 0, then view 1)
        calls = iter((0, 1))
        monkeypatch.setattr(dist, "world_size", lambda: world)
        monkeypatch.setattr(dist, "rank", lambda: rank)
        monkeypatch.setattr(dist, "gather", lambda x: global_view(next(calls), x))
    expected = _masked_view_similarities(z0, z1, normalize, rank, world, gathered)
    counter = HostSyncCounter()
    with counter:
        pos, neg = view_similarities(z0, z1, normalize, gather=world > 1)
    assert counter.total == 0, counter.summary()
    assert neg.shape == (12, 2 * (6 * world - 1))
    assert torch.equal(pos, expected[0]) and torch.equal(neg, expected[1])


# ------------------------------------------------------------------ the Π-model's split of a batch
def _pimodel(labeled_per_batch):
    from contrastive.config.compose import load_config
    from contrastive.engine.method import DataInfo
    from contrastive.methods.pimodel import PiModel

    cfg = load_config(["method=pimodel", "backbone.kwargs.width=4", "batch_size=8", f"method.labeled_per_batch={labeled_per_batch}"])
    torch.manual_seed(0)
    return PiModel(cfg, DataInfo(num_classes=4, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)).train()


@pytest.mark.slow
@pytest.mark.parametrize("k", [1, 2])
def test_pimodel_split_at_labeled_per_batch_equals_the_split_by_labels_without_a_host_sync(k):
    """A batch of LabeledUnlabeledBatches (3 labelled images first): the fixed split gives the parts, views,
    targets and losses that the split by ``labels >= 0`` (two nonzero) gives, and no host sync."""
    fixed, by_labels = _pimodel(3), _pimodel(0)
    fixed.k = by_labels.k = k
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    labels = torch.tensor([2, 0, 3, -1, -1, -1, -1, -1])
    counter = HostSyncCounter()
    with counter:
        parts = fixed.labeled_parts(labels)
    assert counter.total == 0, counter.summary()
    expected = by_labels.labeled_parts(labels)
    assert all(torch.equal(a, b) for a, b in zip(parts, expected))
    outputs = []
    for model in (fixed, by_labels):
        torch.manual_seed(1)
        views, _ = model.make_views(images, labels)
        outputs.append((views, model.training_losses(views, labels, torch.arange(8))))
    for a, b in zip(outputs[0][0], outputs[1][0]):
        assert torch.equal(a, b)
    assert all(torch.equal(outputs[0][1][n], outputs[1][1][n]) for n in ("loss", "supervised", "consistency"))
    with pytest.raises(RuntimeError, match="labeled_per_batch=3 must hold its labelled images first"):
        fixed.labeled_parts(labels.flip(0))


# ------------------------------------------------------------------ samplers: one conversion per epoch
def _samplers(device):
    from contrastive.data.base import RandomBatchSampler
    from contrastive.data.samplers.prototype import PrototypeBatchSampler
    from contrastive.methods.pimodel import LabeledUnlabeledBatches

    mask = torch.arange(48) % 4 == 0
    assignments = torch.arange(48) % 3
    return {"random": RandomBatchSampler(48, 8, seed=1, device=device),
            "labeled_unlabeled": LabeledUnlabeledBatches(mask, 2, 8, seed=1, rank=0, world=1, device=device),
            "prototype": PrototypeBatchSampler(48, 8, seed=1, assignments=lambda: assignments, device=device)}


@pytest.mark.parametrize("kind", ["random", "labeled_unlabeled", "prototype"])
def test_samplers_give_batches_after_the_first_without_a_host_sync(kind):
    """Host batches (streamed data: lists for the workers) and device batches (int64 on the images' device) hold the
    same indices; after the first batch of the epoch (where the epoch's order is converted once) nothing syncs."""
    host, device = (_samplers(d)[kind] for d in (None, "cpu"))
    batches = {}
    for name, sampler in (("host", host), ("device", device)):
        it = iter(sampler)
        first = next(it)
        counter = HostSyncCounter()
        with counter:
            rest = list(it)
        assert counter.total == 0, (name, counter.summary())
        batches[name] = [first, *rest]
    assert all(isinstance(b, list) for b in batches["host"]) and all(isinstance(b, torch.Tensor) for b in batches["device"])
    assert batches["host"] == [b.tolist() for b in batches["device"]] and len(batches["host"]) >= 4
