"""Benchmark of ``build_cohort`` on synthetic index tables at MIMIC scale.

Default: 1,000,000 ECG rows, ~380,000 X-rays, ~100,000 echoes, ~200,000 patients (ratios kept when
``--ecg-rows`` changes).  Exams of a patient cluster around a few hospital episodes so that the
linkage finds realistic numbers of matches; a little dirt is mixed in (missing ids, unparseable
dates, duplicate rows, minors, echoes without measurements).  Generation is vectorised NumPy.

    python benchmarks/cohort_build.py                 # 1M ECG rows
    python benchmarks/cohort_build.py --ecg-rows 200000 --format csv
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

from cardiofusion.cohort import CohortConfig, build_cohort, format_flow, link_exams, load_index

DAY_S = 86_400


def _counts(rng: np.random.Generator, n_patients: int, total: int) -> np.ndarray:
    """Heavy-tailed per-patient exam counts summing exactly to ``total``."""
    w = rng.lognormal(0.0, 1.0, n_patients)
    c = np.floor(w / w.sum() * total).astype(np.int64)
    short = total - int(c.sum())
    if short > 0:
        np.add.at(c, rng.choice(n_patients, short, replace=True), 1)
    return c


def _exam_times(rng: np.random.Generator, owner: np.ndarray, base: np.ndarray, episodes: np.ndarray) -> np.ndarray:
    """Seconds since epoch: a patient's base + one of their episode offsets + jitter (days)."""
    k = rng.integers(0, episodes.shape[1], owner.size)
    jitter = rng.normal(0.0, 4.0, owner.size)
    days = base[owner] + episodes[owner, k] + jitter
    secs = days * DAY_S + rng.integers(7 * 3600, 19 * 3600, owner.size)
    return secs.astype(np.int64)


def _iso(secs: np.ndarray) -> pl.Series:
    return pl.Series(secs * 1_000_000).cast(pl.Datetime("us")).dt.strftime("%Y-%m-%dT%H:%M:%S")


def make_tables(ecg_rows: int, seed: int = 0) -> dict[str, pl.DataFrame]:
    """Synthetic ECG, X-ray and echo index tables in the default layout."""
    rng = np.random.default_rng(seed)
    n_pat = max(10, ecg_rows // 5)
    n_cxr = int(ecg_rows * 0.38)
    n_echo = max(10, ecg_rows // 10)
    pid = np.char.add("p", np.arange(n_pat).astype(str))
    base = rng.uniform(14_975, 18_900, n_pat)  # 2011 .. 2021, in days since epoch
    episodes = np.concatenate([np.zeros((n_pat, 1)), rng.uniform(0, 900, (n_pat, 2))], axis=1)
    age0 = rng.uniform(16, 95, n_pat)  # ~2% minors
    sex = np.where(rng.random(n_pat) < 0.45, "F", "M")

    tables = {}
    for kind, n in (("ecg", ecg_rows), ("cxr", n_cxr), ("echo", n_echo)):
        owner = np.repeat(np.arange(n_pat), _counts(rng, n_pat, n))
        rng.shuffle(owner)
        secs = _exam_times(rng, owner, base, episodes)
        age_at = age0[owner] + (secs / DAY_S - base[owner]) / 365.25
        cols = {
            "patient_id": pid[owner].astype(object),
            "exam_id": np.char.add(f"{kind}", np.arange(n).astype(str)).astype(object),
            "exam_datetime": _iso(secs),
        }
        if kind != "echo":
            suffix = ".dat" if kind == "ecg" else ".png"
            cols["path"] = np.char.add(np.char.add(f"{kind}/", cols["exam_id"].astype(str)), suffix).astype(object)
        if kind == "ecg":
            cols["age"] = np.floor(age_at)
            cols["sex"] = sex[owner]
            cols["pacemaker"] = (rng.random(n) < 0.03).astype(np.int8)
            cols["atrial_fibrillation"] = (rng.random(n) < 0.12).astype(np.int8)
            cols["fs"] = np.full(n, 500.0)
        elif kind == "cxr":
            cols["view_position"] = np.where(rng.random(n) < 0.7, "PA", "AP")
        else:
            # ~8% of echoes meet the AS rule; 3% have no measurement at all
            vmax = rng.lognormal(np.log(1.4), 0.3, n)
            mg = np.where(vmax > 2.2, 4.0 * vmax**2 * 0.6, rng.uniform(2, 12, n))
            ava = np.clip(3.5 - vmax * 0.8 + rng.normal(0, 0.3, n), 0.4, 5.0)
            miss = rng.random((n, 3)) < np.array([0.05, 0.25, 0.35])
            none = rng.random(n) < 0.03
            cols["peak_velocity_m_s"] = np.where(miss[:, 0] | none, np.nan, np.round(vmax, 2))
            cols["mean_gradient_mmhg"] = np.where(miss[:, 1] | none, np.nan, np.round(mg, 1))
            cols["ava_cm2"] = np.where(miss[:, 2] | none, np.nan, np.round(ava, 2))
            cols["age"] = np.where(rng.random(n) < 0.1, np.nan, np.floor(age_at))
            cols["sex"] = sex[owner]
            cols["lvef_pct"] = np.round(rng.normal(58, 10, n), 0)
        df = pl.DataFrame(cols)
        # dirt: 0.1% missing patient ids, 0.1% unparseable dates, 0.2% exact duplicate rows
        dirt = rng.random(n)
        df = df.with_columns(
            pl.when(pl.Series(dirt < 0.001)).then(None).otherwise(pl.col("patient_id")).alias("patient_id"),
            pl.when(pl.Series((dirt >= 0.001) & (dirt < 0.002))).then(pl.lit("unknown"))
            .otherwise(pl.col("exam_datetime")).alias("exam_datetime"),
        )
        dups = df.filter(pl.Series(rng.random(n) < 0.002))
        tables[kind] = pl.concat([df, dups])
    return tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ecg-rows", type=int, default=1_000_000, help="ECG index rows (default 1,000,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet", help="index table format on disk")
    ap.add_argument("--folds", type=int, default=None)
    ap.add_argument("--show-flow", action="store_true", help="print the flow table")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    tables = make_tables(args.ecg_rows, args.seed)
    t_gen = time.perf_counter() - t0
    sizes = {k: v.height for k, v in tables.items()}
    print(f"generated ecg={sizes['ecg']:,} cxr={sizes['cxr']:,} echo={sizes['echo']:,} rows "
          f"({tables['ecg']['patient_id'].n_unique():,} patients with an ECG) in {t_gen:.1f} s")
    config = CohortConfig(n_folds=args.folds)
    with tempfile.TemporaryDirectory(prefix="cf_cohort_bench_") as tmp:
        tmp_p = Path(tmp)
        files = {}
        for kind, df in tables.items():
            files[kind] = tmp_p / f"{kind}_index.{args.format}"
            (df.write_parquet if args.format == "parquet" else df.write_csv)(files[kind])

        t0 = time.perf_counter()
        loaded = {k: load_index(files[k], k) for k in ("ecg", "cxr", "echo")}
        t_load = time.perf_counter() - t0

        t0 = time.perf_counter()
        linked = link_exams(loaded["ecg"], loaded["cxr"], loaded["echo"], config)
        t_link = time.perf_counter() - t0

        t0 = time.perf_counter()
        result = build_cohort(files["ecg"], files["cxr"], files["echo"], tmp_p / "out", config)
        t_build = time.perf_counter() - t0
    total_rows = sum(sizes.values())
    assert linked.records.height == result.manifest.height
    if args.show_flow:
        print(format_flow(result.flow))
    c = result.flow["cohort"]
    print(f"cohort: {c['records']:,} records, {c['patients']:,} patients, AS {c['as_records']:,} records "
          f"({c['prevalence_records']:.1%}), {result.exclusions.height:,} excluded rows")
    print(f"load_index (3 tables, {args.format}): {t_load:7.2f} s")
    print(f"link_exams (pure linkage):        {t_link:7.2f} s  {total_rows / t_link:12,.0f} input rows/s  "
          f"{sizes['ecg'] / t_link:12,.0f} ECG rows/s")
    print(f"build_cohort (load+link+split+write): {t_build:7.2f} s  {total_rows / t_build:12,.0f} input rows/s  "
          f"{sizes['ecg'] / t_build:12,.0f} ECG rows/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
