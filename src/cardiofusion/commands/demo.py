"""``cardiofusion demo --out DIR``: the whole pipeline on the built-in synthetic hospital export."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the built-in synthetic hospital export",
        description="Generate a synthetic hospital export (ECG CSVs, X-ray DICOMs, echo and index tables), "
        "build the linked, labelled, patient-split cohort, decode everything into the preprocessing cache, "
        "train ECG-only, X-ray-only and cooperative models (small variants), explain a few test patients, "
        "evaluate the three models on the test split (bootstrap CIs, paired comparisons, report.html) and "
        "print the flow table, the metrics and where everything is. Re-running reuses identical earlier results.",
    )
    p.add_argument("--out", default="runs/demo", help="demo folder (default runs/demo)")
    p.add_argument("--patients", type=int, default=400, help="synthetic patients (default 400)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic export and of the split")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU cores, at most 8)")
    p.add_argument("--max-epochs", type=int, default=None,
                   help="cap on the training epochs of every model (default: ECG 6, X-ray 4, cooperative 2)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the evaluation (default 1000)")
    p.add_argument("--no-train", action="store_true", help="stop after the cache (no model training)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..recipes.demo import DemoConfig, run_demo_recipe

    config = DemoConfig(patients=args.patients, seed=args.seed, workers=args.workers, train=not args.no_train,
                        max_epochs=args.max_epochs, n_boot=args.bootstrap, progress=not args.no_progress)
    run_demo_recipe(config, args.out)
    return 0
