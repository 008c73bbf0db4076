"""Benchmark: vectorised bootstrap metrics vs the straightforward loop over scikit-learn calls.

Simulated test set the size of the paper's (3,583 records; patients with 1-6 records; ~8% AS), three
models, 1,000 patient-level resamples, all nine metrics.  The vectorised path is timed in full; the loop
(one scikit-learn call per metric per resample per model) on ``--loop-resamples`` resamples and
extrapolated linearly to 1,000 (said in the output).  Point estimates and the looped resamples must agree
to 1e-9.  Pinned to one thread.

    python benchmarks/evaluation_bootstrap.py [--records 3583] [--resamples 1000] [--loop-resamples 50]
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


def simulate(n_records: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Patients with 1-6 records, patient-level AS status, three correlated model scores (logits)."""
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < n_records:
        sizes.append(int(rng.integers(1, 7)))
    sizes[-1] -= sum(sizes) - n_records
    sizes = [s for s in sizes if s > 0]
    patient = np.repeat(np.arange(len(sizes)), sizes)
    positive_patient = rng.random(len(sizes)) < 0.08
    y = positive_patient[patient].astype(float)
    shared = rng.normal(size=len(sizes))[patient]  # patient effect shared by the models
    scores = {}
    for name, signal in (("ecg", 1.05), ("cxr", 0.95), ("multimodal", 1.35)):
        s = signal * y + 0.5 * shared + rng.normal(size=n_records) - 2.0
        scores[name] = np.round(s, 2)  # rounding creates ties, the harder case
    return {"patient_id": np.array([f"P{p:05d}" for p in patient]), "label": y, **scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=3583)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--loop-resamples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5, help="repeats of the vectorised path (best is reported)")
    args = ap.parse_args()

    from cardiofusion.evaluation.calibration import Calibrator
    from cardiofusion.evaluation.bootstrap import bootstrap_weights, resample_indices
    from cardiofusion.evaluation.metrics import (
        METRICS,
        RankedScores,
        metric_matrix,
        sklearn_metrics,
    )

    data = simulate(args.records, args.seed)
    y = data["label"]
    models = ("ecg", "cxr", "multimodal")
    prob = {m: Calibrator("none")(data[m]) for m in models}
    decision = {m: prob[m] >= 0.15 for m in models}
    n_pat = len(np.unique(data["patient_id"]))
    print(f"{args.records:,} records from {n_pat:,} patients ({int(y.sum())} positives), {len(models)} models, "
          f"{args.resamples:,} patient-level resamples, {len(METRICS)} metrics ({', '.join(METRICS)}); 1 thread")

    # -- vectorised ------------------------------------------------------------------------------
    best = np.inf
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        weights = bootstrap_weights(data["patient_id"], args.resamples, args.seed)  # (B, n)
        boot, point = {}, {}
        for m in models:
            ranked = RankedScores(y, data[m])
            point[m] = metric_matrix(y, data[m], prob[m], decision[m], ranked=ranked)[0]
            boot[m] = metric_matrix(y, data[m], prob[m], decision[m], weights, ranked=ranked)
        best = min(best, time.perf_counter() - t0)
    print(f"vectorised: {best:.3f} s for {args.resamples:,} resamples x {len(METRICS)} metrics x {len(models)} models "
          f"(resample weights included; best of {args.repeat})")

    # -- straightforward loop over scikit-learn --------------------------------------------------
    warnings.simplefilter("ignore")
    n_loop = min(args.loop_resamples, args.resamples)
    t0 = time.perf_counter()
    ref_point = {m: sklearn_metrics(y, data[m], prob[m], decision[m]) for m in models}
    looped = {m: [] for m in models}
    for b in range(n_loop):
        idx = resample_indices(weights[b])
        for m in models:
            looped[m].append(sklearn_metrics(y[idx], data[m][idx], prob[m][idx], decision[m][idx]))
    loop_s = time.perf_counter() - t0
    loop_full = loop_s * args.resamples / n_loop
    extrapolated = n_loop < args.resamples
    print(f"scikit-learn loop: {loop_s:.2f} s for {n_loop:,} resamples"
          + (f" -> {loop_full:.1f} s extrapolated linearly to {args.resamples:,}" if extrapolated else ""))

    # -- agreement -------------------------------------------------------------------------------
    worst_point, worst_boot = 0.0, 0.0
    for m in models:
        ref = np.array([ref_point[m][k] for k in METRICS])
        worst_point = max(worst_point, float(np.nanmax(np.abs(point[m] - ref))))
        assert np.array_equal(np.isnan(point[m]), np.isnan(ref)), m
        lp = np.array([[r[k] for k in METRICS] for r in looped[m]])
        diff = np.abs(boot[m][:n_loop] - lp)
        assert np.array_equal(np.isnan(boot[m][:n_loop]), np.isnan(lp)), m
        worst_boot = max(worst_boot, float(np.nanmax(diff)))
    assert worst_point < 1e-9, f"point estimates differ from scikit-learn by {worst_point:.3g}"
    assert worst_boot < 1e-9, f"resampled metrics differ from scikit-learn by {worst_boot:.3g}"
    print(f"agreement with scikit-learn: point estimates max |diff| {worst_point:.2e}, "
          f"{n_loop} looped resamples max |diff| {worst_boot:.2e} (required < 1e-9)")
    print(f"speed-up: {loop_full / best:,.0f}x" + (" (loop time extrapolated)" if extrapolated else ""))


if __name__ == "__main__":
    main()
