"""Per-patient latency and batch throughput of prediction: PyTorch vs ONNX Runtime, on this CPU.

A patient is what ``cardiofusion predict`` feeds the model: every evaluation window of one ECG
(``--seconds`` of ECG at ``--fs`` Hz cut into 2 s windows: 8 windows for 15 s) plus one X-ray.
The model is scored as :class:`cardiofusion.bundle.Screener` does it:

* PyTorch: ``MultimodalModel`` on the window-level batch (``torch.no_grad``; ``record_index`` given, so
  each X-ray is encoded once per patient), window scores averaged per patient (``aggregate_windows``);
* ONNX Runtime: the bundle's ``model.onnx`` graph (:class:`cardiofusion.bundle.onnx.FusedGraph`,
  TorchScript-based export), same averaging; each X-ray is encoded once per patient.

Models (``--model``): ``demo`` (default; ``ecg_resnet_tiny_transformer`` + ``cxr_tiny``, 128 px, the
demo's small cooperative model) or ``paper`` (``ecg_resnet50_transformer`` + ``efficientnet_b0``,
224 px, the paper's architecture).  Weights are random: latency does not depend on them.  With
``--bundle BUNDLE`` the bundle's own model, settings and ``model.onnx`` are timed instead, and
``--ecg/--cxr FILE`` add the end-to-end time including reading and preprocessing the files.

    python benchmarks/predict_latency.py [--model demo|paper] [--threads 1] [--batch 32] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def patient_inputs(n_patients: int, n_windows: int, leads: int, width: int, size: int, seed: int = 0) -> dict:
    """Window-level inputs of ``n_patients`` patients with both modalities."""
    g = torch.Generator().manual_seed(seed)
    record_index = torch.arange(n_patients).repeat_interleave(n_windows)  # (B_w,)
    b = len(record_index)
    return {"ecg": torch.randn(b, leads, width, generator=g) * 0.3, "ecg_mask": torch.ones(b, leads, dtype=torch.bool),
            "cxr_records": torch.randn(n_patients, 1, size, size, generator=g),
            "has_ecg": torch.ones(b, dtype=torch.bool), "has_cxr": torch.ones(b, dtype=torch.bool),
            "record_index": record_index, "n_records": n_patients}


def run_torch(model, x: dict) -> np.ndarray:
    from cardiofusion.training.evaluate import aggregate_windows

    batch = {"ecg": x["ecg"], "ecg_mask": x["ecg_mask"], "cxr": x["cxr_records"][x["record_index"]],
             "has_ecg": x["has_ecg"], "has_cxr": x["has_cxr"], "record_index": x["record_index"]}
    with torch.no_grad():
        out = model(batch)
    return aggregate_windows(out, x["record_index"], x["n_records"])["score"].numpy()


def run_onnx(runner, x: dict) -> np.ndarray:
    from cardiofusion.models.fusion import FusionOutput
    from cardiofusion.training.evaluate import aggregate_windows

    o = runner.run({"ecg": x["ecg"].numpy(), "ecg_mask": x["ecg_mask"].numpy(), "cxr": x["cxr_records"].numpy(),
                    "has_ecg": x["has_ecg"].numpy(), "has_cxr": x["has_cxr"].numpy(),
                    "record_index": x["record_index"].numpy()})
    out = FusionOutput(score=torch.from_numpy(o["score"]), prob=torch.from_numpy(o["prob"]),
                       branch_scores={}, used=torch.from_numpy(o["used"]))
    return aggregate_windows(out, x["record_index"], x["n_records"])["score"].numpy()


def timeit(fn, repeats: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("demo", "paper"), default="demo")
    ap.add_argument("--bundle", help="time this bundle's model instead")
    ap.add_argument("--ecg", help="with --bundle: an ECG file for the end-to-end time")
    ap.add_argument("--cxr", help="with --bundle: an X-ray file for the end-to-end time")
    ap.add_argument("--fs", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=15.0, help="ECG length (the cache's duration_s)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads, both runtimes (default 1)")
    ap.add_argument("--batch", type=int, default=32, help="patients per call for throughput")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()

    from cardiofusion.bundle.onnx import OnnxRunner, export_onnx
    from cardiofusion.transforms.preprocess import PreprocessConfig, window_starts

    torch.set_num_threads(args.threads)
    if args.bundle:
        from cardiofusion.bundle import load

        screener = load(args.bundle)
        model, pp = screener.model, screener.preprocess
        seconds = screener.decode.duration_s
        onnx_path = Path(args.bundle) / "model.onnx"
        graph = onnx_path.read_bytes() if onnx_path.is_file() else None
        label = f"bundle {args.bundle} ({screener.model_config.ecg_encoder} + {screener.model_config.cxr_encoder})"
    else:
        from cardiofusion.models import ModelConfig, build_model

        if args.model == "demo":
            cfg = ModelConfig(fusion="cooperative", ecg_encoder="ecg_resnet_tiny_transformer", cxr_encoder="cxr_tiny")
            size = 128
        else:
            cfg = ModelConfig(fusion="cooperative", ecg_encoder="ecg_resnet50_transformer", cxr_encoder="efficientnet_b0")
            size = 224
        model = build_model(cfg).eval()
        pp = PreprocessConfig(fs=args.fs, image_size=size)
        seconds, graph, screener = args.seconds, None, None
        label = f"{args.model}: {cfg.ecg_encoder} + {cfg.cxr_encoder}, cooperative"
    leads, width, size = len(pp.leads), pp.window_samples, pp.image_size
    n_windows = len(window_starts(round(pp.fs * seconds), width, pp.stride_samples))
    n_params = sum(p.numel() for p in model.parameters())
    if graph is None:
        t0 = time.perf_counter()
        graph, exporter = export_onnx(model, leads=leads, window=width, image_size=size)
        export_s = time.perf_counter() - t0
    else:
        exporter, export_s = "bundle's model.onnx", None
    runner = OnnxRunner(graph, threads=args.threads)

    print(f"model      {label}; {n_params / 1e6:.2f} M parameters; ONNX {len(graph) / 1e6:.1f} MB "
          f"({exporter}{'' if export_s is None else f', exported in {export_s:.1f} s'})")
    print(f"patient    {n_windows} ECG windows of {leads} x {width} ({pp.fs:g} Hz, {seconds:g} s) + one "
          f"{size} x {size} X-ray")
    load1, _, _ = os.getloadavg()
    print(f"machine    {cpu_name()}, {os.cpu_count()} cores, {args.threads} thread(s) per runtime, "
          f"load average {load1:.1f}; torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}")

    one = patient_inputs(1, n_windows, leads, width, size)
    many = patient_inputs(args.batch, n_windows, leads, width, size, seed=1)
    diff = np.abs(run_torch(model, many) - run_onnx(runner, many)).max()
    print(f"parity     max |score_torch - score_onnx| over {args.batch} patients = {diff:.2e}")
    print(f"{'':10} {'per patient (batch 1)':>32}  {'throughput (batch ' + str(args.batch) + ')':>26}")
    for name, fn, target in (("PyTorch", run_torch, model), ("ONNX RT", run_onnx, runner)):
        lat = timeit(lambda fn=fn, target=target: fn(target, one), args.repeats)
        thr = timeit(lambda fn=fn, target=target: fn(target, many), max(3, args.repeats // 5), warmup=1)
        p50, p90 = statistics.median(lat) * 1e3, float(np.percentile(lat, 90)) * 1e3
        print(f"{name:10} {f'median {p50:7.1f} ms, p90 {p90:7.1f} ms':>32}  "
              f"{args.batch / statistics.median(thr):>17.1f} patients/s")
    if screener is not None and (args.ecg or args.cxr):
        lat = timeit(lambda: screener.predict(ecg=args.ecg, cxr=args.cxr), max(5, args.repeats // 3), warmup=1)
        print(f"end to end Screener.predict (read + preprocess + PyTorch + calibrate): median "
              f"{statistics.median(lat) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
