"""Evidence run: do the fusion methods beat single modalities on the synthetic export?

Runs the demo pipeline (synth -> cohort -> cache -> ECG-only, X-ray-only and cooperative training of the
small models) at a size chosen on the command line and prints the validation AUROCs next to the
generator's oracle AUROCs (the ceiling). A CPU job of some minutes; not part of the test suite.

    python benchmarks/fusion_synthetic.py --out runs/fusion_synth --patients 1000 --epochs 12
"""

from __future__ import annotations

import argparse
import json
import time

from cardiofusion.cache import CacheConfig
from cardiofusion.cohort import CohortConfig
from cardiofusion.recipes.demo import run_demo
from cardiofusion.synth import SynthConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/fusion_synth")
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--prevalence", type=float, default=0.081, help="AS prevalence (paper 0.081)")
    ap.add_argument("--sign-scale", type=float, default=1.0,
                    help="multiply every planted AS sign (ECG LVH/strain, X-ray CTR/calcification) by this")
    ap.add_argument("--epochs", type=int, default=None, help="cap on epochs per model (default: the demo's 6 / 4 / 2)")
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--fs", type=float, default=250.0, help="ECG rate of the cache and models (Hz)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-train", dest="train", action="store_false",
                    help="stop after synth -> cohort -> cache (then train with benchmarks/fusion_warmstart.py)")
    args = ap.parse_args()

    d = SynthConfig()
    synth = SynthConfig(
        n_patients=args.patients, seed=args.seed, workers=args.workers, as_prevalence=args.prevalence,
        ecg_lvh_effect=d.ecg_lvh_effect * args.sign_scale, ecg_strain_effect=d.ecg_strain_effect * args.sign_scale,
        cxr_ctr_effect=d.cxr_ctr_effect * args.sign_scale, cxr_calc_effect=d.cxr_calc_effect * args.sign_scale,
    )
    t0 = time.perf_counter()
    result = run_demo(args.out, synth_config=synth, cohort_config=CohortConfig(seed=args.seed),
                      cache_config=CacheConfig(fs=args.fs), workers=args.workers, max_epochs=args.epochs,
                      patience=args.patience, image_size=args.image_size, progress=False, train=args.train)
    if not args.train:
        print(f"oracle AUROC {result.oracle}; cohort and cache in {result.out_dir} ({time.perf_counter() - t0:.0f} s)")
        return
    c = result.flow["decoding"]["splits"]["val"]
    print()
    print(f"synthetic export: {args.patients} patients, prevalence {args.prevalence}, sign scale {args.sign_scale}; "
          f"validation split {c['records']} records ({c['as_records']} AS) from {c['patients']} patients "
          f"({c['as_patients']} AS)")
    print(f"{'model':<14}{'val AUROC':>10}   oracle AUROC (planted signs, all records)")
    for name, oracle_key in (("ecg", "ecg"), ("cxr", "cxr"), ("cooperative", "both")):
        o = result.oracle.get(oracle_key)
        print(f"{name:<14}{result.val_auroc[name]:>10.3f}   {o if o is None else round(o, 3)}")
    print(f"total {time.perf_counter() - t0:.0f} s")
    (result.out_dir / "fusion_synthetic.json").write_text(json.dumps(
        {"args": vars(args), "val_auroc": result.val_auroc, "oracle": result.oracle, "val_split": c}, indent=2))


if __name__ == "__main__":
    main()
