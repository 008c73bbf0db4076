"""``cardiofusion export``: write a model bundle (weights, manifest, ONNX graph) from a training run."""

from __future__ import annotations

import argparse

from ..errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a model bundle (safetensors weights + manifest + ONNX) from a training run",
        description="Write a self-contained model bundle from a training run: safetensors weights, a JSON "
        "manifest with everything prediction needs (model config, ECG rate/leads/window/averaging, image "
        "size/normalisation, label definition, calibrator, decision threshold and how it was chosen, "
        "validation metrics, library versions, content hash) and the fused model as ONNX. Calibrator and "
        "threshold come from an evaluation folder (--evaluation EVALDIR --name NAME) or are fitted on "
        "RUN/val_scores.csv.",
    )
    p.add_argument("run", metavar="RUN", help="training run folder (cardiofusion train)")
    p.add_argument("--out", required=True, metavar="BUNDLE", help="bundle folder to create")
    p.add_argument("--checkpoint", metavar="CKPT", help="a specific checkpoint (default: the best-val-loss one)")
    p.add_argument("--evaluation", metavar="EVALDIR",
                   help="take calibrator and threshold from EVALDIR/models/NAME/calibration.json")
    p.add_argument("--name", help="model name in the evaluation folder (and the bundle's name)")
    p.add_argument("--calibration", choices=("platt", "isotonic", "none"), default="platt",
                   help="calibrator fitted on the run's validation scores when no --evaluation (default: platt)")
    p.add_argument("--threshold", choices=("youden",), default=None,
                   help="threshold rule on validation (default: youden)")
    p.add_argument("--target-sensitivity", type=float, metavar="S",
                   help="instead: the highest threshold with validation sensitivity >= S (e.g. 0.9)")
    p.add_argument("--no-onnx", action="store_true", help="do not store model.onnx")
    p.add_argument("--onnx-exporter", choices=("auto", "torchscript", "dynamo"), default="auto",
                   help="torch ONNX exporter (default auto: TorchScript-based when available, else dynamo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle folder")
    p.add_argument("--precisions", default="auto", metavar="LIST",
                   help="reduced precisions to check against fp32 on the validation split and offer when they pass: "
                        "comma-separated bf16, int8, or 'none' (default auto: bf16 where this CPU has it, "
                        "int8 where model.onnx is stored)")
    p.add_argument("--precision", choices=("fp32", "bf16", "int8"), default="fp32",
                   help="the bundle's default precision at prediction (default fp32); refused with the check's "
                        "numbers when it fails")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="the bundle's default runtime at prediction (default torch; int8 implies onnx)")
    p.add_argument("--int8", choices=("static", "dynamic"), default="static",
                   help="ONNX Runtime quantisation: static, with activation ranges calibrated on 64 training-split "
                        "records (default; several times faster on CPUs), or dynamic")
    p.add_argument("--max-auroc-change", type=float, default=0.002, metavar="D",
                   help="refuse a precision whose validation AUROC (macro AUROC for multiclass / multilabel tasks) "
                        "moves by more than D (default 0.002)")
    p.add_argument("--max-flip-fraction", type=float, default=0.01, metavar="F",
                   help="refuse a precision that flips more than this fraction of validation decisions (default 0.01; "
                        "a multilabel record flips when any label does)")
    p.add_argument("--max-mae-change", type=float, default=0.01, metavar="R",
                   help="regression tasks: refuse a precision that changes the validation MAE by more than this "
                        "fraction of it (default 0.01)")
    p.add_argument("--max-score-change", type=float, default=None, metavar="S",
                   help="also refuse a precision that moves any validation score by more than S (default: no limit)")
    p.add_argument("--generator", metavar="GENRUN",
                   help="an ECG -> X-ray generator run (cardiacnets recipe: OUT/runs/generate) to carry in the bundle: "
                        "`cardiofusion predict --generate-image` then writes an image generated from the ECG, "
                        "labelled GENERATED (never a real X-ray)")
    p.add_argument("--guidance", type=float, default=3.0, help="the generator's classifier-free guidance (3)")
    p.add_argument("--sample-steps", type=int, default=50, help="the generator's DDIM steps (50)")
    p.set_defaults(func=run)


def _precisions(text: str) -> str | list[str]:
    text = text.strip().lower()
    if text in ("auto", ""):
        return "auto"
    if text == "none":
        return []
    return [p.strip() for p in text.split(",") if p.strip()]


def run(args: argparse.Namespace) -> int:
    import json

    from ..bundle import export_bundle, read_manifest

    if args.threshold and args.target_sensitivity is not None:
        raise ConfigError("give --threshold or --target-sensitivity, not both")
    if args.evaluation and (args.target_sensitivity is not None or args.threshold):
        raise ConfigError("--evaluation supplies the threshold; leave out --threshold / --target-sensitivity")
    out = export_bundle(args.run, args.out, evaluation=args.evaluation, name=args.name,
                        calibration=args.calibration, threshold=args.threshold or "youden",
                        target_sensitivity=args.target_sensitivity, checkpoint=args.checkpoint,
                        onnx=False if args.no_onnx else "auto", onnx_exporter=args.onnx_exporter,
                        overwrite=args.overwrite, precisions=_precisions(args.precisions),
                        precision=args.precision, runtime=args.runtime, int8=args.int8,
                        tolerances={"auroc": args.max_auroc_change, "flip_fraction": args.max_flip_fraction,
                                    "score": args.max_score_change, "mae": args.max_mae_change},
                        generator=args.generator, guidance=args.guidance, sample_steps=args.sample_steps)
    manifest = read_manifest(out)
    val = manifest.get("validation", {})
    print(f"bundle: {out}")
    print(f"  model        {manifest['model']['fusion']} ({', '.join(manifest['model']['modalities'])})")
    if "threshold" in manifest:
        print(f"  threshold    {manifest['threshold']['description']}")
        print(f"  calibration  {manifest['calibration']['calibrator']['method']} "
              f"({manifest['calibration']['source']})")
        if val:
            print("  validation   " + json.dumps({k: val[k] for k in ("auroc", "sensitivity_at_threshold",
                                                                      "specificity_at_threshold", "n_records")
                                                 if k in val}))
    else:
        task = manifest["task_definition"]
        print(f"  task         {task['name']} ({task['kind']}: {', '.join(task['classes'])})")
        print(f"  decision     {manifest['decision']['rule']}")
        if val:
            print("  validation   " + json.dumps({k: v for k, v in val.items() if k in (
                "macro_auroc", "accuracy", "mae_per_target", "n_records")}))
    from ..bundle.precision import describe_check

    inference = manifest.get("inference", {})
    section = manifest.get("precision", {})
    print(f"  prediction   runtime {inference.get('runtime', 'torch')}, precision {inference.get('precision', 'fp32')}"
          f"; offered: {', '.join(section.get('offered', ['fp32']))}")
    for name, check in section.get("checks", {}).items():
        print(f"  precision    {describe_check(name, check)}")
    if "generator" in manifest:
        gen = manifest["generator"]
        print(f"  generator    ECG -> X-ray, {gen['spec']['image_size']} px, guidance {gen['guidance']:g}, "
              f"{gen['steps']} DDIM steps (images labelled GENERATED)")
    print(f"  files        {', '.join(sorted(manifest['files']))}")
    print(f"  content hash {manifest['content_hash']}")
    return 0
