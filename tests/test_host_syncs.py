"""The host-sync counter (contrastive/engine/host_syncs.py): one case per operation it counts, and the
look-alikes it must not count. tests/test_speed_defaults.py runs it over every method's training step."""

import numpy  # noqa: F401 (Tensor.numpy needs it importable)
import pytest
import torch

from contrastive.engine.host_syncs import HostSyncCounter, sync_kind

x = torch.tensor([0.5, -1.0, 2.0, -3.0])
mask = x > 0

COUNTED = {
    "item": (lambda: x.sum().item(), "scalar"),
    "bool": (lambda: bool(x[0] > 0), "scalar"),
    "float": (lambda: float(x[0]), "scalar"),
    "int": (lambda: int(x[0]), "scalar"),
    "if on a tensor": (lambda: 1 if (x > 0).any() else 0, "scalar"),
    "tensor as python index": (lambda: [1, 2, 3][torch.tensor(1)], "scalar"),
    "nonzero": (lambda: torch.nonzero(mask), "shape"),
    "where with one argument": (lambda: torch.where(mask), "shape"),
    "argwhere": (lambda: torch.argwhere(mask), "shape"),
    "masked_select": (lambda: torch.masked_select(x, mask), "shape"),
    "unique": (lambda: torch.unique(x), "shape"),
    "unique sorted=False with inverse": (lambda: torch.unique(x, sorted=False, return_inverse=True), "shape"),
    "unique along a dim": (lambda: torch.unique(x.view(2, 2), dim=0), "shape"),
    "unique_consecutive": (lambda: torch.unique_consecutive(x), "shape"),
    "boolean mask index": (lambda: x[mask], "shape"),
    "boolean mask index in 2-d": (lambda: x.view(2, 2)[:, mask[:2]], "shape"),
    "boolean mask assignment of a tensor": (lambda: x.clone().__setitem__(mask, torch.ones(2)), "shape"),
    "repeat_interleave by a tensor": (lambda: torch.repeat_interleave(x, torch.tensor([1, 2, 1, 0])), "shape"),
    "repeat_interleave of counts": (lambda: torch.repeat_interleave(torch.tensor([1, 2])), "shape"),
    ".cpu()": (lambda: x.cpu(), "host"),
    ".tolist()": (lambda: x.tolist(), "host"),
    ".numpy()": (lambda: x.numpy(), "host"),
}

NOT_COUNTED = {
    "arithmetic and reductions": lambda: (x * 2).sum() + x.max(),
    "where with three arguments": lambda: torch.where(mask, x, 0.0),
    "integer index": lambda: x[torch.tensor([0, 2])],
    "index_select": lambda: x.index_select(0, torch.tensor([1])),
    "masked_fill": lambda: x.masked_fill(mask, 0.0),
    "boolean mask assignment of a number (masked_fill)": lambda: x.clone().__setitem__(mask, 0.0),
    "repeat_interleave with output_size": lambda: torch.repeat_interleave(torch.tensor([1, 2]), output_size=3),
    "repeat_interleave by an int": lambda: torch.repeat_interleave(x, 2),
    "nonzero_static": lambda: torch.nonzero_static(mask, size=4),
    "to the same device": lambda: x.to(x.device),
    "shape and len": lambda: (x.shape[0], len(x), x.numel()),
}


@pytest.mark.parametrize("name", COUNTED)
def test_counts_each_sync_once_by_kind_and_place(name):
    run, kind = COUNTED[name]
    with HostSyncCounter() as counter:
        run()
    assert dict(counter.kinds) == {kind: 1}, counter.summary()
    assert list(counter.where)[0].startswith("test_host_syncs.py:"), counter.summary()


@pytest.mark.parametrize("name", NOT_COUNTED)
def test_leaves_ops_without_a_sync_alone(name):
    with HostSyncCounter() as counter:
        NOT_COUNTED[name]()
    assert counter.total == 0, counter.summary()


def test_device_copies_are_counted_by_operator():
    """What a GPU run sees (`.cpu()` / `.tolist()` of a CUDA tensor dispatch `_to_copy` to the CPU), checked on
    the operator's arguments since this machine has no second device: meta tensors stand for the device."""
    aten = torch.ops.aten
    on_device = torch.empty(3, device="meta")
    assert sync_kind(aten._to_copy.default, (on_device,), {"device": torch.device("cpu")}) == "copy"
    assert sync_kind(aten._to_copy.default, (x,), {"device": torch.device("meta")}) == "copy"
    assert sync_kind(aten._to_copy.default, (x,), {"dtype": torch.float64}) is None
    assert sync_kind(aten.copy_.default, (x.clone(), on_device), {}) == "copy"
    assert sync_kind(aten.copy_.default, (x.clone(), x), {}) is None
    assert sync_kind(aten.lift_fresh.default, (on_device,), {}) == "copy"  # torch.tensor(list, device="cuda")
    assert sync_kind(aten.lift_fresh.default, (x,), {}) is None  # a constant built on the host


def test_pausing_and_the_methods_are_restored():
    cpu = torch.Tensor.cpu
    with HostSyncCounter() as counter:
        counter.active = False
        x.tolist()
        counter.active = True
        x.sum().item()
    assert counter.total == 1 and torch.Tensor.cpu is cpu
    assert "test_host_syncs.py" in counter.summary() and "1 host syncs {'scalar': 1}" in counter.summary()


def test_adams_host_step_count_is_not_a_sync_but_an_item_in_a_step_is():
    w = torch.nn.Parameter(torch.ones(3))
    adam = torch.optim.AdamW([w], lr=0.1, foreach=False)
    for _ in range(2):
        w.grad = torch.ones(3)
        with HostSyncCounter() as counter:
            adam.step()
        assert counter.total == 0, counter.summary()
    with HostSyncCounter() as counter:
        float(w.sum())
    assert counter.total == 1


# ---------------------------------------------------------------- pieces made sync-free
def test_the_epochs_permutation_stays_on_the_images_device_and_a_batch_is_a_slice_of_it():
    from contrastive.data.base import ImageArray, IndexedBatches, RandomBatchSampler

    as_lists = list(RandomBatchSampler(20, 4, seed=3))
    on_device = list(RandomBatchSampler(20, 4, seed=3, device="cpu"))
    assert [b.tolist() for b in on_device] == as_lists  # the same batches
    assert all(b.device.type == "meta" for b in RandomBatchSampler(20, 4, seed=3, device="meta"))  # never on the host
    images = ImageArray(torch.zeros(20, 3, 2, 2, dtype=torch.uint8), torch.arange(20))
    batch = on_device[0]
    with HostSyncCounter() as counter:
        _, labels, indices = IndexedBatches(images)[batch]
    assert indices is batch and torch.equal(labels, batch) and counter.total == 0  # used as it is: no copy


def test_the_data_module_gives_the_sampler_the_images_device():
    from contrastive.data.base import DatasetSplits, ImageArray
    from contrastive.data.module import ArrayDataModule

    array = ImageArray(torch.zeros(8, 3, 2, 2, dtype=torch.uint8), torch.arange(8))
    loader = ArrayDataModule(DatasetSplits(array, array, array, ["a"], (0.5,) * 3, (0.5,) * 3), 4).train_dataloader()
    assert loader.sampler.sampler.device == torch.device("cpu")
    assert isinstance(next(iter(loader))[2], torch.Tensor)


def test_the_key_queue_moves_with_the_model_and_keeps_its_pointer_on_the_host():
    from contrastive.memory.queue import KeyQueue

    queue = KeyQueue(8, 4)
    torch.nn.Sequential(queue).to("meta")
    assert queue.keys.device.type == "meta" and queue.keys.dtype == torch.float32
    queue = KeyQueue(8, 4)
    with HostSyncCounter() as counter:
        queue.enqueue(torch.ones(4, 4))
    assert counter.total == 0 and int(queue.pointer) == 4 and queue.state_dict()["pointer"] == 4


def test_the_progress_bar_reads_the_loss_at_its_refresh_and_no_step_logs_to_it(tmp_path):
    from types import SimpleNamespace

    from contrastive.config.compose import load_config
    from contrastive.engine.trainer import LossProgressBar, build_trainer

    stub = SimpleNamespace(loggers=[], progress_bar_metrics={}, callback_metrics={"train_loss_step": torch.tensor(1.23456)})
    assert LossProgressBar().get_metrics(stub, None) == {"train_loss": "1.235"}
    cfg = load_config(["trainer.progress_bar=true", f"output_dir={tmp_path}"])
    assert any(isinstance(c, LossProgressBar) for c in build_trainer(cfg, tmp_path).callbacks)
