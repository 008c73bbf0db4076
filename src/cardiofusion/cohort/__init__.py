"""Cohort building: index tables -> linked (ECG, X-ray, echo) records -> labelled, split manifest.

    from cardiofusion.cohort import CohortConfig, build_cohort, format_flow
    result = build_cohort("ecg_index.csv", "cxr_index.csv", "echo_index.csv", "cohort/", CohortConfig(seed=1))
    print(format_flow(result.flow))

Modules: :mod:`.tables` (loading, column maps), :mod:`.linkage` (the joins and exclusion reasons),
:mod:`.split` (patient-level split, folds), :mod:`.flow` (the Figure-1 counts), :mod:`.build`,
:mod:`.values` (strict numbers: decimal comma, units, plausibility ranges).
"""

from __future__ import annotations

from .build import OUTPUT_FILES, CohortResult, assemble_manifest, build_cohort
from .config import SPLIT_NAMES, CohortConfig
from .flow import FlowError, add_decoding_step, check_flow, cohort_flow, format_flow
from .linkage import ECG_READER_COLUMNS, MANIFEST_CORE_COLUMNS, LinkResult, link_exams
from .split import assign_folds, assign_splits, patient_table, split_records
from .tables import (
    DEFAULT_FILENAMES,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    TABLE_KINDS,
    ColumnMap,
    load_index,
    normalise_index,
)
from .values import DEFAULT_RANGES, ValueRules

__all__ = [
    "DEFAULT_FILENAMES",
    "DEFAULT_RANGES",
    "ECG_READER_COLUMNS",
    "MANIFEST_CORE_COLUMNS",
    "OPTIONAL_COLUMNS",
    "OUTPUT_FILES",
    "REQUIRED_COLUMNS",
    "SPLIT_NAMES",
    "TABLE_KINDS",
    "add_decoding_step",
    "CohortConfig",
    "CohortResult",
    "ColumnMap",
    "FlowError",
    "LinkResult",
    "assemble_manifest",
    "assign_folds",
    "assign_splits",
    "build_cohort",
    "check_flow",
    "cohort_flow",
    "format_flow",
    "link_exams",
    "load_index",
    "normalise_index",
    "patient_table",
    "split_records",
    "ValueRules",
]
