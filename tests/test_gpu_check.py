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
    from tests.gpu_harness import SyncErrorsAfterWarmup, TrainingDevices
    from tests.test_gpu import SYNC_STEPS, sync_run

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


# ------------------------------------------------------------------ gpu_check.sh: the rehearsal's plan, the step runner
GPU_CHECK = ROOT / "benchmarks" / "gpu" / "gpu_check.sh"


def _plan(out, *mode):
    """``gpu_check.sh --print-plan``: ({stub: value}, [(step, limit, command tokens)])."""
    proc = subprocess.run(["bash", str(GPU_CHECK), *mode, "--print-plan", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    return {r[1]: r[2] for r in rows if r[0] == "stub"}, [(r[1], r[2], r[3].split()) for r in rows if r[0] == "step"]


def test_rehearsal_runs_the_real_steps_but_for_the_stubs(tmp_path):
    """The rehearsal's steps are the real check's (names, limits, every word of every command) except where a
    value of the REHEARSAL STUBS block stands, which takes the rehearsal's value there."""
    import re

    real_stubs, real = _plan(tmp_path)
    stubs, rehearsal = _plan(tmp_path, "--rehearse")
    assert real_stubs.keys() == stubs.keys() and real_stubs["DEVICE"] == "cuda" and stubs["DEVICE"] == "cpu"
    assert [(name, limit) for name, limit, _ in real] == [(name, limit) for name, limit, _ in rehearsal] == [
        ("setup", "60"), ("pytest_gpu", "180"), ("bench_speed", "80"), ("full_run", "120"), ("bench_eval", "50")]
    assert sum(int(limit) + 10 for _, limit, _ in real) <= 600  # every step, each with its kill grace, in 10 minutes

    def stubbed(word: str) -> set:
        return {re.sub(rf"(?<![\w.]){re.escape(real_stubs[v])}(?![\w.])", stubs[v], word) for v in stubs
                if real_stubs[v] != stubs[v]}
    for (name, _, words), (_, _, rehearsed) in zip(real, rehearsal):
        assert len(words) == len(rehearsed), name
        drift = [(a, b) for a, b in zip(words, rehearsed) if a != b and b not in stubbed(a)]
        assert not drift, f"{name}: the rehearsal differs from the real check beyond the stubs: {drift}"
    assert any("--device cuda" in " ".join(w) for _, _, w in real) and "-n 0" in " ".join(real[1][2])


def test_bad_argument_is_one_line(tmp_path):
    proc = subprocess.run(["bash", str(GPU_CHECK), "--rehaerse"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "gpu_check.sh: unknown argument '--rehaerse'; valid: --rehearse, --dry-run, --out DIR, --print-plan"]


#: A test file that the step runner stops: a quick test, one that handles SIGINT as Lightning's fit does (pytorch_lightning/
#: trainer/call.py: KeyboardInterrupt -> SIGINT ignored, sys.exit(1)), and one that would run until SIGKILL after it.
#: The limit comes at once, whatever the machine's load: SIGALRM is GNU timeout's own timer signal (the parent).
SLEEPY_TESTS = """import os, signal, sys, time
from tests.gpu_harness import stop_at_the_check_limit  # noqa: F401 (the GPU tests' autouse fixture)

def test_quick():
    pass

def test_interrupted_inside_fit():
    os.kill(os.getppid(), signal.SIGALRM)  # the step's time limit, now
    try:
        time.sleep(600)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        sys.exit(1)

def test_after_it():
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_step_past_its_limit_keeps_pytests_junit_and_the_report(tmp_path):
    """The check's own step runner stops a pytest past its limit, also inside a Lightning fit: with SIGINT pytest
    still writes its junit XML (what ran), the step is recorded as timed out, and the report is rewritten right
    after the step. The shell ignores SIGINT, as a job started in the background does."""
    import signal

    (tmp_path / "test_sleepy.py").write_text(SLEEPY_TESTS)
    out = tmp_path / "out"
    out.mkdir()
    script = (f"source {ROOT}/benchmarks/gpu/steps.sh; : > $OUT/steps.tsv; "
              f"step pytest_gpu 600 $PY -m pytest -n 0 -q -p no:cacheprovider {tmp_path}/test_sleepy.py "
              f"--junitxml=$OUT/pytest_gpu.xml")
    env = {**os.environ, "OUT": str(out), "PY": sys.executable, "MODE": "rehearse", "START": "0", "SKIP": " ",
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert "(time limit)" in proc.stdout, proc.stdout + proc.stderr
    name, rc, seconds = (out / "steps.tsv").read_text().split()
    # 124: pytest ended on the SIGINT; 137: killed 10 s later, which a loaded CPU can need after the junit is written
    assert name == "pytest_gpu" and rc in ("124", "137") and int(seconds) < 600
    assert "Exit: SIGINT (gpu_check.sh's time limit) during this test" in (out / "pytest_gpu.log").read_text()
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["steps"][0]["rc"] == int(rc) and report["rehearsal"] is True
    assert report["pytest_gpu"]["tests"] >= 1, report["pytest_gpu"]
    junit = (out / "pytest_gpu.xml").read_text()
    assert 'name="test_quick"' in junit and "test_after_it" not in junit
