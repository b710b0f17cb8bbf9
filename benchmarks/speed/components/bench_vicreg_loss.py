"""VICReg's loss alone, forward + backward: lightly's ``VICRegLoss`` vs ``contrastive.losses.redundancy.vicreg_loss``.

    OMP_NUM_THREADS=2 python benchmarks/speed/components/bench_vicreg_loss.py [--batch 256] [--dims 2048 8192] [--repeats 7]
    OMP_NUM_THREADS=2 python benchmarks/speed/components/bench_vicreg_loss.py --whole-runs 3   # + whole default runs

Both compute the same value and gradients (tests/test_baseline_losses.py checks them against each other and
against Eq. 6 written out); they differ only in how the covariance term selects the off-diagonal entries
(lightly: boolean indexing, ``nonzero`` + an indexed scatter in backward; ours: an elementwise mask).
Prints the median of ``--repeats`` timed calls (after 2 warm-up calls) per dimension, in fp32 and under
bf16 autocast (what the default run uses on a CPU with AVX-512 BF16), and writes the records to
``results/vicreg_loss-<device>.json``. ``--whole-runs N`` also times ``python train.py method=vicreg
trainer.max_epochs=8`` N times each with our loss and with lightly's patched in, alternating, each in a fresh
process, and reports the median wall time of each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))

from contrastive.losses.redundancy import vicreg_loss  # noqa: E402


def time_loss(loss_fn, z_a: torch.Tensor, z_b: torch.Tensor, repeats: int, bf16: bool) -> float:
    """Median seconds of ``loss_fn(z_a, z_b).backward()``."""
    times = []
    for i in range(repeats + 2):
        a, b = z_a.detach().requires_grad_(), z_b.detach().requires_grad_()
        start = time.perf_counter()
        with torch.autocast(z_a.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(a, b)
        loss.backward()
        if z_a.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


#: One whole default run in a fresh process; "lightly" patches lightly's VICRegLoss into the method first.
WHOLE_RUN = """
import sys, time
import contrastive.methods.vicreg as method
if sys.argv[1] == "lightly":
    from lightly.loss import VICRegLoss
    method.vicreg_loss = lambda a, b, lam, mu, nu: VICRegLoss(lam, mu, nu, gather_distributed=True)(a, b)
import train
start = time.perf_counter()
train.main(["method=vicreg", "trainer.max_epochs=8", "knn.every_n_epochs=8", "trainer.progress_bar=false",
            "logger=[csv]", "output_dir=" + sys.argv[2]])
print("WALL", time.perf_counter() - start)
"""


def whole_runs(n: int) -> dict:
    """Median wall seconds of ``n`` default 8-epoch VICReg runs per loss, alternating ours / lightly's."""
    walls = {"ours": [], "lightly": []}
    runs = tempfile.mkdtemp(prefix="bench_vicreg_")  # the run folders
    for _ in range(n):
        for which in walls:
            out = subprocess.run([sys.executable, "-c", WHOLE_RUN, which, runs], cwd=ROOT,
                                 capture_output=True, text=True, check=True).stdout
            walls[which].append(float(out.split("WALL")[-1]))
            print(f"whole run ({which}): {walls[which][-1]:.1f} s", flush=True)
    return {k: round(statistics.median(v), 1) for k, v in walls.items()}


def main() -> None:
    from lightly.loss import VICRegLoss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dims", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--whole-runs", type=int, default=0, help="also time this many whole default runs per loss")
    args = parser.parse_args()
    lightly_loss = VICRegLoss(gather_distributed=True)
    records = []
    for dim in args.dims:
        g = torch.Generator().manual_seed(0)
        z_a, z_b = (torch.randn(args.batch, dim, generator=g).to(args.device) for _ in range(2))
        for bf16 in (False, True):
            ref = time_loss(lightly_loss, z_a, z_b, args.repeats, bf16)
            ours = time_loss(vicreg_loss, z_a, z_b, args.repeats, bf16)
            records.append({"batch": args.batch, "dim": dim, "bf16": bf16, "lightly_ms": round(ref * 1e3, 1),
                            "ours_ms": round(ours * 1e3, 1), "speedup": round(ref / ours, 2), "device": args.device,
                            "threads": torch.get_num_threads()})
            print(f"B {args.batch} D {dim} {'bf16' if bf16 else 'fp32'}: lightly {ref * 1e3:.1f} ms, ours "
                  f"{ours * 1e3:.1f} ms, x{ref / ours:.2f}", flush=True)
    if args.whole_runs:
        medians = whole_runs(args.whole_runs)
        records.append({"whole_run_median_s": medians, "runs": args.whole_runs, "command": "python train.py "
                        "method=vicreg trainer.max_epochs=8", "speedup": round(medians["lightly"] / medians["ours"], 2)})
        print(f"whole 8-epoch run, median of {args.whole_runs}: lightly {medians['lightly']} s, ours {medians['ours']} s")
    out = ROOT / "benchmarks/speed/components/results" / f"vicreg_loss-{args.device}.json"
    out.write_text(json.dumps(records, indent=1) + "\n")
    print(f"records: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
