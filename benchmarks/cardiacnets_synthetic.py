"""The measured CardiacNets (paper 003) run on the synthetic hospital export: synth -> cohort -> the
``cardiacnets`` recipe (MAE, alignment to the frozen EfficientNet-Lite0 teacher, ECG-only probe / fine-tuning
of the same ECG ViT from scratch, MAE only and MAE + alignment, evaluation with patient-bootstrap CIs).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/cardiacnets_synthetic.py OUT [--patients 600] [--set k=v ...]

Re-running reuses the export, the cohort, the cache and every finished run.  The numbers of the README
section "CardiacNets recipe" come from this script (OUT/cardiacnets/comparison.md, cardiacnets.json).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from cardiofusion.cohort import CohortConfig, build_cohort
from cardiofusion.recipes import get_recipe, save_recipe_config
from cardiofusion.recipes.demo import demo_synth_config
from cardiofusion.recipes.steps import ensure_cache, ensure_export, resolve_cohort

#: The CPU configuration measured (on the shared 1,200-patient export, ``--export``): 250 Hz (the paper's
#: rate), 2 s windows of 25-sample (0.1 s) patches, evaluation windows every 8 s, 64 px X-rays for the X-ray
#: model and teacher, ecg_vit_tiny; short schedules except the alignment (12 epochs at lr 1e-3, the checkpoint
#: chosen by validation ECG -> X-ray top-5, the recipe's default); the X-ray-model teacher; stage 4 at 64 px.
SETTINGS = ["cache.fs=250", "cache.duration_s=10", "cache.image_size=128", "preprocess.window_s=2",
            "preprocess.eval_stride_s=8", "preprocess.image_size=64", "encoder=ecg_vit_tiny",
            "encoder_kwargs.patch_len=25", "mae_epochs=4", "align_epochs=12", "align.lr=1e-3",
            "train.max_epochs=2", "train.patience=2", "n_boot=1000", "teacher=xray_model", "generate=true",
            "generate_epochs=6", "generator.image_size=64", "generator.block_out_channels=[16, 32, 64]",
            "sample_steps=20", "generate_records=200"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--export", type=Path, default=None,
                        help="an existing synthetic export (read only; e.g. the shared 1,200-patient one) instead "
                             "of writing OUT/export")
    parser.add_argument("--cache-only", action="store_true", help="build the cohort and the cache, then stop")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--pretrain-only", action="store_true",
                        help="the pretraining stages only (X-ray model, MAE, alignment, and the generator with "
                             "--set generate=true), e.g. beside the downstream runs from scratch")
    parser.add_argument("--only-task", default=None,
                        help="run the downstream stage of this task only (to run the tasks in parallel processes; "
                             "a last run without it reuses every run and writes the combined tables)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out
    t0 = time.perf_counter()
    export = args.export or out / "export"
    if args.export is None:
        ensure_export(export, demo_synth_config(args.patients, seed=0, workers=1), log=print)
    cohort = out / "cohort"
    if not (cohort / "manifest.parquet").is_file():
        build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv", cohort,
                     CohortConfig(seed=0))
    print(f"export + cohort: {time.perf_counter() - t0:.0f} s")
    recipe = get_recipe("cardiacnets")
    config = recipe.load_config(None, [f"cohort={cohort}", "progress=false", *SETTINGS, *args.overrides])
    if args.cache_only:
        ensure_cache(resolve_cohort(config.cohort), out / "cardiacnets" / "cache", config.cache, log=print)
        print(f"cohort + cache: {time.perf_counter() - t0:.0f} s")
        return 0
    if args.pretrain_only:
        return pretrain_only(config, out / "cardiacnets")
    if args.only_task:
        from cardiofusion.tasks import load_task

        config.tasks = [t for t in config.tasks if load_task(t).name == args.only_task]
    else:
        save_recipe_config("cardiacnets", config, out / "cardiacnets")
    command = "PYTHONPATH=src OMP_NUM_THREADS=1 python " + " ".join(["benchmarks/cardiacnets_synthetic.py",
                                                                       *sys.argv[1:]])
    recipe.run(config, out / "cardiacnets", command=command)
    print(f"total: {time.perf_counter() - t0:.0f} s")
    return 0


def pretrain_only(config, out: Path) -> int:
    """Stages 0-2 and 4 (X-ray model, MAE, alignment, generator judged), the library steps the recipe uses; a
    later run of the whole recipe reuses them."""
    from cardiofusion.recipes.cardiacnets import pretraining_stages
    from cardiofusion.recipes.steps import Stopwatch

    clock = Stopwatch()
    stages = pretraining_stages(config, out, clock=clock, log=print, downstream=False)
    for name, run in stages.runs.items():
        info = getattr(run.result, "info", {}) or {}
        print(f"{name}: {run.action} {run.run_dir} train samples/s {info.get('train_samples_per_s')}")
    print("seconds per stage:", {k: round(v, 1) for k, v in clock.seconds.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
