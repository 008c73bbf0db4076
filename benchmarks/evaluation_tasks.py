"""Benchmark: the multiclass / multi-label / regression metric families over patient-bootstrap resamples vs the
straightforward loop of scikit-learn / scipy calls.

Simulated test set the size of the paper's (3,583 records; patients with 1-6 records): a 4-class ordinal task,
a 4-label task with 10% unknown labels and a 5-target regression with 10% missing values; one model each,
1,000 resamples, every metric of the family.  The vectorised path is timed in full; the loop (one reference call
per metric set per resample) on ``--loop-resamples`` resamples and extrapolated linearly to ``--resamples``.  The
point estimates and the looped resamples must agree to 1e-9.  Pinned to one thread.

    python benchmarks/evaluation_tasks.py [--records 3583] [--resamples 1000] [--loop-resamples 10]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import time
import warnings

import numpy as np


def simulate(n_records: int, seed: int = 0) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n_records:
        sizes.append(int(rng.integers(1, 7)))
    sizes[-1] -= sum(sizes) - n_records
    patient = np.repeat(np.arange(len(sizes)), [s for s in sizes if s > 0])[:n_records]
    n = n_records
    y_mc = rng.integers(0, 4, n)
    logits = np.round(rng.normal(size=(n, 4)) + 1.2 * np.eye(4)[y_mc], 2)
    p_mc = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y_ml = (rng.random((n, 4)) < [0.1, 0.2, 0.15, 0.08]).astype(float)
    p_ml = np.round(1 / (1 + np.exp(-(rng.normal(size=(n, 4)) + 1.5 * y_ml - 2))), 3)
    y_ml[rng.random((n, 4)) < 0.1] = np.nan
    y_rg = rng.normal([3, 30, 1.2, 55, 180], [1, 10, 0.4, 10, 40], (n, 5))
    p_rg = np.round(0.8 * y_rg + rng.normal(0, [0.5, 6, 0.3, 7, 30], (n, 5)) + [0.5, 5, 0.2, 10, 30], 2)
    y_rg[rng.random((n, 5)) < 0.1] = np.nan
    return {"patient": patient, "mc": (y_mc, p_mc), "ml": (y_ml, p_ml), "rg": (y_rg, p_rg)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=3583)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--loop-resamples", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from cardiofusion.evaluation.bootstrap import bootstrap_weights, resample_indices
    from cardiofusion.evaluation.multiclass import MulticlassMetrics, sklearn_multiclass_metrics
    from cardiofusion.evaluation.multilabel import MultilabelMetrics, sklearn_multilabel_metrics
    from cardiofusion.evaluation.regression import RegressionMetrics, reference_regression_metrics

    data = simulate(args.records, args.seed)
    weights = bootstrap_weights(data["patient"], args.resamples, args.seed)
    classes = ["none", "mild", "moderate", "severe"]
    labels = ["AS", "LVH", "HF", "AF"]
    targets = ["peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2", "lvef_pct", "lv_mass_g"]
    y_mc, p_mc = data["mc"]
    y_ml, p_ml = data["ml"]
    y_rg, p_rg = data["rg"]
    d_ml = (p_ml >= 0.5).astype(float)
    cases = {
        "multiclass (4 classes)": (lambda: MulticlassMetrics(y_mc, p_mc, classes),
                                   lambda idx: sklearn_multiclass_metrics(y_mc[idx], p_mc[idx], classes)),
        "multi-label (4 labels)": (lambda: MultilabelMetrics(y_ml, p_ml, labels, d_ml),
                                   lambda idx: sklearn_multilabel_metrics(y_ml[idx], p_ml[idx], labels, d_ml[idx])),
        "regression (5 targets)": (lambda: RegressionMetrics(y_rg, p_rg, targets),
                                   lambda idx: reference_regression_metrics(y_rg[idx], p_rg[idx], targets)),
    }
    print(f"{args.records:,} records, {len(np.unique(data['patient'])):,} patients, {args.resamples:,} resamples, "
          "one thread")
    print(f"{'task':<24}{'metrics':>8}{'vectorised s':>14}{'loop s (extrap.)':>18}{'speed-up':>10}{'max |diff|':>12}")
    warnings.simplefilter("ignore")
    for name, (build, reference) in cases.items():
        t0 = time.perf_counter()
        fam = build()
        boot = fam.matrix(weights)
        point = fam.matrix(None)[0]
        t_vec = time.perf_counter() - t0
        t0 = time.perf_counter()
        worst = 0.0
        for r in range(args.loop_resamples):
            ref = reference(resample_indices(weights[r]))
            got = boot[r]
            exp = np.array([ref[k] for k in fam.keys])
            ok = np.isfinite(exp)
            assert (np.isfinite(got) == ok).all(), name
            worst = max(worst, float(np.max(np.abs(got[ok] - exp[ok]) / np.maximum(1.0, np.abs(exp[ok])))))
        t_loop = (time.perf_counter() - t0) / args.loop_resamples * args.resamples
        ref = reference(np.arange(args.records))
        exp = np.array([ref[k] for k in fam.keys])
        ok = np.isfinite(exp)
        worst = max(worst, float(np.max(np.abs(point[ok] - exp[ok]) / np.maximum(1.0, np.abs(exp[ok])))))
        assert worst < 1e-9, (name, worst)
        print(f"{name:<24}{len(fam.keys):>8}{t_vec:>14.2f}{t_loop:>18.1f}{t_loop / t_vec:>9.0f}x{worst:>12.1e}")


if __name__ == "__main__":
    main()
