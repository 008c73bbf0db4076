"""Built-in demo data: a synthetic hospital export with planted, imperfect AS signs.

``generate_export(out_dir, SynthConfig(...))`` writes ECG CSVs, X-ray DICOMs and the three index
tables in exactly the layout of ``docs/data_layout.md``, plus ``ground_truth/`` (where every sign was
planted, the linked records and an oracle AUROC) so the real readers, linkage and models can be
exercised and checked end to end.
"""

from __future__ import annotations

from .config import SynthConfig, SynthResult
from .export import CXR_INDEX_COLUMNS, ECG_INDEX_COLUMNS, ECHO_INDEX_COLUMNS, generate_export
from .oracle import auroc, link_records, oracle_auroc

__all__ = [
    "SynthConfig",
    "SynthResult",
    "generate_export",
    "link_records",
    "oracle_auroc",
    "auroc",
    "ECG_INDEX_COLUMNS",
    "CXR_INDEX_COLUMNS",
    "ECHO_INDEX_COLUMNS",
]
