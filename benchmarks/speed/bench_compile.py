"""torch.compile of the backbone vs eager: compile time and training-step time.

The SimCLR model of ``train.py`` (``trainer.compile=true`` compiles ``model.backbone`` in place,
like :meth:`contrastive.engine.method.Method.configure_model`), fixed random views, SGD steps;
repetitions alternate eager / compiled so both see the same machine noise; medians.

Usage:
    python benchmarks/speed/bench_compile.py                        # CPU, small_cnn w16, 32x32, batch 256
    python benchmarks/speed/bench_compile.py --device cuda --backbone resnet18 --batch-size 512
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.engine.method import DataInfo  # noqa: E402
from contrastive.core.registry import METHODS  # noqa: E402


def build(args, compiled: bool):
    overrides = [f"backbone={args.backbone}", "trainer.channels_last=true"]
    if args.backbone == "small_cnn":
        overrides.append(f"backbone.kwargs.width={args.width}")
    cfg = load_config(overrides)
    torch.manual_seed(0)
    data = DataInfo(num_classes=10, image_size=args.image_size, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=50000)
    model = METHODS.get("simclr")(cfg, data).to(args.device).train()
    if compiled:
        model.backbone.compile(backend="inductor")
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def step(model, optimizer, views, device) -> float:
    start = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = model.training_losses(views, None, None)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss.item()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default="")
    args = p.parse_args()
    load_builtin_methods()
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=g).to(device)
             .contiguous(memory_format=torch.channels_last) for _ in range(2)]
    models = {"eager": build(args, False), "compiled": build(args, True)}
    first = {name: step(*models[name], views, device) for name in models}  # compiled: includes compilation
    times = {name: [] for name in models}
    for _ in range(args.repeats):
        for name, (model, opt) in models.items():
            times[name].append(sum(step(model, opt, views, device) for _ in range(args.steps)) / args.steps)
    result = {"args": vars(args), "load": os.getloadavg(), "torch": torch.__version__,
              "first_step_s": {k: round(v, 2) for k, v in first.items()},
              "median_step_s": {k: round(statistics.median(v), 4) for k, v in times.items()}}
    result["speedup"] = round(result["median_step_s"]["eager"] / result["median_step_s"]["compiled"], 2)
    result["compile_overhead_s"] = round(first["compiled"] - first["eager"], 1)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
