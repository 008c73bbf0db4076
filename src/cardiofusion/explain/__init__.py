"""Explanations of trained models and proof that they are faithful (``docs/spec.md`` section 6).

* X-ray: Grad-CAM from the image encoder's ``gradcam_layer`` (captum ``LayerGradCam``), drawn over the
  image; integrated gradients (captum) as a second method.
* ECG: lead importance from the class token's attention to the lead tokens (head average; attention
  rollout as an option) x per-lead 1D Grad-CAM over time from the last CNN stage, drawn over the
  twelve traces (3 x 4 or 12 x 1).
* Every fusion head: each modality's branch score where the head has one (cooperative, late), else the
  fused score; records with one modality only are explained on that modality.
* Faithfulness (:mod:`.faithfulness`): deletion / insertion curves, AOPC, random and uniform baselines,
  bootstrap CIs.  Ground-truth checks on the synthetic export (:mod:`.groundtruth`).

``import cardiofusion.explain`` makes torchvision importable first
(:func:`cardiofusion._compat.ensure_torchvision`), since the models and captum's users import it.
"""

from __future__ import annotations

from .._compat import ensure_torchvision

ensure_torchvision()

from ..evaluation.bootstrap import bootstrap_mean_ci
from .api import choose_examples, explain_record, explain_records, load_run_any
from .attribution import (
    METHODS,
    TARGETS,
    CXRExplanation,
    ECGExplanation,
    Explanation,
    RecordScorer,
    cxr_gradcam,
    cxr_integrated_gradients,
    cxr_layers,
    ecg_gradcam,
    ecg_integrated_gradients,
    explain_sample,
    lead_attention,
    stitch_windows,
)
from .faithfulness import (
    FaithfulnessConfig,
    aopc,
    evaluate_faithfulness,
    perturbation_scores,
    plot_curves,
    record_curves,
    write_faithfulness,
)
from .groundtruth import (
    GroundTruth,
    calc_boxes,
    evaluate_on_ground_truth,
    lead_ranks,
    load_ground_truth,
    map_box,
    pointing_game,
    shuffled_hits,
    sign_removal,
)
from .plot import LAYOUTS, plot_cxr_explanation, plot_ecg_explanation
from .samples import RecordSample, load_samples, sample_from_batch, windows_from_signal

__all__ = [
    "LAYOUTS",
    "METHODS",
    "TARGETS",
    "CXRExplanation",
    "ECGExplanation",
    "Explanation",
    "FaithfulnessConfig",
    "GroundTruth",
    "RecordSample",
    "RecordScorer",
    "aopc",
    "bootstrap_mean_ci",
    "calc_boxes",
    "choose_examples",
    "cxr_gradcam",
    "cxr_integrated_gradients",
    "cxr_layers",
    "ecg_gradcam",
    "ecg_integrated_gradients",
    "evaluate_faithfulness",
    "evaluate_on_ground_truth",
    "explain_record",
    "explain_records",
    "explain_sample",
    "lead_attention",
    "lead_ranks",
    "load_ground_truth",
    "load_run_any",
    "load_samples",
    "map_box",
    "perturbation_scores",
    "plot_curves",
    "plot_cxr_explanation",
    "plot_ecg_explanation",
    "pointing_game",
    "shuffled_hits",
    "sign_removal",
    "record_curves",
    "sample_from_batch",
    "stitch_windows",
    "windows_from_signal",
    "write_faithfulness",
]
