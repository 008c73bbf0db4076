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
from cardiofusion.recipes.steps import ensure_export

#: The CPU configuration measured: 250 Hz (the paper's rate), 2 s windows of 25-sample (0.1 s) patches,
#: 128 px X-rays for the teacher; ecg_vit_tiny; short schedules.
SETTINGS = ["cache.fs=250", "cache.duration_s=10", "cache.image_size=128", "preprocess.window_s=2",
            "preprocess.eval_stride_s=2", "preprocess.image_size=128", "encoder=ecg_vit_tiny",
            "encoder_kwargs.patch_len=25", "mae_epochs=15", "align_epochs=4", "train.max_epochs=3",
            "train.patience=2", "n_boot=1000"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--patients", type=int, default=600)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--generator-only", action="store_true",
                        help="stage 4 only (ECG -> X-ray generator on the finished alignment run), e.g. beside the "
                             "downstream runs; settings from --set (generate_epochs, generator.*, sample_steps...)")
    parser.add_argument("--only-task", default=None,
                        help="run the downstream stage of this task only (to run the tasks in parallel processes; "
                             "a last run without it reuses every run and writes the combined tables)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = args.out
    t0 = time.perf_counter()
    ensure_export(out / "export", demo_synth_config(args.patients, seed=0, workers=1), log=print)
    cohort = out / "cohort"
    if not (cohort / "manifest.parquet").is_file():
        export = out / "export"
        build_cohort(export / "ecg_index.csv", export / "cxr_index.csv", export / "echo_index.csv", cohort,
                     CohortConfig(seed=0))
    print(f"export + cohort: {time.perf_counter() - t0:.0f} s")
    recipe = get_recipe("cardiacnets")
    config = recipe.load_config(None, [f"cohort={cohort}", "progress=false", *SETTINGS, *args.overrides])
    if args.generator_only:
        return generator_only(config, out / "cardiacnets")
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


def generator_only(config, out: Path) -> int:
    """Stage 4 on the recipe's finished stage-1 / stage-2 runs in ``out`` (the library steps the recipe uses)."""
    from cardiofusion.recipes.cardiacnets import generation_step, pretrain_config, stage_preprocess
    from cardiofusion.recipes.steps import ensure_pretrain_run, resolve_cohort

    manifest = resolve_cohort(config.cohort)
    cache = Path(config.cache_dir) if config.cache_dir else out / "cache"
    pre = stage_preprocess(config, cache)
    mae = ensure_pretrain_run(pretrain_config(config, "mae", cache, manifest, pre), out / "runs" / "mae", log=print)
    align = ensure_pretrain_run(pretrain_config(config, "align", cache, manifest, pre,
                                                ecg_init=str(mae.result.best_checkpoint.resolve())),
                                out / "runs" / "align", log=print)
    gen_config = pretrain_config(config, "generate", cache, manifest, pre,
                                 ecg_init=str(align.result.best_checkpoint.resolve()))
    gen = ensure_pretrain_run(gen_config, out / "runs" / "generate", log=print)
    summary = generation_step(config, gen_config, gen.result.best_checkpoint, out / "generation", log=print)
    print({k: v for k, v in summary.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
