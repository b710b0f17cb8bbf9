"""``contrastive-eval embed``: npy / parquet files that round-trip, one-line errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import linear_eval
from contrastive.core.errors import ConfigError
from contrastive.evaluation.transfer.embed import read_parquet, write_embeddings
from tests.test_transfer_datasets import _img


def test_npy_and_parquet_round_trip(tmp_path):
    pytest.importorskip("pyarrow")
    emb = torch.randn(5, 3)
    labels = torch.tensor([0, 1, 1, -1, 2])
    paths = [f"img/{i}.jpg" for i in range(5)]
    written = write_embeddings(tmp_path / "out" / "e", paths, labels, emb, "both")
    assert {p.name for p in written} == {"e.parquet", "e.npy", "e.labels.npy", "e.paths.txt"}
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "e.npy"), emb.numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "e.labels.npy"), labels.numpy())
    assert (tmp_path / "out" / "e.paths.txt").read_text().split() == paths
    got_paths, got_labels, got_emb = read_parquet(tmp_path / "out" / "e.parquet")
    assert got_paths == paths and got_labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(got_emb, emb.numpy())


def test_parquet_without_pyarrow_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError, match=r"pip install 'contrastive\[parquet\]'"):
        write_embeddings(tmp_path / "e", ["a"], torch.zeros(1), torch.zeros(1, 2), "parquet")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_embed_an_image_folder(tmp_path, capsys):
    for i in range(4):
        _img(tmp_path / "imgs" / ("cat" if i < 2 else "dog") / f"{i}.png", i)
    prefix = tmp_path / "emb" / "folder"
    meta = linear_eval.main(["embed", "checkpoint=random", "backbone=small_cnn", "backbone.kwargs.width=4",
                             f"output_dir={tmp_path}", f"embed.images={tmp_path / 'imgs'}", f"embed.path={prefix}",
                             "embed.format=npy", "device=cpu"])
    assert meta["n"] == 4 and np.load(prefix.with_suffix(".npy")).shape == (4, meta["dim"])
    assert np.load(tmp_path / "emb" / "folder.labels.npy").tolist() == [0, 0, 1, 1]
    assert "4 embeddings" in capsys.readouterr().out
