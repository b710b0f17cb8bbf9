"""Weighted k-nearest-neighbour classification on L2-normalised features.

The protocol of Wu et al. 2018 ("Unsupervised Feature Learning via Non-Parametric
Instance Discrimination"), used as the kNN monitor by SimCLR/MoCo/solo-learn code
bases: each of the ``k`` most cosine-similar training features votes for its class
with weight ``exp(similarity / temperature)``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from contrastive.core.errors import ConfigError

KNN_BACKENDS = ("torch", "faiss", "auto")


def _faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss_topk(bank: torch.Tensor, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact inner-product top-``k`` with faiss: ``bank`` ``[N, D]``, ``queries`` ``[M, D]``
    (both normalised) -> similarities ``[M, k]`` and int64 bank indices ``[M, k]`` on the CPU."""
    import faiss

    index = faiss.IndexFlatIP(bank.shape[1])
    index.add(bank.detach().cpu().contiguous().numpy())
    sims, idx = index.search(queries.detach().cpu().contiguous().numpy(), k)
    return torch.from_numpy(sims), torch.from_numpy(idx).long()


def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 2048,
    backend: str = "torch",
    amp: bool = False,
) -> torch.Tensor:
    """Class scores of every query.

    Args:
        train_features: ``[N, D]`` bank (normalised here).
        train_labels: int64 ``[N]`` in ``[0, num_classes)``.
        query_features: ``[M, D]`` (normalised here).
        num_classes: Number of classes ``C``.
        k: Neighbours per query; must not exceed ``N``.
        temperature: Softness of the vote weights.
        chunk_size: Queries per matmul, bounding memory to ``chunk_size x N``.
        backend: Neighbour search: ``torch`` (chunked matmul + topk, any device),
            ``faiss`` (exact ``IndexFlatIP`` on the CPU) or ``auto``: faiss for CPU tensors
            when it is installed, torch otherwise. Why: ``benchmarks/speed/components/bench_eval.py`` at
            50k x 512 bank, 10k queries, k=200, 1 CPU thread measured faiss 6.9 s vs torch
            9.0 s (medians of 3, identical predictions; benchmarks/speed/components/results/bench_eval-cpu.json);
            faiss-cpu cannot use a GPU (the bank and queries would have to leave the
            device), so GPU tensors use torch.
        amp: torch backend only: the similarity matmul in bf16 (scores and votes stay fp32).
            The kNN monitor turns it on where bf16 is native (a CPU with AVX-512 BF16/AMX,
            ``contrastive.core.hardware.resolve_eval_amp``); bf16 rounds a cosine similarity by up
            to ~0.004, so near-ties among the k neighbours may swap.

    Returns:
        ``[M, C]`` summed vote weights.
    """
    n = train_features.shape[0]
    if not 1 <= k <= n:
        raise ConfigError(f"kNN k={k} must be between 1 and the number of training samples ({n})")
    if temperature <= 0:
        raise ConfigError(f"kNN temperature must be > 0, got {temperature}")
    bank = F.normalize(train_features.float(), dim=1)  # [N, D]
    queries = F.normalize(query_features.float(), dim=1)  # [M, D]
    labels = train_labels.to(bank.device)
    if backend not in KNN_BACKENDS:
        raise ConfigError(f"kNN backend '{backend}' is not valid; choose one of {', '.join(KNN_BACKENDS)}")
    if backend == "faiss" and not _faiss_available():
        raise ConfigError("kNN backend 'faiss' needs the faiss package (pip install faiss-cpu); or use backend torch/auto")
    if backend == "faiss" or (backend == "auto" and bank.device.type == "cpu" and _faiss_available()):
        top_sims, top_idx = _faiss_topk(bank, queries, k)  # [M, k] each
        votes = torch.zeros(queries.shape[0], num_classes)  # [M, C]
        return votes.scatter_add_(1, labels.cpu()[top_idx], (top_sims / temperature).exp())
    return _torch_votes(bank, labels, queries, num_classes, k, temperature, chunk_size, amp)


def _torch_votes(bank: torch.Tensor, labels: torch.Tensor, queries: torch.Tensor, num_classes: int, k: int,
                 temperature: float, chunk_size: int, amp: bool) -> torch.Tensor:
    """The torch backend of :func:`knn_scores`: normalised ``bank [N, D]`` (labels ``[N]``) and
    ``queries [M, D]`` -> summed vote weights ``[M, C]``, ``chunk_size`` queries per matmul."""
    out = []
    bank_lp = bank.bfloat16() if amp else None  # [N, D], converted once
    for start in range(0, queries.shape[0], chunk_size):
        top_sims, top_idx = top_similarities(bank, queries[start : start + chunk_size], k, bank_lp)  # [m, k]
        out.append(weighted_votes(top_sims, labels[top_idx], num_classes, temperature))
    return torch.cat(out)


def top_similarities(bank: torch.Tensor, queries: torch.Tensor, k: int, bank_lp: Optional[torch.Tensor] = None):
    """The ``k`` largest cosine similarities of each query to the bank and their bank rows.

    Args:
        bank: normalised ``[N, D]``; queries: normalised ``[m, D]``; ``k <= N``.
        bank_lp: ``bank`` in bf16 (the similarity matmul then runs in bf16), or ``None`` (fp32).

    Returns:
        ``(similarities float32 [m, k], int64 bank rows [m, k])``, most similar first.
    """
    if bank_lp is not None:
        sims = (queries.bfloat16() @ bank_lp.T).float()  # [m, N]
    else:
        sims = queries @ bank.T  # [m, N]
    return sims.topk(k, dim=1)


def weighted_votes(similarities: torch.Tensor, neighbour_labels: torch.Tensor, num_classes: int,
                   temperature: float) -> torch.Tensor:
    """Each neighbour votes for its class with ``exp(similarity / temperature)`` (Wu et al. 2018):
    ``similarities [m, k]``, int64 ``neighbour_labels [m, k]`` -> summed votes ``[m, C]``."""
    votes = torch.zeros(similarities.shape[0], num_classes, device=similarities.device)  # [m, C]
    return votes.scatter_add_(1, neighbour_labels, (similarities / temperature).exp())


def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    query_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    backend: str = "torch",
    amp: bool = False,
) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (in %) of weighted kNN (``backend``, ``amp`` as in :func:`knn_scores`)."""
    scores = knn_scores(train_features, train_labels, query_features, num_classes, k, temperature, backend=backend, amp=amp)
    return topk_accuracy(scores, query_labels.to(scores.device))


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> tuple[float, ...]:
    """Top-k accuracies in % for each k (k capped at the number of classes)."""
    ranked = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # [M, kmax]
    hits = ranked == labels[:, None]
    return tuple(100.0 * hits[:, : min(k, scores.shape[1])].any(dim=1).float().mean().item() for k in ks)


def sharded_knn_scores(
    shard_features: torch.Tensor,
    shard_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int,
    temperature: float,
    gather: Callable[[torch.Tensor], torch.Tensor],
    chunk_size: int = 2048,
    amp: bool = False,
) -> torch.Tensor:
    """:func:`knn_scores` (torch backend) over a bank split between processes, each holding one shard.

    Every process calls it with its own shard and the same queries. Per chunk of queries, each
    process takes the top ``k`` of its shard; ``gather`` collects every process's ``k`` similarities
    and labels, and the top ``k`` of those ``W x k`` candidates are the top ``k`` of the whole bank
    (each of the bank's top ``k`` is among its shard's top ``k``). The votes are then those of the
    single-process kNN, up to the order of the floating-point sum and ties in similarity.

    Args:
        shard_features: ``[n, D]``, this process's part of the bank (normalised here); ``n`` may be
            below ``k`` or 0 (that process's candidates are padded with similarity ``-inf``).
        shard_labels: int64 ``[n]`` in ``[0, num_classes)``.
        query_features: ``[M, D]``, the same on every process (normalised here).
        num_classes, temperature: As :func:`knn_scores`.
        k: Neighbours per query, at most the whole bank's size (the caller checks it: a shard does
            not know the others' sizes).
        gather: ``[m, k]`` tensor -> ``[W, m, k]``, every process's in rank order (an all-gather).
        chunk_size: Queries per matmul and per gather (memory: ``chunk_size x n`` similarities,
            ``W x chunk_size x k`` gathered candidates).
        amp: The similarity matmul in bf16, as :func:`knn_scores`.

    Returns:
        ``[M, C]`` summed vote weights, the same on every process.
    """
    if k < 1 or temperature <= 0:
        raise ConfigError(f"kNN needs k >= 1 and temperature > 0, got k={k}, temperature={temperature}")
    bank = F.normalize(shard_features.float(), dim=1)  # [n, D]
    queries = F.normalize(query_features.float(), dim=1)  # [M, D]
    labels = shard_labels.to(bank.device)
    local_k = min(k, bank.shape[0])
    bank_lp = bank.bfloat16() if amp else None
    out = []
    for start in range(0, queries.shape[0], chunk_size):
        sims, idx = top_similarities(bank, queries[start : start + chunk_size], local_k, bank_lp)  # [m, k_local]
        neighbours = labels[idx]  # [m, k_local]
        if local_k < k:  # a shard smaller than k: its missing candidates can never win
            sims = F.pad(sims, (0, k - local_k), value=float("-inf"))
            neighbours = F.pad(neighbours, (0, k - local_k), value=0)
        m = sims.shape[0]
        candidates = gather(sims).permute(1, 0, 2).reshape(m, -1)  # [m, W * k]
        candidate_labels = gather(neighbours).permute(1, 0, 2).reshape(m, -1)  # [m, W * k]
        top_sims, pos = candidates.topk(k, dim=1)  # [m, k]
        out.append(weighted_votes(top_sims, candidate_labels.gather(1, pos), num_classes, temperature))
    return torch.cat(out)
