"""Benchmarks of the library's methods on public data (``docs/benchmark_fusion.md``).

    from cardiofusion.recipes import BenchmarkConfig, run_fusion_benchmark
    result = run_fusion_benchmark("pseudo/", "bench/", BenchmarkConfig(max_epochs=4))
    print(result.table_md.read_text())

:func:`run_fusion_benchmark` trains ECG-only, X-ray-only, early, late and cooperative (rho chosen on
validation) models on a cohort (typically a PSEUDO-PAIRED one from ``cardiofusion pairing build``),
scores the Sokolow-Lyon and Cornell voltage criteria on the same records and evaluates everything with
:func:`cardiofusion.evaluation.evaluate_tables`.
"""

from __future__ import annotations

from .fusion_benchmark import (
    BASELINES,
    MODEL_NAMES,
    PSEUDO_LABEL,
    BenchmarkConfig,
    BenchmarkResult,
    criteria_tables,
    default_cxr_weights,
    run_fusion_benchmark,
    train_config,
)

__all__ = [
    "BASELINES",
    "MODEL_NAMES",
    "PSEUDO_LABEL",
    "BenchmarkConfig",
    "BenchmarkResult",
    "criteria_tables",
    "default_cxr_weights",
    "run_fusion_benchmark",
    "train_config",
]
