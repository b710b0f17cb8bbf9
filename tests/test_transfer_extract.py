"""Transfer features: bf16 autocast extraction scores like fp32; the per-split cache."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from contrastive.augment.pipelines import EvalTransform
from contrastive.evaluation.transfer.datasets import METRICS, load_transfer_dataset
from contrastive.evaluation.transfer.extract import cached_features, extract_split, split_key
from contrastive.evaluation.transfer.linear import linear_transfer
from tests.test_transfer_datasets import CFG, make_layout


def _encoder() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, stride=2, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()


@pytest.mark.slow
def test_bf16_extraction_scores_like_fp32(tmp_path):
    data = load_transfer_dataset("pets", make_layout("pets", tmp_path), CFG)
    net, transform = _encoder(), EvalTransform(16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    feats = {}
    for amp in (False, True):
        with torch.inference_mode():
            out = {s: extract_split(net, ds, 16, transform, 8, torch.device("cpu"), amp, 0)
                   for s, ds in data.splits.items()}
        feats[amp] = {s: (x.clone().double(), y.clone()) for s, (x, y) in out.items()}
    for s in data.splits:
        x32, x16 = feats[False][s][0], feats[True][s][0]
        assert (x16 - x32).norm() / x32.norm() < 2e-2, s  # bf16 keeps ~3 significant digits
    scores = [linear_transfer(feats[amp], data.num_classes, METRICS[data.metric], (1e-3, 1e-1, 10.0), 50, True)
              for amp in (False, True)]
    assert abs(scores[0].test_score - scores[1].test_score) <= 1.0 / 6 + 1e-9  # at most one test image per class


def test_cache_is_keyed_and_reused(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return torch.ones(2, 3), torch.tensor([0, 1])

    key = split_key("abc", "pets", "train", {"size": 16})
    assert key != split_key("abc", "pets", "val", {"size": 16}) != split_key("abd", "pets", "train", {"size": 16})
    (x, y), hit = cached_features(tmp_path, key, "pets-train", compute)
    (x2, y2), hit2 = cached_features(tmp_path, key, "pets-train", compute)
    assert (hit, hit2, len(calls)) == (False, True, 1) and torch.equal(x, x2) and torch.equal(y, y2)
