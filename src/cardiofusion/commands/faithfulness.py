"""``cardiofusion faithfulness RUN --split test --out DIR``: deletion / insertion tests of the heat maps."""

from __future__ import annotations

import argparse
import sys

EPILOG = """\
how (docs/explanations.md):
  For every record: remove (deletion) or re-insert into a heavily blurred input (insertion) the top p%
  of the X-ray pixels / ECG lead x time samples ranked by the heat map, p in --percentages; the explained
  score (positive-class logit) is recorded. AOPC = mean score drop (deletion) or gain (insertion).
  Baselines: the same number of random pixels/samples, and a uniform map (every element moved p% of the
  way to its blurred value). 1,000 bootstrap resamples of the records give 95% CIs.

outputs (OUT):
  faithfulness.json          curves, AOPC with CIs, differences to the baselines (+ ground truth)
  faithfulness_records.csv   per-record AOPC
  faithfulness_curves.png    mean perturbation curves with bootstrap bands

examples:
  cardiofusion faithfulness runs/coop --split test --out faith/ --n-records 200
  cardiofusion faithfulness runs/cxr --split test --out faith/ --ground-truth export/ground_truth
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "faithfulness",
        help="deletion / insertion faithfulness of a run's heat maps on a split (AOPC, baselines, CIs)",
        description="Test whether a run's heat maps point at what its scores depend on.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", metavar="RUN", help="run folder (or a .ckpt checkpoint)")
    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split (default: test)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n-records", type=int, metavar="N", help="a seeded random subset of N records (default: all)")
    p.add_argument("--record", action="append", metavar="ID",
                   help="evaluate only these records of the split (repeat for several)")
    p.add_argument("--percentages", type=float, nargs="+", default=[18, 30, 40, 50], metavar="P",
                   help="top-p%% levels (default: 18 30 40 50)")
    p.add_argument("--method", choices=("gradcam", "ig"), default="gradcam", help="attribution method")
    p.add_argument("--target", choices=("auto", "score"), default="auto", help="explained score (default: auto)")
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of random maps and the bootstrap (default: 0)")
    p.add_argument("--ground-truth", metavar="DIR",
                   help="a synthetic export's ground_truth folder: also run the pointing game and lead ranking")
    p.add_argument("--cxr-layer", action="append", metavar="LAYER",
                   help="X-ray Grad-CAM layer: 'last' (default: the encoder's last feature map), a timm stage "
                        "index (-2: the stride-16 stage, twice the grid) or a module name; repeat to average "
                        "the maps of several layers")
    p.add_argument("--cache", metavar="DIR", help="preprocessing cache (default: the run's)")
    p.add_argument("--manifest", metavar="PATH", help="cohort manifest (default: the run's)")
    p.add_argument("--no-progress", action="store_true", help="no progress line")
    p.set_defaults(func=run)


def _fmt(entry: dict) -> str:
    from ..evaluation.formatting import format_ci

    lo, hi = entry["ci95"]
    return format_ci(entry["mean"], lo, hi, 4, signed=True)


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError
    from ..explain import FaithfulnessConfig, evaluate_faithfulness, write_faithfulness
    from .explain import cxr_layer_arg

    if args.n_records is not None and args.n_records < 1:
        raise ConfigError(f"--n-records must be >= 1, got {args.n_records}")
    config = FaithfulnessConfig(percentages=tuple(args.percentages), n_boot=args.n_boot, seed=args.seed,
                                method=args.method, target=args.target, cxr_layer=cxr_layer_arg(args.cxr_layer))

    def progress(done: int, total: int) -> None:
        if not args.no_progress:
            print(f"\rexplained {done}/{total} records", end="" if done < total else "\n", file=sys.stderr)

    report = evaluate_faithfulness(args.run, args.split, n_records=args.n_records, record_ids=args.record,
                                   config=config,
                                   cache_dir=args.cache, manifest=args.manifest, ground_truth=args.ground_truth,
                                   progress=progress)
    paths = write_faithfulness(report, args.out)
    print(f"{report['fusion']} on {report['split']}: {report['n_records']} records ({report['n_as']} AS)")
    for m, name in (("cxr", "X-ray"), ("ecg", "ECG")):
        if m not in report:
            continue
        for mode in ("deletion", "insertion"):
            sec = report[m][mode]
            print(f"  {name} {mode:9s} AOPC  map {_fmt(sec['aopc']['explanation'])}  random "
                  f"{_fmt(sec['aopc']['random'])}  uniform {_fmt(sec['aopc']['uniform'])}")
    gt = report.get("ground_truth", {})
    if "pointing_game" in gt:
        pg = gt["pointing_game"]
        print(f"  pointing game (calcifications, n={pg['n']}): hit rate {_fmt(pg['hit_rate'])} vs chance "
              f"{pg['chance']['mean']:.4f}")
    if "heart_pointing_game" in gt:
        hp = gt["heart_pointing_game"]
        print(f"  pointing game (heart box, n={hp['n']}): hit rate {_fmt(hp['hit_rate'])} vs chance "
              f"{hp['chance']['mean']:.4f}")
    if "lead_ranking" in gt:
        lr = gt["lead_ranking"]
        print(f"  LVH lead mean rank (AS, n={lr['n']}): {_fmt(lr['mean_rank'])} vs chance {lr['chance_rank']:.2f}")
    for key, path in paths.items():
        print(f"  {key}: {path}")
    return 0
