"""How much coronary-calcium signal the cached ECGs carry for a linear model: crude waveform features (per lead,
the 5/25/50/75/95th percentiles and the sd of the signal after subtracting a 1-s moving average, i.e. the
baseline wander) -> multinomial logistic regression, 5-fold patient-grouped cross-validation, for the
``cac_severity`` classes.

    python benchmarks/cac_ecg_features.py CACHE MANIFEST [--C 0.01 0.1 1]

Prints accuracy, quadratic-weighted kappa and the predicted class counts per regularisation ``C`` beside the
most-frequent-class accuracy (a ceiling check for the recipe's ECG-only arm, docs/recipes/cac-severity.md).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.ndimage import uniform_filter1d
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, cohen_kappa_score
from sklearn.model_selection import GroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from cardiofusion.cache import open_cache
from cardiofusion.evaluation.evaluate import read_manifest
from cardiofusion.tasks import load_task


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache")
    ap.add_argument("manifest")
    ap.add_argument("--C", nargs="+", type=float, default=[0.01, 0.1, 1.0])
    args = ap.parse_args()
    cache = open_cache(args.cache)
    manifest = read_manifest(args.manifest)
    y = load_task("cac_severity").encode_labels(manifest)
    rows = cache.ecg_rows(manifest["ecg_exam_id"])
    keep = np.isfinite(y) & (rows >= 0)
    manifest, y, rows = manifest[keep], y[keep].astype(int), rows[keep]
    x = np.asarray(cache.ecg_array[rows], dtype=np.float32)  # (n, leads, samples)
    fs = float(cache.fs)
    hp = x - uniform_filter1d(x, int(fs) + 1, axis=2)
    feats = np.concatenate([np.percentile(hp, q, axis=2) for q in (5, 25, 50, 75, 95)] + [hp.std(axis=2)], axis=1)
    groups = manifest["patient_id"].to_numpy()
    print(f"{len(y)} records, most frequent class accuracy {np.bincount(y).max() / len(y):.3f}")
    for c in args.C:
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
        pred = cross_val_predict(model, feats, y, cv=GroupKFold(5), groups=groups)
        print(f"C {c:g}: accuracy {accuracy_score(y, pred):.3f}, quadratic kappa "
              f"{cohen_kappa_score(y, pred, weights='quadratic'):.3f}, predicted per class "
              f"{np.bincount(pred, minlength=4).tolist()}")


if __name__ == "__main__":
    main()
