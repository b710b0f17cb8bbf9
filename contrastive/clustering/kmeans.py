"""k-means with faiss, as prototype methods (PCL, SPCL, DeepCluster v2) run it every epoch.

Spherical by default (SPCL, DeepCluster v2); PCL's released code runs Euclidean k-means with
several restarts and normalises the centroids afterwards (``spherical=False``, ``nredo``).

:func:`kmeans` is a pure function of a feature matrix: the same features, ``k``,
``niter`` and ``seed`` give the same assignments (faiss seeds its initialisation and
subsampling from ``seed``; the assignment and centroid updates are deterministic).
Clusters that become empty during training are re-seeded by faiss (it splits a large
cluster); clusters that end empty or tiny after the final assignment are only
reported, by :func:`cluster_stats`.

On a CUDA device and with a faiss build that has GPU support, the distance searches (every
Lloyd iteration's assignment and the final one) run on that GPU (:func:`faiss_gpu_device`), as
PCL's released code does (main_pcl.py ``run_kmeans``: a ``GpuIndexFlatL2`` on the process's GPU);
the centroid updates stay faiss's own, so the answer is the CPU one up to the GPU's matmul rounding.
``faiss-cpu`` (the PyPI wheel) has no GPU support: the searches then run on the CPU.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from contrastive.core.errors import ConfigError


def kmeans(
    features: torch.Tensor, k: int, niter: int = 20, seed: int = 0, max_points_per_centroid: Optional[int] = None,
    *, spherical: bool = True, nredo: int = 1, min_points_per_centroid: int = 1, gpu: Optional[int] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Cluster L2-normalised rows of ``features`` into ``k`` clusters.

    Args:
        features: float ``[N, D]`` on any device; rows are L2-normalised here.
        k: Number of clusters, ``2 <= k <= N``.
        niter: Lloyd iterations (20: PCL's and the SPCL authors' ``clustering.py``).
        seed: Seed of the initialisation (and of the subsample, if any).
        max_points_per_centroid: ``None`` (default): the centroids are fitted on all ``N``
            points, as SPCL's "We concatenate all the embedded features and conduct the
            clustering". A number: faiss fits on at most ``k x`` that many points (a
            seed-fixed subsample), an option for very large sets; every point is assigned
            afterwards either way.
        spherical: ``True``: faiss renormalises the centroids after every iteration (spherical
            k-means). ``False``: plain Euclidean k-means; the centroids are returned as fitted
            (not unit-norm), for distances to them.
        nredo: Runs from different initialisations; faiss keeps the one of lowest objective.
        min_points_per_centroid: Below ``k x`` this many points faiss warns (nothing else changes).
        gpu: ``None``: faiss on the CPU. A CUDA device index: the searches on that GPU
            (:func:`faiss_gpu_device` says whether faiss can use a device).

    Returns:
        ``(assignments int64 [N] in [0, k), centroids float32 [k, D])``, on the CPU;
        centroids are unit-norm when ``spherical``.

    Raises:
        ConfigError: ``k < 2`` or ``k > N``.
    """
    import faiss  # imported lazily: only prototype methods need it

    n, d = features.shape
    if not 2 <= k <= n:
        raise ConfigError(f"k-means needs 2 <= k <= number of samples, got k={k} for {n} samples")
    x = torch.nn.functional.normalize(features.detach().float(), dim=1).cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    # faiss subsamples when N > k x max_points_per_centroid; a cap of ceil(N / k) never does.
    cap = -(-n // int(k)) if max_points_per_centroid is None else int(max_points_per_centroid)
    km = faiss.Kmeans(
        d, int(k), niter=int(niter), nredo=int(nredo), seed=int(seed), spherical=bool(spherical),
        min_points_per_centroid=int(min_points_per_centroid), max_points_per_centroid=cap, verbose=False,
    )
    if gpu is not None:  # the index faiss.Kmeans built, copied to this process's GPU (not all GPUs, as gpu=True would)
        resources = faiss.StandardGpuResources()
        km.index = faiss.index_cpu_to_gpu(resources, int(gpu), km.index)
    km.train(x)
    _, nearest = km.index.search(x, 1)  # [N, 1]; the index holds the final centroids
    return torch.from_numpy(nearest[:, 0].astype(np.int64)), torch.from_numpy(np.array(km.centroids, dtype=np.float32))


def faiss_gpu_device(device: torch.device) -> Optional[int]:
    """The CUDA index faiss can run :func:`kmeans` on for tensors on ``device``, or ``None``.

    ``None`` on a CPU device, and where the installed faiss has no GPU support or sees fewer GPUs
    than the index (``faiss.get_num_gpus()`` is 0 in ``faiss-cpu``)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    import faiss

    index = torch.cuda.current_device() if device.index is None else int(device.index)
    return index if index < int(faiss.get_num_gpus()) else None


def cluster_stats(assignments: torch.Tensor, k: int, tiny: int = 2) -> Dict[str, float]:
    """Cluster-size statistics: empty clusters, clusters under ``tiny`` members, min/max/mean size."""
    sizes = torch.bincount(assignments.flatten().cpu(), minlength=k)[:k]  # [k]
    return {
        "empty_clusters": float((sizes == 0).sum()),
        "tiny_clusters": float(((sizes > 0) & (sizes < tiny)).sum()),
        "min_cluster_size": float(sizes.min()),
        "max_cluster_size": float(sizes.max()),
        "mean_cluster_size": float(sizes.float().mean()),
    }


def align_labels(new: torch.Tensor, old: torch.Tensor, k: int) -> torch.Tensor:
    """Rename the clusters of ``new`` so they overlap most with those of ``old``.

    k-means numbers its clusters arbitrarily, so without this a prototype head trained
    on last epoch's cluster ids would face a random permutation of them after every
    re-clustering. The renaming is the maximum-overlap one-to-one matching (Hungarian
    algorithm on the ``[k, k]`` overlap matrix); the partition itself is unchanged.

    Args:
        new, old: int64 ``[N]`` assignments in ``[0, k)``.
        k: Number of clusters.

    Returns:
        int64 ``[N]``: ``perm[new]`` for the best permutation ``perm``.
    """
    from scipy.optimize import linear_sum_assignment

    overlap = torch.zeros(k, k, dtype=torch.long)  # [k_new, k_old]
    overlap.index_put_((new.cpu(), old.cpu()), torch.ones_like(new.cpu()), accumulate=True)
    rows, cols = linear_sum_assignment(overlap.numpy(), maximize=True)
    perm = torch.empty(k, dtype=torch.long)
    perm[torch.from_numpy(rows)] = torch.from_numpy(cols).long()
    return perm[new.cpu()]
