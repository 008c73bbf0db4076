"""Evidence run: do the heat maps point at the planted AS signs of the synthetic export?

For each finished run folder (``RUNS/<name>/result.json``; by default ``ecg``, ``cxr``, ``cooperative``)
this runs :func:`cardiofusion.explain.evaluate_faithfulness` with the export's ground truth on (a seeded
subset of) the test split: deletion / insertion AOPC of the maps vs random and uniform baselines, the
X-ray pointing game on the planted calcification boxes (and the heart box) vs chance, and the rank of the
planted LVH leads in the ECG lead importance vs chance -- the last two also over every AS record of the
split (maps only, cheap).  Writes ``OUT/<name>/faithfulness.json`` (+ curves PNG, per-record CSV), a few
example figures per run (``OUT/<name>/examples``, X-rays with the planted boxes drawn) and
``OUT/summary.json``; prints a table.  A CPU job of minutes; not part of the test suite.

    python benchmarks/explain_groundtruth.py --runs /work/runs/fusion1000 --out runs/explain_gt --n-records 200

The README's numbers (runs of ``benchmarks/fusion_warmstart.py``'s docstring in ROOT; X-rays at 256 px,
``cxr128`` at 128 px), each row from one of::

    export OMP_NUM_THREADS=1; B=benchmarks/explain_groundtruth.py
    python $B --runs ROOT --names cxr256 --cxr-layer last --no-all-as --no-sign-removal --out OUT/last
    python $B --runs ROOT --names cxr256 --cxr-layer=-2 --compare-layers last last+-2 --out OUT/stage-2
    python $B --runs ROOT --names cxr256 --cxr-layer last+-2 --n-examples 0 --no-all-as --no-sign-removal \\
        --out OUT/both
    python $B --runs ROOT --names coop256 ecg --cxr-layer last+-2 --compare-layers last -2 --out OUT/coop
    python $B --runs ROOT --names cxr128 --no-faithfulness --cxr-layer last --compare-layers -2 last+-2 --out OUT/128

(about 6 min per X-ray run and 8 min for the cooperative one on this 2-core machine, two at a time; the
maps-only checks and the sign removal take seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def _fmt(entry: dict | None) -> str:
    if not entry:
        return "-"
    lo, hi = entry["ci95"]
    return f"{entry['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def _layer_arg(value: str):
    """'last' / '-2' / 'blocks.5' / '-1+-2' (maps of several layers averaged) -> cxr_layer."""
    parts = [v for v in value.split("+") if v]
    return None if value == "last" else (parts[0] if len(parts) == 1 else tuple(parts))


def _examples(run, gt, out: Path, n: int, cxr_layer=None) -> list[str]:
    """Figures of the n highest-scored AS test records, planted calcification boxes drawn on the X-ray."""
    from cardiofusion.explain import (
        calc_boxes,
        choose_examples,
        explain_sample,
        load_samples,
        plot_cxr_explanation,
        plot_ecg_explanation,
    )

    ids = choose_examples(run, "test", n_as=n, n_non_as=1)
    paths = []
    size = run.config.preprocess.image_size
    for sample in load_samples(run, ids):
        expl = explain_sample(run.model, sample, cxr_layer=cxr_layer)
        head = f"{sample.record_id} | label {int(sample.label)} | P(AS) {expl.probability:.3f}"
        stem = sample.record_id.replace("|", "_")
        if expl.cxr is not None and sample.cxr_exam_id in gt.cxr.index:
            boxes = calc_boxes(gt, sample.cxr_exam_id, size)
            paths.append(str(plot_cxr_explanation(expl.cxr, out / f"{stem}_cxr.png", title=head, boxes=boxes)))
        if expl.ecg is not None:
            paths.append(str(plot_ecg_explanation(expl.ecg, out / f"{stem}_ecg.png", title=head)))
    return paths


def _as_samples(run, split: str) -> list:
    """Every AS record of the split, read once per run (the maps-only checks below share them)."""
    from cardiofusion.cache import open_cache
    from cardiofusion.data.dataset import split_records
    from cardiofusion.explain import load_samples

    records = split_records(open_cache(run.config.cache_dir), run.config.manifest, split)
    return load_samples(run, records.loc[records["label"] == 1, "record_id"].astype(str).tolist())


def _all_as_ground_truth(run, gt, samples: list, cxr_layer=None) -> dict:
    """Pointing game and lead ranking over the AS records ``samples`` (maps only, no perturbations)."""
    from cardiofusion.explain import evaluate_on_ground_truth, explain_sample
    from cardiofusion.explain.faithfulness import maps_for_ground_truth

    maps = [maps_for_ground_truth(s, explain_sample(run.model, s, cxr_layer=cxr_layer)) for s in samples]
    return evaluate_on_ground_truth(maps, gt, run.config.preprocess)


def _print_ground_truth(g: dict) -> None:
    if "pointing_game" in g:
        pg = g["pointing_game"]
        print(f"  pointing game, calcification boxes +-{g['tolerance_px']:.1f} px (AS, n={pg['n']}): "
              f"hit {_fmt(pg['hit_rate'])} vs chance {pg['chance']['mean']:.3f} "
              f"(x{pg['ratio_to_chance']:.1f}); heat mass in boxes {_fmt(pg['mass_in_boxes'])} vs area "
              f"{pg['box_area']['mean']:.4f}")
        if "shuffled_hit_rate" in pg:
            print(f"    location prior (map vs the other X-rays' boxes): {_fmt(pg['shuffled_hit_rate'])}; "
                  f"hit - prior {_fmt(pg['hit_minus_shuffled'])}")
    if "heart_pointing_game" in g:
        hp = g["heart_pointing_game"]
        print(f"  pointing game, heart box (AS, n={hp['n']}): hit {_fmt(hp['hit_rate'])} vs chance "
              f"{hp['chance']['mean']:.3f}; mass {_fmt(hp['mass_in_box'])} vs area {hp['box_area']['mean']:.3f}")
        if "shuffled_hit_rate" in hp:
            print(f"    location prior: {_fmt(hp['shuffled_hit_rate'])}; hit - prior {_fmt(hp['hit_minus_shuffled'])}")
    for key, label in (("lead_ranking", "AS"), ("lead_ranking_non_as", "non-AS")):
        if key in g:
            lr = g[key]
            print(f"  LVH-lead mean rank ({label}, n={lr['n']}): {_fmt(lr['mean_rank'])} vs chance "
                  f"{lr['chance_rank']:.2f}; top-3 share {_fmt(lr['top3_share'])} vs {lr['chance_top3_share']:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="/work/runs/fusion1000", help="folder holding the run folders and export/")
    ap.add_argument("--names", nargs="+", default=["ecg", "cxr", "cooperative"], help="run folder names")
    ap.add_argument("--ground-truth", help="ground-truth folder (default: RUNS/export/ground_truth)")
    ap.add_argument("--out", default="runs/explain_groundtruth")
    ap.add_argument("--split", default="test")
    ap.add_argument("--n-records", type=int, default=200, help="seeded random subset of the split (0: all)")
    ap.add_argument("--n-examples", type=int, default=2, help="AS example figures per run")
    ap.add_argument("--no-all-as", dest="all_as", action="store_false",
                    help="skip the pointing game / lead ranking over every AS record of the split")
    ap.add_argument("--no-faithfulness", dest="faithfulness", action="store_false",
                    help="skip the deletion / insertion tests (minutes); only the ground-truth checks of the maps")
    ap.add_argument("--no-sign-removal", dest="sign_removal", action="store_false",
                    help="skip the check that inpainting the planted calcifications lowers the X-ray score")
    ap.add_argument("--allow-unfinished", action="store_true",
                    help="also evaluate runs still training, at their current best checkpoint (interim numbers)")
    ap.add_argument("--cxr-layer", default="last",
                    help="X-ray Grad-CAM layer of the faithfulness run and the figures: 'last', a timm stage "
                         "index (-2) or a module name; 'A+B' averages the maps of several layers")
    ap.add_argument("--compare-layers", nargs="*", default=[],
                    help="also run the pointing game over every AS record for these layers (maps only)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy CPU)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from cardiofusion.explain import (
        FaithfulnessConfig,
        evaluate_faithfulness,
        load_ground_truth,
        sign_removal,
        write_faithfulness,
    )
    from cardiofusion.training import load_run

    runs = Path(args.runs)
    gt_dir = Path(args.ground_truth) if args.ground_truth else runs / "export" / "ground_truth"
    gt = load_ground_truth(gt_dir)
    out = Path(args.out)
    summary: dict = {}
    for name in args.names:
        run_dir = runs / name
        finished = (run_dir / "result.json").is_file()
        if not finished and not (args.allow_unfinished and list((run_dir / "checkpoints").glob("best-*.ckpt"))):
            print(f"{name}: not finished (no {run_dir / 'result.json'}), skipped", file=sys.stderr)
            summary[name] = {"status": "pending"}
            continue
        t0 = time.perf_counter()
        run = load_run(run_dir)
        layer = _layer_arg(args.cxr_layer)
        examples = _examples(run, gt, out / name / "examples", args.n_examples, layer) if args.n_examples else []
        entry = {"status": "done" if finished else f"interim ({run.checkpoint.name})", "cxr_layer": args.cxr_layer,
                 "examples": examples}
        if args.faithfulness:
            report = evaluate_faithfulness(run, args.split, n_records=args.n_records or None,
                                           config=FaithfulnessConfig(cxr_layer=layer), ground_truth=gt)
            write_faithfulness(report, out / name)
            entry |= {"n_records": report["n_records"], "n_as": report["n_as"]}
            for m in ("cxr", "ecg"):
                if m in report:
                    entry[m] = {mode: {k: report[m][mode]["aopc"][k] for k in ("explanation", "random", "uniform")}
                                | {"explanation-random": report[m][mode]["difference"]["explanation-random"],
                                   "explanation-uniform": report[m][mode]["difference"]["explanation-uniform"]}
                                for mode in ("deletion", "insertion")}
            entry["ground_truth"] = report.get("ground_truth", {})
        entry["seconds"] = round(time.perf_counter() - t0, 1)
        summary[name] = entry
        sizes = f"{entry['n_records']} {args.split} records, {entry['n_as']} AS, " if args.faithfulness else ""
        print(f"\n== {name} [{entry['status']}] ({sizes}{entry['seconds']} s)")
        for m, label in (("cxr", "X-ray"), ("ecg", "ECG")):
            for mode in ("deletion", "insertion"):
                if m in entry:
                    e = entry[m][mode]
                    print(f"  {label:5s} {mode:9s} AOPC map {_fmt(e['explanation'])}  random {_fmt(e['random'])}  "
                          f"uniform {_fmt(e['uniform'])}  map-random {_fmt(e['explanation-random'])}")
        _print_ground_truth(entry.get("ground_truth", {}))
        as_samples = _as_samples(run, args.split) if (args.all_as or args.sign_removal or args.compare_layers) else []
        if args.all_as:
            t1 = time.perf_counter()
            entry["ground_truth_all_as"] = _all_as_ground_truth(run, gt, as_samples, layer)
            print(f"  -- every AS {args.split} record, maps only ({time.perf_counter() - t1:.0f} s):")
            _print_ground_truth(entry["ground_truth_all_as"])
        if run.model.cxr_encoder is not None and args.sign_removal:
            t1 = time.perf_counter()
            entry["sign_removal"] = sr = sign_removal(run.model, as_samples, gt)
            print(f"  -- planted calcifications inpainted, every AS {args.split} X-ray with one (n={sr['n']}, "
                  f"{time.perf_counter() - t1:.0f} s): score {sr['score']['mean']:+.3f}; drop {_fmt(sr['drop_planted'])} "
                  f"vs the same boxes moved {_fmt(sr['drop_moved'])}; difference {_fmt(sr['planted_minus_moved'])}; "
                  f"planted larger in {_fmt(sr['share_planted_wins'])}")
        if run.model.cxr_encoder is not None:
            entry["layers"] = {}
            for other in args.compare_layers:
                t1 = time.perf_counter()
                g = _all_as_ground_truth(run, gt, as_samples, _layer_arg(other))
                entry["layers"][other] = {k: g[k] for k in ("pointing_game", "heart_pointing_game", "tolerance_px") if k in g}
                print(f"  -- X-ray layer {other}, every AS {args.split} record ({time.perf_counter() - t1:.0f} s):")
                _print_ground_truth(entry["layers"][other])
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nsummary: {out / 'summary.json'}")


if __name__ == "__main__":
    main()
