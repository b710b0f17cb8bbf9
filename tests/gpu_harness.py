"""The GPU tests' harness (tests/test_gpu.py), kept apart so that tests/test_gpu_check.py tries it on the CPU."""

import dataclasses
import signal
from typing import Callable, List

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._pytree import tree_leaves


class _Interrupted:
    """Whether SIGINT (gpu_check.sh's time limit) arrived during the current test."""

    now = False


def _on_sigint(signum, frame):
    _Interrupted.now = True
    raise KeyboardInterrupt


@pytest.fixture(autouse=True)
def stop_at_the_check_limit():
    """At its time limit gpu_check.sh sends SIGINT, so that pytest ends and writes its junit XML. But inside ``fit``
    Lightning turns the KeyboardInterrupt into ``sys.exit(1)`` and ignores later SIGINTs
    (pytorch_lightning/trainer/call.py, ``_call_and_handle_interrupt``): pytest would count one failed test and
    go on until SIGKILL, writing nothing. So the SIGINT is remembered, and the session ends after that test."""
    previous = signal.signal(signal.SIGINT, _on_sigint)
    yield
    signal.signal(signal.SIGINT, previous)
    if _Interrupted.now:
        pytest.exit("SIGINT (gpu_check.sh's time limit) during this test", returncode=2)


class TrainingDevices(pl.Callback):
    """Where the parameters and the batch are *during* training (after ``fit`` Lightning's
    ``Strategy.teardown`` has moved the module back to the CPU), recorded at every batch end."""

    def __init__(self) -> None:
        self.seen = set()  # {("param", device type, dtype), ("batch", device type of a tensor in it, None)}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.seen |= {("param", p.device.type, p.dtype) for p in pl_module.parameters()}
        if dataclasses.is_dataclass(batch):  # its fields, not astuple (which deep-copies the tensors)
            batch = [getattr(batch, field.name) for field in dataclasses.fields(batch)]
        self.seen |= {("batch", t.device.type, None) for t in tree_leaves(batch) if isinstance(t, torch.Tensor)}


class SyncErrorsAfterWarmup(pl.Callback):
    """CUDA's sync debug mode "error" over whole training steps from step ``warmup`` on: the epoch loop's
    ``advance`` (fetching the batch, its transfer and augmentation, forward, backward, the optimizer step,
    the batch-end hooks) and ``on_advance_end`` (the lr schedule), except at the logging interval, where
    the logger reads the values; "default" before (step 0: Lightning's first ``self.log`` moves its metric
    state to the device, the optimizer builds its state), between steps and after ``fit``.

    Args:
        set_mode: ``torch.cuda.set_sync_debug_mode`` (a stand-in records the calls on the CPU).
        warmup: Steps run before the mode is on.
    """

    def __init__(self, set_mode: Callable[[str], None] = torch.cuda.set_sync_debug_mode, warmup: int = 1) -> None:
        self.set_mode, self.warmup = set_mode, warmup
        self.strict_steps: List[int] = []  # the global steps run under "error"

    def on_train_start(self, trainer, pl_module) -> None:
        loop, strict = trainer.fit_loop.epoch_loop, {"now": False}

        def advance(*args, _original=loop.advance, **kwargs):
            logging_step = (loop._batches_that_stepped + 1) % trainer.log_every_n_steps == 0
            strict["now"] = trainer.global_step >= self.warmup and not logging_step
            if strict["now"]:
                self.strict_steps.append(trainer.global_step)
            return self._run(strict["now"], _original, *args, **kwargs)

        def on_advance_end(*args, _original=loop.on_advance_end, **kwargs):
            return self._run(strict["now"], _original, *args, **kwargs)
        loop.advance, loop.on_advance_end = advance, on_advance_end

    def _run(self, strict: bool, function, *args, **kwargs):
        if not strict:
            return function(*args, **kwargs)
        self.set_mode("error")
        try:
            return function(*args, **kwargs)
        finally:
            self.set_mode("default")

    def teardown(self, trainer, pl_module, stage: str) -> None:
        loop = trainer.fit_loop.epoch_loop
        for name in ("advance", "on_advance_end"):
            loop.__dict__.pop(name, None)  # the class's methods again
