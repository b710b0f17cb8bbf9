"""CIFAR-100-C (ImCLR Table 4): the loader and the per-corruption error table, on generated arrays
in the archive's layout (<corruption>.npy of 5 x n images, labels.npy)."""

import numpy as np
import pytest
import torch

from contrastive.data.sources.cifar_c import CORRUPTIONS, corruption_errors, error_table, load_corruption, mean_error
from contrastive.core.errors import DatasetError

N = 6  # images per severity (the archive has 10,000)


@pytest.fixture()
def archive(tmp_path):
    """Two corruptions; image value = 40 * severity + label, so a predictor can read both back."""
    folder = tmp_path / "CIFAR-100-C"
    folder.mkdir()
    labels = np.tile(np.arange(N) % 3, 5).astype(np.int64)  # [5N]
    np.save(folder / "labels.npy", labels)
    for name in ("fog", "gaussian_noise"):
        sev = np.repeat(np.arange(1, 6), N)  # [5N]
        images = (40 * sev + labels).astype(np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3), np.uint8)
        np.save(folder / f"{name}.npy", images)  # [5N, 32, 32, 3]
    return tmp_path


def test_loader_reads_the_severity_blocks_in_order(archive):
    one = load_corruption(archive, "fog", 3)  # the folder holding CIFAR-100-C works too
    assert one.images.shape == (N, 3, 32, 32) and one.images.dtype == torch.uint8
    assert torch.equal(one.images[:, 0, 0, 0].long(), 120 + one.labels)
    assert torch.equal(one.labels, torch.arange(N) % 3)
    everything = load_corruption(archive / "CIFAR-100-C", "fog", 0)
    assert len(everything) == 5 * N and int(everything.images[-1, 0, 0, 0]) == 200 + int(everything.labels[-1])
    assert len(CORRUPTIONS) == 19 and "fog" in CORRUPTIONS
    with pytest.raises(DatasetError, match="corruption 'snow' not in .*present: fog, gaussian_noise"):
        load_corruption(archive, "snow")
    with pytest.raises(DatasetError, match="severity must be 0 \\(all\\) or one of 1-5, got 6"):
        load_corruption(archive, "fog", 6)
    with pytest.raises(DatasetError, match="CIFAR-100-C not found"):
        load_corruption(archive / "nowhere", "fog")


def test_error_table_per_corruption_and_mean(archive):
    def predict(images):  # right at severities 1-2, wrong from 3 on, for both corruptions
        value = images[:, 0, 0, 0].long()
        label, severity = value % 40, value // 40
        guess = torch.where(severity <= 2, label, (label + 1) % 3)
        return torch.nn.functional.one_hot(guess, 3).float()

    errors = corruption_errors(predict, archive, batch_size=4)
    assert errors == {name: {1: 0.0, 2: 0.0, 3: 100.0, 4: 100.0, 5: 100.0} for name in ("fog", "gaussian_noise")}
    assert mean_error(errors) == pytest.approx(60.0)
    half = {"fog": errors["fog"], "gaussian_noise": {s: 50.0 for s in range(1, 6)}}
    table = error_table({"base": errors, "ImCLR": half})
    lines = table.splitlines()
    assert lines[0] == "| corruption | base error % (sev. 1-5) | ImCLR error % (sev. 1-5) |"
    assert lines[2] == "| fog | 60.00 (0.0 / 0.0 / 100.0 / 100.0 / 100.0) | 60.00 (0.0 / 0.0 / 100.0 / 100.0 / 100.0) |"
    assert lines[3].startswith("| gaussian_noise | 60.00") and "| 50.00 (50.0" in lines[3]
    assert lines[-1] == "| **mean** | **60.00** | **55.00** |"
