"""``cardiofusion pairing build``: a PSEUDO-PAIRED benchmark cohort from two adapter outputs.

A thin layer over :func:`cardiofusion.adapters.pseudo_paired.pseudo_paired_cohort`.  The cohort joins
ECGs and X-rays of *different* real people; every output says so.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "pairing",
        help="build a PSEUDO-PAIRED ECG + X-ray benchmark cohort from two public data sets",
        description="Pseudo-paired benchmark cohorts (docs/public_data.md): NOT real paired data.",
    )
    sub = parser.add_subparsers(dest="pairing_command", metavar="ACTION")
    sub.required = True
    from ..adapters.pseudo_paired import PairingConfig

    d = PairingConfig()
    b = sub.add_parser(
        "build",
        help="draw synthetic patients (latent D, imperfect ECG and X-ray witnesses) and write a manifest",
        description="Split each pool first (data set split or by patient), then for each synthetic patient draw "
                    "D ~ Bernoulli(prevalence), an ECG from the positive pool with P = sens (D = 1) or from the "
                    "negative pool with P = spec (D = 0), and an X-ray likewise. Writes manifest.parquet, "
                    "PSEUDO_PAIRED.txt, pairing.json and the pools to --out; cache build and train use it as is.",
    )
    b.add_argument("--ecg", required=True, metavar="DIR", help="adapter output with an ECG index (cardiofusion adapt ...)")
    b.add_argument("--cxr", required=True, metavar="DIR", help="adapter output with an X-ray index")
    b.add_argument("--out", required=True, metavar="DIR", help="output folder")
    b.add_argument("--ecg-positive", default="lvh", help="ECG label column of the positive pool (default: %(default)s)")
    b.add_argument("--ecg-negative", default="norm",
                   help="ECG label column of the negative pool; 'none' = every record with positive = 0 "
                        "(default: %(default)s)")
    b.add_argument("--cxr-positive", default="cardiomegaly", help="X-ray positive label column (default: %(default)s)")
    b.add_argument("--cxr-negative", default="none", help="X-ray negative label column (default: %(default)s)")
    b.add_argument("--pool-split", choices=("dataset", "patient"), default="dataset",
                   help="use a data set's own split where it has one (PTB-XL strat_fold), or split every pool by "
                        "patient_id here (default: %(default)s)")
    b.add_argument("--pool-fractions", default=",".join(f"{x:g}" for x in d.pool_split_fractions),
                   help="train,val,test fractions for pools split here (default: %(default)s)")
    b.add_argument("--n-train", type=int, default=d.n_train, help="synthetic patients (default: %(default)s)")
    b.add_argument("--n-val", type=int, default=d.n_val, help="(default: %(default)s)")
    b.add_argument("--n-test", type=int, default=d.n_test, help="(default: %(default)s)")
    b.add_argument("--prevalence", type=float, default=d.prevalence, help="P(D = 1) (default: %(default)g)")
    b.add_argument("--exact-prevalence", action="store_true", help="exactly round(prevalence * n) cases per split")
    for m, name in (("ecg", "ECG"), ("cxr", "X-ray")):
        b.add_argument(f"--sens-{m}", type=float, default=getattr(d, f"sens_{m}"),
                       help=f"P(positive {name} | D = 1) (default: %(default)g)")
        b.add_argument(f"--spec-{m}", type=float, default=getattr(d, f"spec_{m}"),
                       help=f"P(negative {name} | D = 0) (default: %(default)g)")
    b.add_argument("--replace", action="store_true", help="reuse real files within a split (small pools)")
    b.add_argument("--seed", type=int, default=d.seed, help="(default: %(default)s)")
    b.set_defaults(func=run_build)


def _none(v: str | None) -> str | None:
    return None if v is None or v.strip().lower() in ("", "none") else v


def run_build(args: argparse.Namespace) -> int:
    from ..adapters.pseudo_paired import PairingConfig, pseudo_paired_cohort
    from ..errors import ConfigError

    try:
        fractions = tuple(float(x) for x in args.pool_fractions.split(","))
    except ValueError:
        raise ConfigError(f"--pool-fractions expects three numbers like 0.6,0.2,0.2, got {args.pool_fractions!r}") from None
    config = PairingConfig(n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, prevalence=args.prevalence,
                           sens_ecg=args.sens_ecg, spec_ecg=args.spec_ecg, sens_cxr=args.sens_cxr,
                           spec_cxr=args.spec_cxr, replace=args.replace, seed=args.seed,
                           pool_split_fractions=fractions, exact_prevalence=args.exact_prevalence)
    res = pseudo_paired_cohort(args.ecg, args.cxr, args.out, config, ecg_positive=args.ecg_positive,
                               ecg_negative=_none(args.ecg_negative), cxr_positive=args.cxr_positive,
                               cxr_negative=_none(args.cxr_negative), use_dataset_split=args.pool_split == "dataset")
    print(f"PSEUDO-PAIRED cohort (NOT real paired data) -> {res.files['manifest']}")
    for pool in (res.ecg_pool, res.cxr_pool):
        c = pool.counts()
        print(f"  {pool.modality.upper():<4} pool {pool.dataset}: " + "; ".join(
            f"{s} {c[s]['positive']}+/{c[s]['negative']}-" for s in c) + f"  (split: {pool.split_unit})")
    for split, r in res.realised.items():
        if split == "all":
            continue
        print(f"  {split:<5} n={r['n']:<5} prevalence {r['prevalence']:.2f}  ECG sens/spec "
              f"{_fmt(r['sens_ecg'])}/{_fmt(r['spec_ecg'])}  X-ray sens/spec {_fmt(r['sens_cxr'])}/{_fmt(r['spec_cxr'])}")
    print(f"  see {res.files['readme']}")
    return 0


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"
