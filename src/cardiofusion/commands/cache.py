"""``cardiofusion cache build|info``: decode a cohort's ECGs and X-rays once into a preprocessing cache."""

from __future__ import annotations

import argparse
import os
import sys

from ..cache import BASELINE_MODES, ECG_UNITS, IMAGE_MODES, CacheConfig, build_cache, open_cache

#: Failures printed by ``cache build`` before "... and N more (see failures.csv)".
MAX_LISTED_FAILURES = 20


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="decode every ECG and X-ray of a cohort manifest once into fast memory-mapped arrays",
        description="Build or describe the preprocessing cache used for training (layout: docs/data_layout.md).",
    )
    csub = p.add_subparsers(dest="cache_command", metavar="ACTION")
    csub.required = True

    d = CacheConfig()
    b = csub.add_parser(
        "build",
        help="decode the manifest's exams into a cache folder (resumable)",
        description="Decode every unique ECG and X-ray exam of a cohort manifest into OUT. Files that cannot "
        "be read are listed (failures.csv) and do not stop the build. Re-running on the same OUT with the "
        "same manifest and settings resumes an interrupted build.",
    )
    b.add_argument("--manifest", required=True, help="cohort manifest (manifest.parquet or CSV)")
    b.add_argument("--out", required=True, help="cache folder to create or resume")
    b.add_argument("--workers", type=int, default=_default_workers(),
                   help="decoding processes (1 = in this process; default: %(default)s)")
    b.add_argument("--chunk-size", type=int, default=16, help="exams per worker task (default: %(default)s)")
    b.add_argument("--fs", type=float, default=d.fs, help="sampling rate of the cached ECGs, Hz (default: %(default)g)")
    b.add_argument("--duration-s", type=float, default=d.duration_s,
                   help="seconds stored per ECG: longer records keep the first seconds, shorter ones are "
                        "zero-padded (default: %(default)g)")
    b.add_argument("--baseline", choices=BASELINE_MODES, default=d.baseline,
                   help="ECG baseline removal: per-lead median, 0.5 Hz high-pass, or none (default: %(default)s)")
    b.add_argument("--image-size", type=int, default=d.image_size,
                   help="side of the square cached X-rays, pixels (default: %(default)s)")
    b.add_argument("--image-mode", choices=IMAGE_MODES, default=d.image_mode,
                   help="how X-rays become square (default: %(default)s)")
    b.add_argument("--ecg-fs", type=float, default=None,
                   help="sampling rate (Hz) of headerless ECG files (CSV, NumPy) without a manifest 'fs' value")
    b.add_argument("--ecg-units", choices=ECG_UNITS, default=None,
                   help="units of headerless ECG files without a manifest 'units' value")
    b.add_argument("--ecg-resolution-uv", type=float, default=None,
                   help="microvolts per count for 'counts' files without a manifest 'resolution_uv' value")
    b.add_argument("--overwrite", action="store_true",
                   help="discard a cache in OUT built from another manifest or other settings")
    b.add_argument("--retry-failed", action="store_true", help="decode again the exams that failed before")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.set_defaults(func=run_build)

    i = csub.add_parser("info", help="describe a cache folder", description="Print a cache's settings and counts.")
    i.add_argument("directory", help="cache folder")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=run_info)


def run_build(args: argparse.Namespace) -> int:
    config = CacheConfig(
        fs=args.fs, duration_s=args.duration_s, baseline=args.baseline, image_size=args.image_size,
        image_mode=args.image_mode, ecg_fs=args.ecg_fs, ecg_units=args.ecg_units,
        ecg_resolution_uv=args.ecg_resolution_uv,
    )
    report = build_cache(args.manifest, args.out, config, workers=args.workers, chunk_size=args.chunk_size,
                         overwrite=args.overwrite, retry_failed=args.retry_failed, progress=not args.no_progress)
    decoded = report.decoded["ecg"] + report.decoded["cxr"]
    if report.resumed and decoded == 0:
        print(f"cache in {report.out_dir} is up to date (nothing left to decode)")
    else:
        verb = "resumed" if report.resumed else "built"
        print(f"cache {verb} in {report.out_dir} ({decoded} exams decoded in {report.seconds:.1f} s, "
              f"{args.workers} worker(s))")
    for name, label in (("ecg", "ECG"), ("cxr", "X-ray")):
        c = report.counts[name]
        print(f"  {label:<5}  {c['total']} exams: {c['ok']} ok, {c['failed']} failed"
              + (f", {c['pending']} pending" if c["pending"] else ""))
    if len(report.failures):
        print(f"{len(report.failures)} file(s) could not be decoded (listed in {report.out_dir / 'failures.csv'}):")
        for row in report.failures.head(MAX_LISTED_FAILURES).itertuples():
            print(f"  {row.modality}  {row.exam_id}  {row.path}: {row.reason}")
        if len(report.failures) > MAX_LISTED_FAILURES:
            print(f"  ... and {len(report.failures) - MAX_LISTED_FAILURES} more")
    # a single-modality manifest (cohort from-adapter) has no exams of the other modality: that is not a failure
    present = [name for name in ("ecg", "cxr") if report.counts[name]["total"] > 0] or ["ecg", "cxr"]
    if any(report.counts[name]["ok"] == 0 for name in present):
        which = [lab for name, lab in (("ecg", "ECG"), ("cxr", "X-ray")) if name in present and report.counts[name]["ok"] == 0]
        print(f"cardiofusion: error: nothing usable: no {' and no '.join(which)} exam could be decoded",
              file=sys.stderr)
        return 1
    return 0


def run_info(args: argparse.Namespace) -> int:
    import json

    info = open_cache(args.directory).summary()
    if args.json:
        print(json.dumps(info))
        return 0
    print(info["directory"])
    cfg = info["config"]
    print(f"  ECG    {info['ecg_shape'][0]} exams x 12 leads x {info['ecg_shape'][2]} samples at {cfg['fs']:g} Hz "
          f"({cfg['duration_s']:g} s, baseline {cfg['baseline']}, float16)")
    print(f"  X-ray  {info['cxr_shape'][0]} exams, {cfg['image_size']} x {cfg['image_size']} uint8 "
          f"({cfg['image_mode']})")
    for name, label in (("ecg", "ECG"), ("cxr", "X-ray")):
        c = info["counts"][name]
        print(f"  {label:<5}  {c['ok']} ok, {c['failed']} failed, {c['pending']} pending")
    print(f"  {'complete' if info['complete'] else 'INCOMPLETE (run cache build again to resume)'}")
    headerless = {k: cfg[k] for k in ("ecg_fs", "ecg_units", "ecg_resolution_uv") if cfg.get(k) is not None}
    if headerless:
        print("  headerless ECG defaults: " + ", ".join(f"{k}={v}" for k, v in headerless.items()))
    print(f"  manifest {info['manifest']} (hash {str(info['source_hash'])[:12]})")
    print(f"  library {info['library_version']}, created {info['created']}, updated {info['updated']}")
    return 0
