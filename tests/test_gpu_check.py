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
