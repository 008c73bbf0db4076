"""Built-in task definitions, by name (``--task as_severity``); each is the content a task file would hold.

Manifest columns they read (written by ``cardiofusion cohort build`` from the echo table and, for the
synthetic export, its ground truth; by ``cardiofusion cohort from-adapter`` for public data sets):

- ``label`` (AS 0/1), ``as_severity`` (none / mild / moderate / severe),
- echo measurements ``peak_velocity_m_s``, ``mean_gradient_mmhg``, ``ava_cm2``, ``lvef_pct``, ``lv_mass_g``,
- ``cac_agatston`` (coronary calcium score, synthetic export),
- diagnoses ``dx_as``, ``dx_lvh``, ``dx_hf`` (LVEF < 40%), ``dx_af`` (0/1, empty = unknown),
- public data: ``NORM``, ``MI``, ``STTC``, ``CD``, ``HYP`` (PTB-XL superclasses), ``lvh`` (PTB-XL / CinC),
  ``cardiomegaly`` (NIH).
"""

from __future__ import annotations

from typing import Any

ECHO_UNITS = {"peak_velocity_m_s": "m/s", "mean_gradient_mmhg": "mmHg", "ava_cm2": "cm2", "lvef_pct": "%",
              "lv_mass_g": "g"}

BUILTIN_TASKS: dict[str, dict[str, Any]] = {
    "aortic_stenosis": {
        "name": "aortic_stenosis", "kind": "binary", "columns": ["label"], "classes": ["no AS", "AS"],
        "description": "aortic stenosis (any severity) from the echo rule of the cohort build",
    },
    "as_severity": {
        "name": "as_severity", "kind": "multiclass", "ordinal": True, "columns": ["as_severity"],
        "classes": ["none", "mild", "moderate", "severe"],
        "description": "AS severity by the echo guideline grades (cohort.labels.SeverityRule)",
    },
    "cac_severity": {
        "name": "cac_severity", "kind": "multiclass", "ordinal": True, "columns": ["cac_agatston"],
        "bins": [1.0, 100.0, 400.0], "classes": ["0", "1-99", "100-399", ">=400"],
        "description": "coronary artery calcium (Agatston) in the CAC-DRS bins 0 | 1-99 | 100-399 | >=400 (paper 001)",
    },
    "echo_measurements": {
        "name": "echo_measurements", "kind": "regression",
        "columns": ["peak_velocity_m_s", "mean_gradient_mmhg", "ava_cm2", "lvef_pct", "lv_mass_g"],
        "units": dict(ECHO_UNITS),
        "description": "echo measurements (paper 003's measurement regression)",
    },
    "cardiac_multilabel": {
        "name": "cardiac_multilabel", "kind": "multilabel", "columns": ["dx_as", "dx_lvh", "dx_hf", "dx_af"],
        "classes": ["AS", "LVH", "HF", "AF"],
        "description": "aortic stenosis, LV hypertrophy, reduced LVEF / heart failure, atrial fibrillation",
    },
    "ptbxl_superclass": {
        "name": "ptbxl_superclass", "kind": "multilabel", "columns": ["NORM", "MI", "STTC", "CD", "HYP"],
        "description": "PTB-XL diagnostic superclasses (Wagner et al. 2020; Strodthoff et al. 2021 benchmark)",
    },
    "ptbxl_lvh": {
        "name": "ptbxl_lvh", "kind": "binary", "columns": ["lvh"], "classes": ["no LVH", "LVH"],
        "description": "left ventricular hypertrophy (PTB-XL SCP code LVH)",
    },
    "nih_cardiomegaly": {
        "name": "nih_cardiomegaly", "kind": "binary", "columns": ["cardiomegaly"],
        "classes": ["no cardiomegaly", "cardiomegaly"], "description": "NIH ChestX-ray14 cardiomegaly",
    },
}


def builtin_tasks() -> list[str]:
    """Names of the built-in tasks."""
    return sorted(BUILTIN_TASKS)


__all__ = ["BUILTIN_TASKS", "ECHO_UNITS", "builtin_tasks"]
