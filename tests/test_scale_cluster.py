"""Clustering and the kNN monitor at scale: no process waits on the run's group while rank 0
clusters, faiss on the process's GPU where it can, and a kNN monitor whose bank stays sharded.

The fast tests use one process (two "processes" as threads for the sharded kNN); the slow ones
start one pair of gloo processes (tests/test_ddp.py's way) and compare with one process.
"""

import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from omegaconf import OmegaConf

from contrastive.clustering.kmeans import faiss_gpu_device, kmeans
from contrastive.core.errors import ConfigError
from contrastive.metrics.knn import knn_scores, sharded_knn_scores
from tests.conftest import SMALL_HEADS
from tests.test_ddp import WORLD, _cfg

PCLV2 = ["method=pclv2", *SMALL_HEADS["pclv2"], "method.embed_batch_size=64"]
DCV2 = ["method=deepclusterv2", *SMALL_HEADS["deepclusterv2"], "method.embed_batch_size=64"]
KNN = ["knn.enabled=true", "knn.k=20", "knn.random_init_baseline=false"]
SLOW_RANK0 = 4.0  # seconds rank 0 "clusters" for
RUN_GROUP_TIMEOUT = 2.0  # the run's group, as NCCL's 30 minutes scaled down


# ---------------------------------------------------------------- one process: today's k-means, faiss on a GPU
def _faiss_reference(x, k, niter, seed, spherical, nredo=1, min_ppc=1, max_ppc=None):
    """faiss.Kmeans written out as the prototype methods ran it before: normalised rows, all points."""
    import faiss

    x = np.ascontiguousarray(F.normalize(x, dim=1).numpy(), dtype=np.float32)
    km = faiss.Kmeans(x.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=spherical, verbose=False,
                      min_points_per_centroid=min_ppc, max_points_per_centroid=max_ppc or -(-len(x) // k))
    km.train(x)
    return torch.from_numpy(km.index.search(x, 1)[1][:, 0]).long(), torch.from_numpy(km.centroids.copy())


def _model(name, overrides, num_train=96):
    from contrastive.config.compose import load_config
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.core.registry import METHODS
    from contrastive.engine.method import DataInfo

    load_builtin_methods()
    cfg = load_config(["dataset.num_train=96", "backbone.kwargs.width=4", *overrides])
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=num_train)
    return METHODS.get(name)(cfg, data)


def test_pclv2_clustering_on_one_process_is_the_faiss_kmeans_it_ran_before(one_thread):
    model = _model("pclv2", PCLV2)
    features = F.normalize(torch.randn(96, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    assignments, prototypes, _ = model.cluster(features)
    km, seed = model.cfg.method.kmeans, int(model.cfg.seed) * 1009  # epoch 0
    for j, k in enumerate(model.ks):
        expected, centroids = _faiss_reference(features, k, int(km.iterations), seed + j, False, int(km.nredo),
                                               int(km.min_points_per_centroid), int(km.max_points_per_centroid))
        assert torch.equal(assignments[j], expected)
        assert torch.equal(prototypes[j][0], F.normalize(centroids, dim=1))


def test_deepclusterv2_clustering_on_one_process_is_the_faiss_kmeans_it_ran_before(one_thread):
    model = _model("deepclusterv2", DCV2)
    memory = F.normalize(torch.randn(96, 32, generator=torch.Generator().manual_seed(2)), dim=1)
    model.memory.update(torch.arange(96), memory)
    assignments, centroids, _ = model.cluster_memory()
    for j, k in enumerate(model.ks):
        crop = memory[:, (j % 2) * 16:(j % 2 + 1) * 16]
        expected, fitted = _faiss_reference(crop, k, int(model.cfg.method.kmeans_iterations), int(model.cfg.seed) * 1009 + j, True)
        assert torch.equal(assignments[j], expected) and torch.equal(centroids[j], fitted)


def test_faiss_gpu_device_only_for_a_cuda_device_that_faiss_sees(monkeypatch):
    import faiss

    assert faiss_gpu_device(torch.device("cpu")) is None
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)  # faiss-cpu
    assert faiss_gpu_device(torch.device("cuda", 0)) is None
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 2)
    assert faiss_gpu_device(torch.device("cuda", 1)) == 1
    assert faiss_gpu_device(torch.device("cuda", 2)) is None


def test_kmeans_searches_on_the_given_gpu_and_answers_as_on_the_cpu(monkeypatch):
    """faiss-cpu has no GPU index: a stand-in records the device and hands back the CPU index."""
    import faiss

    moved = []
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: "resources", raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, device, index: moved.append((res, device)) or index,
                        raising=False)
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(3))
    on_cpu = kmeans(x, 4, niter=5, seed=7)
    on_gpu = kmeans(x, 4, niter=5, seed=7, gpu=1)
    assert moved == [("resources", 1)]
    assert torch.equal(on_cpu[0], on_gpu[0]) and torch.equal(on_cpu[1], on_gpu[1])


def test_cluster_wait_minutes_must_be_positive():
    from contrastive.config.compose import load_config
    from contrastive.engine.run import validate_config

    with pytest.raises(ConfigError, match="cluster_wait_minutes must be > 0.*got 0"):
        validate_config(load_config(["cluster_wait_minutes=0"]))


# ---------------------------------------------------------------- sharded kNN, two or three "processes" as threads
def _threads_gather(world):
    """An all-gather among ``world`` threads: each call hands in ``[m, k]`` and gets ``[W, m, k]``."""
    barrier, slots = threading.Barrier(world), [None] * world

    def gather(rank, t):
        slots[rank] = t
        barrier.wait()
        out = torch.stack(list(slots))
        barrier.wait()  # nobody overwrites a slot before every thread has read them
        return out

    return gather


@pytest.mark.parametrize("sizes", [(150, 150), (40, 130, 130), (0, 300)])  # uneven, a shard under k, an empty one
def test_sharded_knn_scores_equal_the_whole_bank_knn(sizes, one_thread):
    g = torch.Generator().manual_seed(4)
    bank, labels = torch.randn(sum(sizes), 16, generator=g), torch.randint(0, 5, (sum(sizes),), generator=g)
    queries = torch.randn(70, 16, generator=g)
    expected = knn_scores(bank, labels, queries, 5, k=50, temperature=0.1, chunk_size=32)  # [70, 5]
    gather, results = _threads_gather(len(sizes)), [None] * len(sizes)
    bounds = np.cumsum((0,) + sizes)

    def rank(r):
        shard = slice(bounds[r], bounds[r + 1])
        results[r] = sharded_knn_scores(bank[shard], labels[shard], queries, 5, 50, 0.1, lambda t: gather(r, t), chunk_size=32)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(len(sizes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for scores in results:
        assert torch.allclose(scores, expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(scores.argmax(dim=1), expected.argmax(dim=1))


# ---------------------------------------------------------------- two gloo processes
def _slow_rank0_check(rank):
    """on_rank_zero while rank 0 computes for longer than the run's group timeout."""
    from contrastive.engine.embedding import on_rank_zero

    run_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=RUN_GROUP_TIMEOUT))

    def broadcast(obj, src=0):  # what Lightning's DDPStrategy.broadcast does, on the run's group
        box = [obj]
        dist.broadcast_object_list(box, src=src, group=run_group)
        return box[0]

    trainer = SimpleNamespace(world_size=WORLD, is_global_zero=rank == 0, global_rank=rank,
                              strategy=SimpleNamespace(broadcast=broadcast))
    method = SimpleNamespace(trainer=trainer, cfg=OmegaConf.create({"cluster_wait_minutes": 1}))
    computed = []

    def compute():
        computed.append(rank)
        time.sleep(SLOW_RANK0)
        return {"assignments": torch.arange(5) * 3}

    try:
        return {"payload": on_rank_zero(method, compute), "computed": computed}
    except RuntimeError as err:  # the old behaviour: the waiting rank times out
        return {"error": str(err)[:200], "computed": computed}


def _knn_run(out, devices, record):
    """The kNN monitor once, recording its scores, its bank shard and what it all-gathered."""
    import contrastive.engine.knn_monitor as monitor
    from contrastive.data.module import ArrayDataModule
    from contrastive.engine.run import _knn, build_trainer, prepare_run

    original = monitor.sharded_knn_scores

    def recording(shard, *args, **kwargs):
        record["shard_rows"], record["dim"] = shard.shape
        record["scores"] = original(shard, *args, **kwargs)
        return record["scores"]

    run = prepare_run(_cfg(out, *KNN, devices=devices))
    gather = run.model.all_gather
    record["gathered"] = []  # the shape of every tensor all-gathered
    run.model.all_gather = lambda t, *a, **kw: (record["gathered"].append(tuple(t.shape)), gather(t, *a, **kw))[1]
    trainer = build_trainer(run.cfg, run.run_dir, logger=False, callbacks=[], enable_progress_bar=False)
    monitor.sharded_knn_scores = recording
    try:
        record["top1"] = _knn(trainer, run.model, ArrayDataModule(run.splits, 8, 0))
    finally:
        monitor.sharded_knn_scores = original
    return record


def _fit_clustering(out, overrides, devices):
    from contrastive.engine.run import fit, prepare_run

    run = prepare_run(_cfg(out, *overrides, devices=devices))
    fit(run)
    model = run.model
    state = {"assignments": model.assignments.cpu().clone()}
    if model.cfg.method.name == "pclv2":
        state["centroids"] = [model.prototypes(j)[0].cpu().clone() for j in range(len(model.ks))]
    else:
        state["centroids"] = [c.detach().cpu().clone() for c in model.centroids]
    return state


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), GROUP_RANK="0", LOCAL_WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"tcp://127.0.0.1:{port}")
        result = {"slow_rank0": _slow_rank0_check(rank)}
        result["knn"] = _knn_run(out, 2, {})
        result["pclv2"] = _fit_clustering(out, PCLV2, 2)
        result["deepclusterv2"] = _fit_clustering(out, DCV2, 2)
        torch.save(result, Path(out) / f"rank{rank}.pt")
    except BaseException:
        import traceback

        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    from tests.test_ddp import run_processes

    out = tmp_path_factory.mktemp("scale_cluster")
    return out, run_processes(_worker, out, WORLD)


@pytest.mark.slow
def test_ranks_wait_for_rank0s_clustering_longer_than_the_run_groups_timeout(ranks):
    _, results = ranks
    for r, result in enumerate(results):
        check = result["slow_rank0"]
        assert "error" not in check, f"rank {r}: {check.get('error')}"
        assert torch.equal(check["payload"]["assignments"], torch.arange(5) * 3)
        assert check["computed"] == ([0] if r == 0 else [])  # rank 0 alone clustered


@pytest.mark.slow
def test_knn_monitor_keeps_a_shard_of_the_bank_and_scores_every_image_as_one_process(ranks, one_thread, tmp_path):
    _, results = ranks
    one = _knn_run(tmp_path, 1, {})
    num_train = one["shard_rows"]  # the whole bank on one process
    for r in results:
        record = r["knn"]
        assert record["shard_rows"] == num_train // WORLD  # this process's half, not the gathered bank
        features_gathered = [shape for shape in record["gathered"] if len(shape) == 2 and shape[1] == record["dim"]]
        assert sum(rows for rows, _ in features_gathered) == 64 // WORLD  # this process's queries, no bank rows
        assert torch.equal(record["scores"].argmax(dim=1), one["scores"].argmax(dim=1))  # the same top-1 per image
        assert torch.allclose(record["scores"], one["scores"], rtol=1e-4, atol=1e-4)
        assert record["top1"] == one["top1"]


@pytest.mark.slow
def test_pclv2_prototypes_are_identical_on_every_rank_and_equal_to_one_process(ranks, one_thread, tmp_path):
    _, (r0, r1) = ranks
    assert torch.equal(r0["pclv2"]["assignments"], r1["pclv2"]["assignments"])
    assert bool((r0["pclv2"]["assignments"] >= 0).all())
    for c0, c1 in zip(r0["pclv2"]["centroids"], r1["pclv2"]["centroids"]):
        assert torch.equal(c0, c1)
    one = _fit_clustering(tmp_path, PCLV2, 1)  # one epoch: clustered at its start, with the initial weights
    assert torch.equal(one["assignments"], r0["pclv2"]["assignments"])
    for c, c0 in zip(one["centroids"], r0["pclv2"]["centroids"]):
        assert torch.equal(c, c0)


@pytest.mark.slow
def test_deepclusterv2_assignments_and_centroids_are_identical_on_every_rank(ranks):
    _, (r0, r1) = ranks
    assert torch.equal(r0["deepclusterv2"]["assignments"], r1["deepclusterv2"]["assignments"])
    assert bool((r0["deepclusterv2"]["assignments"] >= 0).all())
    for c0, c1 in zip(r0["deepclusterv2"]["centroids"], r1["deepclusterv2"]["centroids"]):
        assert torch.equal(c0, c1)
