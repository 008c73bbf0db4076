"""ONNX export of the whole fused model and an ONNX Runtime runner with the PyTorch model's face.

The graph (``model.onnx`` in a bundle) takes window-level inputs, batch dimensions dynamic:

==============  =========================  ==================================================
input           shape, type                meaning
==============  =========================  ==================================================
``ecg``         ``(B, L, W)`` float32      ECG windows (zeros where the record has no ECG)
``ecg_mask``    ``(B, L)`` bool            lead really present
``cxr``         ``(R, 1, H, W)`` float32   one normalised X-ray per *record* (zeros if none)
``has_ecg``     ``(B,)`` bool              the window's record has an ECG
``has_cxr``     ``(B,)`` bool              the window's record has an X-ray
``record_index`` ``(B,)`` int64            record (row of ``cxr``) of each window
==============  =========================  ==================================================

and returns ``score``, ``prob``, ``score_ecg``, ``score_cxr`` ``(B,)`` float32 (NaN where a branch is
absent) and ``used`` ``(B, 2)`` bool -- the :class:`~cardiofusion.models.fusion.FusionOutput` of the
PyTorch model, window by window.  Models of non-binary tasks (``num_outputs`` k > 1, or a non-logistic
link) give ``score`` / ``score_ecg`` / ``score_cxr`` ``(B, k)`` and ``prob`` ``(B, m)`` (class
probabilities, label probabilities or standardised regression values), the same names.

Record scores are window means, as in evaluation. Each X-ray is encoded once per record (gathered by
``record_index``). Unlike ``MultimodalModel.encode`` the encoders run on every row (a graph cannot select
rows by a data-dependent mask); rows without the modality are discarded by the fusion head's presence
masks, so present rows score identically. A single-modality model's graph has only the inputs it reads.
"""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError

INPUT_NAMES = ("ecg", "ecg_mask", "cxr", "has_ecg", "has_cxr", "record_index")
OUTPUT_NAMES = ("score", "prob", "score_ecg", "score_cxr", "used")
#: ONNX opset of the TorchScript-based exporter.
OPSET = 17


class FusedGraph(nn.Module):
    """The exportable face of a ``MultimodalModel`` (see the module docstring)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ecg, ecg_mask, cxr, has_ecg, has_cxr, record_index):
        m = self.model
        feats: dict[str, torch.Tensor | None] = {"ecg": None, "cxr": None}
        present = {"ecg": has_ecg, "cxr": has_cxr}
        if m.ecg_encoder is not None:
            feats["ecg"] = m.ecg_encoder(ecg, ecg_mask)  # (B, d_e)
        if m.cxr_encoder is not None:
            feats["cxr"] = m.cxr_encoder(cxr)[record_index]  # (R, d_c) -> (B, d_c)
        out = m.fusion(feats, present)
        nan = torch.full_like(out.score, math.nan)
        branch = out.branch_scores or {}
        score_ecg = branch.get("ecg") if branch.get("ecg") is not None else nan
        score_cxr = branch.get("cxr") if branch.get("cxr") is not None else nan
        return out.score, out.prob, score_ecg, score_cxr, out.used


def example_inputs(leads: int, window: int, image_size: int, windows: int = 3, records: int = 2) -> tuple[torch.Tensor, ...]:
    """Dummy inputs of the right shapes (for tracing and benchmarks)."""
    g = torch.Generator().manual_seed(0)
    return (torch.randn(windows, leads, window, generator=g), torch.ones(windows, leads, dtype=torch.bool),
            torch.randn(records, 1, image_size, image_size, generator=g), torch.ones(windows, dtype=torch.bool),
            torch.ones(windows, dtype=torch.bool), torch.arange(windows) % records)


def export_onnx(model: nn.Module, *, leads: int, window: int, image_size: int, exporter: str = "auto") -> tuple[bytes, str]:
    """Serialised ONNX graph of ``model`` and the exporter used (``torchscript`` or ``dynamo``).

    ``auto`` uses the TorchScript-based exporter when this torch still has it (seconds on a CPU) and the
    ``torch.export``-based one otherwise (needs ``onnxscript``; slower to export, same graph semantics).
    """
    graph = FusedGraph(model).eval()
    args = example_inputs(leads, window, image_size)
    axes = {"ecg": {0: "windows"}, "ecg_mask": {0: "windows"}, "cxr": {0: "records"}, "has_ecg": {0: "windows"},
            "has_cxr": {0: "windows"}, "record_index": {0: "windows"},
            **{name: {0: "windows"} for name in OUTPUT_NAMES}}
    if exporter not in ("auto", "torchscript", "dynamo"):
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; choose auto, torchscript or dynamo")
    errors = []
    for kind in (("torchscript", "dynamo") if exporter == "auto" else (exporter,)):
        try:
            # grad mode on: under no_grad nn.TransformerEncoderLayer takes its fused fast path, which
            # has no ONNX export (outputs are the same; parameters are not modified)
            with warnings.catch_warnings(), torch.enable_grad():
                warnings.simplefilter("ignore")
                if kind == "torchscript":
                    buf = io.BytesIO()
                    torch.onnx.export(graph, args, buf, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                      dynamic_axes=axes, opset_version=OPSET, dynamo=False)
                    return buf.getvalue(), kind
                windows, records = torch.export.Dim("windows", min=1), torch.export.Dim("records", min=1)
                shapes = {"ecg": {0: windows}, "ecg_mask": {0: windows}, "cxr": {0: records}, "has_ecg": {0: windows},
                          "has_cxr": {0: windows}, "record_index": {0: windows}}
                program = torch.onnx.export(graph, args, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                            dynamic_shapes=shapes, dynamo=True, verbose=False)
                return program.model_proto.SerializeToString(), kind
        except Exception as e:  # noqa: BLE001 - report every exporter's failure together
            errors.append(f"{kind}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    raise ConfigError("ONNX export failed (" + "; ".join(errors) + ")")


class OnnxRunner:
    """An ONNX Runtime session (CPU) over a :class:`FusedGraph` export.

    Args:
        model: the serialised graph (bytes) or a path to ``model.onnx``.
        threads: intra-op threads (None: ONNX Runtime's default, all cores).
    """

    def __init__(self, model: bytes | str, *, threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("ONNX Runtime is not installed: pip install 'cardiofusion[onnx]'") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            raise ConfigError(f"ONNX Runtime cannot load the graph ({type(e).__name__}: {str(e).splitlines()[0]})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for inputs by name (only the inputs the graph has are fed)."""
        feed = {name: np.ascontiguousarray(inputs[name]) for name in self.input_names}
        return dict(zip(OUTPUT_NAMES, self.session.run(list(OUTPUT_NAMES), feed)))


__all__ = ["INPUT_NAMES", "OUTPUT_NAMES", "FusedGraph", "OnnxRunner", "example_inputs", "export_onnx"]
