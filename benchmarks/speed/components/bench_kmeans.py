"""Per-epoch clustering cost of SPCL: faiss k-means of 100k x 128 features into 1,000 prototypes.

    OMP_NUM_THREADS=2 python benchmarks/speed/components/bench_kmeans.py [--n 100000] [--dim 128] [--k 1000] [--repeats 3]
    OMP_NUM_THREADS=1 python benchmarks/speed/components/bench_kmeans.py --n 128000 --k 2500 --euclidean --repeats 1 --imagenet

Times :func:`contrastive.clustering.kmeans.kmeans` (train + final assignment of every point) with
the ``niter`` and ``max_points_per_centroid`` of ``configs/method/spcl.yaml`` (20 Lloyd
iterations, centroids fitted on all points), on
L2-normalised Gaussian features (no cluster structure: the slowest case for Lloyd
iterations to matter), and prints the median of ``--repeats`` runs. The
target is under 10 s on the 2-core CPU.

``--imagenet`` also extrapolates the measured CPU seconds to the ImageNet presets' per-epoch
clustering (1.28M x 128 features; PCL / PCL v2: K = 25,000 + 50,000 + 100,000, 20 iterations,
5 restarts; DeepCluster v2: 3 x 3,000, 10 iterations). Lloyd's cost is linear in
points x centroids x iterations x restarts (the distance matmul), so the figure is the measured
CPU seconds times that ratio: single-core seconds, divide by the cores faiss gets.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from contrastive.clustering.kmeans import cluster_stats, kmeans  # noqa: E402


def main() -> None:
    defaults = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "method" / "spcl.yaml").method.cluster
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--niter", type=int, default=int(defaults.niter))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--euclidean", action="store_true", help="plain k-means (PCL's); default spherical (SPCL's)")
    parser.add_argument("--imagenet", action="store_true", help="extrapolate to the ImageNet presets' clustering")
    args = parser.parse_args()

    import faiss

    features = torch.randn(args.n, args.dim, generator=torch.Generator().manual_seed(0))
    cap = None if defaults.max_points_per_centroid is None else int(defaults.max_points_per_centroid)
    times, cpu = [], []
    for r in range(args.repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        assignments, _ = kmeans(features, args.k, niter=args.niter, seed=r, max_points_per_centroid=cap,
                                spherical=not args.euclidean)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)  # CPU seconds of all threads: shows contention on a shared machine
        stats = cluster_stats(assignments, args.k)
        print(f"run {r}: {times[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU  (empty {stats['empty_clusters']:.0f}, sizes {stats['min_cluster_size']:.0f}"
              f"-{stats['max_cluster_size']:.0f})", flush=True)
    print(f"k-means {args.n} x {args.dim} -> {args.k} prototypes, niter={args.niter}, fitted on "
          f"{'all' if cap is None else min(args.n, cap * args.k)} points, faiss {faiss.__version__}, "
          f"{faiss.omp_get_max_threads()} threads: median {statistics.median(times):.2f} s wall "
          f"({statistics.median(cpu):.2f} s CPU) of {args.repeats}")
    if args.imagenet:
        per_unit = statistics.median(cpu) / (args.n * args.k * args.niter)  # CPU s per point x centroid x iteration
        for name, ks, niter, nredo in (("PCL / PCL v2", (25_000, 50_000, 100_000), 20, 5),
                                       ("DeepCluster v2", (3000, 3000, 3000), 10, 1)):
            core_s = per_unit * 1_281_167 * sum(ks) * niter * nredo
            print(f"ImageNet {name}: K={list(ks)}, niter={niter}, nredo={nredo}: ~{core_s:,.0f} CPU s per epoch "
                  f"(~{core_s / 3600:.1f} core-hours; {core_s / 60 / 32:.0f} min on 32 cores, {core_s / 60 / 64:.0f} min on 64)")


if __name__ == "__main__":
    main()
