"""Speed of the synthetic export: per ECG record, per X-ray, and a paper-scale extrapolation.

    python benchmarks/synth_speed.py [--patients 1000] [--workers 2] [--out /tmp/synth_bench] [--keep]

Times rendering and writing separately on a few hundred exams, then runs ``generate_export`` for
``--patients`` patients with ``--workers`` processes and extrapolates linearly to the paper's 7,483
patients.  The export folder is deleted afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from cardiofusion.synth import SynthConfig, generate_export
from cardiofusion.synth.cxr import render_cxr, write_cxr_dicom
from cardiofusion.synth.ecg import render_ecg, to_counts, write_ecg_csv
from cardiofusion.synth.patients import exam_rng, plan_cohort

PAPER_PATIENTS = 7483


def per_exam(n: int = 200) -> dict[str, float]:
    cfg = SynthConfig(n_patients=80, seed=1)
    plans = plan_cohort(cfg)
    ecgs = [e for p in plans for e in p.ecgs][:n]
    cxrs = [c for p in plans for c in p.cxrs][:n]
    tmp = Path(tempfile.mkdtemp())
    out: dict[str, float] = {}
    t = time.perf_counter()
    sigs = [render_ecg(e, exam_rng(1, e["patient_index"], e["exam_key"])) for e in ecgs]
    out["ecg_render_ms"] = 1e3 * (time.perf_counter() - t) / len(ecgs)
    t = time.perf_counter()
    for i, x in enumerate(sigs):
        write_ecg_csv(tmp / f"{i}.csv", to_counts(x))
    out["ecg_write_ms"] = 1e3 * (time.perf_counter() - t) / len(ecgs)
    t = time.perf_counter()
    imgs = [render_cxr(c, exam_rng(1, c["patient_index"], c["exam_key"])) for c in cxrs]
    out["cxr_render_ms"] = 1e3 * (time.perf_counter() - t) / len(cxrs)
    t = time.perf_counter()
    for i, ((st, gt), c) in enumerate(zip(imgs, cxrs)):
        write_cxr_dicom(tmp / f"{i}.dcm", st, monochrome1=c["monochrome1"], modality=c["modality"],
                        window_center=gt["window_center"], window_width=gt["window_width"], patient_id="X",
                        patient_name="A^B", sex="F", age=60, when=c["datetime"], exam_id=f"E{i}",
                        view_position="PA", uid_seed=str(i))
    out["cxr_write_ms"] = 1e3 * (time.perf_counter() - t) / len(cxrs)
    out["ecg_csv_bytes"] = float(np.mean([p.stat().st_size for p in tmp.glob("*.csv")]))
    out["cxr_dcm_bytes"] = float(np.mean([p.stat().st_size for p in tmp.glob("*.dcm")]))
    shutil.rmtree(tmp)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()

    pe = per_exam()
    for k, v in pe.items():
        print(f"{k:>16}: {v:,.2f}")
    out = Path(args.out or tempfile.mkdtemp(prefix="synth_bench_")) / "export"
    if out.exists():
        shutil.rmtree(out)
    t = time.perf_counter()
    res = generate_export(out, SynthConfig(n_patients=args.patients, workers=args.workers, seed=0))
    wall = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    c = res.counts
    f = PAPER_PATIENTS / args.patients
    print(f"export of {args.patients} patients, {args.workers} workers: {wall:.1f} s "
          f"({c['ecg']} ECG, {c['cxr']} X-ray, {c['echo']} echo; {c['records']} linked records; "
          f"{size / 1e9:.2f} GB)")
    print(f"oracle AUROC: {res.oracle}")
    print(f"extrapolated to {PAPER_PATIENTS} patients: ~{wall * f / 60:.1f} min, ~{c['ecg'] * f:,.0f} ECG, "
          f"~{c['cxr'] * f:,.0f} X-ray, ~{c['records'] * f:,.0f} records, ~{size * f / 1e9:.1f} GB")
    if not args.keep:
        shutil.rmtree(out.parent if args.out is None else out)


if __name__ == "__main__":
    main()
