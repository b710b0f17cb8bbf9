"""Every baseline trains one epoch end to end on dataset.storage=stream (images decoded and cropped in the
loader's workers, not augmented from memory), the multi-crop methods with the workers' local crops."""

import pytest

from tests.test_stream_multicrop import folder, stream_overrides  # noqa: F401 (folder: the 16-px image-folder fixture)

BASELINES = ["mocov1", "mocov2", "mocov3", "insdis", "pclv2", "byol", "simsiam", "swav", "deepclusterv2", "simclrv2",
             "barlowtwins", "vicreg", "dino", "pcl", "supcon", "nnclr", "pirl", "infomin", "selav2"]
MULTICROP = {"swav", "deepclusterv2", "dino", "selav2"}
#: Settings the 32-image folder needs (fewer negatives and keys than images, a queue a multiple of the batch).
TINY = {"insdis": ["method.num_negatives=8"], "pirl": ["method.num_negatives=8"], "mocov1": ["method.queue_size=32"],
        "mocov2": ["method.queue_size=32"], "pclv2": ["method.queue_size=32"], "pcl": ["method.queue_size=32"],
        "infomin": ["method.queue_size=32", "method.jigsaw.weight=0.5"]}


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
def test_every_baseline_trains_one_epoch_on_streamed_batches(name, folder, tmp_path, monkeypatch):  # noqa: F811
    import train
    from contrastive.engine.method import Method

    seen, original = [], Method.training_views
    monkeypatch.setattr(Method, "training_views", lambda self, batch: seen.append(batch) or original(self, batch))
    local = 2 if name in MULTICROP else 0
    summary = train.main(stream_overrides(folder, tmp_path, name, *TINY.get(name, []), f"augment.multicrop.num_local={local}",
                                          "augment.multicrop.size=8"))
    assert summary["epochs"] == 1, summary
    assert seen and all(b.precropped for b in seen), name  # the workers' crops, not in-memory images
    assert {b.num_local for b in seen} == {local}, name
