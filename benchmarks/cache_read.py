"""Records per second: re-parsing raw files vs reading the preprocessing cache.

Makes a small export -- by default its own: 500 Hz / 15 s CSV ECGs in 1.25-uV integer counts and
288 x 256 12-bit DICOM X-rays, two records per X-ray; with ``--synth`` the synthetic generator's
(``cardiofusion.synth.generate_export``, ``--records`` patients) linked by the cohort builder -- builds
the cache with the default settings (500 Hz, 15 s, 256 px), then times, over the same random record order:

* raw: ``read_ecg`` + ``standardize`` + baseline + ``read_cxr`` + ``resize_square`` per record
  (what a dataset without a cache does; done by :func:`cardiofusion.cache.decode_ecg` / ``decode_cxr``);
* cache: ``ecg_at(row)`` + ``cxr_at(row)`` per record (random access into the memory maps).

Both sides read files the build just wrote, so both are served from the OS page cache (warm).

    python benchmarks/cache_read.py [--records 200] [--workers 1] [--synth] [--out DIR]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from cardiofusion.cache import clean_option
from cardiofusion.cache import CacheConfig, build_cache, decode_cxr, decode_ecg, open_cache
from cardiofusion.records import CANONICAL_LEADS

FS, SECONDS, RES_UV, SIZE = 500, 15.0, 1.25, 256


def make_export(out: Path, n_records: int, seed: int = 0) -> pd.DataFrame:
    """Own small export: CSV ECGs (counts) + 12-bit DICOM X-rays; returns a cohort manifest."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    n = int(FS * SECONDS)
    t = np.arange(n) / FS
    rows = []
    n_cxr = (n_records + 1) // 2
    for j in range(n_cxr):
        img = (rng.random((SIZE + 32, SIZE)) * 4095).astype(np.uint16)  # (H, W), non-square
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PhotometricInterpretation, ds.SamplesPerPixel = "DX", "MONOCHROME2", 1
        ds.Rows, ds.Columns = img.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = img.tobytes()
        ds.save_as(out / f"cxr_{j:05d}.dcm", enforce_file_format=True)
    for i in range(n_records):
        beats = np.sin(2 * np.pi * 1.2 * t)[None] * rng.uniform(0.2, 1.5, (12, 1))  # (12, n) mV
        mv = beats + 0.05 * rng.standard_normal((12, n)) + rng.uniform(-0.3, 0.3, (12, 1))
        counts = np.round(mv * 1000 / RES_UV).astype(np.int32)
        pd.DataFrame(counts.T, columns=list(CANONICAL_LEADS)).to_csv(out / f"ecg_{i:05d}.csv", index=False)
        rows.append({
            "record_id": f"R{i:05d}", "patient_id": f"P{i:05d}", "split": "train", "label": i % 2,
            "ecg_exam_id": f"E{i:05d}", "ecg_path": str(out / f"ecg_{i:05d}.csv"),
            "cxr_exam_id": f"X{i // 2:05d}", "cxr_path": str(out / f"cxr_{i // 2:05d}.dcm"),
            "fs": float(FS), "units": "counts", "resolution_uv": RES_UV,
        })
    return pd.DataFrame(rows)


def make_synth_export(out: Path, n_patients: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic generator's export, linked into a manifest by the cohort builder."""
    from cardiofusion.cohort.build import build_cohort
    from cardiofusion.synth import SynthConfig, generate_export

    generate_export(out, SynthConfig(n_patients=n_patients, seed=seed, compute_oracle=False,
                                     write_ground_truth=False))
    result = build_cohort(out / "ecg_index.csv", out / "cxr_index.csv", out / "echo_index.csv", None)
    return result.manifest.to_pandas()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200, help="records (own export) or patients (--synth)")
    ap.add_argument("--workers", type=int, default=1, help="cache build processes")
    ap.add_argument("--out", default=None, help="work folder (default: a temporary one, removed)")
    ap.add_argument("--synth", action="store_true", help="use cardiofusion.synth.generate_export")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cf_cache_bench_"))
    try:
        t0 = time.perf_counter()
        maker = make_synth_export if args.synth else make_export
        manifest = maker(work / "export", args.records, args.seed)
        manifest.to_parquet(work / "manifest.parquet", index=False)
        print(f"export: {len(manifest)} records, {manifest.ecg_exam_id.nunique()} ECGs, "
              f"{manifest.cxr_exam_id.nunique()} X-rays ({'synth' if args.synth else 'own'}; "
              f"{time.perf_counter() - t0:.1f} s to write)")

        config = CacheConfig()  # 500 Hz, 15 s, median baseline, 256 px
        report = build_cache(work / "manifest.parquet", work / "cache", config, workers=args.workers,
                             progress=False)
        n_exams = sum(c["total"] for c in report.counts.values())
        print(f"cache build: {n_exams} exams in {report.seconds:.2f} s with {args.workers} worker(s) "
              f"({n_exams / report.seconds:.1f} exams/s); failed: {report.n_failed}")

        cache = open_cache(work / "cache")
        records = cache.records(manifest)
        order = np.random.default_rng(args.seed).permutation(len(records))
        recs = records.iloc[order]
        cfg_opts = [{"ecg_path": r["ecg_path"], "cxr_path": r["cxr_path"],
                     **{k: clean_option(r.get(k)) for k in ("fs", "units", "resolution_uv")}}
                    for r in recs.to_dict("records")]

        t0 = time.perf_counter()
        checksum_raw = 0.0
        for r in cfg_opts:
            sig, _, _, _ = decode_ecg(r["ecg_path"], config, fs=r["fs"], units=r["units"],
                                      resolution_uv=r["resolution_uv"])
            img = decode_cxr(r["cxr_path"], config)
            checksum_raw += float(sig[0, 0]) + float(img[0, 0])
        raw_s = time.perf_counter() - t0
        raw_rate = len(cfg_opts) / raw_s

        ecg_rows, cxr_rows = recs["ecg_row"].to_numpy(), recs["cxr_row"].to_numpy()
        reps = max(1, int(2000 / max(len(recs), 1)))
        t0 = time.perf_counter()
        checksum_cache = 0.0
        for _ in range(reps):
            for er, cr in zip(ecg_rows, cxr_rows):
                sig, mask, n = cache.ecg_at(er)  # (12, T) float32
                img = cache.cxr_at(cr)  # (S, S) uint8
                checksum_cache += float(sig[0, 0]) + float(img[0, 0])
        cache_s = time.perf_counter() - t0
        cache_rate = reps * len(recs) / cache_s
        assert abs(checksum_raw - checksum_cache / reps) < 1e-3 * max(1.0, abs(checksum_raw))

        print(f"raw re-parsing : {raw_rate:10.1f} records/s  ({len(cfg_opts)} records in {raw_s:.2f} s)")
        print(f"from the cache : {cache_rate:10.1f} records/s  ({reps * len(recs)} records in {cache_s:.2f} s)")
        print(f"speed-up       : {cache_rate / raw_rate:10.1f} x")
        size_mb = sum((work / "cache" / f).stat().st_size for f in ("ecg.f16", "cxr.u8")) / 2**20
        print(f"cache arrays   : {size_mb:.1f} MiB for {len(records)} records")
    finally:
        if not args.out:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
