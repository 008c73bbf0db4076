"""``cardiofusion explain RUN --record ID --out DIR``: heat maps of a trained run for given records."""

from __future__ import annotations

import argparse

EPILOG = """\
what is drawn (docs/explanations.md):
  <record>_cxr.png  the X-ray as the model sees it, beside the Grad-CAM (or integrated-gradients) overlay
  <record>_ecg.png  the twelve traces (3x4 print layout or 12x1) shaded by lead importance (class-token
                    attention, averaged over heads) x per-lead 1D Grad-CAM; each lead labelled with its
                    importance and rank
  explanations.json probability, scores and lead importance of every record

  Cooperative and late fusion: each modality's map explains its own branch score; early fusion: the
  fused score. Records with one modality only get that modality's map.

examples:
  cardiofusion explain runs/coop --record 'EC0000012|XR0000009|US0000004' --out expl/
  cardiofusion explain runs/ecg --record ID1 --record ID2 --out expl/ --layout 12x1 --rollout
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="heat maps (X-ray Grad-CAM, ECG lead attention x Grad-CAM) of a trained run for given records",
        description="Explain a trained run's scores for individual records and write PNG figures.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run folder (or a .ckpt checkpoint)")
    p.add_argument("--record", action="append", required=True, metavar="ID",
                   help="record id of the cohort manifest (repeat for several)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the figures")
    p.add_argument("--method", choices=("gradcam", "ig"), default="gradcam",
                   help="attribution method: Grad-CAM (default) or integrated gradients")
    p.add_argument("--layout", choices=("3x4", "12x1"), default="3x4", help="ECG figure layout (default: 3x4)")
    p.add_argument("--target", default="auto", metavar="TARGET",
                   help="explained score: each branch's own score where the head has one (auto, default) "
                        "or the fused score (score); for runs of multiclass / multilabel / regression tasks "
                        "also the class (name or index), label name or output index to explain (default: the "
                        "predicted class, each positive label or else the first, the first target)")
    p.add_argument("--fused", action="store_true",
                   help="with a class / label --target: explain the fused score rather than each branch's")
    p.add_argument("--rollout", action="store_true", help="lead importance by attention rollout across layers")
    p.add_argument("--cxr-layer", action="append", metavar="LAYER",
                   help="X-ray Grad-CAM layer: 'last' (default: the encoder's last feature map), a timm stage "
                        "index (-2: the stride-16 stage, twice the grid) or a module name; repeat to average "
                        "the maps of several layers")
    p.add_argument("--cache", metavar="DIR", help="preprocessing cache (default: the run's)")
    p.add_argument("--manifest", metavar="PATH", help="cohort manifest (default: the run's)")
    p.set_defaults(func=run)


def cxr_layer_arg(values: list[str] | None) -> str | tuple[str, ...] | None:
    """``--cxr-layer`` values -> what ``cxr_gradcam`` takes (None: the default layer)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def check_out_dir(path: str, option: str) -> None:
    """Refuse an output folder option that names an existing file (or anything but a folder)."""
    from pathlib import Path

    from ..errors import ConfigError

    p = Path(path)
    if (p.exists() or p.is_symlink()) and not p.is_dir():
        raise ConfigError(f"{p}: {option} must be a folder for the figures, and this is an existing file")
    for parent in p.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"{p}: {option} cannot be created inside {parent}, which is a file")


def run(args: argparse.Namespace) -> int:
    from ..explain import explain_records

    check_out_dir(args.out, "--out")

    target, output = args.target, None
    if target not in ("auto", "score"):
        target, output = ("score" if args.fused else "auto"), args.target
    elif args.fused:
        target = "score"
    results = explain_records(args.run, args.record, args.out, cache_dir=args.cache, manifest=args.manifest,
                              method=args.method, layout=args.layout, target=target, rollout=args.rollout,
                              cxr_layer=cxr_layer_arg(args.cxr_layer), output=output)
    for r in results:
        if "output_target" not in r:
            label = {1: "AS", 0: "no AS", None: "unknown"}[r["label"]]
            print(f"{r['record_id']}  label {label}  P(AS) {r['probability']:.3f}")
        else:
            t = r["output_target"]
            value = (f"P {r['probability']:.3f}" if r["probability"] is not None else f"score {r['score']:+.3f}")
            print(f"{r['record_id']}  target {t['kind']} {t['name']}  label {r['label']}  {value}")
        for modality, path in r["images"].items():
            print(f"  {modality}: {path}")
    return 0
