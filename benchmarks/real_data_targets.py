"""Single-modality models on the shared real data: PTB-XL superclasses / LVH (ECG only), NIH cardiomegaly (X-ray only).

    OMP_NUM_THREADS=1 python benchmarks/real_data_targets.py ptbxl_superclass --data ../shared/data --out /tmp/rd
    OMP_NUM_THREADS=1 python benchmarks/real_data_targets.py ptbxl_lvh --data ../shared/data --out /tmp/rd
    OMP_NUM_THREADS=1 python benchmarks/real_data_targets.py nih_cardiomegaly --data ../shared/data --out /tmp/rd

Each run: ``adapt`` -> ``cohort from-adapter`` (the data set's split, grouped by patient) -> ``cache build`` ->
``fit`` (the library's trainer with the task) -> ``evaluation.evaluate_runs`` on the test split (AUROC per label and
macro with 95% patient-bootstrap intervals, 1,000 resamples; ``OUT/<task>/evaluation/report.html``), the headline
numbers written to ``OUT/<task>/test_metrics.json`` and printed.  Small models, 1 thread, a few minutes each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


#: per task: adapter, from-adapter folds, cache and training settings
SETUPS = {
    "ptbxl_superclass": {"dataset": "ptbxl", "val_folds": [7], "test_folds": [8], "fs": 100.0, "max_epochs": 30},
    "ptbxl_lvh": {"dataset": "ptbxl", "val_folds": [5], "test_folds": [8], "fs": 100.0, "max_epochs": 30},
    "nih_cardiomegaly": {"dataset": "nih", "val_folds": None, "test_folds": None, "image_size": 128, "max_epochs": 1},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("task", choices=sorted(SETUPS))
    ap.add_argument("--data", default="../shared/data", help="folder with ptbxl/ and nih-cardiomegaly-128/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--max-epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from cardiofusion.adapters import NIHConfig, PTBXLConfig, adapt_nih, adapt_ptbxl
    from cardiofusion.adapters.single_modality import single_modality_cohort
    from cardiofusion.cache import CacheConfig, build_cache
    from cardiofusion.evaluation import evaluate_runs
    from cardiofusion.models import ModelConfig
    from cardiofusion.recipes.demo import demo_cxr_weights
    from cardiofusion.tasks import load_task
    from cardiofusion.training import TrainConfig, fit
    from cardiofusion.transforms.preprocess import PreprocessConfig

    torch.set_num_threads(1)
    setup = SETUPS[args.task]
    task = load_task(args.task)
    data, out = Path(args.data), Path(args.out) / args.task
    t0 = time.perf_counter()
    if setup["dataset"] == "ptbxl":
        # every mention counts (min_likelihood 0, the PTB-XL benchmarks' convention); all 8 shared folds kept
        res = adapt_ptbxl(data / "ptbxl", PTBXLConfig(sampling_rate=100, min_likelihood=0, fold_map="train=1-8"))
    else:
        res = adapt_nih(data / "nih-cardiomegaly-128", NIHConfig())
    res.write(out / "adapter")
    cohort = single_modality_cohort(out / "adapter", task.columns, out / "cohort", val_folds=setup["val_folds"],
                                    test_folds=setup["test_folds"], seed=args.seed, task=task.to_dict())
    manifest = cohort.files["manifest"]
    ecg = cohort.info["modalities"] == ["ecg"]
    cache_cfg = CacheConfig(fs=setup["fs"], duration_s=10.0) if ecg else CacheConfig(image_size=setup["image_size"])
    build_cache(manifest, out / "cache", cache_cfg, workers=1, progress=False, overwrite=True)
    t_data = time.perf_counter() - t0
    weights = None if ecg else demo_cxr_weights()
    model = (ModelConfig(fusion="ecg", ecg_encoder="ecg_resnet_tiny_transformer") if ecg else
             ModelConfig(fusion="cxr", cxr_encoder="tf_efficientnet_lite0" if weights else "cxr_tiny",
                         cxr_pretrained=weights or False))
    cfg = TrainConfig(
        cache_dir=str(out / "cache"), manifest=str(manifest), model=model,
        preprocess=PreprocessConfig(fs=setup.get("fs", 500.0), image_size=setup.get("image_size", 224)),
        batch_size=32, lr=1e-3 if ecg else 3e-4, max_epochs=args.max_epochs or setup["max_epochs"], patience=5,
        pos_weight="balanced", seed=args.seed, num_workers=0, accelerator="cpu", task=task.to_dict())
    run = out / "run"
    fit(cfg, run, progress=False)
    t_train = time.perf_counter() - t0 - t_data
    evaluation = evaluate_runs({args.task: run}, out / "evaluation", split="test", seed=args.seed, subgroups=())
    metrics = evaluation.models[args.task].metrics_dict()
    keys = ["auroc"] if task.kind == "binary" else [k for k in metrics if k.startswith("auroc:") or k == "macro_auroc"]
    result = {
        "task": args.task, "dataset": setup["dataset"], "modality": cohort.info["modalities"][0],
        "split_rule": cohort.info["split_rule"], "split_unit": cohort.info["split_unit"],
        "records": cohort.info["records"], "model": model.to_dict(),
        "test": {k: metrics[k] for k in keys}, "evaluation": str(out / "evaluation"),
        "seconds": {"data": round(t_data, 1), "train": round(t_train, 1)},
    }
    (out / "test_metrics.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("task", "records", "test", "seconds")}, indent=1, default=str))

if __name__ == "__main__":
    main()
