"""SPCL: k-means, prototype-aware batches, its losses, bad input and training runs."""

import contextlib
import csv
import functools
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

import contrastive.methods.spcl as spcl_module
import train
from contrastive.config.compose import load_config
from contrastive.data.base import ImageArray, RandomBatchSampler
from contrastive.data.samplers.prototype import PrototypeBatchSampler
from contrastive.core.errors import ConfigError
from contrastive.clustering.kmeans import align_labels, cluster_stats, kmeans
from contrastive.clustering.prototype_pairs import prototype_pairs
from contrastive.metrics.pair_similarity import tp_fn_similarity
from contrastive.losses.classification import symmetric_cross_entropy
from contrastive.engine.method import DataInfo
from tests.conftest import FAST


def _blobs(n_per=60, centers=4, dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = F.normalize(torch.randn(centers, dim, generator=g), dim=1) * 5
    x = torch.cat([m + 0.3 * torch.randn(n_per, dim, generator=g) for m in means])
    return x, torch.arange(centers).repeat_interleave(n_per)


DATA = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=512)
DATA_SMALL = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=40)
#: Small heads and encoder: a step in well under a second on 2 shared cores.
SMALL_HEADS = ["backbone.kwargs.width=4", "method.projection.hidden_dim=64", "method.projection.output_dim=32",
               "method.metric_hidden_dim=32"]
#: Two epochs of 2 steps on 64 images, no kNN pass: what a re-clustering test needs and no more.
TINY_RUN = FAST + ["dataset.num_train=64", "dataset.num_val=32", "batch_size=32", "knn.enabled=false",
                   "knn.random_init_baseline=false"]


@functools.lru_cache(maxsize=None)
def _base_config():
    return load_config(FAST + ["method=spcl"])


def _spcl(overrides=(), data=DATA):
    """A validated SPCL model on FAST settings, without generating the dataset. Value overrides
    are merged into one composed config (composing per test costs ~0.25 s CPU each)."""
    from contrastive.methods.spcl import SPCL

    cfg = OmegaConf.merge(_base_config(), OmegaConf.from_dotlist(list(overrides)))
    SPCL.validate_config(cfg, data)
    return SPCL(cfg, data)


def _views(model, n=16):
    """Two (un-augmented) float views of ``n`` random images: loss tests need no augmentation."""
    x = model.eval_transform(_images(n))  # [n, 3, 32, 32]
    return [x, x.flip(3)]


def _images(n=16, seed=0):
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- k-means
def test_kmeans_assigns_every_index_deterministically_and_finds_blobs():
    x, truth = _blobs()
    a1, c1 = kmeans(x, 4, niter=10, seed=3)
    a2, c2 = kmeans(x, 4, niter=10, seed=3)
    assert a1.shape == (len(x),) and a1.dtype == torch.int64 and a1.min() >= 0 and a1.max() < 4
    assert torch.equal(a1, a2) and torch.equal(c1, c2) and c1.shape == (4, 16)
    assert torch.allclose(c1.norm(dim=1), torch.ones(4), atol=1e-4)  # spherical
    for c in range(4):  # every blob is one cluster
        assert len(torch.unique(a1[truth == c])) == 1
    assert len(torch.unique(a1)) == 4
    with pytest.raises(ConfigError, match="k=300"):
        kmeans(x, 300)


def test_cluster_stats_counts_empty_and_tiny_clusters():
    stats = cluster_stats(torch.tensor([0, 0, 0, 2, 3, 3]), k=5)
    assert stats["empty_clusters"] == 2 and stats["tiny_clusters"] == 1
    assert stats["min_cluster_size"] == 0 and stats["max_cluster_size"] == 3


# ---------------------------------------------------------------- sampler
def test_prototype_batches_respect_anchor_ratio_and_shard():
    sizes = [150, 100, 80, 60, 9, 1]  # prototype 4 is smaller than the anchor share; 5 can never anchor
    assignments = torch.cat([torch.full((s,), c) for c, s in enumerate(sizes)])
    assignments = assignments[torch.randperm(len(assignments), generator=torch.Generator().manual_seed(0))]
    n, bsz = len(assignments), 40
    sampler = PrototypeBatchSampler(n, bsz, seed=1, assignments=lambda: assignments, anchor_fraction=0.25)
    plan = sampler.plan(assignments)
    assert len(plan) == len(sampler) == n // bsz
    for anchor, batch in plan:
        assert sizes[anchor] >= 2 and len(batch) == bsz and len(torch.unique(batch)) == bsz
        assert int((assignments[batch] == anchor).sum()) == min(10, sizes[anchor])
        assert int(assignments[batch[0]]) == anchor  # the anchor prototype's members come first (the metric loss reads it there)
    assert [b for b in sampler] == [b.tolist() for _, b in plan]
    sampler.set_epoch(1)
    assert [b for b in sampler] != [b.tolist() for _, b in plan]  # new epoch, new batches
    again = PrototypeBatchSampler(n, bsz, seed=1, assignments=lambda: assignments, anchor_fraction=0.25)
    again.set_epoch(1)
    assert list(again) == list(sampler)  # deterministic per seed + epoch
    # Two processes: interleaved shares of the same plan, disjoint within a step.
    ranks = [PrototypeBatchSampler(n, bsz // 2, 1, r, 2, lambda: assignments, 0.5) for r in (0, 1)]
    full = ranks[0].plan(assignments)
    for r, s in enumerate(ranks):
        assert list(s) == [b.tolist() for _, b in full[r::2]]
        assert all(int((assignments[b] == a).sum()) == min(10, sizes[a]) for a, b in full[r::2])


def test_sampler_is_random_before_the_first_clustering():
    sampler = PrototypeBatchSampler(200, 32, seed=4, assignments=lambda: None)
    sampler.set_epoch(2)
    reference = RandomBatchSampler(200, 32, seed=4)
    reference.set_epoch(2)
    assert list(sampler) == list(reference)


# ---------------------------------------------------------------- losses
def test_prototype_pairs_anchor_only_on_the_anchor_prototype_with_one_positive_and_one_negative_each():
    protos = torch.tensor([2, 0, 2, 1, 1, 2, 0, 2])  # anchor prototype c = 2: members 0, 2, 5, 7
    members = {0, 2, 5, 7}
    for seed in range(5):
        anchors, partners, labels = _pairs(protos, 2, generator=torch.Generator().manual_seed(seed))
        assert len(anchors) == 2 * len(members)
        pos, neg = slice(0, len(members)), slice(len(members), None)
        assert set(anchors[pos].tolist()) == members and sorted(anchors[neg].tolist()) == sorted(anchors[pos].tolist())
        assert all(int(protos[a]) == 2 for a in anchors.tolist())  # no anchor outside P_c
        for a, p in zip(anchors[pos].tolist(), partners[pos].tolist()):
            assert int(protos[p]) == 2 and p != a  # one other member of P_c
        assert all(int(protos[p]) != 2 for p in partners[neg].tolist())  # one member of P_\c (another prototype)
        assert labels.tolist() == [1.0] * 4 + [0.0] * 4
    a, p, y = _pairs(torch.tensor([1, 0, 0]), 1)
    assert a.tolist() == [0, 0] and p[0] == 0 and p[1] in (1, 2) and y.tolist() == [1.0, 0.0]  # alone: its other view
    a, p, y = _pairs(torch.tensor([3, 3, 3]), 3)
    assert len(a) == 3 and y.tolist() == [1.0] * 3  # the whole batch is P_c: no negative exists
    assert len(_pairs(torch.tensor([0, 1]), 5)[0]) == 0
    assert [len(t) for t in prototype_pairs(torch.tensor([0, 1]), 5)] == [4] * 4  # fixed shapes: [2B] each, weights 0


def _pairs(prototypes, anchor, generator=None):
    """The pairs themselves: the rows of weight 1 (positives first, then negatives)."""
    anchors, partners, labels, weights = prototype_pairs(prototypes, anchor, generator)
    keep = weights > 0
    return anchors[keep], partners[keep], labels[keep]


def test_prototype_pair_partners_are_uniform_over_the_candidates_and_drawn_without_a_host_sync():
    from contrastive.engine.host_syncs import HostSyncCounter

    protos = torch.tensor([2, 0, 2, 1, 1, 2, 0, 2])  # P_c = {0, 2, 5, 7}, P_\c = {1, 3, 4, 6}
    g, counts = torch.Generator().manual_seed(0), torch.zeros(2, 8, 8)
    counter = HostSyncCounter()
    with counter:
        prototype_pairs(protos, protos[0], g)  # the anchor read on the device
    assert counter.total == 0, counter.summary()
    for _ in range(400):
        _, partners, _, _ = prototype_pairs(protos, protos[0], g)
        counts[0, torch.arange(8), partners[:8]] += 1
        counts[1, torch.arange(8), partners[8:]] += 1
    for i in (0, 2, 5, 7):  # each other member (3) about 133 times, each other-prototype sample (4) about 100
        assert all(95 < counts[0, i, j] < 175 for j in {0, 2, 5, 7} - {i}), counts[0, i]
        assert all(65 < counts[1, i, j] < 135 for j in (1, 3, 4, 6)), counts[1, i]


def test_symmetric_cross_entropy_by_hand():
    # logits (0, ln 3): p = (1/4, 3/4); target 1: CE = -ln(3/4); RCE = -A (1 - p_y) = 4 * 1/4 = 1
    logits, target = torch.tensor([[0.0, math.log(3.0)]]), torch.tensor([1])
    expected = 0.1 * -math.log(0.75) + 1.0 * 1.0
    assert symmetric_cross_entropy(logits, target, 0.1, 1.0, -4.0).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_contrastive_reduction_sum_and_mean_against_the_formula(reduction):
    model = _spcl(SMALL_HEADS + [f"method.contrastive_reduction={reduction}"])
    g = torch.Generator().manual_seed(1)
    z0, z1 = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)  # [B, d]
    u = F.normalize(torch.cat([z0, z1]), dim=1)  # [2B, d]: view k's positive is view (k + B) mod 2B
    n, t = len(u), float(model.cfg.method.temperature)
    terms = []
    for k in range(n):
        others = [j for j in range(n) if j != k]
        pos = (k + n // 2) % n
        terms.append(-(u[k] @ u[pos]) / t + torch.logsumexp(torch.stack([u[k] @ u[j] / t for j in others]), 0))
    expected = torch.stack(terms).sum() if reduction == "sum" else torch.stack(terms).mean()
    assert torch.allclose(model.contrastive_loss(z0, z1), expected, atol=1e-4)


def test_symmetric_cross_entropy_matches_its_formula():
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    alpha, beta, A = 0.3, 1.7, -4.0
    p, q = logits.softmax(1), F.one_hot(targets, 5).float()
    ce = -(q * p.log()).sum(1).mean()
    rce = -(p * q.clamp(min=math.exp(A)).log()).sum(1).mean()  # log 0 -> A
    expected = alpha * ce + beta * rce
    assert torch.allclose(symmetric_cross_entropy(logits, targets, alpha, beta, A), expected, atol=1e-5)
    assert torch.allclose(symmetric_cross_entropy(logits, targets, 1.0, 0.0), F.cross_entropy(logits, targets))


def test_tp_fn_similarities():
    z0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    tp, fn, tn = tp_fn_similarity(z0, z0.clone(), torch.tensor([0, 0, 1]))
    assert tp == pytest.approx(1.0)
    assert fn == pytest.approx(0.0)  # anchors 0 and 1 share a label; they are orthogonal
    s = 1 / math.sqrt(2)
    assert tn == pytest.approx(s)  # every cross-label pair has cosine 1/sqrt(2)


# ---------------------------------------------------------------- the method
def test_one_training_step_with_two_prototype_heads_and_symmetric_ce():
    model = _spcl(["method.num_prototypes=[4,8]", "method.symmetric_ce=true"])
    assert [h.out_features for h in model.prototype_heads] == [4, 8]
    model.assignments.copy_(torch.stack([torch.arange(512) % 4, torch.arange(512) % 8]))
    losses = model.training_losses(_views(model), None, torch.arange(16))
    assert set(losses) == {"contrastive", "metric", "prototype", "loss"}
    assert torch.allclose(losses["loss"], losses["contrastive"] + losses["metric"] + losses["prototype"])
    losses["loss"].backward()
    for module in (model.backbone, model.projection_head, model.metric_head, *model.prototype_heads):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_metric_loss_is_bce_of_the_pair_head_on_the_anchor_prototype_pairs():
    model = _spcl(SMALL_HEADS)
    h0, h1 = torch.randn(6, model.backbone.feature_dim), torch.randn(6, model.backbone.feature_dim)  # [B, D]
    protos = torch.tensor([1, 0, 1, 1, 2, 0])  # the batch's first sample names the anchor prototype: 1
    torch.manual_seed(5)
    loss = model.metric_loss(h0, h1, protos)
    torch.manual_seed(5)
    anchors, partners, labels = _pairs(protos, 1)
    assert set(anchors.tolist()) == {0, 2, 3} and labels.tolist() == [1.0] * 3 + [0.0] * 3
    logits = model.metric_head((F.normalize(h0, dim=1)[anchors] - F.normalize(h1, dim=1)[partners]).abs()).squeeze(1)
    p = logits.sigmoid()
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    assert torch.allclose(loss, expected, atol=1e-5)


def test_kmeans_is_fitted_on_all_n_features_unless_capped(monkeypatch):
    import faiss

    seen = []
    real_train = faiss.Kmeans.train
    monkeypatch.setattr(faiss.Kmeans, "train", lambda self, x, *a, **k: seen.append(
        (x.shape[0], self.cp.max_points_per_centroid)) or real_train(self, x, *a, **k))
    x = torch.randn(3000, 8, generator=torch.Generator().manual_seed(0))
    kmeans(x, 2, niter=2)  # default: all N (the old default fitted on 2 x 256 = 512 of them)
    n, cap = seen[-1]
    assert n == 3000 and 2 * cap >= 3000  # faiss subsamples only when N > k x max_points_per_centroid
    kmeans(x, 2, niter=2, max_points_per_centroid=100)  # the option for very large sets
    assert seen[-1] == (3000, 100)
    model = _spcl(SMALL_HEADS)
    assert model.cfg.method.cluster.max_points_per_centroid is None  # the preset: all features


@pytest.mark.parametrize("zero", ["contrastive", "metric", "prototype"])
def test_zero_weight_removes_the_term_and_its_head(zero):
    configured = {"contrastive": 0.7, "metric": 0.5, "prototype": 2.0, zero: 0.0}  # distinct: a mixed-up weight shows
    model = _spcl([f"method.weights.{k}={v}" for k, v in configured.items()])
    head = {"contrastive": "projection_head", "metric": "metric_head", "prototype": "prototype_heads"}[zero]
    assert getattr(model, head, None) is None
    model.assignments.copy_(torch.arange(512) % 10)
    losses = model.training_losses(_views(model, 8), None, torch.arange(8))
    assert zero not in losses and set(losses) == set(configured) - {zero} | {"loss"}
    expected = sum(configured[k] * v for k, v in losses.items() if k != "loss")
    assert torch.allclose(losses["loss"], expected)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method.num_prototypes=1"], "method.num_prototypes=[1] is not valid: every K must be in [2, 512]"),
        (["method.num_prototypes=[10,513]"], "every K must be in [2, 512]"),
        (["method.weights.contrastive=0", "method.weights.metric=0", "method.weights.prototype=0"], "weights are all 0"),
        (["method.weights.metric=-1"], "method.weights.metric must be >= 0"),
        (["method.prototypes=labels"], "choose one of kmeans, ground_truth"),
        (["method.sampler=nope"], "choose one of prototype, random"),
        (["method.anchor_fraction=1.5"], "anchor_fraction must be in [0, 1]"),
        (["method.cluster.view=crop"], "choose one of eval, augment"),
    ],
)
def test_bad_settings_raise_config_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        _spcl(overrides)
    assert message in str(err.value)


def test_ground_truth_prototypes_need_labels():
    _spcl(["method.prototypes=ground_truth"])
    with pytest.raises(ConfigError, match="ground_truth needs a labeled training set"):
        _spcl(["method.prototypes=ground_truth"], DataInfo(10, 32, (0.5,) * 3, (0.25,) * 3, 512, train_fully_labeled=False))


def test_bad_input_stops_train_py_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(FAST + [f"output_dir={tmp_path}", "method=spcl", "method.num_prototypes=[600]"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err == "error: method.num_prototypes=[600] is not valid: every K must be in [2, 512] (2 to the training set size)"
    assert not any(tmp_path.iterdir())


def test_ground_truth_prototypes_are_the_labels():
    model = _spcl(["method.prototypes=ground_truth", "method.num_prototypes=[3]"])
    assert [h.out_features for h in model.prototype_heads] == [10]  # one head over the classes
    labels = torch.arange(512) % 10
    train_split = ImageArray(torch.zeros(512, 3, 32, 32, dtype=torch.uint8), labels)
    model._trainer = SimpleNamespace(global_rank=0, current_epoch=0, datamodule=SimpleNamespace(splits=SimpleNamespace(train=train_split)))
    model.on_train_epoch_start()
    assert torch.equal(model.assignments[0], labels)


def test_cluster_train_set_embeds_everything_and_keeps_cluster_ids_across_epochs():
    model = _spcl(["method.num_prototypes=[3,5]", "method.cluster.batch_size=7"] + SMALL_HEADS, DATA_SMALL)
    images = _images(40)
    model._trainer = SimpleNamespace(global_rank=0, world_size=1, is_global_zero=True, current_epoch=0,
                                     precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext))
    torch.manual_seed(0)  # the augmented views come from the global RNG (seeded per epoch in training)
    assignments, stats = model.cluster_train_set(images)
    assert assignments.shape == (2, 40) and assignments.min() >= 0 and int(assignments[1].max()) < 5
    assert model.training and "kept_prototype" not in stats and stats["embed_seconds"] > 0
    model.assignments.copy_(assignments)
    torch.manual_seed(0)
    again, stats = model.cluster_train_set(images)  # same weights, seed and views: the same partition and ids
    assert torch.equal(again, assignments) and stats["kept_prototype"] == 1.0


def test_align_labels_undoes_a_renaming_of_the_clusters():
    old = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    perm = torch.tensor([2, 3, 0, 1])
    assert torch.equal(align_labels(perm[old], old, 4), old)
    moved = torch.tensor([1, 1, 0, 0, 3, 3, 2, 2])  # cluster 3 of old split in two: best one-to-one match
    assert align_labels(moved, old, 4).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_no_clustering_and_random_batches_before_start_epoch():
    model = _spcl(["method.cluster.start_epoch=1"] + SMALL_HEADS, DATA_SMALL)
    model._trainer = SimpleNamespace(global_rank=0, current_epoch=0)
    model.on_train_epoch_start()  # would fail on the missing datamodule if it clustered
    assert bool((model.assignments < 0).all())
    train = SimpleNamespace(streamed=False, images=torch.zeros(0, dtype=torch.uint8))  # in memory: batches on its device
    model._trainer.datamodule = SimpleNamespace(splits=SimpleNamespace(train=train))
    sampler = model.batch_sampler_factory()(40, 8, 0, 0, 1)
    reference = RandomBatchSampler(40, 8, 0)
    assert [b.tolist() for b in sampler] == list(reference)
    losses = model.training_losses(_views(model, 8), None, torch.arange(8))
    assert set(losses) == {"contrastive", "loss"}  # prototype terms wait for the first clustering
    with pytest.raises(ConfigError, match="start_epoch=1 needs method.weights.contrastive > 0"):
        _spcl(["method.cluster.start_epoch=1", "method.weights.contrastive=0"])


@pytest.mark.slow
def test_two_epochs_recluster_at_every_epoch_start(tmp_path, monkeypatch):
    from contrastive.methods.spcl import SPCL

    clustered, drawn, calls = [], [], []
    real_cluster, real_plan, real_kmeans = SPCL.cluster_train_set, PrototypeBatchSampler.plan, spcl_module.kmeans
    monkeypatch.setattr(spcl_module, "kmeans", lambda x, k, *a, **kw: calls.append(tuple(x.shape)) or real_kmeans(x, k, *a, **kw))
    monkeypatch.setattr(SPCL, "cluster_train_set", lambda self, x: clustered.append(real_cluster(self, x)) or clustered[-1])
    monkeypatch.setattr(PrototypeBatchSampler, "plan", lambda self, a: drawn.append(a.clone()) or real_plan(self, a))
    overrides = TINY_RUN + [f"output_dir={tmp_path}", "method=spcl", "method.num_prototypes=[6]"] + SMALL_HEADS
    summary = train.main(overrides)
    assert calls == [(64, 32), (64, 32)]  # once per epoch, on the whole training set, in the 32-d projection space
    # Each epoch's batches are drawn from the prototypes of that epoch's clustering (clustering comes first).
    assert len(drawn) == 2 and all(torch.equal(d, c[0][0]) for d, c in zip(drawn, clustered))
    assert "kept_prototype" in clustered[1][1]
    state = torch.load(summary["last_checkpoint"], weights_only=True)["state_dict"]
    assert torch.equal(state["assignments"], clustered[1][0])  # checkpoints hold the last assignments
    rows = list(csv.DictReader(open(Path(summary["run_dir"]) / "logs" / "metrics.csv")))
    logged = {k for r in rows for k, v in r.items() if v}
    assert {"spcl/cluster_seconds", "spcl/embed_seconds", "spcl/empty_clusters", "spcl/tiny_clusters", "spcl/min_cluster_size",
            "spcl/max_cluster_size", "spcl/kept_prototype", "spcl/tp_similarity", "spcl/fn_similarity",
            "train/contrastive_epoch", "train/metric_epoch", "train/prototype_epoch"} <= logged
    assert sum(bool(r.get("spcl/cluster_seconds")) for r in rows) == 2 and sum(bool(r.get("spcl/tp_similarity")) for r in rows) == 2
