"""Recipes: whole methods, each a typed config dataclass plus ``run(config, out_dir)`` composing library steps.

    from cardiofusion.recipes import get_recipe, list_recipes
    recipe = get_recipe("fusion-benchmark")
    config = recipe.load_config("bench.yaml", ["max_epochs=4"])
    recipe.run(config, "bench/")

Registered recipes (``cardiofusion recipe list``): ``reference`` (the paper's ECG-only / X-ray-only /
cooperative models, optional tuning, evaluation), ``demo`` (the same on the synthetic export, with
explanations: ``cardiofusion demo``), ``fusion-benchmark`` (every fusion method vs the clinical voltage
criteria: ``cardiofusion benchmark fusion``), ``crossval`` (patient-grouped k-fold cross-validation) and
``cac-severity`` (paper 001: CAC severity by early fusion, six X-ray backbones, ablation, 5-fold CV).
Every recipe goes through the shared steps of :mod:`cardiofusion.recipes.steps` (:func:`ensure_run`,
:func:`ensure_cache`, ...), so re-running reuses what is finished and unchanged and resumes what was
interrupted.

The fusion benchmark's library entry point stays importable from here::

    from cardiofusion.recipes import BenchmarkConfig, run_fusion_benchmark
    result = run_fusion_benchmark("pseudo/", "bench/", BenchmarkConfig(max_epochs=4))
"""

from __future__ import annotations

from .cardiacnets import CardiacNetsConfig, run_cardiacnets
from .crossval import CrossValConfig, cross_validate
from .demo import DemoConfig, run_demo
from .fusion_benchmark import (
    BASELINES,
    MODEL_NAMES,
    PSEUDO_LABEL,
    BenchmarkConfig,
    BenchmarkResult,
    FusionBenchmarkRecipeConfig,
    criteria_tables,
    default_cxr_weights,
    run_fusion_benchmark,
    train_config,
)
from .reference import ReferenceConfig, run_reference
from .registry import (
    RECIPE_YAML,
    Recipe,
    RecipeConfig,
    apply_overrides,
    get_recipe,
    list_recipes,
    parse_override,
    register_recipe,
    save_recipe_config,
)
from .steps import EnsuredRun, RunPlan, ensure_cache, ensure_run, is_run_folder, train_plan
from .cac_severity import CacSeverityConfig, run_cac_severity  # noqa: E402  (paper 001 recipe)
from .two_stage import TwoStageConfig, run_two_stage  # noqa: E402  (issue 18)

__all__ = [
    "BASELINES",
    "MODEL_NAMES",
    "PSEUDO_LABEL",
    "RECIPE_YAML",
    "BenchmarkConfig",
    "BenchmarkResult",
    "CardiacNetsConfig",
    "CrossValConfig",
    "DemoConfig",
    "EnsuredRun",
    "FusionBenchmarkRecipeConfig",
    "Recipe",
    "RecipeConfig",
    "ReferenceConfig",
    "RunPlan",
    "apply_overrides",
    "criteria_tables",
    "cross_validate",
    "default_cxr_weights",
    "ensure_cache",
    "ensure_run",
    "get_recipe",
    "is_run_folder",
    "list_recipes",
    "parse_override",
    "register_recipe",
    "run_cardiacnets",
    "run_demo",
    "run_fusion_benchmark",
    "run_reference",
    "save_recipe_config",
    "train_config",
    "train_plan",
    "CacSeverityConfig",
    "run_cac_severity",
    "TwoStageConfig",
    "run_two_stage",
]

from .lsemvae import LSEMVAERecipeConfig, run_lsemvae  # noqa: E402  (registers the ls-emvae recipe)

__all__ += ["LSEMVAERecipeConfig", "run_lsemvae"]
