"""Everything GPU-related: run by ``benchmarks/gpu_check.sh``; every test skips without CUDA.

Written on a CPU-only machine. ``benchmarks/gpu_check.sh --rehearse`` runs them on the CPU with
``CONTRASTIVE_GPU_REHEARSE=1``: the device is the CPU, and what exists only on a GPU is stubbed in the
block below (the one place that says so). Their settings per method are conftest's SMALL_HEADS, and
tests/test_gpu_check.py checks on the CPU that every registered method's settings fit these runs.
"""

import contextlib
import functools
import os
import socket
from typing import List

import pytest
import pytorch_lightning as pl
import torch

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.engine.method import Method
from contrastive.core.registry import METHODS
from tests.conftest import FAST, SMALL_HEADS
from tests.gpu_harness import SyncErrorsAfterWarmup, TrainingDevices, stop_at_the_check_limit  # noqa: F401 (autouse)

load_builtin_methods()

# ------------------------------------------------------------------ the device (and the rehearsal's stubs)
#: benchmarks/gpu_check.sh --rehearse: the same tests on the CPU. Stubbed there: the device (cpu), the
#: compile backend (aot_eager: inductor compiles C++ for minutes on 2 cores), DDP's backend (gloo), and
#: CUDA's sync debug mode (absent on the CPU: the CPU counts syncs in tests/test_speed_defaults.py).
REHEARSE = os.environ.get("CONTRASTIVE_GPU_REHEARSE") == "1"
DEVICE = "cpu" if REHEARSE else "cuda"
GPU = [f"trainer.accelerator={'cpu' if REHEARSE else 'gpu'}", "trainer.devices=1", "knn.random_init_baseline=false"]
COMPILE_BACKEND = "aot_eager" if REHEARSE else "inductor"
DDP_BACKEND = "gloo" if REHEARSE else "nccl"
#: The rehearsal's size-down, to fit 2 cores in minutes: the per-method tests for three methods (a plain contrastive
#: loss, a queue, k-means clusters), not all (tests/test_gpu_check.py checks every method's settings), and FAST's runs
#: on 128 images in batches of 32 (the host-sync run keeps its 48 images).
METHOD_NAMES = ["deepclusterv2", "mocov2", "simclr"] if REHEARSE else sorted(METHODS.names())
REHEARSAL_SIZES = ["dataset.num_train=128", "dataset.num_val=64", "batch_size=32"] if REHEARSE else []

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not (REHEARSE or torch.cuda.is_available()), reason="needs CUDA")]
needs_sync_debug_mode = pytest.mark.skipif(REHEARSE, reason="CUDA's sync debug mode: not on the CPU")

#: Methods whose own loss (``training_losses``) still syncs (tests/test_speed_defaults.py KNOWN_SYNCS: none now, the
#: CPU counter sees zero for every method; a method added here is held to "warn" for its loss only).
KNOWN_SYNC_METHODS: set = set()
#: The runs of the tests below (on top of FAST and the method's SMALL_HEADS); tests/test_gpu_check.py
#: checks on the CPU that every method fits them.
BF16_STEP = ["trainer.precision=bf16-mixed", "trainer.max_epochs=1", "knn.enabled=false", "backbone.kwargs.width=8"]
SYNC_RUN = ["dataset.num_train=48", "batch_size=16", "knn.enabled=false", "trainer.precision=bf16-mixed"]
SYNC_STEPS = 3  # 48 images / 16


@functools.lru_cache(maxsize=None)
def _has_warmup(name: str) -> bool:
    return "warmup_epochs" in load_config([f"method={name}"]).scheduler


def run_overrides(tmp_path, name: str = "simclr", *extra: str) -> List[str]:
    """FAST on the device with ``name``'s SMALL_HEADS; FAST's ``scheduler.warmup_epochs`` only where the
    method's schedule has a warm-up (its preset's step schedule has none)."""
    fast = FAST if _has_warmup(name) else [o for o in FAST if not o.startswith("scheduler.warmup_epochs=")]
    return [*fast, *REHEARSAL_SIZES, *GPU, f"output_dir={tmp_path}", f"method={name}", *SMALL_HEADS.get(name, []), *extra]


@pytest.fixture
def training_devices():
    """A :class:`TrainingDevices` that every ``Method`` fit during the test reports to."""
    recorder = TrainingDevices()
    original = Method.configure_callbacks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Method, "configure_callbacks", lambda self: [*original(self), recorder])
        yield recorder


def _fit(tmp_path, *extra, name: str = "simclr"):
    from contrastive.engine.run import fit, prepare_run

    run = prepare_run(load_config(run_overrides(tmp_path, name, *extra)))
    return run, fit(run)


# ------------------------------------------------------------------ augmentation
def test_cuda_augmentation_matches_cpu_parameter_distributions():
    from contrastive.augment.pipelines import SimCLRAugment

    aug = SimCLRAugment(32, (0.5,) * 3, (0.25,) * 3)
    n = 200_000
    torch.manual_seed(0)
    p_cpu = aug.sample_params(n, 32, 32, torch.device("cpu"))
    p_gpu = aug.sample_params(n, 32, 32, torch.device(DEVICE))

    def stats(p):
        area = (p.crop[:, 2] * p.crop[:, 3]).float() / (32 * 32)  # [n]
        ratio = (p.crop[:, 3] / p.crop[:, 2]).float().log()  # [n]
        return torch.stack([area.mean(), area.std(), ratio.mean(), ratio.std(), p.flip.float().mean(), p.jitter.float().mean(),
                            p.gray.float().mean(), *p.factors.float().mean(0), *p.factors.float().std(0)]).cpu()

    a, b = stats(p_cpu), stats(p_gpu)
    assert torch.allclose(a, b, atol=0.01), (a, b)
    assert p_gpu.crop.device.type == DEVICE


def test_cuda_augmentation_is_independent_per_sample():
    from contrastive.augment.pipelines import SimCLRAugment

    aug = SimCLRAugment(32, (0.5,) * 3, (0.25,) * 3).to(DEVICE)
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, device=DEVICE).expand(512, -1, -1, -1).contiguous()
    out = aug(image)  # [512, 3, 32, 32]
    flat = out.flatten(1)
    distinct = torch.cdist(flat[:64], flat[:64]) > 1e-3  # pairs of different views
    assert distinct.float().mean() > 0.95
    p = aug.sample_params(100_000, 32, 32, torch.device(DEVICE))
    corr = torch.corrcoef(torch.stack([p.flip.float(), p.jitter.float(), p.gray.float()]))  # [3, 3]
    assert (corr - torch.eye(3, device=DEVICE)).abs().max() < 0.02  # independent decisions


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_bf16_training_step_of_every_method(tmp_path, training_devices, name):
    run, summary = _fit(tmp_path, *BF16_STEP, name=name)
    assert summary["epochs"] == 1
    assert {(kind, device) for kind, device, _ in training_devices.seen} == {("param", DEVICE), ("batch", DEVICE)}
    assert {dtype for kind, _, dtype in training_devices.seen if kind == "param"} == {torch.float32}  # bf16 only in autocast
    assert all(torch.isfinite(p).all() for p in run.model.parameters())


def test_data_on_device_channels_last_and_compile(tmp_path, training_devices):
    run, summary = _fit(tmp_path, "trainer.data_on_device=always", "trainer.channels_last=true", "trainer.compile=true",
                        f"trainer.compile_backend={COMPILE_BACKEND}", "trainer.precision=bf16-mixed", "trainer.max_epochs=2")
    assert run.splits.train.images.device.type == DEVICE  # the uint8 dataset was moved once
    assert ("batch", DEVICE, None) in training_devices.seen and ("param", DEVICE, torch.float32) in training_devices.seen
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
    gpu = knn_accuracy(*(t.to(DEVICE) for t in (bank, labels, queries, qlabels)), 10, k=50)
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
    net.to(DEVICE)
    with frozen_encoder(net):
        gpu = extract(net, array, tf.to(DEVICE), 256, torch.device(DEVICE), amp=True, progress=False)
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(cpu, gpu, dim=1).min() > 0.98  # bf16 autocast vs fp32
    cfg = OmegaConf.merge(OmegaConf.load("configs/eval.yaml").eval.linear, {"epochs": 20})
    heads = [train_linear_probe(cpu[:768], array.labels[:768], 10, cfg, dev, progress=False) for dev in ("cpu", DEVICE)]
    accs = [evaluate_head(h, cpu[768:], array.labels[768:])[0] for h in heads]
    assert heads[1].weight.device.type == DEVICE and accs[0] == pytest.approx(accs[1], abs=3.0)


class _AssignmentsAtEpochEnd(pl.Callback):
    def __init__(self) -> None:
        self.device = None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.device = pl_module.assignments.device.type


def test_spcl_clusters_gpu_features(tmp_path, monkeypatch):
    where = _AssignmentsAtEpochEnd()
    original = Method.configure_callbacks
    monkeypatch.setattr(Method, "configure_callbacks", lambda self: [*original(self), where])
    run, _ = _fit(tmp_path, "trainer.max_epochs=2", "knn.enabled=false", "method.cluster.start_epoch=0", name="spcl")
    assignments = run.model.assignments  # on the CPU after fit (Strategy.teardown): where they were is recorded
    assert where.device == DEVICE and bool((assignments >= 0).all())
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
        assert dist.is_initialized() and dist.get_backend() == DDP_BACKEND
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


def sync_run(tmp_path, name: str, callbacks, accelerator: str = GPU[0].split("=")[1]) -> pl.Trainer:
    """The host-sync test's run: SYNC_STEPS steps of ``name`` in bf16 with the data on the device, on a
    bare trainer (no logger, checkpoints, validation)."""
    from contrastive.data.module import ArrayDataModule
    from contrastive.engine.run import prepare_run

    overrides = run_overrides(tmp_path, name, *SYNC_RUN)
    overrides[overrides.index(GPU[0])] = f"trainer.accelerator={accelerator}"
    run = prepare_run(load_config(overrides))
    trainer = pl.Trainer(max_epochs=1, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50,
                         limit_val_batches=0, precision="bf16-mixed", callbacks=list(callbacks))
    batch = int(run.cfg.batch_size)
    trainer.fit(run.model, datamodule=ArrayDataModule(run.splits, batch, 0, data_on_device="always",
                                                      batch_sampler_factory=run.model.batch_sampler_factory()))
    return trainer


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_no_host_device_sync_inside_the_training_step(tmp_path, monkeypatch, name):
    """Every training step after the first (SyncErrorsAfterWarmup) under set_sync_debug_mode("error"); the
    logging interval (50) is past the SYNC_STEPS run here. For a method of KNOWN_SYNC_METHODS only its own
    ``training_losses`` runs in "warn" mode (its syncs are counted, not raised): the rest of its step is
    held to the same rule."""
    import warnings

    loss_syncs = []
    if name in KNOWN_SYNC_METHODS and not REHEARSE:
        cls = METHODS.get(name)
        own_losses = cls.training_losses

        def lenient(self, *args, **kwargs):
            mode = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode("warn")
            try:
                with warnings.catch_warnings(record=True) as seen:
                    warnings.simplefilter("always")
                    out = own_losses(self, *args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(mode)
            loss_syncs.append(sum("synchroniz" in str(w.message) for w in seen))
            return out
        monkeypatch.setattr(cls, "training_losses", lenient)
    window = SyncErrorsAfterWarmup(set_mode=(lambda mode: None) if REHEARSE else torch.cuda.set_sync_debug_mode)
    trainer = sync_run(tmp_path, name, [window])
    assert trainer.global_step == SYNC_STEPS and window.strict_steps == list(range(1, SYNC_STEPS))
    if name in KNOWN_SYNC_METHODS and not REHEARSE and not any(loss_syncs):
        warnings.warn(f"{name}'s loss made no sync in {SYNC_STEPS} steps: drop it from KNOWN_SYNC_METHODS")


@needs_sync_debug_mode
def test_sync_debug_mode_catches_a_sync():
    with pytest.raises(RuntimeError):
        with _sync_errors():
            torch.ones(2, device="cuda").sum().item()


@needs_sync_debug_mode
def test_the_sync_window_catches_a_sync_in_a_step(tmp_path, monkeypatch):
    """The harness can fail: a ``.item()`` in the batch-end hook raises from step 1 on."""
    original = Method.on_train_batch_end

    def with_sync(self, outputs, batch, batch_idx):
        original(self, outputs, batch, batch_idx)
        outputs["loss"].item()
    monkeypatch.setattr(Method, "on_train_batch_end", with_sync)
    with pytest.raises(RuntimeError, match="synchroniz"):
        sync_run(tmp_path, "simclr", [SyncErrorsAfterWarmup()])
    torch.cuda.set_sync_debug_mode("default")
