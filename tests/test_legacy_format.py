"""Files written before the package's re-lay keep working after it.

``tests/data/legacy_checkpoint_fd2df2c.json`` is a checkpoint written by ``train.py`` before the
re-lay (SimCLR, ``small_cnn`` width 4, 1 epoch of 4 steps on the synthetic data), with each
tensor stored as its shape and dtype. ``tests/data/backbone_state_keys_fd2df2c.json`` holds every
backbone's ``state_dict`` keys and shapes of that time. A checkpoint of today's format must
still evaluate and resume, and the backbones must still accept the weights users exported.
"""

import json
from pathlib import Path

import pytest
import torch

import linear_eval
import train
from contrastive.backbones.factory import create_backbone
from tests.conftest import assert_started_from

DATA = Path(__file__).parent / "data"


def _decode(node, generator):
    """JSON -> the checkpoint's Python objects, with seeded random tensors of the stored shapes."""
    if isinstance(node, dict):
        if "__tensor__" in node:
            dtype = getattr(torch, node["dtype"])
            if dtype.is_floating_point:
                return torch.randn(node["__tensor__"], generator=generator).to(dtype) * 0.05
            return torch.zeros(node["__tensor__"], dtype=dtype)
        if "__dict__" in node:
            return {_decode(k, generator): _decode(v, generator) for k, v in node["__dict__"]}
        if "__list__" in node:
            return [_decode(v, generator) for v in node["__list__"]]
        if "__tuple__" in node:
            return tuple(_decode(v, generator) for v in node["__tuple__"])
        return {k: _decode(v, generator) for k, v in node.items()}
    return node


@pytest.fixture(scope="module")
def legacy_checkpoint(tmp_path_factory) -> Path:
    """The legacy checkpoint, materialised as ``<run>/checkpoints/last.ckpt``."""
    record = json.loads((DATA / "legacy_checkpoint_fd2df2c.json").read_text())
    checkpoint = _decode(record["checkpoint"], torch.Generator().manual_seed(0))
    for key, value in checkpoint["state_dict"].items():
        if key.endswith("running_var"):
            checkpoint["state_dict"][key] = torch.ones_like(value)  # a variance is positive
    path = tmp_path_factory.mktemp("legacy") / "run" / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(checkpoint, path)
    return path


def test_the_record_is_a_complete_lightning_checkpoint(legacy_checkpoint):
    checkpoint = torch.load(legacy_checkpoint, weights_only=True)
    assert {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers", "loops", "contrastive"} <= set(checkpoint)
    assert checkpoint["global_step"] == 4 and checkpoint["contrastive"]["config"]["method"]["name"] == "simclr"


def test_a_legacy_checkpoint_evaluates(legacy_checkpoint, tmp_path):
    summary = linear_eval.main([f"checkpoint={legacy_checkpoint}", "eval.mode=knn", "eval.knn.k=5",
                                "eval.progress_bar=false"])
    (knn,) = summary["results"]
    assert knn["mode"] == "knn" and 0.0 <= knn["top1"] <= 100.0
    assert knn["feature_dim"] == 32  # small_cnn width 4: 8 * 4


@pytest.mark.slow
def test_a_legacy_checkpoint_resumes_where_it_stopped(legacy_checkpoint, tmp_path, fit_starts):
    legacy = torch.load(legacy_checkpoint, weights_only=True)  # the resumed run writes over this file
    config = legacy["contrastive"]["config"]
    summary = train.main([
        "method=simclr", "backbone=small_cnn", "backbone.kwargs.width=4", f"batch_size={config['batch_size']}",
        f"dataset.num_train={config['dataset']['num_train']}", f"dataset.num_val={config['dataset']['num_val']}",
        "trainer.max_epochs=2", "knn.random_init_baseline=false", "trainer.progress_bar=false",
        f"output_dir={tmp_path}", f"resume={legacy_checkpoint}",
    ])
    assert_started_from(fit_starts[-1], legacy)  # a fit from scratch would also end at step 8
    resumed = torch.load(summary["last_checkpoint"], weights_only=True)
    assert resumed["epoch"] == 1 and resumed["global_step"] == 8  # one more epoch of 4 steps after the legacy one
    assert summary["epochs"] == 2


def _backbone_cases():
    return sorted(json.loads((DATA / "backbone_state_keys_fd2df2c.json").read_text()).items())


@pytest.mark.parametrize("case,expected", _backbone_cases(), ids=[c for c, _ in _backbone_cases()])
def test_backbone_state_dict_keys_are_unchanged(case, expected):
    name, small_stem, image_size = case.split("|")
    small_stem = small_stem.split("=")[1]
    backbone = create_backbone(name, image_size=int(image_size.split("=")[1]),
                               small_stem={"True": True, "False": False}.get(small_stem, small_stem))
    shapes = {k: list(v.shape) for k, v in backbone.state_dict().items()}
    assert shapes == expected["keys"]
    assert backbone.feature_dim == expected["feature_dim"]
