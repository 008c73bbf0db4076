"""``cardiofusion adapt {ptbxl,cinc,nih,mimic} SRC --out DIR``: a public data set -> index tables + labels.

A thin layer over :mod:`cardiofusion.adapters`; layouts and label definitions in ``docs/public_data.md``.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError

#: Exclusions printed before "... and N more (see exclusions.csv)".
MAX_LISTED = 10


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "adapt",
        help="turn a public data set (PTB-XL, CinC, NIH, MIMIC) into index tables and labels",
        description="Read a public data set in its original layout and write ecg_index.csv / cxr_index.csv, "
                    "labels.csv, exclusions.csv and adapter.json to --out (docs/public_data.md).",
    )
    sub = parser.add_subparsers(dest="adapt_command", metavar="DATASET")
    sub.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--out", required=True, metavar="DIR", help="output folder")
        p.add_argument("--verify-read", action="store_true",
                       help="read every file with the library's reader and exclude unreadable ones (slow)")

    p = sub.add_parser("ptbxl", help="PTB-XL (ptbxl_database.csv, scp_statements.csv, records100/500)",
                       description="PTB-XL -> ECG index (one rate), labels LVH / HYP / NORM from scp_codes, "
                                   "strat_fold mapped to train/val/test.")
    p.add_argument("src", metavar="SRC", help="PTB-XL folder (holds ptbxl_database.csv)")
    common(p)
    p.add_argument("--sampling-rate", type=int, choices=(100, 500), default=500,
                   help="records100 or records500 (default: %(default)s Hz)")
    p.add_argument("--min-likelihood", type=float, default=50.0,
                   help="smallest scp_codes likelihood (%%) counted as a label (default: %(default)g; 0 = any mention)")
    p.add_argument("--fold-map", default=None, metavar="SPEC",
                   help="strat_fold -> split, e.g. 'train=1-6,val=7,test=8' or 'train=1-4+6-7,val=5,test=8' "
                        "(default: PTB-XL's recommendation train=1-8,val=9,test=10)")
    p.set_defaults(func=run)

    p = sub.add_parser("cinc", help="PhysioNet/CinC 2020-2021 (.hea + .mat, #Dx SNOMED codes; SPH .h5 + metadata.csv)",
                       description="Every Challenge record under SRC -> ECG index, SNOMED labels (LVH = 164873001).")
    p.add_argument("src", metavar="SRC", help="folder tree of Challenge records")
    common(p)
    p.add_argument("--strict", action="store_true", help="stop at the first malformed header instead of excluding it")
    p.set_defaults(func=run)

    p = sub.add_parser("nih", help="NIH ChestX-ray14 (Data_Entry_2017.csv, or labelled folders)",
                       description="NIH ChestX-ray14 -> X-ray index + finding labels (cardiomegaly ...).")
    p.add_argument("src", metavar="SRC", help="NIH folder (Data_Entry_2017.csv + images, or cardiomegaly/ no_cardiomegaly/)")
    common(p)
    p.add_argument("--layout", choices=("auto", "csv", "folders"), default="auto", help="(default: %(default)s)")
    p.add_argument("--labels-csv", metavar="FILE", help="Data_Entry_2017.csv elsewhere than SRC")
    p.add_argument("--folder-label", action="append", default=None, metavar="FOLDER=0|1",
                   help="folder layout: label of a folder (repeatable; default cardiomegaly=1, no_cardiomegaly=0)")
    p.set_defaults(func=run)

    p = sub.add_parser("mimic", help="MIMIC-IV-ECG + MIMIC-CXR-JPG (credentialed PhysioNet data)",
                       description="MIMIC-IV-ECG and/or MIMIC-CXR-JPG -> ECG and X-ray indexes, labels, and the "
                                   "same-subject ECG-X-ray pairs within --pair-within-days.")
    p.add_argument("src", metavar="SRC", nargs="?", help="folder holding both module roots (found by their CSVs)")
    common(p)
    p.add_argument("--ecg-root", metavar="DIR", help="MIMIC-IV-ECG root (holds record_list.csv)")
    p.add_argument("--cxr-root", metavar="DIR", help="MIMIC-CXR-JPG root (holds mimic-cxr-2.0.0-metadata.csv)")
    p.add_argument("--views", default="PA,AP", help="X-ray views kept (default: %(default)s)")
    p.add_argument("--uncertain", choices=("exclude", "positive", "negative"), default="exclude",
                   help="CheXpert -1 for Cardiomegaly (default: %(default)s)")
    p.add_argument("--not-mentioned", choices=("no_finding", "negative", "unknown"), default="no_finding",
                   help="empty Cardiomegaly cell (default: %(default)s)")
    p.add_argument("--pair-within-days", type=float, default=7.0, help="ECG-X-ray pairing window (default: %(default)g)")
    p.set_defaults(func=run)


def _folder_labels(values: list[str] | None) -> dict[str, int] | None:
    if not values:
        return None
    out = {}
    for v in values:
        name, _, lab = v.partition("=")
        if lab not in ("0", "1") or not name:
            raise ConfigError(f"--folder-label expects FOLDER=0 or FOLDER=1, got {v!r}")
        out[name] = int(lab)
    return out


def adapt_from_args(args: argparse.Namespace):
    """Run the adapter the parsed arguments ask for; returns its :class:`AdapterResult`."""
    from .. import adapters as A

    name = args.adapt_command
    if name == "ptbxl":
        return A.adapt_ptbxl(args.src, A.PTBXLConfig(sampling_rate=args.sampling_rate, min_likelihood=args.min_likelihood,
                                                     fold_map=args.fold_map, verify_read=args.verify_read))
    if name == "cinc":
        return A.adapt_cinc(args.src, A.CinCConfig(strict=args.strict, verify_read=args.verify_read))
    if name == "nih":
        kw = {"layout": args.layout, "labels_csv": args.labels_csv, "verify_read": args.verify_read}
        labels = _folder_labels(args.folder_label)
        if labels is not None:
            kw["folder_labels"] = labels
        return A.adapt_nih(args.src, A.NIHConfig(**kw))
    if args.verify_read:
        raise ConfigError("--verify-read is not available for mimic (the cache build reports unreadable files)")
    if args.src is None and args.ecg_root is None and args.cxr_root is None:
        raise ConfigError("mimic needs SRC or --ecg-root / --cxr-root")
    cfg = A.MimicConfig(views=tuple(v.strip() for v in args.views.split(",") if v.strip()), uncertain=args.uncertain,
                        not_mentioned=args.not_mentioned, pair_within_days=args.pair_within_days)
    return A.adapt_mimic(args.src, ecg_root=args.ecg_root, cxr_root=args.cxr_root, config=cfg)


def run(args: argparse.Namespace) -> int:
    result = adapt_from_args(args)
    files = result.write(args.out)
    counts = result.counts()
    print(f"{result.dataset}: {counts['ecg']} ECG and {counts['cxr']} X-ray records indexed, "
          f"{counts['excluded']} excluded -> {args.out}")
    for c in result.info.get("label_columns", []):
        if f"{c}_positive" in counts:
            print(f"  {c:<22} {counts[f'{c}_positive']:>6} positive  {counts[f'{c}_negative']:>6} negative"
                  + (f"  {counts[f'{c}_unknown']:>6} unknown" if counts[f"{c}_unknown"] else ""))
    if "split" in counts:
        print("  split: " + ", ".join(f"{k} {v}" for k, v in counts["split"].items()))
    if "pairs" in counts:
        print(f"  {counts['pairs']} same-subject ECG-X-ray pairs ({files['pairs'].name})")
    if len(result.exclusions):
        print(f"excluded ({files['exclusions'].name}):")
        for row in result.exclusions.head(MAX_LISTED).itertuples():
            print(f"  {row.table}  {row.exam_id}: {row.reason}")
        if len(result.exclusions) > MAX_LISTED:
            print(f"  ... and {len(result.exclusions) - MAX_LISTED} more")
    return 0
