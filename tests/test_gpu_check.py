"""The GPU check's own plumbing, on the CPU: what benchmarks/gpu_check.sh and tests/test_gpu.py rely on
before a device exists (device mixing in bench_speed.py via the meta device, the GPU tests' settings for
every method, the training-time device record, the sync-debug window, the step runner's time limit)."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from torch.overrides import TorchFunctionMode

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.core.registry import METHODS
from tests.conftest import ROOT

load_builtin_methods()


class CudaIndexRule(TorchFunctionMode):
    """CUDA's rule for indexing, on any device: an index tensor off the CPU must be on the indexed
    tensor's device (the CPU and the meta device alone accept any index, and silently)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.Tensor.__getitem__ and isinstance(args[1], torch.Tensor):
            tensor, index = args[0], args[1]
            if index.device.type != "cpu" and index.device != tensor.device:
                raise RuntimeError(f"indices on {index.device} index a tensor on {tensor.device}")
        return func(*args, **(kwargs or {}))


def _bench_speed():
    spec = importlib.util.spec_from_file_location("bench_speed", ROOT / "benchmarks" / "speed" / "bench_speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cuda_index_rule_raises_on_mixed_devices():
    with CudaIndexRule(), pytest.raises(RuntimeError, match="indices on meta index a tensor on cpu"):
        torch.arange(4)[torch.tensor([1], device="meta")]


def test_bench_speed_batches_on_the_device_index_labels_there_too():
    """bench_speed's `ours` pipeline with the meta device standing for CUDA: the dataset moves to the device
    and every gather (images and labels) uses an index on the tensor's own device."""
    from argparse import Namespace

    from contrastive.data.base import ImageArray

    bench = _bench_speed()
    data = ImageArray(torch.zeros(8, 3, 4, 4, dtype=torch.uint8), torch.arange(8))
    with CudaIndexRule():
        v0, v1 = next(bench.our_batches(data, Namespace(batch_size=4), lambda x: x, torch.device("meta")))
    assert v0.device.type == v1.device.type == "meta" and v0.shape == (4, 3, 4, 4)


# ------------------------------------------------------------------ the GPU tests' settings, every method
def _on_cpu(overrides):
    from tests.test_gpu import GPU

    return [o if o != GPU[0] else "trainer.accelerator=cpu" for o in overrides]


#: About a second each (three configs composed, a model built): InsDis (its bank's negatives against the
#: images) in the quick suite, every method in the full one.
@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n == "insdis" else pytest.mark.slow) for n in sorted(METHODS.names())])
def test_every_method_fits_the_gpu_tests_runs(tmp_path, name):
    """tests/test_gpu.py's runs of every registered method (conftest's SMALL_HEADS on FAST) pass the checks a
    run makes before its data exists (negatives, queues, clusters against the number of images; schedules),
    the model builds, and the host-sync run's sampler gives the steps that test asserts: a new method cannot
    break the GPU tests unseen. (The CPU stands in for the device; the data's own checks run in the rehearsal.)"""
    from contrastive.engine.method import DataInfo
    from contrastive.engine.run import validate_config
    from tests.test_gpu import BF16_STEP, SYNC_RUN, SYNC_STEPS, run_overrides

    for extra in (BF16_STEP, SYNC_RUN):
        cfg = load_config(_on_cpu(run_overrides(tmp_path, name, *extra)))
        validate_config(cfg)
        n, batch = int(cfg.dataset.num_train), int(cfg.batch_size)
        data = DataInfo(num_classes=10, image_size=int(cfg.dataset.image_size), mean=(0.5,) * 3, std=(0.25,) * 3, num_train=n)
        cls = METHODS.get(name)
        cls.validate_config(cfg, data)
        factory = cls(cfg, data).batch_sampler_factory()
    steps = n // batch if factory is None else len(list(factory(n, batch, 0, 0, 1)))
    assert steps == SYNC_STEPS


# ------------------------------------------------------------------ the GPU tests' harness, on the CPU
@pytest.mark.slow
def test_sync_window_and_device_record_on_a_cpu_run(tmp_path, monkeypatch):
    """tests/test_gpu.py's host-sync run on the CPU, its mode switch recorded: "error" over whole steps from
    step 1 (not step 0, where Lightning sets its logging state up), "default" between steps and at the end;
    TrainingDevices records the device while training (Strategy.teardown moves the module to the CPU after)."""
    from contrastive.engine.method import Method
    from tests.test_gpu import SYNC_STEPS, SyncErrorsAfterWarmup, TrainingDevices, sync_run

    mode, modes_in_step = ["default"], []
    original = Method.training_step

    def recorded(self, *args, **kwargs):
        modes_in_step.append((self.trainer.global_step, mode[0]))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(Method, "training_step", recorded)
    window, devices = SyncErrorsAfterWarmup(set_mode=lambda m: mode.__setitem__(0, m)), TrainingDevices()
    trainer = sync_run(tmp_path, "simclr", [window, devices], accelerator="cpu")
    assert modes_in_step == [(0, "default")] + [(step, "error") for step in range(1, SYNC_STEPS)]
    assert window.strict_steps == list(range(1, SYNC_STEPS)) and mode[0] == "default"
    assert "advance" not in trainer.fit_loop.epoch_loop.__dict__  # the loop's own methods again
    assert devices.seen == {("param", "cpu", torch.float32), ("batch", "cpu", None)}
