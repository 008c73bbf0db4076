"""Write a synthetic hospital export: ECG CSVs, X-ray DICOMs, three index tables and the ground truth.

Layout (paths in the index tables are relative to the export folder)::

    DIR/ecg/<exam_id>.csv        12 leads, 500 Hz, 15 s, integer counts of 1.25 uV
    DIR/cxr/<exam_id>.dcm        DX/CR DICOM, 12-bit in 16, some MONOCHROME1
    DIR/ecg_index.csv  DIR/cxr_index.csv  DIR/echo_index.csv
    DIR/ground_truth/            patients, per-exam planted signs, linked records, defects, summary.json
    DIR/export.json              config, formats, counts, seed, library version
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from .. import __version__
from ..cohort.labels import CAC_BINS, CAC_CLASSES, HF_LVEF_PCT, LVH_MASS_G, ASCriteria
from ..errors import ConfigError
from ..records import CANONICAL_LEADS
from .config import SynthConfig, SynthResult
from .cxr import render_cxr, truncate_file, write_cxr_dicom
from .ecg import render_ecg, to_counts, write_defective_ecg_csv, write_ecg_csv
from .oracle import link_records, oracle_auroc, oracle_targets, record_targets
from .patients import LVH_LEADS, STRAIN_LEADS, PatientPlan, coronary_rng, exam_rng, plan_cohort

ECG_INDEX_COLUMNS = ("patient_id", "exam_id", "exam_datetime", "path", "age", "sex", "pacemaker",
                     "atrial_fibrillation", "fs", "units", "resolution_uv")
CXR_INDEX_COLUMNS = ("patient_id", "exam_id", "exam_datetime", "path", "age", "sex", "view_position")
ECHO_INDEX_COLUMNS = ("patient_id", "exam_id", "exam_datetime", "peak_velocity_m_s", "mean_gradient_mmhg",
                      "ava_cm2", "age", "sex", "lvef_pct", "lv_mass_g")


def _iso(when: Any) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def _render_chunk(args: tuple[dict[str, Any], Path, list[tuple[dict, list[dict], list[dict]]]]) -> list[dict[str, Any]]:
    """Render and write the files of a few patients; returns the X-ray ground-truth rows."""
    cfg_d, out_dir, items = args
    seed = cfg_d["seed"]
    n = int(round(cfg_d["ecg_fs"] * cfg_d["ecg_duration_s"]))
    rows = []
    for patient, cxrs, ecgs in items:
        for e in ecgs:
            path = out_dir / "ecg" / f"{e['exam_id']}.csv"
            rng = exam_rng(seed, e["patient_index"], e["exam_key"])
            x = render_ecg(e, rng, fs=cfg_d["ecg_fs"], duration_s=cfg_d["ecg_duration_s"])  # (12, n) mV
            if e.get("defect"):
                write_defective_ecg_csv(path, n, e["defect"])
            else:
                write_ecg_csv(path, to_counts(x, cfg_d["ecg_resolution_uv"]))
        for c in cxrs:
            path = out_dir / "cxr" / f"{c['exam_id']}.dcm"
            rng = exam_rng(seed, c["patient_index"], c["exam_key"])
            stored, gt = render_cxr(c, rng, size=cfg_d["cxr_size"],
                                    coronary_rng=coronary_rng(seed, c["patient_index"], c["exam_key"]))
            write_cxr_dicom(
                path, stored, monochrome1=c["monochrome1"], modality=c["modality"],
                window_center=gt["window_center"], window_width=gt["window_width"],
                patient_id=patient["patient_id"], patient_name=patient["patient_name"], sex=patient["sex"],
                age=c["age"], when=c["datetime"], exam_id=c["exam_id"], view_position=c["view_position"],
                uid_seed=f"{seed}-{c['exam_id']}")
            if c.get("defect"):
                truncate_file(path, 0.5)
            rows.append({"exam_id": c["exam_id"], **gt})
    return rows


def _chunks(plans: list[PatientPlan], size: int) -> Iterator[list[tuple[dict, list[dict], list[dict]]]]:
    for i in range(0, len(plans), size):
        yield [(p.patient, p.cxrs, p.ecgs) for p in plans[i:i + size]]


def _choose_defects(plans: list[PatientPlan], cfg: SynthConfig) -> list[dict[str, str]]:
    """Mark a few exams that the linkage will use as broken files (deterministic in the seed)."""
    rng = np.random.default_rng(np.random.SeedSequence(cfg.seed, spawn_key=(2,)))
    adults = [p for p in plans if not p.patient["minor"]]
    defects = []
    ecg_pool = [e for p in adults for e in p.ecgs if e["linked_hint"]]
    cxr_pool = [c for p in adults for c in p.cxrs if c["linked_hint"]]
    kinds = ("flat", "nan")
    for j, k in enumerate(rng.permutation(len(ecg_pool))[: cfg.n_defective_ecg]):
        e = ecg_pool[int(k)]
        e["defect"] = kinds[j % 2]
        defects.append({"modality": "ecg", "exam_id": e["exam_id"], "path": f"ecg/{e['exam_id']}.csv",
                        "kind": f"{e['defect']} signal"})
    for k in rng.permutation(len(cxr_pool))[: cfg.n_defective_cxr]:
        c = cxr_pool[int(k)]
        c["defect"] = "truncated"
        defects.append({"modality": "cxr", "exam_id": c["exam_id"], "path": f"cxr/{c['exam_id']}.dcm",
                        "kind": "truncated DICOM"})
    return defects


def _tables(plans: list[PatientPlan], cfg: SynthConfig) -> dict[str, pd.DataFrame]:
    ecg_rows, cxr_rows, echo_rows, ecg_gt = [], [], [], []
    for p in plans:
        for e in p.ecgs:
            ecg_rows.append({
                "patient_id": e["patient_id"], "exam_id": e["exam_id"], "exam_datetime": _iso(e["datetime"]),
                "path": f"ecg/{e['exam_id']}.csv", "age": e["age"], "sex": e["sex"],
                "pacemaker": int(e["pacemaker"]), "atrial_fibrillation": int(e["af"]), "fs": cfg.ecg_fs,
                "units": "counts", "resolution_uv": cfg.ecg_resolution_uv})
            ecg_gt.append({
                "exam_id": e["exam_id"], "patient_id": e["patient_id"], "as_label": p.patient["as_label"],
                "lvh_gain": round(e["lvh_gain"], 4), "lvh_gain_visible": round(e["lvh_gain_visible"], 4),
                "strain_mv": round(e["strain_mv"], 4), "strain_visible_mv": round(e["strain_visible_mv"], 4),
                "lvh_leads": ",".join(LVH_LEADS), "strain_leads": ",".join(STRAIN_LEADS) if e["strain_visible_mv"] > 0 else "",
                "atrial_fibrillation": int(e["af"]), "pacemaker": int(e["pacemaker"]), "paced": int(e["paced"]),
                "hr_bpm": round(e["hr_bpm"], 1), "amp_scale": round(e["amp_scale"], 4),
                "qrs_axis_deg": round(e["qrs_axis_deg"], 1), "noise_mv": round(e["noise_mv"], 4),
                "wander_mv": round(e["wander_mv"], 4), "powerline_mv": round(e["powerline_mv"], 4),
                "isch_territory": e["isch_territory"],
                **{k: round(e[k], 4) for k in ("isch_st_mv", "isch_t_flat", "isch_q_mv", "isch_st_mv_visible",
                                               "isch_t_flat_visible", "isch_q_mv_visible")},
                "defect": e.get("defect", "")})
        for c in p.cxrs:
            cxr_rows.append({
                "patient_id": c["patient_id"], "exam_id": c["exam_id"], "exam_datetime": _iso(c["datetime"]),
                "path": f"cxr/{c['exam_id']}.dcm", "age": c["age"], "sex": c["sex"],
                "view_position": c["view_position"]})
        for u in p.echos:
            echo_rows.append({
                "patient_id": u["patient_id"], "exam_id": u["exam_id"], "exam_datetime": _iso(u["datetime"]),
                "peak_velocity_m_s": u["peak_velocity_m_s"], "mean_gradient_mmhg": u["mean_gradient_mmhg"],
                "ava_cm2": u["ava_cm2"], "age": u["age"], "sex": u["sex"], "lvef_pct": u["lvef_pct"],
                "lv_mass_g": u["lv_mass_g"]})
    return {
        "ecg": pd.DataFrame(ecg_rows, columns=list(ECG_INDEX_COLUMNS)),
        "cxr": pd.DataFrame(cxr_rows, columns=list(CXR_INDEX_COLUMNS)),
        "echo": pd.DataFrame(echo_rows, columns=list(ECHO_INDEX_COLUMNS)),
        "ecg_truth": pd.DataFrame(ecg_gt),
        "patients": pd.DataFrame([p.patient for p in plans]).drop(columns=["patient_name"]),
    }


def _cxr_truth(plans: list[PatientPlan], rendered: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for p in plans:
        for c in p.cxrs:
            g = rendered[c["exam_id"]]
            hb = g["heart_bbox"]
            pb = g["pacemaker_bbox"] or [None] * 4
            rows.append({
                "exam_id": c["exam_id"], "patient_id": c["patient_id"], "as_label": p.patient["as_label"],
                "ctr": round(c["ctr"], 4), "view_position": c["view_position"],
                "n_valve_calc": c["n_valve_calc"], "n_knob_calc": c["n_knob_calc"],
                "n_valve_calc_visible": g["n_valve_calc_visible"], "n_knob_calc_visible": g["n_knob_calc_visible"],
                "n_coronary_calc": c["n_coronary_calc"], "n_coronary_calc_visible": g["n_coronary_calc_visible"],
                "coronary_bboxes": json.dumps(g["coronary_bboxes"]),
                "calc_present": int(len(g["calc_bboxes"]) > 0),
                "calc_bboxes": json.dumps(g["calc_bboxes"]), "calc_kinds": ",".join(g["calc_kinds"]),
                "heart_x0": hb[0], "heart_y0": hb[1], "heart_x1": hb[2], "heart_y1": hb[3],
                "pacemaker": int(c["pacemaker"]),
                "pacemaker_x0": pb[0], "pacemaker_y0": pb[1], "pacemaker_x1": pb[2], "pacemaker_y1": pb[3],
                "photometric": "MONOCHROME1" if c["monochrome1"] else "MONOCHROME2", "modality": c["modality"],
                **{k: g[k] for k in ("rotation_deg", "zoom", "exposure", "gamma", "contrast", "noise_sd",
                                     "window_center", "window_width")},
                "defect": c.get("defect", "")})
    return pd.DataFrame(rows)


def generate_export(out_dir: str | Path, config: SynthConfig | None = None, *, overwrite: bool = False,
                    progress: bool = False) -> SynthResult:
    """Generate the synthetic export described in the module docstring.

    Args:
        out_dir: folder to write (created; must not hold an earlier export unless ``overwrite``).
        config: what to generate; defaults to :class:`SynthConfig` ().
        overwrite: allow writing over an earlier export in ``out_dir``.
        progress: show a tqdm progress bar.
    """
    cfg = config or SynthConfig()
    cfg.validate()
    t0 = time.perf_counter()
    out = Path(out_dir)
    if (out / "export.json").exists() and not overwrite:
        raise ConfigError(f"{out} already holds an export (use overwrite)")
    for sub in ("ecg", "cxr", "ground_truth"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if overwrite:
        for sub, ext in (("ecg", "*.csv"), ("cxr", "*.dcm")):
            for f in (out / sub).glob(ext):
                f.unlink()

    plans = plan_cohort(cfg)
    defects = _choose_defects(plans, cfg)
    cfg_d = cfg.data_dict()
    chunk = max(1, min(25, math.ceil(len(plans) / (4 * cfg.workers))))
    tasks = [(cfg_d, out, items) for items in _chunks(plans, chunk)]
    n_files = sum(len(p.ecgs) + len(p.cxrs) for p in plans)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_files, unit="file", desc="synth")
    rendered: dict[str, dict[str, Any]] = {}

    def collect(rows: list[dict[str, Any]], n_task_files: int) -> None:
        for r in rows:
            rendered[r.pop("exam_id")] = r
        if bar is not None:
            bar.update(n_task_files)

    sizes = [sum(len(c) + len(e) for _, c, e in t[2]) for t in tasks]
    if cfg.workers == 1:
        for t, s in zip(tasks, sizes):
            collect(_render_chunk(t), s)
    else:
        ctx = mp.get_context("spawn")
        with ctx.Pool(cfg.workers) as pool:
            for rows, s in zip(pool.imap(_render_chunk, tasks), sizes):
                collect(rows, s)
    if bar is not None:
        bar.close()

    tables = _tables(plans, cfg)
    tables["cxr_truth"] = _cxr_truth(plans, rendered)
    tables["ecg"].to_csv(out / "ecg_index.csv", index=False)
    tables["cxr"].to_csv(out / "cxr_index.csv", index=False)
    tables["echo"].to_csv(out / "echo_index.csv", index=False)

    records = link_records(tables["ecg"], tables["cxr"], tables["echo"])
    bad = {d["exam_id"] for d in defects}
    clean = records[~records["ecg_exam_id"].isin(bad) & ~records["cxr_exam_id"].isin(bad)]
    targets = record_targets(records, tables["ecg"], tables["echo"], tables["patients"])
    oracle: dict[str, Any] = {}
    if cfg.compute_oracle:
        oracle = oracle_auroc(clean, tables["ecg_truth"], tables["cxr_truth"], seed=cfg.seed)
        clean_t = targets[~targets["ecg_exam_id"].isin(bad) & ~targets["cxr_exam_id"].isin(bad)]
        oracle["targets"] = oracle_targets(clean_t, tables["ecg_truth"], tables["cxr_truth"], seed=cfg.seed)
    pat = tables["patients"]
    counts = {"patients": len(plans), "ecg": len(tables["ecg"]), "cxr": len(tables["cxr"]),
              "echo": len(tables["echo"]), "records": int(len(records)),
              "linked_patients": int(records["patient_id"].nunique()), "minors": int(pat["minor"].sum())}
    prev_pat = float(pat["as_label"].mean())
    prev_rec = float(records["label"].mean()) if len(records) else float("nan")
    aurocs = {k: oracle[k] for k in ("ecg", "cxr", "both") if k in oracle}

    if cfg.write_ground_truth:
        gt = out / "ground_truth"
        tables["patients"].to_csv(gt / "patients.csv", index=False)
        tables["ecg_truth"].to_csv(gt / "ecg_exams.csv", index=False)
        tables["cxr_truth"].to_csv(gt / "cxr_exams.csv", index=False)
        records.to_csv(gt / "records.csv", index=False)
        targets.to_csv(gt / "record_targets.csv", index=False)
        pd.DataFrame(defects, columns=["modality", "exam_id", "path", "kind"]).to_csv(gt / "defects.csv", index=False)
        rule = ASCriteria()  # the cohort's AS rule (cardiofusion.cohort.labels), the echoes are drawn to meet it
        summary = {
            "counts": counts,
            "as_prevalence_patients": round(prev_pat, 4),
            "as_prevalence_records": round(prev_rec, 4),
            "records_per_linked_patient": round(len(records) / max(counts["linked_patients"], 1), 3),
            "mean_age": {"as": round(float(pat.loc[pat.as_label == 1, "age_first_exam"].mean()), 1),
                         "non_as": round(float(pat.loc[pat.as_label == 0, "age_first_exam"].mean()), 1)},
            "female_fraction": {"as": round(float((pat.loc[pat.as_label == 1, "sex"] == "F").mean()), 3),
                                "non_as": round(float((pat.loc[pat.as_label == 0, "sex"] == "F").mean()), 3)},
            "af_fraction": {"as": round(float(pat.loc[pat.as_label == 1, "atrial_fibrillation"].mean()), 3),
                            "non_as": round(float(pat.loc[pat.as_label == 0, "atrial_fibrillation"].mean()), 3)},
            "targets": _target_summary(pat, targets),
            "oracle": oracle,
            "defects": defects,
            "label_rule": (f"AS iff peak_velocity_m_s >= {rule.peak_velocity_m_s:g} or mean_gradient_mmhg >= "
                           f"{rule.mean_gradient_mmhg:g} or ava_cm2 <= {rule.ava_cm2:g}"),
            "linkage": "age >= 18 at echo; closest X-ray within 90 days of echo; every ECG within 7 days of it",
        }
        (gt / "summary.json").write_text(json.dumps(_no_nan(summary), indent=2, default=_json_default) + "\n")

    export = {
        "generator": "cardiofusion.synth", "library_version": __version__, "seed": cfg.seed,
        "config": cfg_d, "counts": counts,
        "formats": {
            "ecg": {"folder": "ecg", "format": "csv", "header": list(CANONICAL_LEADS), "fs": cfg.ecg_fs,
                    "n_samples": int(round(cfg.ecg_fs * cfg.ecg_duration_s)), "units": "counts",
                    "resolution_uv": cfg.ecg_resolution_uv},
            "cxr": {"folder": "cxr", "format": "dicom", "modalities": ["DX", "CR"], "rows": cfg.cxr_size,
                    "columns": cfg.cxr_size, "bits_allocated": 16, "bits_stored": 12,
                    "photometric": ["MONOCHROME2", "MONOCHROME1"], "transfer_syntax": "ExplicitVRLittleEndian"},
            "index_tables": {"ecg": "ecg_index.csv", "cxr": "cxr_index.csv", "echo": "echo_index.csv"},
            "ground_truth": "ground_truth/" if cfg.write_ground_truth else None,
        },
    }
    (out / "export.json").write_text(json.dumps(_no_nan(export), indent=2, default=_json_default) + "\n")
    return SynthResult(out_dir=out, n_patients=len(plans), counts=counts, as_prevalence_patients=prev_pat,
                       as_prevalence_records=prev_rec, oracle=aurocs, defects=defects,
                       seconds=time.perf_counter() - t0)


def _target_summary(pat: pd.DataFrame, targets: pd.DataFrame) -> dict[str, Any]:
    """Prevalence of the planted targets (patients: adults; records: linked records)."""
    adults = pat[~pat["minor"].astype(bool)]
    bins = np.searchsorted(CAC_BINS, adults["cac_agatston"].to_numpy(float), side="right")
    return {
        "cac_bins_patients": {c: round(float((bins == k).mean()), 4) if len(adults) else None
                              for k, c in enumerate(CAC_CLASSES)},
        "lvh_patients_lv_mass": round(float((adults["lv_mass_patient_g"] > adults["sex"].map(LVH_MASS_G)).mean()), 4)
        if len(adults) else None,
        "hf_patients_lvef_lt_40": round(float((adults["lvef_patient_pct"] < HF_LVEF_PCT).mean()), 4)
        if len(adults) else None,
        "af_patients": round(float(adults["atrial_fibrillation"].mean()), 4) if len(adults) else None,
        "records": {k: round(float(targets[k].mean()), 4) if len(targets) else None
                    for k in ("dx_as", "dx_lvh", "dx_hf", "dx_af")},
        "rules": "CAC-DRS bins 0 | 1-99 | 100-399 | >=400; LVH: LV mass > 224 g (M) / 162 g (F); HF: LVEF < 40%; "
                 "AF: planted in the ECG (irregular RR, no P waves, f-waves)",
    }


def _no_nan(o: Any) -> Any:
    """NaN -> None recursively (strict JSON)."""
    if isinstance(o, float) and math.isnan(o):
        return None
    if isinstance(o, dict):
        return {k: _no_nan(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_no_nan(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return None if math.isnan(o) else float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
