"""``cardiofusion evaluate``: metrics with bootstrap CIs, paired comparisons, calibration, subgroups, figures
and a self-contained ``report.html`` for one or more trained runs (``docs/evaluation.md``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


def add_threshold_options(p: argparse.ArgumentParser) -> None:
    """``--threshold youden`` / ``--target-sensitivity`` / ``--target-specificity`` / ``--calibration``."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", choices=("youden",), default=None,
                   help="decision threshold chosen on validation by the maximum Youden index (default)")
    g.add_argument("--target-sensitivity", type=float, metavar="S",
                   help="highest threshold whose validation sensitivity is at least S (screening, e.g. 0.9)")
    g.add_argument("--target-specificity", type=float, metavar="S",
                   help="lowest threshold whose validation specificity is at least S")
    p.add_argument("--calibration", choices=("platt", "isotonic", "none"), default="platt",
                   help="score -> probability map fitted on validation (default: platt)")


def threshold_rule(args: argparse.Namespace) -> tuple[str, float | None]:
    if args.target_sensitivity is not None:
        return "sensitivity", args.target_sensitivity
    if args.target_specificity is not None:
        return "specificity", args.target_specificity
    return "youden", None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate trained runs: metrics with bootstrap CIs, comparisons, subgroups, HTML report",
        description="Evaluate one or more run folders on a split of their cohort. Per model, a calibrator and "
        "a decision threshold are fitted on the validation split and applied unchanged to the evaluated split; "
        "every metric gets a patient-level bootstrap CI; every pair of models a paired bootstrap comparison "
        "(and DeLong's test for AUROC). Writes metrics.json, metrics.csv, comparisons.csv, subgroups.csv, "
        "predictions.csv, figures/*.png, models/<name>/calibration.json and report.html into --out.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (cardiofusion train)")
    p.add_argument("--out", required=True, help="evaluation folder to write")
    p.add_argument("--name", action="append", metavar="NAME",
                   help="display name of each RUN, in order (repeat; default: the folder names)")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="split to evaluate (default: test)")
    add_threshold_options(p)
    p.add_argument("--subgroups", default="age,sex,pacemaker,atrial_fibrillation",
                   help="comma-separated cohort columns, bands as age:50/65/75 (default: "
                        "age,sex,pacemaker,atrial_fibrillation; 'none' for no subgroups)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap resamples (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level (default: 0.95)")
    p.add_argument("--reference", metavar="NAME",
                   help="model the others are compared against in the Table 2 layout (default: the last RUN)")
    p.add_argument("--manifest", help="cohort manifest for subgroups and the split summary (default: the first run's)")
    p.add_argument("--flow", help="cohort flow.json (default: beside the manifest)")
    p.add_argument("--task", metavar="NAME|FILE",
                   help="task of the score tables when the runs' config.yaml has none (a built-in task name such as "
                        "as_severity, or a task YAML/JSON file); default: the runs' own task, else binary AS. A RUN "
                        "may also be a folder holding only val_scores.csv / scores_<split>.csv.")
    p.add_argument("--title", default=None,
                   help="report title (default: 'Aortic stenosis screening: model evaluation', or the task's name)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..evaluation import evaluate_runs

    names = args.name or [Path(r).name for r in args.runs]
    if len(names) != len(args.runs):
        raise ConfigError(f"{len(args.runs)} runs but {len(names)} --name values")
    if len(set(names)) != len(names):
        raise ConfigError(f"model names must differ: {names} (use --name)")
    rule, target = threshold_rule(args)
    subgroups = [] if args.subgroups.strip().lower() in ("", "none") else args.subgroups
    result = evaluate_runs(dict(zip(names, args.runs)), args.out, split=args.split, manifest=args.manifest,
                           flow=args.flow, threshold_rule=rule, target=target, calibration=args.calibration,
                           subgroups=subgroups, n_boot=args.bootstrap, seed=args.seed, level=args.level,
                           reference=args.reference, title=args.title, progress=not args.no_progress,
                           task=args.task)
    for line in result.summary_lines():
        print(line)
    for note in result.notes:
        print(f"note: {note}")
    print(f"evaluation folder: {result.out_dir}")
    print(f"  metrics          {result.paths['metrics_json']}")
    print(f"  report           {result.report}")
    return 0
