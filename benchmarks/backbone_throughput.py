"""Training throughput of X-ray backbones inside the cac-severity early-fusion model (samples/s), and the time
of the recipe's grid that follows from it.

    python benchmarks/backbone_throughput.py --sizes 128 224 --batch 16 --max-seconds 30 [--backbones vgg19 resnet50]

Times forward + backward + optimizer step of the whole fusion model (the X-ray backbone with one input channel,
the recipe's ECG encoder on 2 s of 12-lead ECG at 100 Hz, the early-fusion head with the 4-class ordinal output)
after one warm-up step, on the device given (``cpu`` or ``cuda``), with the threads torch has
(``OMP_NUM_THREADS``): timed steps are repeated until ``--max-seconds`` have passed (at least one).  Prints one
JSON line per measurement, then a markdown table with, per backbone and size, the hours of its part of the
grid: 2 runs (full, without ECG) x ``--folds`` x ``--epochs`` x (``--train-records`` + ``--val-records`` / 3)
/ samples/s (evaluation is about 3x faster than a training step).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cardiofusion.models import build_model
from cardiofusion.recipes.cac_severity import PAPER_BACKBONES, CacSeverityConfig, cac_train_config


def throughput(backbone: str, size: int, *, batch: int, max_seconds: float, device: str) -> tuple[float, int]:
    """``(samples per second, timed steps)`` of training steps of the fusion model with ``backbone`` at
    ``size`` px."""
    config = CacSeverityConfig(backbones=[backbone], pretrained="none", image_size=size)
    model = build_model(cac_train_config(config, ".", ".", "full", backbone).model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch_data = {"ecg": torch.randn(batch, 12, 200, device=device),
                  "cxr": torch.randn(batch, 1, size, size, device=device)}

    def step() -> None:
        opt.zero_grad()
        model(batch_data).score.sum().backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    step()
    t0, steps = time.perf_counter(), 0
    while steps == 0 or time.perf_counter() - t0 < max_seconds:
        step()
        steps += 1
    return batch * steps / (time.perf_counter() - t0), steps


def grid_hours(samples_per_s: float, *, folds: int, epochs: int, train_records: int, val_records: int) -> float:
    """Hours of one backbone's runs (full and without ECG) over the folds at this throughput."""
    return 2 * folds * epochs * (train_records + val_records / 3) / samples_per_s / 3600


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=list(PAPER_BACKBONES))
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-seconds", type=float, default=30.0, help="timed steps per measurement (at least one)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-records", type=int, default=2090, help="training records per fold (synth1200: 2,090)")
    ap.add_argument("--val-records", type=int, default=697, help="validation records per fold")
    args = ap.parse_args()
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            try:
                sps, steps = throughput(backbone, size, batch=args.batch, max_seconds=args.max_seconds,
                                        device=args.device)
            except (RuntimeError, MemoryError) as e:  # out of memory: say so, measure the rest
                print(json.dumps({"backbone": backbone, "size": size, "error": str(e).splitlines()[0]}), flush=True)
                continue
            rows.append({"backbone": backbone, "size": size, "batch": args.batch, "steps": steps,
                         "samples_per_s": round(sps, 2), "device": args.device, "threads": torch.get_num_threads()})
            print(json.dumps(rows[-1]), flush=True)
    grid = dict(folds=args.folds, epochs=args.epochs, train_records=args.train_records, val_records=args.val_records)
    print(f"\n| Backbone | px | samples/s | hours of its 2 x {args.folds} runs x {args.epochs} epochs |")
    print("|---|---|---|---|")
    total: dict[int, float] = {}
    for r in rows:
        h = grid_hours(r["samples_per_s"], **grid)
        total[r["size"]] = total.get(r["size"], 0.0) + h
        print(f"| {r['backbone']} | {r['size']} | {r['samples_per_s']:.2f} | {h:.1f} |")
    for size, h in total.items():
        print(f"| all | {size} | | {h:.1f} |")


if __name__ == "__main__":
    main()
