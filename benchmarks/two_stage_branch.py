"""Stage 1 of the two-stage recipe for one branch only: train it and measure it on its own held-out test pool.

The README's X-ray branch number (NIH cardiomegaly at 128 px, the pseudo-paired cohort's NIH pool: 2,662 train /
888 validation / 888 test images) came from::

    python benchmarks/two_stage_branch.py --config two_stage.yaml --out OUT --modality cxr \\
        --set cxr_branch_epochs=6 --set cxr_scale_range=0.1 --set cxr_translate_frac=0.06

with ``two_stage.yaml`` the README's (``cohort``: the ``pairing build`` folder).  It runs exactly the recipe's
stage 1 (:func:`cardiofusion.recipes.two_stage.stage1`) into ``OUT/stage1/<modality>`` -- so a later
``cardiofusion recipe run two-stage ... --out OUT`` with the same settings reuses the run -- and prints the
branch's validation AUROC and its test-pool AUROC with the patient-bootstrap CI
(:func:`~cardiofusion.recipes.two_stage.branch_test_aurocs`); ``OUT/branch_<modality>.json`` keeps them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cardiofusion.configfile import jsonable
from cardiofusion.recipes.registry import get_recipe
from cardiofusion.recipes.steps import resolve_cohort
from cardiofusion.recipes.two_stage import branch_test_aurocs, stage1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the two-stage recipe's YAML")
    ap.add_argument("--out", required=True, help="the recipe's output folder")
    ap.add_argument("--modality", choices=("ecg", "cxr"), required=True)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    args = ap.parse_args()
    config = get_recipe("two-stage").load_config(args.config, args.set)
    out = Path(args.out)
    branches = stage1(config, resolve_cohort(config.cohort), out, log=print, modalities=(args.modality,))
    run = branches[args.modality]["run"]
    test = branch_test_aurocs(branches, config.n_boot, config.seed)[args.modality]
    result = {"modality": args.modality, "run": str(run.run_dir), "val_auroc": run.val_auroc,
              "best_epoch": run.result.best_epoch, "test_pool": test, "config": config.to_dict()}
    (out / f"branch_{args.modality}.json").write_text(json.dumps(jsonable(result), indent=2) + "\n")
    print(f"{args.modality} branch: val AUROC {run.val_auroc:.3f} (best epoch {run.result.best_epoch}); test pool "
          f"AUROC {test['auroc']:.3f} ({test['ci_low']:.3f}-{test['ci_high']:.3f}), {test['records']} records, "
          f"{test['positives']} positive")


if __name__ == "__main__":
    main()
