"""Multi-crop on dataset.storage=stream: the DataLoader workers cut the local crops too, from the
full-resolution image, seeded per (seed, epoch, sample, view) like the global crops."""

import pytest
import torch

from contrastive.augment.pipelines import SimCLRAugment
from contrastive.augment.views import build_view_augments
from contrastive.core.errors import ConfigError
from contrastive.data.base import RandomBatchSampler
from contrastive.data.batch import ViewBatch
from contrastive.data.io.decode import crop_resize, decode_rgb, sample_crop_box
from contrastive.data.io.folders import list_class_folders
from contrastive.data.resume import ResumableLoader
from contrastive.data.stream import CropBatches, EpochTagged, FileImages, crop_seed, geometric_of, local_crops_of, worker_init
from tests.conftest import SMALL_HEADS
from tests.test_stream import shapes_folder

RATIO = (3 / 4, 4 / 3)
MULTICROP = {"num_local": 2, "size": 8, "min_scale": 0.05, "max_scale": 0.3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return shapes_folder(tmp_path_factory.mktemp("shapes"), 32, 16, size=16)


def _augment():
    cfg = {"name": "simclr", "min_scale": 0.3, "multicrop": MULTICROP}
    return build_view_augments(cfg, 16, (0.5,) * 3, (0.25,) * 3)


def _dataset(folder):
    samples = list_class_folders(folder / "train")[1]
    files = FileImages([str(p) for p, _ in samples], 16)
    aug = _augment()
    local = local_crops_of(aug, RATIO)
    return CropBatches(files, torch.tensor([c for _, c in samples]), geometric_of(aug, RATIO), 2, seed=3, local=local)


def test_a_streamed_batch_carries_global_and_local_crops_of_the_full_image(folder):
    ds = _dataset(folder)
    (glob, local), labels, idx = ds[(1, [4, 0, 7])]
    assert glob.shape == (3, 2, 3, 16, 16) and local.shape == (3, 2, 3, 8, 8) and local.dtype == torch.uint8
    full = decode_rgb(ds.files.paths[0])  # the non-square file (24 x 16), not a pre-cut square
    for j in range(2):  # local crop j is view 2 + j of the seeds
        g = torch.Generator().manual_seed(crop_seed(3, 1, 0, 2 + j))
        box = sample_crop_box(*full.shape[-2:], (0.05, 0.3), RATIO, g)
        assert torch.equal(local[1, j], crop_resize(full, box, 8, bool(torch.rand(1, generator=g).item() < 0.5)))
    batch = ViewBatch.of((glob, local), labels, idx)
    assert batch.crops_per_image == 4 and batch.num_local == 2
    aug = _augment()
    assert batch.augmented(aug.view(1), crop=1).shape == (3, 3, 16, 16)
    assert batch.augmented(aug.view(3), crop=3).shape == (3, 3, 8, 8)
    with pytest.raises(ConfigError, match=r"crop=4 of a streamed batch: valid crops are 0..3"):
        batch.augmented(aug.view(3), crop=4)


def test_local_crops_do_not_depend_on_the_worker_count(folder):
    ds = _dataset(folder)

    def batches(workers):
        kwargs = {"num_workers": workers, "worker_init_fn": worker_init} if workers else {}
        loader = ResumableLoader(ds, EpochTagged(RandomBatchSampler(len(ds), 8, seed=5)), lambda: (0, 0), **kwargs)
        loader.sampler.set_epoch(2)
        return [b for b in loader]

    for (a, ia), (b, ib) in zip([(x[0], x[2]) for x in batches(0)], [(x[0], x[2]) for x in batches(2)]):
        assert torch.equal(ia, ib) and torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_local_crops_need_a_random_resized_crop():
    from contrastive.augment.pipelines import SupervisedAugment
    from contrastive.augment.views import ViewAugments

    pad = SupervisedAugment(16, (0.5,) * 3, (0.25,) * 3, padding=2)
    aug = ViewAugments([SimCLRAugment(16, (0.5,) * 3, (0.25,) * 3)] * 2 + [pad], num_global=2)
    with pytest.raises(ConfigError, match="local crops as random-resized crops.*dataset.storage=memory"):
        local_crops_of(aug, RATIO)


def stream_overrides(folder, tmp_path, name, *extra):
    """A one-epoch run of method ``name`` (small heads) streamed from the 16-px image folder ``folder``."""
    return [f"method={name}", *SMALL_HEADS[name], "dataset=imagefolder", f"dataset.root={folder}", "dataset.image_size=16",
            "dataset.storage=stream", "dataset.num_workers=0", f"dataset.cache_dir={tmp_path / 'cache'}",
            "batch_size=16", "backbone.kwargs.width=4", "trainer.max_epochs=1",
            "knn.enabled=false", "knn.random_init_baseline=false", "trainer.progress_bar=false", "trainer.precision=32-true",
            f"output_dir={tmp_path / 'outputs'}", *extra]


def _overrides(folder, tmp_path, *extra):
    return stream_overrides(folder, tmp_path, "swav", "augment.multicrop.num_local=2", "augment.multicrop.size=8", *extra)


@pytest.mark.slow
def test_swav_trains_one_epoch_on_streamed_multicrop_batches(folder, tmp_path, monkeypatch):
    import train
    from contrastive.engine.method import Method

    seen, original = [], Method.training_views
    monkeypatch.setattr(Method, "training_views", lambda self, batch: seen.append(batch.num_local) or original(self, batch))
    summary = train.main(_overrides(folder, tmp_path))
    assert seen and set(seen) == {2}  # every step got the workers' 2 local crops
    assert summary["epochs"] == 1, summary


def test_a_local_crop_larger_than_the_image_is_refused_on_the_stream_path(folder, tmp_path, capsys):
    import train

    with pytest.raises(SystemExit):
        train.main(_overrides(folder, tmp_path, "augment.multicrop.size=32"))
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1] == ("error: augment.multicrop.size=32 must be between 8 and the image size 16: "
                         "a local crop cannot be larger than the image")


def test_a_streamed_batch_without_the_local_crops_is_refused_in_one_line():
    from contrastive.config.compose import load_config
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.core.registry import METHODS
    from contrastive.engine.method import DataInfo

    load_builtin_methods()
    cfg = load_config(["method=swav", *SMALL_HEADS["swav"], "backbone.kwargs.width=4", "augment.multicrop.size=8"])
    model = METHODS.get("swav")(cfg, DataInfo(num_classes=4, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=8))
    crops = torch.zeros(4, 4, 3, 16, 16, dtype=torch.uint8)  # 4 global crops, no local ones
    with pytest.raises(ConfigError, match=r"^a streamed batch carries 4 crops per image \(0 local\), method 'swav' takes 4 \(2 local\)$"):
        model.make_views(crops, torch.zeros(4, dtype=torch.long))
