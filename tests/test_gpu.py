"""Everything GPU-related: run by ``benchmarks/gpu_check.sh``; every test skips without CUDA.

Written and dry-run on a CPU-only machine: none of these has run on a GPU yet.
"""

import contextlib
import socket

import pytest
import torch

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.engine.method import Method
from contrastive.core.registry import METHODS
from tests.conftest import FAST

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

load_builtin_methods()

GPU = ["trainer.accelerator=gpu", "trainer.devices=1", "knn.random_init_baseline=false"]
SMALL = {
    "simclr": ["method.projection.hidden_dim=64", "method.projection.output_dim=32"],
    "simclic": ["method.projection.hidden_dim=64", "method.projection.output_dim=64", "method.predictor_hidden_dim=16"],
    "spcl": ["method.num_prototypes=[6]", "method.metric_hidden_dim=16", "method.cluster.start_epoch=0"],
    "imclr": ["scheduler=warmup_cosine"],
}
#: Methods whose own loss (``training_losses``) still syncs (tests/test_speed_defaults.py KNOWN_SYNCS).
KNOWN_SYNC_METHODS = {"spcl", "simclic", "insdis", "deepclusterv2"}


def _fit(tmp_path, *extra):
    from contrastive.engine.run import fit, prepare_run

    run = prepare_run(load_config(FAST + GPU + [f"output_dir={tmp_path}", *extra]))
    return run, fit(run)


# ------------------------------------------------------------------ augmentation
def test_cuda_augmentation_matches_cpu_parameter_distributions():
    from contrastive.augment.pipelines import SimCLRAugment

    aug = SimCLRAugment(32, (0.5,) * 3, (0.25,) * 3)
    n = 200_000
    torch.manual_seed(0)
    p_cpu = aug.sample_params(n, 32, 32, torch.device("cpu"))
    p_gpu = aug.sample_params(n, 32, 32, torch.device("cuda"))

    def stats(p):
        area = (p.crop[:, 2] * p.crop[:, 3]).float() / (32 * 32)  # [n]
        ratio = (p.crop[:, 3] / p.crop[:, 2]).float().log()  # [n]
        return torch.stack([area.mean(), area.std(), ratio.mean(), ratio.std(), p.flip.float().mean(), p.jitter.float().mean(),
                            p.gray.float().mean(), *p.factors.float().mean(0), *p.factors.float().std(0)]).cpu()

    a, b = stats(p_cpu), stats(p_gpu)
    assert torch.allclose(a, b, atol=0.01), (a, b)
    assert p_gpu.crop.device.type == "cuda"


def test_cuda_augmentation_is_independent_per_sample():
    from contrastive.augment.pipelines import SimCLRAugment

    aug = SimCLRAugment(32, (0.5,) * 3, (0.25,) * 3).cuda()
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, device="cuda").expand(512, -1, -1, -1).contiguous()
    out = aug(image)  # [512, 3, 32, 32]
    flat = out.flatten(1)
    distinct = torch.cdist(flat[:64], flat[:64]) > 1e-3  # pairs of different views
    assert distinct.float().mean() > 0.95
    p = aug.sample_params(100_000, 32, 32, torch.device("cuda"))
    corr = torch.corrcoef(torch.stack([p.flip.float(), p.jitter.float(), p.gray.float()]))  # [3, 3]
    assert (corr - torch.eye(3, device="cuda")).abs().max() < 0.02  # independent decisions


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_bf16_training_step_of_every_method(tmp_path, name):
    run, summary = _fit(tmp_path, f"method={name}", "trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                        "knn.enabled=false", "backbone.kwargs.width=8", *SMALL.get(name, []))
    assert summary["epochs"] == 1
    weights = [p for p in run.model.parameters()]
    assert all(p.device.type == "cuda" and p.dtype == torch.float32 and torch.isfinite(p).all() for p in weights)


def test_data_on_device_channels_last_and_compile(tmp_path):
    run, summary = _fit(tmp_path, "trainer.data_on_device=always", "trainer.channels_last=true", "trainer.compile=true",
                        "trainer.precision=bf16-mixed", "trainer.max_epochs=2")
    assert run.splits.train.images.device.type == "cuda"  # the uint8 dataset was moved once
    assert run.model.channels_last and getattr(run.model, "_compiled", False)
    assert summary["knn_top1"] is not None and 0 <= summary["knn_top1"] <= 100


def test_knn_monitor_on_gpu_agrees_with_cpu(tmp_path):
    from contrastive.metrics.knn import knn_accuracy

    run, summary = _fit(tmp_path, "trainer.max_epochs=1")
    assert summary["knn_top1"] is not None
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(5000, 64, generator=g), torch.randn(500, 64, generator=g)
    labels, qlabels = torch.randint(0, 10, (5000,), generator=g), torch.randint(0, 10, (500,), generator=g)
    cpu = knn_accuracy(bank, labels, queries, qlabels, 10, k=50)
    gpu = knn_accuracy(bank.cuda(), labels.cuda(), queries.cuda(), qlabels.cuda(), 10, k=50)
    assert cpu == pytest.approx(gpu, abs=0.5)


def test_linear_eval_extraction_and_probe_on_gpu():
    from omegaconf import OmegaConf

    from contrastive.augment.pipelines import EvalTransform
    from contrastive.backbones.factory import create_backbone
    from contrastive.data.base import ImageArray
    from contrastive.data.sources.synthetic import generate_shapes
    from contrastive.evaluation.features import extract, frozen_encoder
    from contrastive.evaluation.probe import evaluate_head, train_linear_probe

    torch.manual_seed(0)
    net = create_backbone("resnet18", 32)
    array = ImageArray(*generate_shapes(1024, 32, 10, seed=0))
    tf = EvalTransform(32, (0.5,) * 3, (0.25,) * 3)
    with frozen_encoder(net):
        cpu = extract(net, array, tf, 256, torch.device("cpu"), amp=False, progress=False)
    net.cuda()
    with frozen_encoder(net):
        gpu = extract(net, array, tf.cuda(), 256, torch.device("cuda"), amp=True, progress=False)
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(cpu, gpu, dim=1).min() > 0.98  # bf16 autocast vs fp32
    cfg = OmegaConf.merge(OmegaConf.load("configs/eval.yaml").eval.linear, {"epochs": 20})
    heads = [train_linear_probe(cpu[:768], array.labels[:768], 10, cfg, dev, progress=False) for dev in ("cpu", "cuda")]
    accs = [evaluate_head(h, cpu[768:], array.labels[768:])[0] for h in heads]
    assert heads[1].weight.device.type == "cuda" and accs[0] == pytest.approx(accs[1], abs=3.0)


def test_spcl_clusters_gpu_features(tmp_path):
    run, _ = _fit(tmp_path, "method=spcl", "trainer.max_epochs=2", "knn.enabled=false", *SMALL["spcl"])
    assignments = run.model.assignments
    assert assignments.device.type == "cuda" and bool((assignments >= 0).all())
    assert len(assignments.unique()) > 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_ddp(tmp_path, monkeypatch):
    import torch.distributed as dist

    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1", "NODE_RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    try:
        run, summary = _fit(tmp_path, "trainer.strategy=ddp", "trainer.max_epochs=1")
        assert summary["knn_top1"] is not None
        assert dist.is_initialized() and dist.get_backend() == "nccl"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@contextlib.contextmanager
def _sync_errors():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("name", sorted(METHODS.names()))
def test_no_host_device_sync_inside_the_training_step(tmp_path, monkeypatch, name):
    """Augmentation (on_after_batch_transfer) and training_step under set_sync_debug_mode("error"),
    except at logging intervals (log_every_n_steps=50 > the 3 steps run here). For a method of
    KNOWN_SYNC_METHODS only its own ``training_losses`` runs in "warn" mode (its syncs are counted,
    not raised): the augmentation and the rest of the step are held to the same rule."""
    import warnings

    import pytorch_lightning as pl

    from contrastive.data.module import ArrayDataModule
    from contrastive.engine.run import prepare_run

    for hook in ("training_step", "on_after_batch_transfer"):
        original = getattr(Method, hook)

        def strict(self, *args, _original=original, **kwargs):
            if not (self.trainer is not None and self.trainer.training):
                return _original(self, *args, **kwargs)
            with _sync_errors():
                return _original(self, *args, **kwargs)
        monkeypatch.setattr(Method, hook, strict)
    loss_syncs = []
    if name in KNOWN_SYNC_METHODS:
        cls = METHODS.get(name)
        own_losses = cls.training_losses

        def lenient(self, *args, **kwargs):
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    out = own_losses(self, *args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("error")
            loss_syncs.append(sum("synchroniz" in str(w.message) for w in seen))
            return out
        monkeypatch.setattr(cls, "training_losses", lenient)
    run = prepare_run(load_config(FAST + GPU + [f"output_dir={tmp_path}", f"method={name}", "dataset.num_train=48",
                                                "batch_size=16", "knn.enabled=false", "trainer.precision=bf16-mixed",
                                                *SMALL.get(name, [])]))
    trainer = pl.Trainer(max_epochs=1, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50,
                         limit_val_batches=0, precision="bf16-mixed")
    trainer.fit(run.model, datamodule=ArrayDataModule(run.splits, 16, 0, data_on_device="always",
                                                      batch_sampler_factory=run.model.batch_sampler_factory()))
    assert trainer.global_step == 3
    if name in KNOWN_SYNC_METHODS and not any(loss_syncs):
        warnings.warn(f"{name}'s loss made no sync in 3 steps: drop it from KNOWN_SYNC_METHODS")


def test_sync_debug_mode_catches_a_sync():
    with pytest.raises(RuntimeError):
        with _sync_errors():
            torch.ones(2, device="cuda").sum().item()
