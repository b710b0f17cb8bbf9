"""fp32 vs precision/channels_last=auto: kNN and linear top-1 of 3 seeds each (accuracy parity of the CPU auto defaults).

Usage: python benchmarks/speed/parity_auto.py   (about 10 minutes on 2 shared cores; writes benchmarks/speed/results/parity-fp32-vs-auto-cpu-synthetic32.json)
"""
import argparse, json, os, sys, statistics
from pathlib import Path
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE)); sys.path.insert(0, str(HERE.parents[1]))
argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
os.environ["FULL_RUN_LINEAR"] = "1"
import full_run
base = ["dataset.num_train=1024", "dataset.num_val=500", "batch_size=128", "backbone.kwargs.width=8", "trainer.max_epochs=3",
        "scheduler.warmup_epochs=0", "knn.random_init_baseline=false"]
rows = {"fp32": [], "auto": []}
for seed in range(3):
    for name, extra in (("fp32", ["trainer.precision=32-true", "trainer.channels_last=false"]), ("auto", [])):
        r = full_run.child("ours", base + extra + [f"seed={seed}"], 0, env={"FULL_RUN_LINEAR": "1"})
        rows[name].append(r); print(name, seed, json.dumps(r), os.getloadavg(), flush=True)
out = {"overrides": base, "runs": rows}
for name, rs in rows.items():
    for key in ("knn_top1", "linear_top1"):
        v = [r[key] for r in rs]
        out[f"{name}_{key}"] = (round(statistics.mean(v), 2), round(statistics.stdev(v), 2))
print(json.dumps({k: v for k, v in out.items() if k != "runs"}))
json.dump(out, open(HERE / "results" / "parity-fp32-vs-auto-cpu-synthetic32.json", "w"), indent=2)
