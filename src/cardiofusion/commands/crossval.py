"""``cardiofusion crossval``: patient-grouped k-fold cross-validation of one training recipe, mean +- sd."""

from __future__ import annotations

import argparse
import dataclasses

from ..errors import ConfigError
from .evaluate import add_threshold_options, threshold_rule


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "crossval",
        help="k-fold cross-validation grouped by patient: one run per fold, mean +- sd per metric",
        description="Train the recipe of --config once per fold (fold i = test, fold i+1 = validation, the "
        "rest = training; folds from the manifest's fold column, else assigned here by patient), evaluate "
        "each fold like `cardiofusion evaluate`, and summarise the folds as mean +- sd. Writes "
        "OUT/fold_<i>/{manifest.parquet,run,evaluation}, OUT/crossval.json, crossval.csv and crossval.png.",
    )
    p.add_argument("--config", required=True, metavar="YAML",
                   help="training config (e.g. a run's config.yaml; its cache_dir and manifest are used)")
    p.add_argument("--out", required=True, help="cross-validation folder")
    p.add_argument("--folds", type=int, metavar="K", help="number of folds when the manifest has none (default: 5)")
    p.add_argument("--only", metavar="I,J", help="run only these test folds (comma-separated)")
    p.add_argument("--max-epochs", type=int, help="override the config's max_epochs")
    p.add_argument("--bootstrap", type=int, default=200, metavar="B",
                   help="bootstrap resamples of each fold's evaluation (default: 200)")
    p.add_argument("--seed", type=int, default=0, help="fold assignment and bootstrap seed (default: 0)")
    add_threshold_options(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..recipes.crossval import cross_validate
    from ..training import TrainConfig

    config = TrainConfig.from_file(args.config)
    if args.max_epochs is not None:
        config = dataclasses.replace(config, max_epochs=args.max_epochs)
    if not config.cache_dir or not config.manifest:
        raise ConfigError("the config needs cache_dir and manifest")
    only = None
    if args.only:
        try:
            only = [int(x) for x in args.only.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--only takes fold numbers like 0,2; got {args.only!r}") from None
    rule, target = threshold_rule(args)
    result = cross_validate(config, args.out, n_folds=args.folds, folds=only, seed=args.seed, n_boot=args.bootstrap,
                            threshold_rule=rule, target=target, calibration=args.calibration,
                            progress=not args.no_progress)
    for line in result.summary_lines():
        print(line)
    print(f"cross-validation folder: {result.out_dir}")
    print(f"  summary          {result.paths['crossval_json']}")
    return 0
