"""``cardiofusion synth --out DIR``: write the built-in synthetic hospital export (demo data)."""

from __future__ import annotations

import argparse

from ..synth import SynthConfig, generate_export


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = SynthConfig()
    p = sub.add_parser(
        "synth",
        help="generate a synthetic hospital export (ECG CSVs, X-ray DICOMs, index tables, ground truth)",
        description="Generate demo data in the formats of a hospital export: 12-lead ECG CSVs (500 Hz, 15 s, "
        "1.25 uV counts), chest X-ray DICOMs, ecg/cxr/echo index tables and ground_truth/ with the planted "
        "AS signs and an oracle AUROC. The same seed gives identical files for any --workers.",
    )
    p.add_argument("--out", required=True, help="export folder to create")
    p.add_argument("--patients", type=int, default=d.n_patients, help=f"patients (default {d.n_patients}; paper 7483)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--workers", type=int, default=d.workers, help="processes writing files (default 1)")
    p.add_argument("--prevalence", type=float, default=d.as_prevalence,
                   help=f"fraction of patients with AS (default {d.as_prevalence})")
    p.add_argument("--cxr-size", type=int, default=d.cxr_size, help=f"X-ray side in pixels (default {d.cxr_size})")
    p.add_argument("--defects", type=int, default=None,
                   help="broken files to inject, split between ECG and X-ray (default 2: one of each; 0 for clean data)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier export in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = SynthConfig(n_patients=args.patients, seed=args.seed, workers=args.workers,
                      as_prevalence=args.prevalence, cxr_size=args.cxr_size)
    if args.defects is not None:
        cfg.n_defective_ecg = (args.defects + 1) // 2
        cfg.n_defective_cxr = args.defects // 2
    result = generate_export(args.out, cfg, overwrite=args.overwrite, progress=not args.no_progress)
    for line in result.summary_lines():
        print(line)
    return 0
