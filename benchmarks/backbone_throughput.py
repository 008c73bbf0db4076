"""Training throughput of X-ray backbones inside the cac-severity early-fusion model (samples/s).

    python benchmarks/backbone_throughput.py --sizes 128 224 --batch 8 --steps 2 [--backbones vgg19 resnet50]

Times forward + backward + optimizer step of the whole fusion model (the X-ray backbone with one input channel,
the recipe's ECG encoder on 2 s of 12-lead ECG at 100 Hz, the early-fusion head with the 4-class ordinal output)
after one warm-up step, on the device given (``cpu`` or ``cuda``), with the threads torch has
(``OMP_NUM_THREADS``).  From samples/s the time of a cac-severity run follows: epochs x (training records +
validation records / 3) / samples/s, roughly (evaluation is about 3x faster than training).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cardiofusion.models import build_model
from cardiofusion.recipes.cac_severity import PAPER_BACKBONES, CacSeverityConfig, cac_train_config


def throughput(backbone: str, size: int, *, batch: int, steps: int, device: str) -> float:
    """Samples per second of training steps of the fusion model with ``backbone`` at ``size`` px."""
    config = CacSeverityConfig(backbones=[backbone], pretrained="none", image_size=size)
    model = build_model(cac_train_config(config, ".", ".", "full", backbone).model).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch_data = {"ecg": torch.randn(batch, 12, 200, device=device),
                  "cxr": torch.randn(batch, 1, size, size, device=device)}

    def step() -> None:
        opt.zero_grad()
        model(batch_data).score.sum().backward()
        opt.step()

    step()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backbones", nargs="+", default=list(PAPER_BACKBONES))
    ap.add_argument("--sizes", nargs="+", type=int, default=[128, 224])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    rows = []
    for backbone in args.backbones:
        for size in args.sizes:
            sps = throughput(backbone, size, batch=args.batch, steps=args.steps, device=args.device)
            rows.append({"backbone": backbone, "size": size, "samples_per_s": round(sps, 2),
                         "device": args.device, "threads": torch.get_num_threads()})
            print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()
