"""``dataset.decoder`` on CPU: images/s of each decoder on a generated JPEG folder.

For every decoder that works on this machine (``pil``, ``torchvision``, ``torchcodec``
when installed), through the one decode function of the package
(:func:`contrastive.data.io.decode.decode_rgb`):

* ``decode``: file -> uint8 ``[3, H, W]`` RGB (EXIF orientation and colour conversion included);
* ``decode+resize``: the same, then the shorter side resized to ``--size`` and center-cropped
  (what the decoded-image cache stores for a training size of ``--size``),

with 1 and 2 threads (a thread pool, as the cache and the lazy arrays decode; one
intra-op thread each), median of ``--repeats`` runs of ``--per-run`` files, the decoders
interleaved within each repeat. The folder (``--num-images`` JPEGs of 500x375 px, quality
90) comes from the generator of ``bench_data.py``; keep it outside the repository.

Usage:
    python benchmarks/speed/components/bench_decode.py --folder /tmp/bench_jpegs --num-images 20000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench_data (the folder generator)
sys.path.insert(0, str(HERE.parents[2]))  # the repository, for a run without installing

MODES = ("decode", "decode+resize")


def cpu_info() -> dict:
    """CPU model, the SIMD flags that matter for decoding and resizing, cores and load."""
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    relevant = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile")
    return {"model": model, "flags": {f: f in flags for f in relevant}, "cores": os.cpu_count(),
            "load_avg_1min": float(open("/proc/loadavg").read().split()[0])}


def versions() -> Dict[str, str]:
    import PIL
    import torchvision

    out = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
           "pillow": PIL.__version__}
    try:
        import torchcodec

        out["torchcodec"] = torchcodec.__version__
    except ImportError:
        out["torchcodec"] = "not installed"
    return out


def available_decoders() -> List[str]:
    from contrastive.core.errors import ConfigError
    from contrastive.data.io.decode import resolve_decoder

    names = []
    for name in ("pil", "torchvision", "torchcodec"):
        try:
            names.append(resolve_decoder(name))
        except ConfigError as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
    return names


def images_per_second(paths: List[Path], decoder: str, mode: str, threads: int, size: int) -> float:
    """One run: every file of ``paths`` decoded (and resized) with ``threads`` threads."""
    from contrastive.data.io.decode import decode_rgb

    crop = size if mode == "decode+resize" else None
    work = lambda p: decode_rgb(p, decoder, crop)  # noqa: E731
    start = time.perf_counter()
    if threads == 1:
        for p in paths:
            work(p)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for _ in pool.map(work, paths, chunksize=16):
                pass
    return len(paths) / (time.perf_counter() - start)


def measure(paths: List[Path], decoders: List[str], args: argparse.Namespace) -> List[dict]:
    """Median images/s per (decoder, mode, threads); each repeat reads the next slice of the folder."""
    runs: Dict[tuple, List[float]] = {}
    for r in range(args.repeats):
        for threads in args.threads:
            for mode in MODES:
                for k in range(len(decoders)):  # a rotated order in each repeat: drifting load hits every decoder alike
                    decoder = decoders[(k + r) % len(decoders)]
                    chunk = paths[(r * args.per_run) % len(paths):][: args.per_run]
                    runs.setdefault((decoder, mode, threads), []).append(
                        images_per_second(chunk, decoder, mode, threads, args.size))
    return [{"decoder": d, "mode": m, "threads": t, "images_per_s": round(statistics.median(v), 1),
             "runs": [round(x, 1) for x in v]} for (d, m, t), v in sorted(runs.items())]


def table(rows: List[dict], decoders: List[str], size: int) -> str:
    """Markdown: one row per decoder, images/s per mode and thread count."""
    columns = sorted({(r["mode"], r["threads"]) for r in rows}, key=lambda c: (MODES.index(c[0]), c[1]))
    value = {(r["decoder"], r["mode"], r["threads"]): r["images_per_s"] for r in rows}
    label = {"decode": "decode", "decode+resize": f"decode+resize {size}"}
    lines = ["| decoder | " + " | ".join(f"{label[m]}, {t} thread{'s' if t > 1 else ''}" for m, t in columns) + " |",
             "|---" * (len(columns) + 1) + "|"]
    for d in decoders:
        lines.append(f"| {d} | " + " | ".join(f"{value[(d, m, t)]:.0f}" for m, t in columns) + " |")
    return "\n".join(lines)


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_jpegs"), help="generated once, then reused")
    parser.add_argument("--num-images", type=int, default=20000)
    parser.add_argument("--per-run", type=int, default=2000, help="files decoded per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--size", type=int, default=224, help="training size of decode+resize")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "decode-cpu.json")
    args = parser.parse_args(argv)
    if args.per_run < 1 or args.repeats < 1 or min(args.threads) < 1:
        parser.error(f"--per-run, --repeats and --threads must be >= 1, got {args.per_run}, {args.repeats}, {args.threads}")
    from bench_data import generate

    from contrastive.data.io.decode import resolve_decoder
    from contrastive.data.io.folders import list_class_folders

    generated = generate(args.folder, args.num_images)
    paths = [p for p, _ in list_class_folders(args.folder / "train")[1]][: args.num_images]
    torch.set_num_threads(1)  # one intra-op thread: the decode threads are the parallelism
    decoders = available_decoders()
    for p in paths:  # warm-up: every file in the page cache, every library loaded
        p.read_bytes()
    for decoder in decoders:
        images_per_second(paths[:20], decoder, "decode+resize", 1, args.size)
    cpu = cpu_info()
    rows = measure(paths, decoders, args)
    result = {"benchmark": "bench_decode", "cpu": cpu, "load_avg_1min_after": float(open("/proc/loadavg").read().split()[0]),
              "versions": versions(), "auto": resolve_decoder("auto"), "folder": {"images": len(paths), "px": "500x375",
              "jpeg_quality": 90, "generate_s": generated["seconds"]}, "per_run": args.per_run, "repeats": args.repeats,
              "size": args.size, "unit": "images/s, median of repeats", "results": rows}
    md = table(rows, decoders, args.size)
    print(f"{cpu['model']} ({cpu['cores']} cores, load {cpu['load_avg_1min']} -> {result['load_avg_1min_after']}); "
          f"auto -> {result['auto']}\n\n{md}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**result, "table": md}, indent=1) + "\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
