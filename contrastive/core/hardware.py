"""What ``auto`` means for precision and channels-last on this machine.

``trainer.precision=auto``, ``trainer.channels_last=auto`` and ``eval.amp=auto`` are
resolved here, from the device the run trains on.

**Choice: CPU feature detection, not a cached micro-benchmark.** Why:

* the gaps are large and follow the instruction set, not the model: bf16 autocast on a
  CPU without native bf16 is emulated by oneDNN and measured **8-10x slower** than fp32
  here (AMD EPYC, AVX2 only: small_cnn w16 forward + backward at 32x32, batch 256, 1727 ->
  206 images/s; w32 613 -> 57), while on a CPU with AVX-512 BF16 it measured
  **2.1x faster** (183 -> 390). One feature bit decides it; a benchmark adds nothing
  (``benchmarks/speed/bench_cpu_formats.py`` measures the four combinations on any CPU);
* a micro-benchmark costs seconds at every start, and on a shared machine (here 2 cores
  for 5 jobs) its noise would flip the choice from run to run, so two runs of the same
  config would train in different precisions; a cache file would have to be invalidated
  when a container moves to another host;
* detection is deterministic, free, and testable with the features mocked
  (tests/test_speed_defaults.py).

Rules (each measured where stated, conservative where not):

* CPU precision: ``bf16-mixed`` when the CPU has native bf16 matrix instructions
  (``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``), else ``32-true``. Arm CPUs with
  the ``bf16`` feature get fp32: not measured, so not claimed.
* CPU channels-last: on for x86 CPUs with AVX2 or better (oneDNN's NHWC convolutions),
  measured 1.2-1.5x faster in fp32 on the AVX2 machine above (small_cnn w16 1535 -> 2277
  images/s, ResNet-18 25.6 -> 32.2) and 1.4x on the AVX-512 BF16 one (183 -> 253);
  off elsewhere (not measured).
* GPU: ``bf16-mixed`` when the GPU supports bf16 (Ampere and newer), else ``32-true``
  (fp16 would need loss scaling and step skipping, which fights ``trainer.on_nonfinite``);
  channels-last on compute capability >= 7.0 (tensor cores prefer NHWC). Not measured here:
  no GPU was lent (``benchmarks/gpu_check.sh`` measures it).
* ``trainer.compile`` has no ``auto``: it stays off by default (``BENCHMARKS.md``, torch.compile:
  on CPU the compiled step was faster but compiling took minutes, and the kNN monitor's eval
  mode compiles again; the GPU measurement is ``benchmarks/speed/bench_compile.py --device cuda``).
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any, FrozenSet, Optional

import torch

from contrastive.core.errors import ConfigError

#: x86 flags of native bf16 dot products (AVX-512 BF16: Cooper Lake, Sapphire Rapids, Zen 4+; AMX: Sapphire Rapids+).
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
BF16_ENV = "CONTRASTIVE_CPU_BF16"
#: torch.backends.cpu.get_cpu_capability() values with oneDNN's fast NHWC convolutions on x86.
NHWC_CAPABILITIES = frozenset({"AVX2", "AVX512", "AVX512_BF16", "AMX", "AVX512_VNNI"})


@functools.lru_cache(maxsize=1)
def cpu_flags() -> FrozenSet[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (x86 ``flags``, Arm ``Features``); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_capability() -> str:
    """PyTorch's dispatch level for CPU kernels (``DEFAULT``, ``AVX2``, ``AVX512``, ...)."""
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "DEFAULT"


def cpu_has_native_bf16(flags: Optional[FrozenSet[str]] = None) -> bool:
    """Whether bf16 matmuls/convolutions run natively (AVX-512 BF16 or AMX) instead of emulated.

    The environment variable ``CONTRASTIVE_CPU_BF16=0`` (or ``1``) overrides the detection,
    e.g. to keep a test suite that compares numbers exactly in fp32 on every CPU."""
    forced = os.environ.get(BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    return bool(BF16_FLAGS & (cpu_flags() if flags is None else flags))


def cpu_prefers_channels_last(capability: Optional[str] = None, machine: Optional[str] = None) -> bool:
    """Whether channels-last convolutions are the faster layout on this CPU (x86 with AVX2+)."""
    machine = (machine or platform.machine()).lower()
    return machine in ("x86_64", "amd64") and (capability or cpu_capability()) in NHWC_CAPABILITIES


def training_device(accelerator: Any) -> str:
    """``cuda`` or ``cpu``: where ``trainer.accelerator`` trains (``auto``: cuda when available)."""
    acc = str(accelerator).lower()
    if acc in ("gpu", "cuda"):
        return "cuda"
    if acc == "auto" and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def _gpu_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _gpu_tensor_cores() -> bool:
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 7


def resolve_precision(requested: Any, accelerator: Any = "auto") -> str:
    """``trainer.precision`` -> a Lightning precision string (``auto`` resolved as in the module doc;
    any other value is passed to Lightning unchanged, which names the valid ones)."""
    value = str(requested)
    if value != "auto":
        return value
    if training_device(accelerator) == "cuda":
        return "bf16-mixed" if _gpu_bf16() else "32-true"
    return "bf16-mixed" if cpu_has_native_bf16() else "32-true"


def _auto_bool(value: Any, key: str) -> Optional[bool]:
    """``true``/``false`` -> bool, ``auto`` -> None; anything else is a ConfigError naming ``key``."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("true", "false"):
        return text == "true"
    if text == "auto":
        return None
    raise ConfigError(f"{key}='{value}' is not valid; choose one of auto, true, false")


def resolve_channels_last(requested: Any, accelerator: Any = "auto") -> bool:
    """``trainer.channels_last`` (auto | true | false) -> whether to train in channels-last."""
    chosen = _auto_bool(requested, "trainer.channels_last")
    if chosen is not None:
        return chosen
    return _gpu_tensor_cores() if training_device(accelerator) == "cuda" else cpu_prefers_channels_last()


def resolve_eval_amp(requested: Any, device: torch.device) -> bool:
    """``eval.amp`` (auto | true | false) -> bf16 autocast for feature extraction on ``device``.

    ``auto``: on a bf16 GPU, and on a CPU with native bf16 (the rule of :func:`resolve_precision`)."""
    chosen = _auto_bool(requested, "eval.amp")
    if chosen is not None:
        return chosen
    return _gpu_bf16() if device.type == "cuda" else device.type == "cpu" and cpu_has_native_bf16()


def facts(device: str) -> dict:
    """What the ``auto`` rules read on ``device`` (``cpu`` or ``cuda``): recorded with a run's choices."""
    if device == "cuda" and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability()
        return {"gpu": torch.cuda.get_device_name(0), "compute_capability": f"{major}.{minor}", "gpu_bf16": _gpu_bf16(),
                "tensor_cores": major >= 7}
    flags = cpu_flags()
    return {"machine": platform.machine(), "cpu_capability": cpu_capability(), "cpu_bf16_flags": sorted(BF16_FLAGS & flags),
            "cpu_native_bf16": cpu_has_native_bf16(flags), BF16_ENV: os.environ.get(BF16_ENV) or None}


def describe() -> dict:
    """What the detection saw (logged by benchmarks next to their numbers)."""
    flags = cpu_flags()
    return {"machine": platform.machine(), "cpu_capability": cpu_capability(),
            "cpu_bf16_flags": sorted(BF16_FLAGS & flags), "cuda": torch.cuda.is_available(),
            "auto_precision_cpu": resolve_precision("auto", "cpu"), "auto_channels_last_cpu": resolve_channels_last("auto", "cpu")}
