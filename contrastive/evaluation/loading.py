"""From ``linear_eval.py`` arguments to a checked evaluation setup.

Everything that can fail on bad input happens here, before any feature is
extracted: the eval config, the checkpoint (found, loaded, hashed), the run config
(the checkpoint's, with ``dataset``/``backbone`` overrides), the model and its
weights, the dataset, the labeled subset, kNN's ``k`` and a reused probe head.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from omegaconf import DictConfig, OmegaConf

from contrastive.augment.pipelines import EvalTransform
from contrastive.backbones.factory import check_input_size
from contrastive.engine.checkpoint import load_checkpoint
from contrastive.config.compose import load_config
from contrastive.config.overrides import split_run_overrides
from contrastive.config.plugins import import_plugins, load_builtin_methods
from contrastive.data import DatasetSplits, build_dataset
from contrastive.core.errors import CheckpointError, ConfigError, ContrastiveError
from contrastive.evaluation.features import config_sha256, file_sha256, frozen_encoder, labeled_subset
from contrastive.evaluation.probe import load_head
from contrastive.metrics.knn import KNN_BACKENDS
from contrastive.engine.method import DataInfo, Method
from contrastive.core.registry import METHODS
from contrastive.evaluation.run_config import RUN_GROUPS, build_run_config, check_backbone_matches, overrides_backbone

log = logging.getLogger("contrastive")

MODES = ("linear", "finetune", "knn", "all")
PROBE_OPTIMIZERS = ("sgd", "lbfgs")


@dataclass
class EvalSetup:
    """Everything the evaluation needs, built and checked by :func:`prepare`."""

    cfg: DictConfig  # the eval config (configs/eval.yaml + overrides)
    run_cfg: DictConfig  # the run config: the checkpoint's, dataset/backbone overridden
    model: Method
    splits: DatasetSplits
    transform: EvalTransform
    checkpoint: str  # a path, or "random"
    checkpoint_sha256: str  # of the file; for random: of the backbone config and seed
    eval_dir: Path  # results, caches, plots and exports of this checkpoint
    train_index: torch.Tensor  # int64 [n]: the labeled training images used
    feature_dim: int
    device: torch.device
    head: Optional[torch.nn.Linear] = None  # eval.linear.head, loaded


def validate_eval_config(cfg: DictConfig) -> None:
    """Checks of values that need no data."""
    e = cfg.eval
    if e.mode not in MODES:
        raise ConfigError(f"eval.mode='{e.mode}' is not valid; choose one of {', '.join(MODES)}")
    if not 0.0 < float(e.label_fraction) <= 1.0:
        raise ConfigError(f"eval.label_fraction={e.label_fraction} must be in (0, 1], e.g. 0.01 or 0.1")
    if int(e.knn.k) < 1 or float(e.knn.temperature) <= 0:
        raise ConfigError(f"eval.knn needs k >= 1 and temperature > 0, got k={e.knn.k}, temperature={e.knn.temperature}")
    if str(e.knn.backend) not in KNN_BACKENDS:
        raise ConfigError(f"eval.knn.backend='{e.knn.backend}' is not valid; choose one of {', '.join(KNN_BACKENDS)}")
    if str(e.linear.optimizer) not in PROBE_OPTIMIZERS or int(e.linear.lbfgs_iters) < 1:
        raise ConfigError(f"eval.linear.optimizer='{e.linear.optimizer}' must be one of {', '.join(PROBE_OPTIMIZERS)} "
                          f"and eval.linear.lbfgs_iters >= 1 (got {e.linear.lbfgs_iters})")
    for name in ("linear", "finetune"):
        sub = e[name]
        if int(sub.epochs) < 1 or int(sub.batch_size) < 1:
            raise ConfigError(f"eval.{name} needs epochs >= 1 and batch_size >= 1, got {sub.epochs} and {sub.batch_size}")
    lrs = {"eval.linear.lr": e.linear.lr, "eval.finetune.backbone_lr": e.finetune.backbone_lr, "eval.finetune.head_lr": e.finetune.head_lr}
    for name, value in lrs.items():
        if not float(value) > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    if int(e.batch_size) < 1 or int(e.plot_samples) < 1:
        raise ConfigError(f"eval.batch_size and eval.plot_samples must be >= 1, got {e.batch_size} and {e.plot_samples}")
    if str(cfg.device) not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device='{cfg.device}' is not valid; choose one of auto, cpu, cuda")
    if str(cfg.device) == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no GPU is available; use device=auto or device=cpu")


def find_newest_checkpoint(output_dir: Path) -> Path:
    """The newest ``<output_dir>/*/*/checkpoints/last.ckpt`` by modification time."""
    found = sorted(output_dir.glob("*/*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise CheckpointError(
            f"no checkpoint found under '{output_dir}' (looked for */*/checkpoints/last.ckpt); "
            "train first (python train.py) or pass checkpoint=<path> or checkpoint=random backbone=<name>"
        )
    return found[-1]


def build_model(ckpt: Optional[Dict[str, Any]], run_cfg: DictConfig, path: str, seed: int) -> Method:
    """The checkpoint's method with its weights, or a bare random-init :class:`Method` (seeded)."""
    if ckpt is None:  # a bare encoder without heads: the class count comes from the data later
        d = run_cfg.dataset
        torch.manual_seed(seed)
        return Method(run_cfg, DataInfo(0, int(d.image_size), tuple(d.mean), tuple(d.std), 0))
    meta = ckpt["contrastive"]
    try:
        method_cls = METHODS.get(meta["method"])
    except ValueError as err:
        raise CheckpointError(f"checkpoint '{path}': {err}; pass plugins=[...] for methods defined outside the package") from None
    model = method_cls(OmegaConf.create(meta["config"]), DataInfo(**meta["data"]))
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as err:
        first = " ".join(str(err).strip().splitlines()[:2])[:300]
        raise CheckpointError(f"weights of '{path}' do not fit method '{meta['method']}': {first}") from None
    return model


def _import_plugins(cfg: DictConfig, ckpt_config: Optional[Dict[str, Any]]) -> None:
    """The training run's plugins (when still where they were), then ``plugins=[...]``."""
    for spec in (ckpt_config or {"plugins": []})["plugins"] or []:
        try:
            import_plugins([spec])
        except (ContrastiveError, ImportError, OSError) as err:
            log.warning("plugin '%s' of the training run could not be imported (%s)", spec, err)
    import_plugins(cfg.plugins)
    load_builtin_methods()


def resolve_checkpoint(cfg: DictConfig) -> Tuple[str, Optional[Dict[str, Any]], str]:
    """``(path or "random", loaded checkpoint or None, sha256 of the file or "")``."""
    if str(cfg.checkpoint) == "random":
        return "random", None, ""
    if cfg.checkpoint in (None, ""):
        path = find_newest_checkpoint(Path(str(cfg.output_dir)))
        log.info("checkpoint=null: evaluating the newest run's last checkpoint: %s", path)
    else:
        path = Path(str(cfg.checkpoint)).expanduser()
    ckpt = load_checkpoint(path)
    return str(path), ckpt, file_sha256(path)


def _device(cfg: DictConfig) -> torch.device:
    if str(cfg.device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(cfg.device))


@dataclass
class LoadedModel:
    """The eval config, the run config and the model, before any data is loaded."""

    cfg: DictConfig
    run_cfg: DictConfig
    model: Method
    checkpoint: str  # a path, or "random"
    checkpoint_sha256: str


def load_model(argv: Sequence[str]) -> LoadedModel:
    """Eval config, checkpoint, run config and model (weights loaded) from CLI overrides.

    Raises:
        ContrastiveError: Bad config value, missing/corrupt checkpoint, a backbone override
            that does not match the checkpoint, weights that do not fit.
    """
    own, run_overrides, hydra = split_run_overrides(argv, RUN_GROUPS)
    cfg = load_config(own + hydra, config_name="eval")
    validate_eval_config(cfg)
    checkpoint, ckpt, sha = resolve_checkpoint(cfg)
    ckpt_config = ckpt["contrastive"]["config"] if ckpt is not None else None
    _import_plugins(cfg, ckpt_config)
    run_cfg = build_run_config(ckpt_config, run_overrides, hydra, int(cfg.seed))
    if ckpt is None:
        sha = config_sha256({"random": OmegaConf.to_container(run_cfg.backbone), "seed": int(cfg.seed)})
    elif overrides_backbone(run_overrides):
        image_size = int(ckpt["contrastive"]["data"]["image_size"])
        check_backbone_matches(ckpt_config["backbone"], run_cfg.backbone, image_size, checkpoint)
    model = build_model(ckpt, run_cfg, checkpoint, int(cfg.seed))
    return LoadedModel(cfg, run_cfg, model, checkpoint, sha)


def eval_dir(loaded: LoadedModel) -> Path:
    """``<ckpt>.eval/`` beside the checkpoint; ``<output_dir>/random-<backbone>/seed<s>-<hash>.eval/``
    for a random-init encoder."""
    if loaded.checkpoint != "random":
        path = Path(loaded.checkpoint)
        return path.with_name(path.stem + ".eval")
    cfg = loaded.cfg
    return Path(str(cfg.output_dir)) / f"random-{loaded.run_cfg.backbone.name}" / f"seed{cfg.seed}-{loaded.checkpoint_sha256[:8]}.eval"


def prepare(argv: Sequence[str]) -> EvalSetup:
    """Parse, load and check everything; nothing is extracted or trained.

    Raises:
        ContrastiveError: On any bad input, with a one-line message.
    """
    loaded = load_model(argv)
    cfg, run_cfg, model = loaded.cfg, loaded.run_cfg, loaded.model
    splits = build_dataset(run_cfg.dataset)
    check_input_size(model.backbone, splits.image_size, splits.image_size)
    transform = EvalTransform(splits.image_size, splits.mean, splits.std)
    train_index = labeled_subset(splits.train_labeled.labels, float(cfg.eval.label_fraction), int(cfg.eval.subset_seed))
    _check_data_fits(cfg, splits, train_index)
    feature_dim = _embed_dim(model, transform, splits)
    head = None
    if cfg.eval.linear.head and cfg.eval.mode in ("linear", "all"):
        head = load_head(str(cfg.eval.linear.head), feature_dim, splits.num_classes, str(run_cfg.dataset.name))
    return EvalSetup(cfg, run_cfg, model, splits, transform, loaded.checkpoint, loaded.checkpoint_sha256,
                     eval_dir(loaded), train_index, feature_dim, _device(cfg), head)


def _embed_dim(model: Method, transform: EvalTransform, splits: DatasetSplits) -> int:
    """Size of ``model.embed`` of two test images (catches a wrong input size early)."""
    with frozen_encoder(model):
        out = model.embed(transform(splits.val.images[:2]))  # [2, D]
    return int(out.shape[1])


def _check_data_fits(cfg: DictConfig, splits: DatasetSplits, train_index: torch.Tensor) -> None:
    n = len(train_index)
    if n == 0:
        raise ConfigError("the training split has no labeled images to train a probe or fill a kNN bank with")
    if cfg.eval.mode in ("knn", "all") and int(cfg.eval.knn.k) > n:
        raise ConfigError(
            f"eval.knn.k={cfg.eval.knn.k} is larger than the labeled training set ({n} images at "
            f"eval.label_fraction={cfg.eval.label_fraction}); choose eval.knn.k <= {n}"
        )
    if len(splits.val) == 0:
        raise ConfigError("the test split is empty")
