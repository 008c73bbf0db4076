"""Adapters: public data sets in their original layout -> the library's index tables and labels.

    from cardiofusion.adapters import adapt_ptbxl, PTBXLConfig
    res = adapt_ptbxl("../shared/data/ptbxl", PTBXLConfig(sampling_rate=100, fold_map="train=1-6,val=7,test=8"))
    res.write("adapted/ptbxl")        # ecg_index.csv, labels.csv, exclusions.csv, adapter.json

Modules: :mod:`.ptbxl` (PTB-XL), :mod:`.cinc` (PhysioNet/CinC 2020-2021 + SPH), :mod:`.nih` (NIH
ChestX-ray14), :mod:`.mimic` (MIMIC-IV-ECG + MIMIC-CXR-JPG), :mod:`.pseudo_paired` (the pseudo-paired
benchmark cohort built from two of them).  Layouts and label definitions: ``docs/public_data.md``.
"""

from __future__ import annotations

from ._common import OUTPUT_FILES, AdapterResult, parse_fold_map
from .cinc import CinCConfig, adapt_cinc
from .mimic import (
    MimicConfig,
    adapt_mimic,
    adapt_mimic_cxr,
    adapt_mimic_ecg,
    link_ecg_cxr,
)
from .nih import NIHConfig, adapt_nih
from .pseudo_paired import (
    PairingConfig,
    Pool,
    PseudoPairedResult,
    build_pseudo_paired,
    is_pseudo_paired,
    load_adapted,
    make_pool,
    pseudo_paired_cohort,
    realised_rates,
)
from .ptbxl import PTBXLConfig, adapt_ptbxl

#: adapter name -> function(root, config) (what ``cardiofusion adapt NAME`` runs).
ADAPTERS = {"ptbxl": adapt_ptbxl, "cinc": adapt_cinc, "nih": adapt_nih, "mimic": adapt_mimic}

__all__ = [
    "ADAPTERS",
    "OUTPUT_FILES",
    "AdapterResult",
    "CinCConfig",
    "MimicConfig",
    "NIHConfig",
    "PTBXLConfig",
    "PairingConfig",
    "Pool",
    "PseudoPairedResult",
    "adapt_cinc",
    "adapt_mimic",
    "adapt_mimic_cxr",
    "adapt_mimic_ecg",
    "adapt_nih",
    "adapt_ptbxl",
    "build_pseudo_paired",
    "is_pseudo_paired",
    "link_ecg_cxr",
    "load_adapted",
    "make_pool",
    "parse_fold_map",
    "pseudo_paired_cohort",
    "realised_rates",
]
