"""LS-EMVAE pretraining throughput: records per second for full optimiser steps (forward, loss, backward, AdamW).

Random 12-lead inputs (the speed does not depend on the values), the architecture by name
(``cardiofusion.models.lsvae.ARCHS``: ``paper`` is the published size, 5,000 samples per lead), one warm-up
step, then ``--steps`` timed steps.  Prints the parameter counts and records / s.

    python benchmarks/lsvae_throughput.py [--arch small] [--n-samples 5000] [--batch 16] [--steps 5]
        [--device cpu|cuda] [--precision 32|bf16|16] [--decoder per_lead|conditioned] [--reference-compat]
        [--fusion hime|mopoe|single] [--mixture moment|param_avg|sample]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from cardiofusion.models.lsvae import build_lsvae


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="small")
    ap.add_argument("--n-samples", type=int, default=5000)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="32", choices=["32", "bf16", "16"])
    ap.add_argument("--decoder", default="per_lead")
    ap.add_argument("--reference-compat", action="store_true")
    ap.add_argument("--fusion", default="hime", help="hime (LS-EMVAE), mopoe or single (the beta-VAE baseline)")
    ap.add_argument("--mixture", default="moment")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    device = torch.device(args.device)
    vae = build_lsvae(args.arch, n_samples=args.n_samples, decoder=args.decoder,
                      reference_compat=args.reference_compat, fusion=args.fusion, mixture=args.mixture).to(device)
    n_enc = sum(p.numel() for p in (vae.encoders or vae.encoder).parameters())
    n_all = sum(p.numel() for p in vae.parameters())
    print(f"arch={args.arch} fusion={args.fusion} mixture={args.mixture}")
    print(f"n_samples={args.n_samples} decoder={'shared' if args.reference_compat else args.decoder}"
          f" parameters: encoders {n_enc:,}, total {n_all:,}")
    opt = torch.optim.AdamW(vae.parameters(), lr=5e-4, weight_decay=1e-5)
    x = torch.randn(args.batch, 12, args.n_samples, device=device)
    dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(args.precision)
    scaler = torch.amp.GradScaler(device.type, enabled=args.precision == "16")

    def step() -> None:
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with ctx:
            loss = vae.loss(vae(x), x, beta=1.0)["loss"]
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    print(f"device={args.device} precision={args.precision} threads={torch.get_num_threads()} batch={args.batch}: "
          f"{args.batch * args.steps / dt:.1f} records/s ({dt / args.steps:.3f} s/step)")


if __name__ == "__main__":
    main()
