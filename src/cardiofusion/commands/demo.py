"""``cardiofusion demo --out DIR``: the whole pipeline on the built-in synthetic hospital export."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..synth import SynthConfig

    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the built-in synthetic hospital export",
        description="Generate a synthetic hospital export (ECG CSVs, X-ray DICOMs, echo and index tables), "
        "build the linked, labelled, patient-split cohort, decode everything into the preprocessing cache, "
        "train ECG-only, X-ray-only and cooperative models (small variants) and print the flow table, their "
        "validation AUROCs and where everything is. Re-running reuses identical earlier results.",
    )
    p.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
    p.add_argument("--patients", type=int, default=SynthConfig().n_patients,
                   help=f"synthetic patients (default {SynthConfig().n_patients})")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic export and of the split")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU cores, at most 8)")
    p.add_argument("--max-epochs", type=int, default=8, help="training epochs per model (default 8)")
    p.add_argument("--no-train", action="store_true", help="stop after the cache (no model training)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    from ..cohort import CohortConfig
    from ..demo import run_demo
    from ..synth import SynthConfig

    workers = args.workers or min(8, os.cpu_count() or 1)
    run_demo(
        args.out,
        synth_config=SynthConfig(n_patients=args.patients, seed=args.seed, workers=workers),
        cohort_config=CohortConfig(seed=args.seed),
        workers=workers,
        train=not args.no_train,
        max_epochs=args.max_epochs,
        progress=not args.no_progress,
    )
    return 0
