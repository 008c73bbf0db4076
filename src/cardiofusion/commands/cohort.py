"""``cardiofusion cohort build``: link the index tables into a labelled, split manifest.

A thin layer over :func:`cardiofusion.cohort.build_cohort`; settings come from the defaults, then
``--config FILE`` (a previous ``config.json`` or a YAML/JSON ``CohortConfig``), then the flags.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import ConfigError
from ..cohort.labels import ASCriteria

_INDEX_KINDS = ("ecg", "cxr", "echo")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cohort",
        help="build the linked, labelled and split cohort manifest",
        description="Cohort building from ECG, X-ray and echo index tables (see docs/data_layout.md).",
    )
    sub = parser.add_subparsers(dest="cohort_command", metavar="ACTION")
    sub.required = True
    b = sub.add_parser(
        "build",
        help="link ECG / X-ray / echo exams into records and write manifest.parquet",
        description=(
            "Link each echo to the closest X-ray within +-N days and every ECG within +-M days of that "
            "X-ray; label AS; split by patient; write manifest.parquet, flow.json, config.json and "
            "exclusions.parquet to --out."
        ),
    )
    inputs = b.add_argument_group("inputs")
    inputs.add_argument("--ecg-index", metavar="FILE", help="ECG index table (CSV or Parquet)")
    inputs.add_argument("--cxr-index", metavar="FILE", help="X-ray index table (CSV or Parquet)")
    inputs.add_argument("--echo-index", metavar="FILE", help="echo index table (CSV or Parquet)")
    inputs.add_argument("--export", metavar="DIR",
                        help="folder holding ecg_index.csv, cxr_index.csv and echo_index.csv (or .parquet); "
                             "an explicit --*-index overrides")
    inputs.add_argument("--column-map", metavar="YAML", help="column names of the export (ours -> theirs), YAML or JSON")
    inputs.add_argument("--decimal-comma", action="append", metavar="COLUMN",
                        help="a numeric column (our name, e.g. ava_cm2) written with a decimal comma ('3,14'); "
                             "repeat for several; plausibility ranges go in --config (plausible_ranges)")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder")
    b.add_argument("--config", metavar="FILE", help="CohortConfig as JSON/YAML (e.g. a previous config.json)")

    link = b.add_argument_group("linkage")
    link.add_argument("--cxr-within-days", type=float, metavar="DAYS", help="echo -> closest X-ray within +-days (default 90)")
    link.add_argument("--ecg-within-days", type=float, metavar="DAYS", help="X-ray -> every ECG within +-days (default 7)")
    link.add_argument("--window-basis", choices=("date", "datetime"), help="compare calendar dates (default) or exact times")
    link.add_argument("--cxr-requires-ecg", action="store_true", default=None,
                      help="only X-rays with an ECG in the window compete for an echo")
    link.add_argument("--min-age", type=float, metavar="YEARS", help="adults only: minimum age at the echo (default 18)")
    link.add_argument("--duplicate-exam-ids", choices=("drop", "first"),
                      help="rows sharing an exam_id with different content: drop all (default) or keep the first")

    lab = b.add_argument_group("label")
    lab.add_argument("--as-peak-velocity", type=float, metavar="M_S", help="AS if peak velocity >= (default 2.5 m/s)")
    lab.add_argument("--as-mean-gradient", type=float, metavar="MMHG", help="AS if mean gradient >= (default 20 mmHg)")
    lab.add_argument("--as-ava", type=float, metavar="CM2", help="AS if valve area <= (default 1.5 cm2)")
    lab.add_argument("--require-all-measurements", action="store_true", default=None,
                     help="a negative label needs all three measurements (else undeterminable, excluded)")

    sp = b.add_argument_group("split")
    sp.add_argument("--seed", type=int, help="seed of the patient split and folds (default 0)")
    sp.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                    help="patient fractions (default 0.70 0.15 0.15)")
    sp.add_argument("--folds", type=int, metavar="K", help="also assign K folds grouped by patient")
    sp.add_argument("--fold-scope", choices=("all", "train_val"), help="patients that get a fold (default all)")
    sp.add_argument("--no-stratify", action="store_true", default=None, help="do not stratify by patient label")

    b.add_argument("--json", action="store_true", help="print the flow as JSON instead of the table")
    b.set_defaults(func=run_build)

    fa = sub.add_parser(
        "from-adapter",
        help="one-modality manifest (ECG-only or X-ray-only) from an adapter's output, with a task's columns",
        description=(
            "Turn the output of 'cardiofusion adapt {ptbxl,cinc,nih,mimic}' into manifest.parquet + config.json "
            "with one modality and the task's target columns, keeping the data set's split, grouped by patient "
            "(PTB-XL strat_fold; MIMIC's official split; otherwise a seeded patient-grouped split, by record or "
            "image where the data set has no patient ids). Then 'cardiofusion cache build' works on it."
        ),
    )
    fa.add_argument("src", metavar="DIR", help="folder written by cardiofusion adapt")
    fa.add_argument("--task", required=True, metavar="TASK",
                    help="built-in task name (e.g. ptbxl_superclass, ptbxl_lvh, nih_cardiomegaly) or a task YAML/JSON")
    fa.add_argument("--out", metavar="DIR", help="output folder (default: DIR/cohort-<task>)")
    fa.add_argument("--modality", choices=("ecg", "cxr"), help="which index to use when the adapter wrote both (MIMIC)")
    fa.add_argument("--val-folds", type=int, nargs="+", metavar="K", help="data set folds (strat_fold) used for val")
    fa.add_argument("--test-folds", type=int, nargs="+", metavar="K", help="data set folds (strat_fold) used for test")
    fa.add_argument("--split", type=float, nargs=3, metavar=("TRAIN", "VAL", "TEST"), default=(0.70, 0.15, 0.15),
                    help="patient fractions of a random split, when the data set has no split (default 0.70 0.15 0.15)")
    fa.add_argument("--seed", type=int, default=0, help="seed of a random split (default 0)")
    fa.set_defaults(func=run_from_adapter)


def _resolve_inputs(args: argparse.Namespace) -> dict[str, Path]:
    from ..cohort.tables import DEFAULT_FILENAMES

    found: dict[str, Path | None] = {k: getattr(args, f"{k}_index") for k in _INDEX_KINDS}
    if args.export:
        folder = Path(args.export)
        if not folder.is_dir():
            raise ConfigError(f"--export {folder}: not a folder")
        for kind in _INDEX_KINDS:
            if found[kind]:
                continue
            csv = folder / DEFAULT_FILENAMES[kind]
            pq = csv.with_suffix(".parquet")
            found[kind] = csv if csv.exists() or not pq.exists() else pq
    missing = [f"--{k}-index" for k in _INDEX_KINDS if not found[k]]
    if missing:
        raise ConfigError(f"missing {', '.join(missing)} (or give --export DIR)")
    return {k: Path(v) for k, v in found.items()}


def config_from_args(args: argparse.Namespace):
    """Defaults <- ``--config`` file <- explicit flags."""
    from ..cohort import CohortConfig

    cfg = CohortConfig.from_file(args.config) if args.config else CohortConfig()
    changes = {}
    for flag, field in (
        ("cxr_within_days", "cxr_within_days"), ("ecg_within_days", "ecg_within_days"),
        ("window_basis", "window_basis"), ("cxr_requires_ecg", "cxr_requires_ecg"), ("min_age", "min_age"),
        ("duplicate_exam_ids", "duplicate_exam_ids"), ("require_all_measurements", "require_all_measurements"),
        ("seed", "seed"), ("folds", "n_folds"), ("fold_scope", "fold_scope"),
    ):
        v = getattr(args, flag)
        if v is not None:
            changes[field] = v
    if args.split is not None:
        changes["split_fractions"] = tuple(args.split)
    if getattr(args, "decimal_comma", None):
        changes["decimal_comma"] = tuple(dict.fromkeys([*cfg.decimal_comma, *args.decimal_comma]))
    if args.no_stratify:
        changes["stratify"] = False
    crit = {k: v for k, v in (("peak_velocity_m_s", args.as_peak_velocity), ("mean_gradient_mmhg", args.as_mean_gradient),
                              ("ava_cm2", args.as_ava)) if v is not None}
    if crit:
        base = cfg.criteria.to_dict()
        base.update(crit)
        changes["criteria"] = ASCriteria(**base)
    return cfg.replace(**changes) if changes else cfg


def run_build(args: argparse.Namespace) -> int:
    from ..cohort import build_cohort, format_flow

    inputs = _resolve_inputs(args)
    config = config_from_args(args)
    result = build_cohort(inputs["ecg"], inputs["cxr"], inputs["echo"], args.out, config, column_map=args.column_map)
    if args.json:
        print(json.dumps(result.flow, indent=2))
        return 0
    print(format_flow(result.flow))
    print()
    for name, path in result.files.items():
        print(f"{name:<11} {path}")
    return 0


def run_from_adapter(args: argparse.Namespace) -> int:
    from ..adapters.single_modality import single_modality_cohort
    from ..tasks import load_task

    task = load_task(args.task)
    out = Path(args.out) if args.out else Path(args.src) / f"cohort-{task.name}"
    res = single_modality_cohort(args.src, task.columns, out, modality=args.modality, val_folds=args.val_folds,
                                 test_folds=args.test_folds, fractions=tuple(args.split), seed=args.seed,
                                 task=task.to_dict())
    info = res.info
    print(f"{info['dataset']}: {info['modalities'][0]}-only cohort for task {task.name} ({task.kind})")
    print(f"split: {info['split_rule']} (grouped by {info['split_unit']})")
    for s in ("train", "val", "test"):
        unit = info["split_unit"].split(" ")[0]
        line = f"  {s:<5} {info['records'][s]:>6} records  {info['patients'][s]:>6} {unit}s"
        frame = res.manifest[res.manifest["split"] == s]
        pos = [f"{c} {int((frame[c] == 1).sum())}" for c in task.columns
               if set(frame[c].dropna().unique()) <= {0, 1} and len(frame[c].dropna())]
        print(line + ("  positives: " + ", ".join(pos) if pos else ""))
    for name, path in res.files.items():
        print(f"{name:<9} {path}")
    return 0
