"""``cardiofusion predict``: screen one patient (``--ecg`` / ``--cxr``) or a table of patients (``--batch``)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="screen one patient (--ecg/--cxr) or many (--batch TABLE --out FILE) with a model bundle",
        description="Screen patients with a model bundle (cardiofusion export). One patient: --ecg and/or "
        "--cxr; prints the calibrated probability, the decision at the bundle's threshold, the modalities "
        "used and the per-branch scores (--json: one JSON object); bundles of other tasks print every class's "
        "probability and the predicted class, every label's probability and decision, or values in units. Many: --batch TABLE (CSV with "
        "patient_id, ecg, cxr columns; optional ecg_fs, ecg_units, ecg_resolution_uv) --out FILE (.csv or "
        ".jsonl); rows that fail are listed and the rest still predicted.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="model bundle folder")
    p.add_argument("--ecg", metavar="FILE", help="ECG file (CSV, WFDB .hea, CinC .mat, DICOM, HDF5, NumPy)")
    p.add_argument("--cxr", metavar="FILE", help="chest X-ray file (DICOM, PNG, JPEG)")
    p.add_argument("--patient-id", help="identifier echoed in the output (never read from the files)")
    p.add_argument("--batch", metavar="TABLE", help="CSV/Parquet of patients (patient_id, ecg, cxr)")
    p.add_argument("--out", metavar="FILE", help="output of --batch (.csv, .jsonl or .xlsx; never an input)")
    p.add_argument("--explain", metavar="DIR", help="write the heat maps (X-ray Grad-CAM, 12-lead map) as PNGs here")
    p.add_argument("--cxr-layer", action="append", metavar="LAYER",
                   help="X-ray Grad-CAM layer of --explain: 'last' (default), a timm stage index (-2: stride 16, "
                        "finer) or a module name; repeat to average several")
    p.add_argument("--target", metavar="TARGET",
                   help="with --explain, for bundles of multiclass / multilabel / regression tasks: the class "
                        "(name or index), label name or output index to explain (default: the predicted class, "
                        "each positive label or else the first, the first target)")
    p.add_argument("--generate-image", metavar="OUT.png",
                   help="bundles exported with an ECG -> X-ray generator (cardiacnets recipe): also write the image "
                        "generated from the ECG here, titled GENERATED; it is synthetic, never a real X-ray")
    p.add_argument("--seed", type=int, default=0, help="noise seed of --generate-image (default 0)")
    p.add_argument("--json", action="store_true", help="print one JSON object per patient")
    p.add_argument("--runtime", choices=("torch", "onnx"), default=None,
                   help="PyTorch or ONNX Runtime on the bundle's model.onnx (default: the bundle's choice, torch "
                        "unless exported otherwise; onnx for int8)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                   help="arithmetic: fp32, bf16 (PyTorch autocast; CPUs with AVX512-BF16/AMX), int8 (ONNX Runtime "
                        "quantised graph); only a precision the bundle passed at export (default: the bundle's choice)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="--batch: processes reading and preprocessing files while the model runs (default: none "
                        "for small tables, else one per spare core, at most 4)")
    p.add_argument("--batch-size", type=int, default=16, metavar="P",
                   help="--batch: patients per model call (their ECG windows in one forward pass; default 16)")
    p.add_argument("--resume", action="store_true",
                   help="--batch: continue an existing --out (.csv/.jsonl) where a killed run stopped; every "
                        "patient is written exactly once")
    p.add_argument("--ecg-fs", type=float, help="sampling rate of headerless ECG files (default: the training export's)")
    p.add_argument("--ecg-units", choices=("mV", "uV", "counts"), help="units of headerless ECG files")
    p.add_argument("--ecg-resolution-uv", type=float, help="microvolts per count for --ecg-units counts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (--batch)")
    p.set_defaults(func=run)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:+.4f}"


def _print_task_result(screener, result, patient_id: str | None) -> None:
    """Text output of a multiclass / multilabel / regression result: one line per class / label / target."""
    task = screener.task
    if patient_id:
        print(f"patient      {patient_id}")
    print(f"task         {task.name} ({task.kind}{', ordinal' if task.ordinal else ''})")
    print(f"result       {result.summary()}")
    width = max(len(o["name"]) for o in result.outputs)
    for o in result.outputs:
        if task.kind == "regression":
            print(f"  {o['name']:<{width}}  {o['value']:.4g}{(' ' + o['unit']) if o['unit'] else ''}")
        elif task.kind == "multiclass":
            mark = "  <- predicted" if o["decision"] == "predicted" else ""
            print(f"  {o['name']:<{width}}  p = {o['probability']:.3f}{mark}")
        else:
            print(f"  {o['name']:<{width}}  p = {o['probability']:.3f}  {o['decision'].upper()} "
                  f"(threshold {o['threshold']:.3g})")
    print(f"modalities   {' + '.join(result.modalities)}")
    for w in result.warnings:
        print(f"warning      {w}")
    for kind, path in result.explanations.items():
        print(f"heat map     {kind}: {path}")
    _print_generated(result)


def _print_generated(result) -> None:
    if result.generated_image:
        print(f"GENERATED    {result.generated_image['path']}  ({result.generated_image['label']})")


def run(args: argparse.Namespace) -> int:
    from ..bundle import load, predict_batch
    from .explain import check_out_dir, cxr_layer_arg

    if args.batch:
        if args.ecg or args.cxr:
            raise ConfigError("give --batch TABLE or --ecg/--cxr, not both")
        if not args.out:
            raise ConfigError("--batch needs --out FILE")
    elif not (args.ecg or args.cxr):
        raise ConfigError("give --ecg FILE and/or --cxr FILE (or --batch TABLE --out FILE)")
    if args.batch:
        from ..bundle.batch import output_format

        output_format(args.out)  # refused before the bundle loads
    if args.explain:
        check_out_dir(args.explain, "--explain")
    if args.resume and not args.batch:
        raise ConfigError("--resume continues a --batch output")
    if args.generate_image and (args.batch or not args.ecg):
        raise ConfigError("--generate-image needs one patient's --ecg (not --batch)")
    screener = load(args.bundle, runtime=args.runtime, precision=args.precision)
    if args.batch:
        from ..bundle.batch import output_format
        from ..bundle.pipeline import predict_archive

        if args.explain or output_format(args.out) == "xlsx":
            if args.resume:
                raise ConfigError("--resume needs a .csv or .jsonl --out and no --explain")
            report = predict_batch(screener, args.batch, args.out, progress=not args.no_progress,
                                   explain=args.explain, cxr_layer=cxr_layer_arg(args.cxr_layer), target=args.target)
        else:
            report = predict_archive(screener, args.batch, args.out, workers=args.workers,
                                     batch_patients=args.batch_size, resume=args.resume,
                                     progress=not args.no_progress)
        print(f"predicted {report.n_ok} of {report.n_rows} patients -> {report.out}", file=sys.stderr)
        for _, f in report.failures.iterrows():
            print(f"  row {f['row']} ({f['patient_id']}): {f['error']}", file=sys.stderr)
        return 0 if report.n_ok == report.n_rows else 1
    result = screener.predict(ecg=args.ecg, cxr=args.cxr, explain=args.explain, patient_id=args.patient_id,
                              ecg_fs=args.ecg_fs, ecg_units=args.ecg_units, ecg_resolution_uv=args.ecg_resolution_uv,
                              cxr_layer=cxr_layer_arg(args.cxr_layer), target=args.target,
                              generate_image=args.generate_image, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_dict(), allow_nan=False))
        return 0
    if result.task_kind != "binary":
        _print_task_result(screener, result, args.patient_id)
        return 0
    label = screener.manifest.get("label", {}).get("definition", "aortic stenosis")
    if args.patient_id:
        print(f"patient      {args.patient_id}")
    print(f"probability  {result.probability:.3f}  (calibrated; {label})")
    print(f"decision     {result.decision.upper()}  (positive when {screener.threshold.describe()})")
    print(f"modalities   {' + '.join(result.modalities)}")
    print(f"scores       fused {_fmt(result.scores['fused'])}  ecg {_fmt(result.scores['ecg'])}  "
          f"cxr {_fmt(result.scores['cxr'])}")
    for w in result.warnings:
        print(f"warning      {w}")
    for kind, path in result.explanations.items():
        print(f"heat map     {kind}: {path}")
    _print_generated(result)
    return 0
