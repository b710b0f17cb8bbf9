"""The pieces made free of host syncs, alone, against lightly's: NT-Xent forward + backward
(``contrastive.losses.pairwise.nt_xent_views`` vs ``lightly.loss.NTXentLoss``) and one LARS step
(``contrastive.engine.lars.LARS`` vs ``lightly.utils.lars.LARS``) over a ResNet-18's parameters.

    OMP_NUM_THREADS=2 python benchmarks/speed/components/bench_sync_free.py [--batch 256] [--dim 128] [--repeats 15]

Both sides give the same values (tests/test_simclr.py, tests/test_lars.py). Ours never waits for the device:
NT-Xent masks a view's similarity to itself instead of boolean indexing (``nonzero`` forward, an indexed
scatter backward); LARS picks "adapt or not" with ``torch.where`` instead of two Python ``if``s per parameter.
On a CPU a sync costs nothing, so what the CPU numbers show is the cost of the extra work (the masked
``[2B, 2B]`` logits, foreach norms); on a GPU run it to see the syncs' cost. Prints the median of ``--repeats``
timed calls (after 3 warm-up calls) and the number of host syncs per call (contrastive/engine/host_syncs.py),
and writes ``results/sync_free-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from contrastive.engine.host_syncs import HostSyncCounter  # noqa: E402
from contrastive.engine.lars import LARS  # noqa: E402
from contrastive.losses.pairwise import nt_xent_views  # noqa: E402


def median_seconds(calls: dict, repeats: int, device: torch.device) -> dict:
    """Median seconds of each call, timed alternately (so a changing load on a shared machine hits both)."""
    times = {name: [] for name in calls}
    for i in range(repeats + 3):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return {f"{name}_ms": round(1e3 * statistics.median(t), 3) for name, t in times.items()}


def syncs_of(call) -> int:
    with HostSyncCounter() as counter:
        call()
    return counter.total


def bench_nt_xent(batch: int, dim: int, repeats: int, device: torch.device) -> dict:
    from lightly.loss import NTXentLoss

    g = torch.Generator().manual_seed(0)
    z0, z1 = (torch.randn(batch, dim, generator=g).to(device) for _ in range(2))
    lightly_loss = NTXentLoss(0.5)

    def step(loss_fn):
        a, b = z0.detach().requires_grad_(), z1.detach().requires_grad_()
        loss_fn(a, b).backward()
    ours, theirs = (lambda: step(lambda a, b: nt_xent_views(a, b, 0.5))), (lambda: step(lightly_loss))
    return {"batch": batch, "dim": dim, **median_seconds({"ours": ours, "lightly": theirs}, repeats, device),
            "ours_syncs": syncs_of(ours), "lightly_syncs": syncs_of(theirs)}


def bench_lars(repeats: int, device: torch.device) -> dict:
    import torchvision
    from lightly.utils.lars import LARS as LightlyLARS

    steps, result = {}, {}
    for name, cls in (("ours", LARS), ("lightly", LightlyLARS)):
        torch.manual_seed(0)
        net = torchvision.models.resnet18().to(device)
        weights = [p for p in net.parameters() if p.ndim > 1]
        others = [p for p in net.parameters() if p.ndim <= 1]
        opt = cls([{"params": weights, "weight_decay": 1e-6}, {"params": others, "weight_decay": 0.0}], lr=0.3, momentum=0.9)
        for p in net.parameters():
            p.grad = torch.randn_like(p) * 1e-3
        steps[name] = opt.step
        result[f"{name}_syncs"] = syncs_of(opt.step)
    return {"parameters": len(list(net.parameters())), **median_seconds(steps, repeats, device), **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    records = {"device": str(device), "threads": torch.get_num_threads(),
               "nt_xent": bench_nt_xent(args.batch, args.dim, args.repeats, device), "lars": bench_lars(args.repeats, device)}
    print(json.dumps(records, indent=1))
    out = Path(__file__).parent / "results" / f"sync_free-{device.type}.json"
    out.write_text(json.dumps(records, indent=1) + "\n")


if __name__ == "__main__":
    main()
