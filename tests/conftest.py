import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import pytest
import pytorch_lightning as pl
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # train.py / linear_eval.py are scripts at the repo root

# Under pytest-xdist (the suite's default, see pyproject.toml) each of the workers gets its share
# of the cores; alone, a test process takes up to two.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _WORKERS)))
# Tests compare numbers exactly (resume, DDP vs one process): CPUs with native bf16 would
# otherwise train them in bf16 under precision=auto (contrastive/core/hardware.py).
os.environ.setdefault("CONTRASTIVE_CPU_BF16", "0")

#: Overrides that make a train.py run take seconds on 2 CPU cores.
FAST = [
    "dataset.num_train=512",
    "dataset.num_val=200",
    "batch_size=64",
    "backbone.kwargs.width=8",
    "trainer.max_epochs=2",
    "scheduler.warmup_epochs=0",
    "knn.every_n_epochs=1",
    "knn.k=20",
    "trainer.progress_bar=false",
    # Tests compare numbers exactly: fp32 also on CPUs where precision=auto picks bf16 (contrastive/core/hardware.py).
    "trainer.precision=32-true",
]


@pytest.fixture
def fast_overrides(tmp_path):
    return FAST + [f"output_dir={tmp_path / 'outputs'}"]


@pytest.fixture(scope="module")
def one_thread():
    """Modules of many tiny ops: one intra-op thread, since OpenMP threads that spin-wait on each
    other make them several times slower and erratic on a small shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Files that take longest: collected first, so the two processes finish together instead of one
#: starting the wheel build when the other is done (pytest-xdist hands out files in this order).
LONGEST_FIRST = ("test_packaging.py", "test_headline.py", "test_speed_defaults.py", "test_reliability.py", "test_stream.py")


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


#: Small heads per method so a step takes well under a second on 2 CPU cores (tests/test_methods.py,
#: tests/test_speed_defaults.py add their own per-test settings). tests/test_gpu.py's only table: every
#: registered method must fit its runs (512 images; 48 in the host-sync run), checked by tests/test_gpu_check.py.
SMALL_HEADS = {
    "simclr": ["method.projection.hidden_dim=32", "method.projection.output_dim=16"],
    "simclic": ["method.projection.hidden_dim=32", "method.projection.output_dim=32", "method.predictor_hidden_dim=8"],
    "byol": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.predictor.hidden_dim=16"],
    "simsiam": ["method.projection.hidden_dim=32", "method.projection.output_dim=32", "method.predictor.hidden_dim=8"],
    "mocov1": ["method.projection.output_dim=16", "method.queue_size=64"],
    "mocov2": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.queue_size=64"],
    "mocov3": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.predictor.hidden_dim=32"],
    "simclrv2": ["method.projection.hidden_dim=32", "method.projection.output_dim=16"],
    "barlowtwins": ["method.projection.hidden_dim=32", "method.projection.output_dim=32"],
    "vicreg": ["method.projection.hidden_dim=32", "method.projection.output_dim=32"],
    "swav": ["method.num_prototypes=8", "method.projection.hidden_dim=32", "method.projection.output_dim=16"],
    "dino": ["method.head.hidden_dim=32", "method.head.bottleneck_dim=16", "method.head.output_dim=64"],
    "insdis": ["method.num_negatives=32"],
    "pirl": ["method.num_negatives=32", "method.output_dim=16", "method.jigsaw.crop_size=15", "method.jigsaw.patch_size=4"],
    "deepclusterv2": ["method.num_prototypes=[8,8]", "method.projection.hidden_dim=32", "method.projection.output_dim=16"],
    "pclv2": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.queue_size=64",
              "method.num_prototypes=[4,8]", "method.num_negative_prototypes=2", "method.warmup_epochs=0"],
    "pcl": ["method.projection.output_dim=16", "method.queue_size=64", "method.num_prototypes=[4,8]", "method.num_negative_prototypes=2", "method.warmup_epochs=0"],
    "supcon": ["method.projection.hidden_dim=32", "method.projection.output_dim=16"],
    "nnclr": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.predictor.hidden_dim=32",
              "method.support_size=64"],
    "infomin": ["method.projection.hidden_dim=32", "method.projection.output_dim=16", "method.queue_size=64"],
    "selav2": ["method.num_prototypes=[8,8]", "method.projection.hidden_dim=32", "method.projection.output_dim=16"],
    "spcl": ["method.num_prototypes=[6]", "method.metric_hidden_dim=16"],
}


def fit_crashing_at_epoch_1(overrides, monkeypatch) -> None:
    """Fit a run that crashes as epoch 1 starts (after epoch 0's checkpoint), as a killed job would;
    ``Method.on_train_epoch_start`` is restored afterwards, ready for ``resume=auto``."""
    from contrastive.config.compose import load_config
    from contrastive.engine.method import Method
    from contrastive.engine.run import fit, prepare_run

    original = Method.on_train_epoch_start

    def crash_at_epoch_1(self):
        if self.current_epoch == 1:
            raise RuntimeError("simulated crash")
        original(self)

    monkeypatch.setattr(Method, "on_train_epoch_start", crash_at_epoch_1)
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(prepare_run(load_config(list(overrides))))
    monkeypatch.setattr(Method, "on_train_epoch_start", original)


# ---------------------------------------------------------------- what a resumed fit really ran
# Training is deterministic: a "resumed" run that silently restarts from scratch ends with the
# straight run's weights and global step. Resume tests therefore also check where the fit started.
@dataclass
class FitStart:
    """Where one ``trainer.fit`` started training, after any checkpoint was restored."""

    epoch: int
    global_step: int
    state_dict: Dict[str, torch.Tensor]  # the module's state_dict then (copies, on the CPU)


class _RecordFitStart(pl.Callback):
    def __init__(self, starts: List[FitStart]) -> None:
        self.starts = starts

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks' on_train_start runs before the module's (which may fill a memory bank).
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        self.starts.append(FitStart(trainer.current_epoch, trainer.global_step, state))


@pytest.fixture
def fit_starts():
    """A list that every ``trainer.fit`` of a ``Method`` during the test appends its :class:`FitStart` to
    (through ``Method.configure_callbacks``; its own patch, so a test's ``monkeypatch.undo()`` keeps it)."""
    from contrastive.engine.method import Method

    starts: List[FitStart] = []
    original = Method.configure_callbacks
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Method, "configure_callbacks", lambda self: [*original(self), _RecordFitStart(starts)])
        yield starts


def assert_started_from(start: FitStart, checkpoint) -> None:
    """``start`` (a resumed fit's) is where ``checkpoint`` (a path or a loaded dict) ends: its global
    step (not 0) and every entry of its state_dict, so a fit that ignored the checkpoint fails here."""
    saved = torch.load(checkpoint, weights_only=True) if isinstance(checkpoint, (str, Path)) else checkpoint
    assert start.global_step == saved["global_step"] > 0, "the resumed fit did not start at the checkpoint's step"
    assert start.state_dict.keys() == saved["state_dict"].keys()
    for key, value in saved["state_dict"].items():
        assert torch.equal(start.state_dict[key], value.cpu()), f"{key} at the resumed fit's start is not the checkpoint's"
