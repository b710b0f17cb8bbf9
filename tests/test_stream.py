"""dataset.storage=stream: crops of the full image in DataLoader workers, the
evaluation protocol shared with the in-memory path, DDP sharding, exact mid-epoch resume,
and an end-to-end run."""

import os
import socket
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from PIL import Image

from contrastive.augment.pipelines import SimCLRAugment
from contrastive.data.base import ImageArray, RandomBatchSampler
from contrastive.data.io.decode import crop_resize, decode_rgb, sample_crop_box
from contrastive.data.io.folders import decode_files, list_class_folders
from contrastive.data.resume import ResumableLoader
from contrastive.augment.photometric import photometric
from contrastive.data.stream import CropBatches, EpochTagged, FileImages, crop_seed, geometric_of, worker_init
from tests.test_data_files import DECODERS


def shapes_folder(root: Path, n_train: int, n_val: int, size: int = 32, k: int = 4, seed: int = 0) -> Path:
    """``root/{train,val}/<shape>/<i>.jpg``: the synthetic shapes, saved non-square (size+8 x size)."""
    from contrastive.data.sources.synthetic import CLASS_NAMES, generate_shapes

    for split, n, s in (("train", n_train, seed), ("val", n_val, seed + 1)):
        images, labels = generate_shapes(n, size, k, seed=s)
        for i, (im, y) in enumerate(zip(images, labels)):
            folder = root / split / CLASS_NAMES[int(y)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(im.permute(1, 2, 0).numpy()).resize((size + 8, size)).save(folder / f"{i}.jpg", quality=95)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return shapes_folder(tmp_path_factory.mktemp("shapes"), 96, 24)


def _files(folder, split="train"):
    return list_class_folders(folder / split)[1]


@pytest.mark.parametrize("decoder", DECODERS)
def test_stream_and_memory_give_identical_eval_tensors(folder, tmp_path, decoder):
    samples = _files(folder, "val")
    memory, _ = decode_files(samples, 24, cache_dir=tmp_path / "cache", resize=28, decoder=decoder)  # 28 -> 24: fraction 0.857
    lazy = FileImages([str(p) for p, _ in samples], 24, resize=28, decoder=decoder)
    assert lazy.shape == memory.images.shape
    assert torch.equal(lazy[:], memory.images)
    assert torch.equal(lazy[torch.tensor([3, 1])], memory.images[[3, 1]]) and torch.equal(lazy[2], memory.images[2])
    sub = ImageArray(lazy, memory.labels).subset(torch.tensor([0, 5]))
    assert sub.streamed and torch.equal(sub.images[:], memory.images[[0, 5]])


def test_crop_boxes_are_torchvisions_random_resized_crop_on_the_full_image():
    from torchvision.transforms import RandomResizedCrop

    scale, ratio = (0.2, 0.9), (0.6, 1.5)
    fractions = []
    for s in range(200):  # same seed -> the same box as torchvision's get_params, for every draw
        torch.manual_seed(s)
        expected = RandomResizedCrop.get_params(torch.empty(3, 150, 260), scale, ratio)
        box = sample_crop_box(150, 260, scale, ratio, torch.Generator().manual_seed(s))
        assert tuple(box) == tuple(expected)
        fractions.append(box[2] * box[3] / (150 * 260))
    fractions = torch.tensor(fractions)  # area relative to the ORIGINAL image (not a pre-cropped square)
    assert fractions.min() >= 0.19 and fractions.max() <= 0.91 and fractions.std() > 0.1


def test_worker_crops_are_taken_from_the_full_resolution_image(tmp_path):
    y, x = np.mgrid[0:150, 0:260]
    image = np.stack([x % 256, y % 256, (x + y) % 256], axis=2).astype(np.uint8)  # position-coded pixels
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    files = FileImages([str(path)], 32)
    aug = SimCLRAugment(32, (0.5,) * 3, (0.25,) * 3, min_scale=0.3)
    ds = CropBatches(files, torch.tensor([0]), geometric_of(aug, (3 / 4, 4 / 3)), views=3, seed=7)
    crops, labels, idx = ds[(2, [0])]
    assert crops.shape == (1, 3, 3, 32, 32) and crops.dtype == torch.uint8
    full = decode_rgb(path)
    for v in range(3):
        g = torch.Generator().manual_seed(crop_seed(7, 2, 0, v))
        box = sample_crop_box(150, 260, aug.scale, (3 / 4, 4 / 3), g)
        flip = bool(torch.rand(1, generator=g).item() < 0.5)
        assert torch.equal(crops[0, v], crop_resize(full, box, 32, flip))
    assert not torch.equal(crops[0, 0], crops[0, 1])  # independent views


def test_photometric_part_leaves_geometry_alone():
    aug = SimCLRAugment(16, (0.0,) * 3, (1.0,) * 3, cj_prob=0.0, gray_prob=0.0)  # no colour op: identity but /255
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    assert torch.allclose(photometric(aug, images), images.float() / 255, atol=1e-5)


def _loader(files, labels, sampler, workers):
    aug = SimCLRAugment(16, (0.5,) * 3, (0.25,) * 3)
    ds = CropBatches(files, labels, geometric_of(aug, (3 / 4, 4 / 3)), 2, seed=3)
    kwargs = {"num_workers": workers, "worker_init_fn": worker_init} if workers else {}
    return ResumableLoader(ds, EpochTagged(sampler), lambda: (0, 0), **kwargs)


def test_mid_epoch_resume_is_exact_on_the_stream_path(folder):
    samples = _files(folder)
    files, labels = FileImages([str(p) for p, _ in samples], 16), torch.tensor([c for _, c in samples])
    full = _loader(files, labels, RandomBatchSampler(len(samples), 16, seed=5), workers=2)
    full.sampler.set_epoch(1)
    reference = [b for b in full]
    resumed = _loader(files, labels, RandomBatchSampler(len(samples), 16, seed=5), workers=0)  # any worker count
    resumed.load_state_dict({"epoch": 1, "batches_done": 2})
    resumed.sampler.set_epoch(1)
    rest = [b for b in resumed]
    assert len(rest) == len(reference) - 2
    for (a, la, ia), (b, lb, ib) in zip(reference[2:], rest):
        assert torch.equal(ia, ib) and torch.equal(la, lb) and torch.equal(a, b)


def _ddp_worker(rank, port, make_loader, epoch, out):
    try:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=2)
        loader = make_loader(rank)
        loader.sampler.set_epoch(epoch)
        seen = torch.cat([idx for _, _, idx in loader])
        gathered = [torch.empty_like(seen) for _ in range(2)]
        dist.all_gather(gathered, seen)
        torch.save(gathered, Path(out) / f"rank{rank}.pt")
        dist.destroy_process_group()
    except Exception:  # reported by the test, not lost in a child process
        (Path(out) / f"rank{rank}.err").write_text(traceback.format_exc())


def indices_of_two_ddp_processes(make_loader, epoch: int, out: Path):
    """The sample indices that ``make_loader(rank)`` yields in ``epoch`` on each of 2 gloo processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(port, make_loader, epoch, str(out)), nprocs=2, start_method="fork")
    errors = list(out.glob("*.err"))
    assert not errors, errors[0].read_text()
    return torch.load(out / "rank0.pt")


def test_two_ddp_processes_read_disjoint_parts_covering_the_epoch(folder, tmp_path):
    paths = [str(p) for p, _ in _files(folder)]  # 96 images, global batch 16: 6 steps, nothing dropped

    def make_loader(rank):
        sampler = RandomBatchSampler(len(paths), 8, seed=0, rank=rank, world_size=2)
        return _loader(FileImages(paths, 16), torch.arange(len(paths)), sampler, workers=1)

    a, b = indices_of_two_ddp_processes(make_loader, 3, tmp_path)
    assert len(set(a.tolist()) & set(b.tolist())) == 0
    assert sorted(a.tolist() + b.tolist()) == list(range(len(paths)))
    order = torch.randperm(len(paths), generator=torch.Generator().manual_seed(0 + 3))  # seed + epoch
    assert a.tolist() == [i for s in range(6) for i in order[16 * s : 16 * s + 8].tolist()]


@pytest.mark.slow
def test_train_with_storage_stream_beats_random_init(tmp_path, fast_overrides):
    import train

    root = shapes_folder(tmp_path / "data", 1024, 500, k=10)  # what the in-memory e2e test trains on
    overrides = [o for o in fast_overrides if not o.startswith("dataset.num_")] + [
        "dataset=imagefolder", f"dataset.root={root}", "dataset.image_size=32", "dataset.storage=stream",
        "dataset.num_workers=2", f"dataset.cache_dir={tmp_path / 'cache'}", "trainer.max_epochs=8", "knn.every_n_epochs=8"]
    summary = train.main(overrides)
    # Measured (this recipe, CPU, one thread; kNN top-1 trained / random init / the same run at
    # optimizer.lr=1e-12, the no-learning control where only BatchNorm statistics move): seed 0:
    # 31.8 / 25.0 / 22.8; seed 1: 26.8 / 22.8 / 25.8. In the suite (two threads per process) seed 0
    # trains to 28.4 / 25.0: the thread count changes the numbers. At the test's seed (0) the control
    # loses 2.2 and training gains +3.4 to +6.8, so 2.5 fails a run that does not learn; seed 1's control
    # gains +3.0, so this margin separates learning at seed 0 only.
    assert summary["knn_top1"] > summary["knn_top1_random_init"] + 2.5, summary


def test_linear_eval_feature_extraction_reads_streamed_splits(folder, tmp_path):
    from contrastive.augment.pipelines import EvalTransform
    from contrastive.evaluation.features import extract

    samples = _files(folder, "val")
    labels = torch.tensor([c for _, c in samples])
    memory, _ = decode_files(samples, 16, cache_dir=None)
    streamed = ImageArray(FileImages([str(p) for p, _ in samples], 16), labels)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()).eval()
    transform = EvalTransform(16, (0.5,) * 3, (0.25,) * 3)
    a = extract(net, memory, transform, 10, torch.device("cpu"), False, False, "m")
    b = extract(net, streamed, transform, 10, torch.device("cpu"), False, False, "s")
    assert torch.equal(a, b)


def test_keras_shifts_on_the_stream_path_are_refused_not_ignored():
    from contrastive.augment.pipelines import SupervisedAugment
    from contrastive.core.errors import ConfigError

    aug = SupervisedAugment(16, (0.5,) * 3, (0.25,) * 3, padding=0, shift_range=0.1, shift_fill="nearest")
    with pytest.raises(ConfigError, match="shift_range=0.1.*dataset.storage=memory"):
        geometric_of(aug, (3 / 4, 4 / 3))
