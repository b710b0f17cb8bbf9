"""The linear probe: a linear classifier trained on cached, frozen features.

Default recipe (``configs/eval.yaml``, ``eval.linear``), the linear-probing protocol
of MoCo v3 (Chen, Xie & He 2021) and MAE (He et al. 2022): features standardised by
a BatchNorm without affine parameters, SGD with momentum 0.9, learning rate
``0.1 x batch / 256`` with cosine decay to 0, no weight decay, 100 epochs.
``eval.linear.optimizer=lbfgs`` instead fits the L2-regularised logistic regression
with full-batch L-BFGS (the protocol of CLIP's and SimCLR's transfer probes).
Because the features are fixed, the BatchNorm is applied with the statistics of the
whole train set (what its running statistics converge to) and is folded into the
linear layer afterwards, so the trained head is a plain ``nn.Linear`` on raw
features whose ``state_dict`` (``weight [C, D]``, ``bias [C]``) is saved and loads
into e.g. ``torchvision.models.resnet18(num_classes=C).fc``.

The probe trains in fp32 on every device, also where ``eval.amp=auto`` extracts the
features in bf16. Our choice, not measured on a bf16 CPU: its matmuls (batch 256 x D -> C)
are small, so bf16 could gain little there, and an fp32 probe keeps linear top-1
comparable across machines (``benchmarks/speed/components/bench_eval.py`` times the probe).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import trange

from contrastive.core.errors import CheckpointError
from contrastive.metrics.knn import topk_accuracy

BN_EPS = 1e-5  # BatchNorm1d's default


def cosine_lr(base: float, step: int, total: int) -> float:
    """Cosine decay from ``base`` at step 0 to 0 at ``total``."""
    return 0.5 * base * (1.0 + math.cos(math.pi * step / max(1, total)))


def train_linear_probe(features: torch.Tensor, labels: torch.Tensor, num_classes: int, cfg: Any,
                       device: torch.device, seed: int = 0, progress: bool = True) -> nn.Linear:
    """Train a linear classifier on fixed features.

    Args:
        features: float ``[N, D]`` (any device).
        labels: int64 ``[N]`` in ``[0, num_classes)``.
        num_classes: ``C``.
        cfg: ``eval.linear``: ``optimizer`` (``sgd`` | ``lbfgs``), ``epochs``, ``batch_size``,
            ``lr`` (per 256), ``momentum``, ``nesterov``, ``weight_decay``, ``feature_norm``,
            ``lbfgs_iters``.
        device: Where to train (the GPU when there is one).
        seed: Shuffling and initialisation seed.

    Returns:
        ``nn.Linear(D, C)`` on ``device`` that takes raw features (standardisation folded in).
    """
    x = features.to(device, torch.float32)  # [N, D]
    y = labels.to(device)  # [N]
    dim = x.shape[1]
    mean, std = torch.zeros(dim, device=device), torch.ones(dim, device=device)
    if cfg.feature_norm:
        # BatchNorm1d(affine=False) with the statistics of all train features: what its
        # running statistics converge to on fixed features, and a deterministic head.
        mean, std = x.mean(dim=0), torch.sqrt(x.var(dim=0, unbiased=False) + BN_EPS)  # [D], [D]
        x = (x - mean) / std  # [N, D]
    generator = torch.Generator(device=device).manual_seed(seed)
    head = nn.Linear(dim, num_classes).to(device)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)  # MoCo v3 / MAE init
        head.bias.zero_()
    if str(cfg.optimizer) == "lbfgs":
        _fit_lbfgs(head, x, y, float(cfg.weight_decay), int(cfg.lbfgs_iters))
    else:
        _fit_sgd(head, x, y, cfg, generator, progress)
    return fold_standardisation(head, mean, std)


def _fit_sgd(head: nn.Linear, x: torch.Tensor, y: torch.Tensor, cfg: Any, generator: torch.Generator,
             progress: bool) -> None:
    """Mini-batch SGD (momentum, optional Nesterov), lr ``cfg.lr x batch / 256`` with cosine decay to 0."""
    n = x.shape[0]
    batch = min(int(cfg.batch_size), n)
    base_lr = float(cfg.lr) * batch / 256
    optimizer = torch.optim.SGD(head.parameters(), lr=base_lr, momentum=float(cfg.momentum),
                                nesterov=bool(cfg.nesterov) and float(cfg.momentum) > 0, weight_decay=float(cfg.weight_decay))
    steps_per_epoch = -(-n // batch)
    total, step = int(cfg.epochs) * steps_per_epoch, 0
    for _ in trange(int(cfg.epochs), desc="linear probe", disable=not progress, leave=False):
        order = torch.randperm(n, device=x.device, generator=generator)  # [N]
        for start in range(0, n, batch):
            idx = order[start : start + batch]  # [B]
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(base_lr, step, total)
            loss = F.cross_entropy(head(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1


def _fit_lbfgs(head: nn.Linear, x: torch.Tensor, y: torch.Tensor, weight_decay: float, iters: int) -> None:
    """Full-batch L-BFGS (strong-Wolfe line search) on the L2-regularised multinomial logistic
    loss ``CE + weight_decay / 2 * ||W||^2``, the classic logistic-regression probe (e.g. CLIP's)."""
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=iters, history_size=20,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(x), y) + 0.5 * weight_decay * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)


def fold_standardisation(head: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> nn.Linear:
    """``head((x - mean) / std)`` as one linear layer on ``x``: ``W' = W / std``, ``b' = b - W' mean``."""
    folded = nn.Linear(head.in_features, head.out_features).to(head.weight.device)
    with torch.no_grad():
        folded.weight.copy_(head.weight / std)  # [C, D]
        folded.bias.copy_(head.bias - folded.weight @ mean)  # [C]
    return folded


@torch.no_grad()
def evaluate_head(head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, batch_size: int = 8192) -> tuple[float, float]:
    """Top-1 and top-5 accuracy in % of ``head`` on features ``[M, D]`` with labels ``[M]``."""
    device = head.weight.device
    scores = torch.cat([head(features[s : s + batch_size].to(device, torch.float32)) for s in range(0, len(features), batch_size)])
    return topk_accuracy(scores, labels.to(device))


def save_head(head: nn.Linear, path: Path) -> Path:
    """Save ``head.state_dict()`` (plain tensors ``weight [C, D]``, ``bias [C]``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in head.state_dict().items()}, path)
    return path


def load_head(path: str, feature_dim: int, num_classes: int, dataset: str) -> nn.Linear:
    """Load a head saved by :func:`save_head` and check it fits the features and the dataset.

    Raises:
        CheckpointError: Missing or unreadable file, or a head for another number of
            classes or another feature size.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise CheckpointError(f"eval.linear.head '{file}' does not exist")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
        weight, bias = state["weight"], state["bias"]
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise CheckpointError(f"eval.linear.head '{file}' is not a saved linear head (weight, bias): {err.__class__.__name__}") from None
    if weight.ndim != 2 or bias.shape != weight.shape[:1]:
        raise CheckpointError(f"eval.linear.head '{file}' has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}; expected [C, D] and [C]")
    if weight.shape[0] != num_classes:
        raise CheckpointError(f"eval.linear.head '{file}' was trained for {weight.shape[0]} classes, "
                              f"but dataset '{dataset}' has {num_classes}; drop eval.linear.head to train a new probe")
    if weight.shape[1] != feature_dim:
        raise CheckpointError(f"eval.linear.head '{file}' takes {weight.shape[1]}-d features, but this encoder gives {feature_dim}-d")
    head = nn.Linear(feature_dim, num_classes)
    head.load_state_dict({"weight": weight, "bias": bias})
    return head


def probe_or_load(train_x: torch.Tensor, train_y: torch.Tensor, num_classes: int, cfg: Any, device: torch.device,
                  head: Optional[nn.Linear], seed: int, progress: bool) -> nn.Linear:
    """The given head (on ``device``), or a newly trained probe."""
    if head is not None:
        return head.to(device)
    return train_linear_probe(train_x, train_y, num_classes, cfg, device, seed, progress)
