"""``contrastive-eval embed``: the embeddings of an image folder or a transfer dataset,
with their paths and labels, as ``.npy`` and/or ``.parquet`` (like lightly-train's ``embed``).

Files (``<prefix>`` = ``embed.path``): ``<prefix>.npy`` (float32 ``[N, D]``),
``<prefix>.paths.txt`` (one path a line, row order), ``<prefix>.labels.npy`` (int64 ``[N]``,
-1 when unknown; float multi-hot ``[N, C]`` for VOC2007) and ``<prefix>.parquet`` with the
columns ``path``, ``label`` and ``embedding`` (a list of D floats). Extraction runs on the
GPU when there is one, in bf16 autocast where ``eval.amp`` allows it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from contrastive.augment.pipelines import EvalTransform
from contrastive.core.errors import ConfigError
from contrastive.evaluation.features import frozen_encoder, use_amp
from contrastive.evaluation.transfer.datasets import _Labelled, load_transfer_dataset
from contrastive.evaluation.transfer.extract import extract_split

FORMATS = ("npy", "parquet", "both")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def folder_samples(folder: Path) -> List[Tuple[Path, int]]:
    """Every image under ``folder`` (sorted); labelled by class subfolder when every image sits
    in one (ImageFolder layout), else -1."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ConfigError(f"embed.images='{folder}' holds no images ({', '.join(IMAGE_SUFFIXES)})")
    if all(p.parent != folder for p in paths):
        classes = sorted({p.relative_to(folder).parts[0] for p in paths})
        return [(p, classes.index(p.relative_to(folder).parts[0])) for p in paths]
    return [(p, -1) for p in paths]


def write_parquet(path: Path, paths: Sequence[str], labels: np.ndarray, embeddings: np.ndarray) -> None:
    """``path, label, embedding`` columns; a one-line ConfigError when pyarrow is missing."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError("embed.format=parquet needs pyarrow: pip install 'contrastive[parquet]' "
                          "(or embed.format=npy)") from None
    label_col = labels.tolist()
    table = pa.table({"path": list(paths), "label": label_col,
                      "embedding": pa.array(list(embeddings), type=pa.list_(pa.float32()))})
    pq.write_table(table, path)


def read_parquet(path: Path) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """``(paths, labels, embeddings [N, D])`` of a file written by :func:`write_parquet`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path).to_pydict()
    return table["path"], np.asarray(table["label"]), np.asarray(table["embedding"], dtype=np.float32)


def write_embeddings(prefix: Path, paths: Sequence[str], labels: torch.Tensor, embeddings: torch.Tensor,
                     fmt: str) -> List[Path]:
    """Write the files of ``fmt`` (see the module docstring); returns their paths."""
    if fmt not in FORMATS:
        raise ConfigError(f"embed.format='{fmt}' is not valid; choose one of {', '.join(FORMATS)}")
    prefix.parent.mkdir(parents=True, exist_ok=True)
    emb, lab = embeddings.float().numpy(), labels.numpy()
    written: List[Path] = []
    if fmt in ("parquet", "both"):
        write_parquet(prefix.with_suffix(".parquet"), paths, lab, emb)  # first: a missing pyarrow writes nothing
        written.append(prefix.with_suffix(".parquet"))
    if fmt in ("npy", "both"):
        np.save(prefix.with_suffix(".npy"), emb)
        np.save(prefix.with_name(prefix.name + ".labels.npy"), lab)
        prefix.with_name(prefix.name + ".paths.txt").write_text("\n".join(paths) + "\n")
        written += [prefix.with_suffix(".npy"), prefix.with_name(prefix.name + ".labels.npy"),
                    prefix.with_name(prefix.name + ".paths.txt")]
    return written


def _source(e) -> Tuple[Any, List[str], str]:
    """(dataset of (PIL, label), paths, default file stem) of ``embed.images`` / ``embed.dataset``."""
    if e.images is not None:
        folder = Path(str(e.images)).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"embed.images='{folder}' is not a folder")
        samples = folder_samples(folder)
        return _Labelled(samples), [str(p) for p, _ in samples], folder.name
    if e.dataset is None:
        raise ConfigError("embed needs embed.images=<folder> or embed.dataset=<transfer dataset name>")
    data = load_transfer_dataset(str(e.dataset), e.root, e)
    if str(e.split) not in data.splits:
        raise ConfigError(f"embed.split='{e.split}' is not valid; choose one of {', '.join(data.splits)}")
    ds = data.splits[str(e.split)]
    return ds, [f"{e.dataset}/{e.split}/{i}" for i in range(len(ds))], f"{e.dataset}-{e.split}"


def embed_command(argv: Sequence[str]) -> Dict[str, Any]:
    """``embed [checkpoint=...] embed.images=<folder> | embed.dataset=<name> [embed.format=...]``."""
    from contrastive.evaluation.loading import _device, eval_dir, load_model

    loaded = load_model(argv)
    e = loaded.cfg.embed
    if str(e.format) not in FORMATS:
        raise ConfigError(f"embed.format='{e.format}' is not valid; choose one of {', '.join(FORMATS)}")
    dataset, paths, stem = _source(e)
    device = _device(loaded.cfg)
    d = loaded.run_cfg.dataset
    size = int(e.image_size) if e.image_size is not None else int(loaded.model.data.image_size)
    transform = EvalTransform(size, tuple(d.mean), tuple(d.std)).to(device)
    model = loaded.model.to(device)
    with frozen_encoder(model):
        x, y = extract_split(model.embed, dataset, size, transform, int(loaded.cfg.eval.batch_size), device,
                             use_amp(loaded.cfg, device), 0)
    prefix = Path(str(e.path)) if e.path is not None else eval_dir(loaded) / "embeddings" / stem
    written = write_embeddings(prefix, paths, y, x, str(e.format))
    print(f"{len(x)} embeddings ({x.shape[1]}-d) written: {', '.join(str(p) for p in written)}")
    meta = {"checkpoint": loaded.checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256, "n": len(x),
            "dim": int(x.shape[1]), "files": [str(p) for p in written]}
    prefix.with_name(prefix.name + ".json").write_text(json.dumps(meta, indent=2))
    return meta
