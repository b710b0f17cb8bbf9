"""Distributed correctness on CPU: 2 processes (gloo) against 1 process.

One pair of processes is started per test session (fork: no re-import, a few seconds);
each process joins a gloo group the way ``torchrun`` would (``RANK``, ``LOCAL_RANK``,
``WORLD_SIZE``... in the environment, so Lightning's DDP strategy uses the existing
group instead of launching processes), runs every check and saves what it saw. The
single-process references are computed in the test process.
"""

import os
import socket
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

pytestmark = pytest.mark.slow  # two processes per session: seconds before the first test

WORLD = 2
LOCAL_BATCH = 8  # per process; the global batch is 16
COMMON = [
    "dataset.num_train=128", "dataset.num_val=64", "backbone.kwargs.width=4", "trainer.max_epochs=1",
    "scheduler.warmup_epochs=0", "trainer.progress_bar=false", "trainer.accelerator=cpu", "knn.enabled=false",
    "method.projection.hidden_dim=32", "method.projection.output_dim=16", f"batch_size={LOCAL_BATCH}",
]
KNN = ["knn.enabled=true", "knn.k=10", "knn.random_init_baseline=false"]
SIMCLIC = ["method=simclic", "method.predictor_hidden_dim=8", f"batch_size={LOCAL_BATCH}", "method.history_momentum=0.5"]
SPCL = ["method=spcl", "method.num_prototypes=[4]", "method.cluster.view=eval", "method.metric_hidden_dim=16", "scheduler.warmup_epochs=0"]


def _cfg(out, *extra, devices=1):
    from contrastive.config.compose import load_config

    ddp = ["trainer.devices=2", "trainer.strategy=ddp"] if devices == 2 else ["trainer.devices=1"]
    return load_config(COMMON + [f"output_dir={out}", *ddp, *extra])


def _views(seed=0):
    """A fixed global batch of two float views ``[2 * WORLD * LOCAL_BATCH, 3, 32, 32]``."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, WORLD * LOCAL_BATCH, 3, 32, 32, generator=g)


def nt_xent_reference(z0, z1, temperature):
    """NT-Xent (SimCLR eq. 1) written out: for each of the 2N views, -log of
    exp(sim(i, pos) / t) over the sum of exp(sim(i, k) / t) for all k != i, averaged."""
    z = F.normalize(torch.cat([z0, z1]), dim=1)  # [2N, d]
    n = z0.shape[0]
    sim = z @ z.T / temperature  # [2N, 2N]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])  # [2N]
    return (torch.logsumexp(sim, dim=1) - sim[torch.arange(2 * n), positives]).mean()


def _simclr_model(out):
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.engine.method import DataInfo
    from contrastive.core.registry import METHODS

    load_builtin_methods()
    torch.manual_seed(0)
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=128)
    return METHODS.get("simclr")(_cfg(out, "method.temperature=0.5", devices=2), data).eval()  # eval: BatchNorm is per sample


def _nt_xent_checks(rank, out):
    """Local loss and gradients of SimCLR's criterion (negatives gathered) under DDP."""
    model = _simclr_model(out)
    views = _views()[:, rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH]  # this process's half
    loss = model.training_losses(list(views), None, None)["loss"]
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for g in grads.values():  # what DDP does: average the gradients over processes
        dist.all_reduce(g)
        g /= WORLD
    from lightly.loss import NTXentLoss

    with torch.no_grad():
        local_only = NTXentLoss(temperature=0.5, gather_distributed=False)(model.project(views[0]), model.project(views[1]))
    return {"loss": loss.detach(), "grads": grads, "loss_without_gather": local_only}


def _moco_model(out):
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.engine.method import DataInfo
    from contrastive.core.registry import METHODS

    load_builtin_methods()
    torch.manual_seed(0)
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=128)
    return METHODS.get("mocov2")(_cfg(out, "method=mocov2", "method.queue_size=64", devices=2), data).train()


def _shuffle_bn_checks(rank, out):
    """MoCo's keys under DDP with shuffling BN: the keys, the global permutation and what the key encoder saw."""
    model = _moco_model(out)
    seen = []
    model.momentum[0].register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].clone()))
    keys = model.keys(_views(seed=1)[1, rank * LOCAL_BATCH : (rank + 1) * LOCAL_BATCH])  # this process's key images
    return {"keys": keys, "permutation": model.key_permutation, "encoded": seen[0]}


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), GROUP_RANK="0", LOCAL_WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        from contrastive.data.module import ArrayDataModule
        from contrastive.engine.run import _knn, build_trainer, fit, prepare_run

        dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"tcp://127.0.0.1:{port}")
        result = {"nt_xent": _nt_xent_checks(rank, out), "shuffle_bn": _shuffle_bn_checks(rank, out)}

        run = prepare_run(_cfg(out, *KNN, devices=2))
        trainer = build_trainer(run.cfg, run.run_dir, logger=False, callbacks=[], enable_progress_bar=False)
        result["knn"] = _knn(trainer, run.model, ArrayDataModule(run.splits, LOCAL_BATCH, 0))

        run = prepare_run(_cfg(out, *SIMCLIC, devices=2))
        result["simclic_local_indices"] = []
        original = run.model.training_losses
        run.model.training_losses = lambda v, l, i: (result["simclic_local_indices"].append(i.clone()), original(v, l, i))[1]
        fit(run)
        result["simclic_bank"] = (run.model.bank.features.clone(), run.model.bank.filled.clone())

        run = prepare_run(_cfg(out, *SPCL, devices=2))
        fit(run)
        result["spcl_assignments"] = run.model.assignments.clone()
        torch.save(result, Path(out) / f"rank{rank}.pt")
    except BaseException:
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(worker, out, world):
    """``worker(rank, port, out)`` in ``world`` forked processes; each saves ``out/rank<r>.pt`` (returned, by rank)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # fork with an idle single-thread OpenMP pool
    ctx = mp.start_processes(worker, args=(_free_port(), str(out)), nprocs=world, join=False, start_method="fork")
    try:
        for _ in range(300):  # at most 300 s
            if ctx.join(timeout=1):
                break
        else:
            pytest.fail("DDP workers did not finish in 300 s")
    except Exception as err:
        errors = "\n".join(p.read_text() for p in sorted(out.glob("rank*.error")))
        pytest.fail(f"DDP worker failed: {err}\n{errors}")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
        torch.set_num_threads(threads)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(world)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    return out, run_processes(_worker, out, WORLD)


@pytest.fixture(scope="module")
def single_threaded():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_simclr_nt_xent_and_gradients_with_gathered_negatives_equal_one_process(ranks, single_threaded):
    out, results = ranks
    model = _simclr_model(out)
    views = _views()  # the whole global batch in one process
    z0, z1 = model.project(views[0]), model.project(views[1])
    reference = nt_xent_reference(z0, z1, temperature=0.5)
    reference.backward()
    assert float(model.training_losses(list(views), None, None)["loss"]) == pytest.approx(float(reference), abs=1e-5)
    # The mean of the per-process losses is the global loss, and DDP's averaged gradients are its gradients.
    mean_loss = sum(float(r["nt_xent"]["loss"]) for r in results) / WORLD
    assert mean_loss == pytest.approx(float(reference), abs=1e-5)
    without_gather = sum(float(r["nt_xent"]["loss_without_gather"]) for r in results) / WORLD
    assert abs(without_gather - float(reference)) > 1e-2  # local negatives only would be a different loss
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        for r in results:
            assert torch.allclose(r["nt_xent"]["grads"][name], p.grad, atol=1e-5, rtol=1e-4), name


def test_knn_monitor_gives_the_same_number_with_one_and_two_processes(ranks, single_threaded, tmp_path):
    from contrastive.data.module import ArrayDataModule
    from contrastive.engine.run import _knn, build_trainer, prepare_run

    _, results = ranks
    run = prepare_run(_cfg(tmp_path, *KNN))
    trainer = build_trainer(run.cfg, run.run_dir, logger=False, callbacks=[], enable_progress_bar=False)
    one = _knn(trainer, run.model, ArrayDataModule(run.splits, LOCAL_BATCH, 0))
    assert one is not None and [r["knn"] for r in results] == [one, one]


def test_simclic_history_bank_is_identical_on_every_rank_and_holds_the_global_batch(ranks):
    _, (r0, r1) = ranks
    (f0, filled0), (f1, filled1) = r0["simclic_bank"], r1["simclic_bank"]
    assert torch.equal(f0, f1) and torch.equal(filled0, filled1)
    seen = torch.cat(r0["simclic_local_indices"] + r1["simclic_local_indices"])  # both processes' batches
    assert len(seen) == 128 and len(torch.unique(seen)) == 128  # one epoch of 128 over 2 x 8 x 8 steps
    assert bool(filled0[seen].all()) and int(filled0.sum()) == 128  # rank 0 stored rank 1's samples too
    assert bool((f0[seen].norm(dim=1) > 0).all())


def test_spcl_assignments_identical_on_every_rank_and_equal_to_one_process(ranks, single_threaded, tmp_path):
    from contrastive.engine.run import fit, prepare_run

    _, (r0, r1) = ranks
    assert torch.equal(r0["spcl_assignments"], r1["spcl_assignments"])
    assert bool((r0["spcl_assignments"] >= 0).all())
    run = prepare_run(_cfg(tmp_path, *SPCL))
    fit(run)  # one epoch: the assignments are the clustering at its start (initial weights)
    assert torch.equal(run.model.assignments.cpu(), r0["spcl_assignments"].cpu())


def test_moco_shuffling_bn_encodes_a_permuted_global_batch_and_restores_each_key(ranks, single_threaded, tmp_path):
    """MoCo Sec. 3.3: each process's key encoder runs (BatchNorm in training mode) on its share of a permutation
    of the global batch, the same permutation on both processes; every key comes back to its image's place."""
    _, results = ranks
    perm = results[0]["shuffle_bn"]["permutation"]  # [W * B]
    assert perm is not None and torch.equal(perm, results[1]["shuffle_bn"]["permutation"])
    assert sorted(perm.tolist()) == list(range(WORLD * LOCAL_BATCH)) and not torch.equal(perm, torch.arange(len(perm)))
    images = _views(seed=1)[1]  # [W * B, 3, 32, 32], the global batch of key images
    shares = [perm[r * LOCAL_BATCH : (r + 1) * LOCAL_BATCH] for r in range(WORLD)]
    for r in range(WORLD):  # the key encoder saw the permuted rows, not its own
        assert torch.equal(results[r]["shuffle_bn"]["encoded"], images[shares[r]])
    model = _moco_model(tmp_path)  # the same weights, one process
    encode = lambda x: F.normalize(model.momentum[1](model.momentum[0](x)), dim=1)  # noqa: E731
    keys = torch.cat([results[r]["shuffle_bn"]["keys"] for r in range(WORLD)])  # [W * B, d], in image order
    with torch.no_grad():
        encoded = torch.cat([encode(images[share]) for share in shares])  # each share's own BatchNorm statistics
        expected = torch.empty_like(encoded)
        expected[perm] = encoded  # back to image order
        unshuffled = torch.cat([encode(images[r * LOCAL_BATCH : (r + 1) * LOCAL_BATCH]) for r in range(WORLD)])
    assert torch.allclose(keys, expected, atol=1e-5)
    assert not torch.allclose(keys, unshuffled, atol=1e-3)  # other statistics than the query's sub-batch
