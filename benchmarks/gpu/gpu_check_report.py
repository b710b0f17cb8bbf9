"""Collects the results of ``benchmarks/gpu_check.sh`` into ``$OUT/gpu_check.json`` and ``$OUT/summary.md``.

Run after every step (``--quiet``), so the results of the steps that ran survive a device taken away
mid-check, and once at the end. The GPU targets are checked here: one 50k-image epoch of ResNet-18 at
32x32, batch 512, in at most 3 s, and at least 3x the lightly reference's images/s on the same machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

EPOCH_TARGET_S, SPEEDUP_TARGET = 3.0, 3.0
MODES = ("real", "rehearse", "dry")
#: What a whole check writes (besides gpu_check.json and summary.md): the step's log and its result file.
RESULT_FILES = {"setup": None, "pytest_gpu": "pytest_gpu.xml", "bench_speed": "bench_speed.json",
                "full_run": "full_run.json", "bench_eval": "bench_eval.json"}


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _pytest(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:  # cut short while written
        return {"tests": 0, "failures": 0, "errors": 1, "skipped": 0, "failed": [f"{path.name} unreadable: {e}"]}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{c.get('classname')}::{c.get('name')}" for c in suite.iter("testcase")
              if c.find("failure") is not None or c.find("error") is not None]
    return {**counts, "failed": failed}


def missing_files(out: Path, steps: list) -> list:
    """The logs and result files of the steps run (not skipped) that are not in ``out``."""
    names = [f"{s['name']}.log" for s in steps] + [RESULT_FILES[s["name"]] for s in steps if RESULT_FILES.get(s["name"])]
    return [name for name in ["steps.tsv", *names] if not (out / name).is_file()]


def collect(out: Path, mode: str, seconds: int) -> dict:
    steps = []
    for line in (out / "steps.tsv").read_text().splitlines() if (out / "steps.tsv").is_file() else []:
        name, rc, secs = line.split("\t")
        steps.append({"name": name, "rc": int(rc), "seconds": int(secs)})
    dry = mode != "real"
    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "mode": mode, "dry_run": mode == "dry",
              "rehearsal": mode == "rehearse", "seconds": seconds, "missing_files": missing_files(out, steps),
              "host": platform.node(), "steps": steps, "pytest_gpu": _pytest(out / "pytest_gpu.xml"),
              "bench_speed": _json(out / "bench_speed.json"), "full_run": _json(out / "full_run.json"),
              "bench_eval": _json(out / "bench_eval.json")}
    try:
        import torch

        result["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu (no CUDA)"
        result["torch"] = torch.__version__
    except ImportError:
        result["device"] = "unknown"
    result["targets"] = targets(result, dry)
    return result


def targets(r: dict, dry: bool) -> dict:
    out = {}
    speed = r.get("bench_speed") or {}
    if speed.get("ours"):
        out["epoch_seconds_step_bench"] = speed["ours"]["epoch_seconds"]
        out["speedup_step_bench"] = speed.get("speedup")
    full = r.get("full_run") or {}
    if full.get("ours"):
        out["epoch_wall_s_full_run"] = full["ours"]["median_wall_s"]
        out["speedup_full_run"] = full.get("speedup")
    if not dry and out:
        out["epoch_target_met"] = out.get("epoch_seconds_step_bench", 1e9) <= EPOCH_TARGET_S
        out["speedup_target_met"] = (out.get("speedup_step_bench") or 0) >= SPEEDUP_TARGET
    return out


def summary(r: dict) -> str:
    note = {"dry": "(dry run on CPU: tiny sizes, numbers mean nothing)",
            "rehearse": "(rehearsal on CPU: the real steps with the device stubbed, numbers mean nothing)"}.get(r["mode"], "")
    lines = [f"# gpu_check {note}",
             "", f"{r['date']} on {r.get('device')} (torch {r.get('torch')}), {r['seconds']} s in all", "",
             "| step | rc | seconds |", "| --- | --- | --- |"]
    lines += [f"| {s['name']} | {s['rc']}{' (time limit)' if s['rc'] in (124, 137) else ''} | {s['seconds']} |" for s in r["steps"]]
    if r["missing_files"]:
        lines += ["", f"missing: {', '.join(r['missing_files'])}"]
    p = r.get("pytest_gpu")
    if p:
        lines += ["", f"pytest -m gpu: {p['tests']} tests, {p['failures']} failures, {p['errors']} errors, {p['skipped']} skipped"]
        lines += [f"- FAILED {name}" for name in p["failed"][:15]]
    s = r.get("bench_speed")
    if s and s.get("ours"):
        lines += ["", "## Training throughput (bench_speed.py, steps after warm-up, median)", "",
                  "| pipeline | images/s | 50k epoch (s) |", "| --- | --- | --- |"]
        lines += [f"| {k} | {s[k]['images_per_s']} | {s[k]['epoch_seconds']} |" for k in ("reference", "ours")]
        lines += [f"", f"speed-up {s['speedup']}x; peak memory {s.get('peak_memory_mb')} MB"]
    f = r.get("full_run")
    if f and f.get("ours"):
        lines += ["", "## Whole run (bench_speed.py --full-run: kNN monitor, checkpoints, logs)", "",
                  "| pipeline | wall (s) | images/s | kNN top-1 | peak RSS (MB) |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {k} | {f[k]['median_wall_s']} | {f[k]['median_images_per_s']} | {f[k]['knn_top1_mean']} | "
                  f"{f[k]['max_peak_rss_mb']} |" for k in ("reference", "ours")]
    e = r.get("bench_eval")
    if e:
        lines += ["", "## Evaluation (bench_eval.py)", ""]
        if e.get("knn"):
            lines.append(f"- kNN: torch {e['knn']['torch']['median_s']} s ({e['knn']['torch']['device']}), "
                         f"faiss {e['knn']['faiss']['median_s']} s (cpu), agreement {e['knn']['prediction_agreement']:.4f}")
        if e.get("probe"):
            lines.append(f"- probe: sgd {e['probe']['sgd']['seconds']} s, lbfgs {e['probe']['lbfgs']['seconds']} s")
        if e.get("extract"):
            lines.append(f"- extraction: {e['extract']['images_per_s']} images/s, 50k in {e['extract']['seconds_for_50k']} s")
    if r["targets"]:
        lines += ["", "## Targets", "", *(f"- {k}: {v}" for k, v in r["targets"].items())]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--mode", choices=MODES, default="real")
    p.add_argument("--seconds", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="write the files only (after each step)")
    args = p.parse_args()
    result = collect(args.out, args.mode, args.seconds)
    (args.out / "gpu_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "summary.md").write_text(summary(result))
    if not args.quiet:
        print(summary(result))
    failed = [s["name"] for s in result["steps"] if s["rc"] != 0]
    raise SystemExit(1 if failed or result["missing_files"] else 0)


if __name__ == "__main__":
    main()
