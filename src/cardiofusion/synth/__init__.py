"""Built-in demo data: a synthetic hospital export with planted, imperfect AS signs.

``generate_export(out_dir, SynthConfig(...))`` writes ECG CSVs, X-ray DICOMs and the three index
tables in exactly the layout of ``docs/data_layout.md``, plus ``ground_truth/`` (where every sign was
planted, the linked records and an oracle AUROC) so the real readers, linkage and models can be
exercised and checked end to end.

Targets beyond AS (``synth.patients._plan_targets`` has the generating rules; each from its own random
stream, so the AS signs, ECG signals and X-ray images of the AS-only export are unchanged except where a
new sign is drawn in):

- coronary calcium (Agatston, ``ground_truth/patients.csv`` ``cac_agatston`` / ``cac_bin``), confounded by age
  and sex; CAC-DRS bins 0 | 1-99 | 100-399 | >= 400 of about 44% / 24% / 16% / 15% of adult patients
  (400 patients, seed 0; a screening population of this age mix: about half have no calcium).  Shown
  faintly in the X-ray (coronary specks near the heart border, fainter and smaller than the valve spots,
  ``cxr_exams.csv`` ``coronary_bboxes``) and weakly in the ECG (ST depression / T flattening / pathological
  Q in one territory, probability rising with the score; ``ecg_exams.csv`` ``isch_*``);
- echo ``lv_mass_g`` (from the same hypertrophy factors as the ECG LVH voltage) and ``lvef_pct`` (low in the
  heart-failure minority that has the X-ray cardiomegaly);
- the multi-label set per linked record (``ground_truth/record_targets.csv``): AS (8.1% of patients, the
  config), LVH by LV mass (about 17% of adult patients, 20% of records), HF = LVEF < 40% (about 5%), AF
  (planted in the ECG: irregular RR, no P waves, f-waves; about 16%).

``summary.json`` holds the prevalences (``targets``) and the oracle (``oracle.targets``: per-label AUROC and,
for the CAC bins, accuracy and quadratic-weighted kappa from the planted ECG + X-ray evidence; 400
patients, seed 0: AUROC AS 0.65, LVH 0.75, HF 0.74, AF 1.0; CAC kappa ECG 0.34, X-ray 0.52, both 0.59).
"""

from __future__ import annotations

from .config import SynthConfig, SynthResult
from .export import CXR_INDEX_COLUMNS, ECG_INDEX_COLUMNS, ECHO_INDEX_COLUMNS, generate_export
from .oracle import auroc, link_records, oracle_auroc, oracle_scores, oracle_targets, record_targets

__all__ = [
    "SynthConfig",
    "SynthResult",
    "generate_export",
    "link_records",
    "oracle_auroc",
    "oracle_scores",
    "oracle_targets",
    "record_targets",
    "auroc",
    "ECG_INDEX_COLUMNS",
    "CXR_INDEX_COLUMNS",
    "ECHO_INDEX_COLUMNS",
]
