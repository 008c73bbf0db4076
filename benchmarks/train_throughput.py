"""Training throughput (samples/s) of the paper-size and the small models, on CPU and on CUDA.

One training step = forward + loss + backward + Adam step on a random batch with the keys of
``docs/model_contract.md``: ECG ``(B, 12, 1000)`` (a 2 s window at 500 Hz) and X-ray ``(B, 1, S, S)``.
Models (all built with ``cardiofusion.models.build_model``):

* paper: ECG ``ecg_resnet50_transformer`` alone, X-ray EfficientNet-B0 alone (224 px), and the
  cooperative model with both;
* small: the same three with the CPU/demo variants (``ecg_resnet_small_transformer``, ``cxr_tiny``)
  and, with ``--tiny``, the test variants (``ecg_resnet_tiny_transformer``).

CPU runs use ``--threads`` threads (default 2, ``torch.set_num_threads``), float32.  On CUDA (when
``torch.cuda.is_available()``) steps run under fp16 autocast with a gradient scaler, as training's
``16-mixed`` precision does.  Warm-up steps are excluded; the table gives samples/s over the timed
steps and, per model kind and device, the ratio small / paper.

    python benchmarks/train_throughput.py [--batch 32] [--threads 2] [--steps 5] [--warmup 2]
        [--image-size 224] [--small-image-size 224] [--devices cpu cuda] [--only paper|small] [--tiny]
        [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

from cardiofusion._compat import ensure_torchvision

ensure_torchvision()

import torch

from cardiofusion.models import ModelConfig, build_model

ECG_SAMPLES = 1000  # 2 s at 500 Hz, the paper's training window


@dataclass
class Spec:
    name: str
    size: str  # "paper" | "small" | "tiny"
    kind: str  # "ecg" | "cxr" | "cooperative"
    ecg_encoder: str
    cxr_encoder: str
    image_size: int


def specs(image_size: int, small_image_size: int, sizes: list[str]) -> list[Spec]:
    encoders = {
        "paper": ("ecg_resnet50_transformer", "efficientnet_b0", image_size),
        "small": ("ecg_resnet_small_transformer", "cxr_tiny", small_image_size),
        "tiny": ("ecg_resnet_tiny_transformer", "cxr_tiny", small_image_size),
    }
    out = []
    for size in sizes:
        ecg, cxr, px = encoders[size]
        out.append(Spec(f"ECG {ecg}", size, "ecg", ecg, cxr, px))
        if size != "tiny":  # the tiny variants share the small X-ray encoder
            out.append(Spec(f"X-ray {cxr} {px}px", size, "cxr", ecg, cxr, px))
        out.append(Spec(f"cooperative {ecg} + {cxr}", size, "cooperative", ecg, cxr, px))
    return out


def make_batch(spec: Spec, batch: int, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    b: dict = {
        "label": (torch.rand(batch, generator=g) < 0.3).float(),
        "record_id": [f"r{i}" for i in range(batch)],
        "patient_id": [f"p{i}" for i in range(batch)],
    }
    if spec.kind in ("ecg", "cooperative"):
        b["ecg"] = torch.randn(batch, 12, ECG_SAMPLES, generator=g) * 0.3  # (B, L, T) mV
        b["ecg_mask"] = torch.ones(batch, 12, dtype=torch.bool)  # (B, L)
        b["has_ecg"] = torch.ones(batch, dtype=torch.bool)
    if spec.kind in ("cxr", "cooperative"):
        b["cxr"] = torch.randn(batch, 1, spec.image_size, spec.image_size, generator=g)  # (B, 1, H, W)
        b["has_cxr"] = torch.ones(batch, dtype=torch.bool)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()}


def measure(spec: Spec, device: torch.device, batch: int, steps: int, warmup: int) -> float:
    """Training samples/s of one model on one device (warm-up steps excluded)."""
    torch.manual_seed(0)
    cfg = ModelConfig(fusion=spec.kind, ecg_encoder=spec.ecg_encoder, cxr_encoder=spec.cxr_encoder)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    cuda = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    data = make_batch(spec, batch, device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=cuda):
            out = model(data)
            loss = model.loss(out, data["label"])["loss"]
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    if cuda:
        torch.cuda.empty_cache()
    return steps * batch / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32, help="samples per step (default 32)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default: 5 on CPU, 30 on CUDA)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 2 on CPU, 10 on CUDA)")
    ap.add_argument("--image-size", type=int, default=224, help="X-ray side for the paper models (default 224)")
    ap.add_argument("--small-image-size", type=int, default=224, help="X-ray side for the small models (default 224)")
    ap.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=None,
                    help="devices to measure (default: cpu, plus cuda when available)")
    ap.add_argument("--only", choices=("paper", "small"), default=None, help="measure only these models")
    ap.add_argument("--tiny", action="store_true", help="also the tiny test variants")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    if "cuda" in devices and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available")
    sizes = [args.only] if args.only else ["paper", "small"]
    if args.tiny:
        sizes.append("tiny")
    rows = []
    header = f"{'model':<58} {'device':<6} {'batch':>5} {'samples/s':>10}"
    print(f"torch {torch.__version__}, {args.threads} CPU thread(s)"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
    print(header)
    print("-" * len(header))
    for dev_name in devices:
        device = torch.device(dev_name)
        steps = args.steps or (30 if dev_name == "cuda" else 5)
        warmup = args.warmup if args.warmup is not None else (10 if dev_name == "cuda" else 2)
        for spec in specs(args.image_size, args.small_image_size, sizes):
            rate = measure(spec, device, args.batch, steps, warmup)
            label = dev_name + ("/fp16" if dev_name == "cuda" else "")
            rows.append({"model": spec.name, "size": spec.size, "kind": spec.kind, "device": label,
                         "batch": args.batch, "samples_per_s": rate, "steps": steps, "warmup": warmup})
            print(f"{spec.name:<58} {label:<6} {args.batch:>5} {rate:>10.1f}", flush=True)
    by = {(r["size"], r["kind"], r["device"]): r["samples_per_s"] for r in rows}
    ratios = [(size, kind, dev, by[(size, kind, dev)] / by[("paper", kind, dev)])
              for (size, kind, dev) in by if size != "paper" and ("paper", kind, dev) in by]
    if ratios:
        print()
        print("speed-up of the small variants (samples/s small / paper):")
        for size, kind, dev, r in ratios:
            print(f"  {size:<5} {kind:<12} {dev:<9} x{r:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "ratios": [dict(zip(("size", "kind", "device", "ratio"), r)) for r in ratios]},
                      f, indent=2)


if __name__ == "__main__":
    main()
