"""Self-labelling of a whole dataset by Sinkhorn-Knopp (SeLa: Asano, Rupprecht, Vedaldi, ICLR 2020,
https://arxiv.org/abs/1911.05371; SeLa v2 in SwAV's Appendix, Caron et al. 2020).

The labels ``y`` of N samples over K clusters maximise ``sum_i log P(y_i | x_i)`` under the
equal-partition constraint (every cluster gets N / K samples). Relaxed to a transport plan
``Q = diag(b) exp(S / eps) diag(a)`` with row sums ``1 / N`` (one unit of mass per sample) and column
sums ``1 / K`` (an equal share per cluster), the scalings come from alternating the two
normalisations (SwAV's ``sinkhorn``: clusters first, then samples)::

    a_k = (1 / K) / sum_i exp(S_ik / eps) b_i        b_i = (1 / N) / sum_k exp(S_ik / eps) a_k

and each sample's label is its row's largest entry, ``argmax_k S_ik / eps + log a_k``. Here in the log
domain and over chunks of rows, so an ImageNet-sized ``[N, K]`` score matrix is never held at once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _chunks(n: int, size: int):
    return [(start, min(n, start + size)) for start in range(0, n, size)]


@torch.no_grad()
def sinkhorn_labels(features: Tensor, prototypes: Tensor, epsilon: float, iterations: int,
                    chunk_size: int = 65536) -> Tensor:
    """Equal-partition hard labels of every sample.

    Args:
        features: ``[N, D]`` l2-normalised features of the whole dataset.
        prototypes: ``[K, D]`` l2-normalised prototypes (scores ``S = features @ prototypes.T``).
        epsilon: Entropy weight ``eps`` > 0 of the transport problem.
        iterations: Rounds of the two normalisations (>= 1).
        chunk_size: Rows of ``S`` computed at a time.

    Returns:
        int64 ``[N]`` labels in ``[0, K)``.
    """
    n, k = features.shape[0], prototypes.shape[0]
    features, prototypes = features.float(), prototypes.float().to(features.device)
    spans = _chunks(n, chunk_size)

    def logits(start: int, end: int) -> Tensor:
        return features[start:end] @ prototypes.t() / epsilon  # [n_chunk, K]

    log_a = torch.full((k,), -math.log(k), device=features.device)
    log_b = torch.full((n,), -math.log(n), device=features.device)
    for _ in range(iterations):
        column = torch.stack([torch.logsumexp(logits(s, e) + log_b[s:e, None], dim=0) for s, e in spans]).logsumexp(0)
        log_a = -math.log(k) - column  # [K]: every cluster's mass 1 / K
        log_b = torch.cat([-math.log(n) - torch.logsumexp(logits(s, e) + log_a, dim=1) for s, e in spans])  # [N]
    return torch.cat([(logits(s, e) + log_a).argmax(dim=1) for s, e in spans])
