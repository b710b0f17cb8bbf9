"""Speed of ``linear_eval.py``'s parts at CIFAR scale: kNN backends, the linear probe, extraction.

* kNN: weighted kNN (k=200, t=0.1) of ``--queries`` test features against a bank of
  ``--num-train`` x ``--dim`` train features (default 50k x 512, CIFAR-10 sized), with the
  ``torch`` backend (chunked matmul + topk) and the ``faiss`` backend (exact
  ``IndexFlatIP``); repetitions alternate between the two and the median is reported.
  This is the measurement behind ``contrastive.metrics.knn``'s ``backend="auto"`` choice.
* Probe: :func:`contrastive.evaluation.probe.train_linear_probe` with the default recipe
  (``configs/eval.yaml``: SGD, 100 epochs, batch 256) and with L-BFGS, on the same features.
* Extraction: ResNet-18 (small stem) forward passes over 32x32 images in eval mode (bf16
  autocast on GPU, like the evaluator); on CPU only ``--extract-images`` images are
  embedded and the 50k figure is extrapolated (and labeled so).

The features are synthetic (class means + Gaussian noise) so no data set is needed; the
timings do not depend on where features came from.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/speed/components/bench_eval.py              # CPU, 1 thread
    python benchmarks/speed/components/bench_eval.py --repeats 5 --extract-images 50000   # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root
from contrastive.backbones.factory import create_backbone  # noqa: E402
from contrastive.evaluation.probe import evaluate_head, train_linear_probe  # noqa: E402
from contrastive.metrics.knn import knn_scores  # noqa: E402


def synthetic_features(n: int, dim: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, dim]`` features around one mean per class (the same for every ``seed``: train and
    test share their classes), labels ``[n]``; the noise makes the classes overlap."""
    means = torch.randn(classes, dim, generator=torch.Generator().manual_seed(12345))  # [C, D]
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes  # [n]
    return means[labels] + 8.0 * torch.randn(n, dim, generator=g), labels  # [n, D]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_knn(args, device: torch.device) -> dict:
    bank, bank_y = synthetic_features(args.num_train, args.dim, args.classes, 0)
    queries, _ = synthetic_features(args.queries, args.dim, args.classes, 1)
    backends = ["torch", "faiss"]
    times = {b: [] for b in backends}
    cpu_times = {b: [] for b in backends}  # process CPU time: with 1 thread, robust to a shared machine
    preds = {}
    for rep in range(args.repeats + 1):  # the first round warms up and is not counted
        for backend in backends:
            on = device if backend == "torch" else torch.device("cpu")
            b, y, q = bank.to(on), bank_y.to(on), queries.to(on)
            sync(on)
            start, cpu = time.perf_counter(), time.process_time()
            scores = knn_scores(b, y, q, args.classes, k=args.k, temperature=0.1, backend=backend)  # [M, C]
            sync(on)
            if rep:
                times[backend].append(time.perf_counter() - start)
                cpu_times[backend].append(time.process_time() - cpu)
            preds[backend] = scores.argmax(dim=1).cpu()
    agree = float((preds["torch"] == preds["faiss"]).float().mean())
    return {b: {"median_s": round(statistics.median(t), 3), "runs_s": [round(x, 3) for x in t],
                "median_cpu_s": round(statistics.median(cpu_times[b]), 3),
                "device": (device if b == "torch" else torch.device("cpu")).type} for b, t in times.items()} | {
        "prediction_agreement": agree}


def bench_probe(args, device: torch.device) -> dict:
    x, y = synthetic_features(args.num_train, args.dim, args.classes, 2)
    xt, yt = synthetic_features(args.queries, args.dim, args.classes, 3)
    base = OmegaConf.load(Path(__file__).resolve().parents[3] / "configs" / "eval.yaml").eval.linear
    out = {}
    for name, overrides in (("sgd", {"optimizer": "sgd"}), ("lbfgs", {"optimizer": "lbfgs", "weight_decay": 1e-4})):
        cfg = OmegaConf.merge(base, overrides)
        sync(device)
        start, cpu = time.perf_counter(), time.process_time()
        head = train_linear_probe(x, y, args.classes, cfg, device, seed=0, progress=False)
        sync(device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu  # CPU time: robust to a shared machine
        top1, _ = evaluate_head(head, xt, yt)
        out[name] = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "test_top1": round(top1, 2),
                     "recipe": OmegaConf.to_container(cfg)}
    return out


@torch.no_grad()
def bench_extract(args, device: torch.device) -> dict:
    net = create_backbone("resnet18", 32).to(device).eval()  # small stem at 32x32
    n = args.extract_images
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device)
    amp = device.type == "cuda"
    runs = []
    for rep in range(2):  # the first pass warms up (cuDNN autotuning, allocator)
        sync(device)
        start = time.perf_counter()
        for s in range(0, n, args.batch_size):
            x = (images[s : s + args.batch_size].float() / 255 - 0.5) / 0.25  # [B, 3, 32, 32]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                net(x)
        sync(device)
        runs.append(time.perf_counter() - start)
    per_image = runs[-1] / n
    return {"images": n, "seconds": round(runs[-1], 3), "threads": torch.get_num_threads(), "images_per_s": round(1 / per_image, 1),
            "seconds_for_50k": round(per_image * 50000, 1), "extrapolated": n < 50000, "amp_bf16": amp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-train", type=int, default=50000)
    parser.add_argument("--queries", type=int, default=10000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extract-images", type=int, default=None, help="default: 50000 on GPU, 512 on CPU")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--skip", nargs="*", default=[], choices=["knn", "probe", "extract"])
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/speed/components/results/bench_eval-<device>.json)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.extract_images is None:
        args.extract_images = 50000 if device.type == "cuda" else 512
    result = {"date": str(date.today()), "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
              "torch_threads": torch.get_num_threads(), "torch": torch.__version__, "args": {k: str(v) for k, v in vars(args).items()}}
    for part, fn in (("knn", bench_knn), ("probe", bench_probe), ("extract", bench_extract)):
        if part not in args.skip:
            result[part] = fn(args, device)
            print(part, json.dumps(result[part], indent=1), flush=True)
    out = args.out or Path(__file__).resolve().parent / "results" / f"bench_eval-{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
