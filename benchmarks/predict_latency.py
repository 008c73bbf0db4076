"""Per-patient latency and batch throughput of prediction per runtime and precision, against this CPU's floor.

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

Precisions (``--precisions``, :mod:`cardiofusion.bundle.precision`): PyTorch fp32 and bf16 (autocast),
ONNX Runtime fp32 and int8 (dynamic quantisation of the same graph).  For each: the median / p90 latency
of one patient, the throughput of ``--batch`` patients per call, the largest score difference from PyTorch
fp32, and the achieved fraction of the machine's floor: the model's FLOPs per patient (counted with
``torch.utils.flop_counter`` on one patient's forward pass) divided by the time, over the matmul rate
measured in the same run (``torch.mm`` of ``--matmul-n`` square matrices, fp32 and bf16, same threads).
The ratio is the figure to compare between machines; absolute times vary.  int8 has no matmul reference
(its fraction is of the fp32 rate); ``int8`` is static quantisation (calibrated on 4 synthetic patients),
``int8d`` dynamic.  With ``--archive TABLE --bundle BUNDLE`` the archive pipeline
(:func:`cardiofusion.bundle.pipeline.predict_archive`: reading in ``--workers`` processes) is timed on
the table's files beside the pure model throughput on the same, already prepared, patients.

    python benchmarks/predict_latency.py [--models demo,paper] [--precisions fp32,bf16,int8] [--threads 1]
        [--batch 8] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
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
    return aggregate_windows(out, x["record_index"], x["n_records"])["score"].cpu().numpy()


def onnx_feed(x: dict) -> dict:
    return {"ecg": x["ecg"].numpy(), "ecg_mask": x["ecg_mask"].numpy(), "cxr": x["cxr_records"].numpy(),
            "has_ecg": x["has_ecg"].numpy(), "has_cxr": x["has_cxr"].numpy(), "record_index": x["record_index"].numpy()}


def run_onnx(runner, x: dict) -> np.ndarray:
    from cardiofusion.models.fusion import FusionOutput
    from cardiofusion.training.evaluate import aggregate_windows

    o = runner.run(onnx_feed(x))
    out = FusionOutput(score=torch.from_numpy(o["score"]), prob=torch.from_numpy(o["prob"]),
                       branch_scores={}, used=torch.from_numpy(o["used"]))
    return aggregate_windows(out, x["record_index"], x["n_records"])["score"].numpy()


SYNC = None  # torch.cuda.synchronize with --device cuda


def timeit(fn, repeats: int, warmup: int = 2) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if SYNC is not None:
            SYNC()
        t0 = time.perf_counter()
        fn()
        if SYNC is not None:
            SYNC()
        times.append(time.perf_counter() - t0)
    return times


def matmul_rate(dtype: torch.dtype, n: int, repeats: int = 7, device: str = "cpu") -> float:
    """FLOP/s of ``torch.mm`` on two ``n x n`` matrices of ``dtype``: the best of ``repeats`` (the machine's
    floor; on a shared machine the median would understate it)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(device, dtype), torch.randn(n, n, generator=g).to(device, dtype)
    t = min(timeit(lambda: torch.mm(a, b), repeats, warmup=2))
    return 2 * n**3 / t


def flops_per_patient(model, x: dict) -> float:
    """FLOPs of one patient's forward pass (``torch.utils.flop_counter``: matmuls and convolutions)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        run_torch(model, x)
    return float(counter.get_total_flops())


def build(args, name: str):
    """(model, PreprocessConfig, seconds, graph or None, screener or None, label) of a named model or the bundle."""
    from cardiofusion.transforms.preprocess import PreprocessConfig

    if name == "bundle":
        from cardiofusion.bundle import load

        screener = load(args.bundle)
        onnx_path = Path(args.bundle) / "model.onnx"
        return (screener.model, screener.preprocess, screener.decode.duration_s,
                onnx_path.read_bytes() if onnx_path.is_file() else None, screener,
                f"bundle {args.bundle} ({screener.model_config.ecg_encoder} + {screener.model_config.cxr_encoder})")
    from cardiofusion.models import ModelConfig, build_model

    if name == "demo":
        cfg = ModelConfig(fusion="cooperative", ecg_encoder="ecg_resnet_tiny_transformer", cxr_encoder="cxr_tiny")
        size = 128
    else:
        cfg = ModelConfig(fusion="cooperative", ecg_encoder="ecg_resnet50_transformer", cxr_encoder="efficientnet_b0")
        size = 224
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    return (model, PreprocessConfig(fs=args.fs, image_size=size), args.seconds, None, None,
            f"{name}: {cfg.ecg_encoder} + {cfg.cxr_encoder}, cooperative")


def bench_model(args, name: str, rates: dict[str, float]) -> None:
    from cardiofusion.bundle.onnx import OnnxRunner, export_onnx
    from cardiofusion.bundle.precision import ReducedPrecision, quantize_int8
    from cardiofusion.transforms.preprocess import window_starts

    model, pp, seconds, graph, screener, label = build(args, name)
    leads, width, size = len(pp.leads), pp.window_samples, pp.image_size
    n_windows = len(window_starts(round(pp.fs * seconds), width, pp.stride_samples))
    n_params = sum(p.numel() for p in model.parameters())
    one = patient_inputs(1, n_windows, leads, width, size)
    many = patient_inputs(args.batch, n_windows, leads, width, size, seed=1)
    flops = flops_per_patient(model, one)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    gpu = args.device != "cpu"
    if gpu:  # PyTorch only (ONNX Runtime here is the CPU build)
        model = model.to(args.device)
        one, many = ({k: v.to(args.device) if isinstance(v, torch.Tensor) else v for k, v in x.items()}
                     for x in (one, many))
    variants = []  # (runtime, precision, callable on inputs)
    if "fp32" in precisions:
        variants.append(("PyTorch", "fp32", lambda x: run_torch(model, x)))
    for half in ("bf16", "fp16"):
        if half in precisions:
            reduced = ReducedPrecision(model, half, "cuda" if gpu else "cpu").eval()
            variants.append(("PyTorch", half, lambda x, reduced=reduced: run_torch(reduced, x)))
    export_s = quant_s = None
    if {"fp32", "int8", "int8d"} & set(precisions) and not gpu:
        if graph is None:
            t0 = time.perf_counter()
            graph, _ = export_onnx(model, leads=leads, window=width, image_size=size)
            export_s = time.perf_counter() - t0
        if "fp32" in precisions:
            runner = OnnxRunner(graph, threads=args.threads)
            variants.append(("ONNX RT", "fp32", lambda x: run_onnx(runner, x)))
        if "int8" in precisions:  # static (calibrated on 4 synthetic patients, as export does on training records)
            feeds = [onnx_feed(patient_inputs(1, n_windows, leads, width, size, seed=10 + k)) for k in range(4)]
            t0 = time.perf_counter()
            int8 = OnnxRunner(quantize_int8(graph, mode="static", calibration=feeds), threads=args.threads)
            quant_s = time.perf_counter() - t0
            variants.append(("ONNX RT", "int8", lambda x: run_onnx(int8, x)))
        if "int8d" in precisions:  # dynamic
            int8d = OnnxRunner(quantize_int8(graph, mode="dynamic"), threads=args.threads)
            variants.append(("ONNX RT", "int8d", lambda x: run_onnx(int8d, x)))

    print(f"\nmodel      {label}; {n_params / 1e6:.2f} M parameters"
          + (f"; ONNX export {export_s:.1f} s" if export_s is not None else "")
          + (f", static int8 quantisation {quant_s:.1f} s" if quant_s is not None else ""))
    print(f"patient    {n_windows} ECG windows of {leads} x {width} ({pp.fs:g} Hz, {seconds:g} s) + one "
          f"{size} x {size} X-ray; {flops / 1e9:.2f} GFLOP per patient (torch.utils.flop_counter)")
    ref = run_torch(model, many)
    head = (f"{'runtime':8} {'prec':5} {'median ms':>10} {'p90 ms':>9} {'of floor':>9}   "
            f"{'patients/s (batch ' + str(args.batch) + ')':>24} {'of floor':>9}   {'max |d score|':>13}")
    print(head)
    for runtime, precision, fn in variants:
        lat = timeit(lambda fn=fn: fn(one), args.repeats)
        thr = timeit(lambda fn=fn: fn(many), max(2, args.repeats // 4), warmup=1)
        p50, p90 = statistics.median(lat), float(np.percentile(lat, 90))
        pps = args.batch / statistics.median(thr)
        rate = rates.get(precision, rates["fp32"])
        diff = float(np.nanmax(np.abs(fn(many) - ref)))
        print(f"{runtime:8} {precision:5} {p50 * 1e3:10.1f} {p90 * 1e3:9.1f} {flops / p50 / rate:9.0%}   "
              f"{pps:24.2f} {flops * pps / rate:9.0%}   {diff:13.2e}")
    if screener is not None and (args.ecg or args.cxr):
        lat = timeit(lambda: screener.predict(ecg=args.ecg, cxr=args.cxr), max(5, args.repeats // 3), warmup=1)
        print(f"end to end Screener.predict (read + preprocess + PyTorch + calibrate): median "
              f"{statistics.median(lat) * 1e3:.1f} ms")


def swap_model(bundle: str, out: Path, name: str) -> Path:
    """A copy of ``bundle`` whose model is the ``paper`` / ``demo`` architecture with random weights (same
    preprocessing, calibration and threshold): archive timing of a model of that size on the bundle's files."""
    import json
    import shutil

    from safetensors.torch import save_file

    from cardiofusion.bundle.format import MANIFEST, WEIGHTS, write_manifest
    from cardiofusion.models import ModelConfig, build_model

    shutil.copytree(bundle, out)
    (out / "model.onnx").unlink(missing_ok=True)
    (out / "model.int8.onnx").unlink(missing_ok=True)
    manifest = json.loads((out / MANIFEST).read_text())
    enc = {"paper": ("ecg_resnet50_transformer", "efficientnet_b0"),
           "demo": ("ecg_resnet_tiny_transformer", "cxr_tiny")}[name]
    manifest["model"]["config"].update(ecg_encoder=enc[0], cxr_encoder=enc[1])
    manifest.pop("precision", None)
    manifest.pop("inference", None)
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict(manifest["model"]["config"])).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS))
    (out / MANIFEST).unlink()
    manifest.pop("files", None)
    manifest.pop("content_hash", None)
    write_manifest(out, manifest)
    return out


def bench_archive(args) -> None:
    """Archive pipeline patients/s on a table's files vs the pure model throughput on the same patients."""
    from cardiofusion.bundle import load, read_table
    from cardiofusion.bundle.pipeline import predict_archive, prepare_row, row_specs

    bundle = args.bundle
    if args.archive_model:
        bundle = swap_model(args.bundle, Path(tempfile.mkdtemp()) / "bundle", args.archive_model)
    screener = load(bundle, precision=args.archive_precision)
    df, base = read_table(args.archive)
    specs = row_specs(df, base)
    prepared = [p for p in (prepare_row(screener, s) for s in specs) if not isinstance(p, str)]
    chunks = [prepared[i:i + args.batch] for i in range(0, len(prepared), args.batch)]
    screener.predict_prepared_each(chunks[0])  # warm-up
    t0 = time.perf_counter()
    for c in chunks:
        screener.predict_prepared_each(c)
    model_pps = len(prepared) / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = predict_archive(screener, args.archive, Path(tmp) / "out.csv", workers=args.workers,
                                 batch_patients=args.batch, progress=False)
        archive_pps = report.n_rows / (time.perf_counter() - t0)
    what = f"{args.archive_model} architecture, random weights" if args.archive_model else "the bundle's model"
    print(f"\narchive    {report.n_rows} patients of {args.archive} ({what}; {screener.precision}, {screener.runtime}), "
          f"{args.workers} reading worker(s), {args.batch} patients per model call")
    print(f"           model only (prepared inputs) {model_pps:8.2f} patients/s;  archive pipeline (read + "
          f"preprocess + model + write) {archive_pps:8.2f} patients/s;  ratio {model_pps / archive_pps:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="demo,paper", help="comma-separated: demo, paper (default both)")
    ap.add_argument("--model", choices=("demo", "paper"), help="one model (overrides --models)")
    ap.add_argument("--precisions", default="fp32,bf16,int8,int8d",
                    help="comma-separated: fp32, bf16, int8 (static), int8d (dynamic)")
    ap.add_argument("--bundle", help="time this bundle's model instead")
    ap.add_argument("--ecg", help="with --bundle: an ECG file for the end-to-end time")
    ap.add_argument("--cxr", help="with --bundle: an X-ray file for the end-to-end time")
    ap.add_argument("--archive", metavar="TABLE", help="with --bundle: time the archive pipeline on this table")
    ap.add_argument("--archive-precision", default=None, help="precision of the --archive run (default: the bundle's)")
    ap.add_argument("--workers", type=int, default=1, help="reading processes of the --archive run (default 1)")
    ap.add_argument("--archive-model", choices=("demo", "paper"),
                    help="--archive with this architecture (random weights) in a copy of the bundle")
    ap.add_argument("--fs", type=float, default=500.0)
    ap.add_argument("--seconds", type=float, default=15.0, help="ECG length (the cache's duration_s)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads, both runtimes (default 1)")
    ap.add_argument("--batch", type=int, default=8, help="patients per call for throughput")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--matmul-n", type=int, default=2048, help="matrix size of the matmul-rate measurement")
    ap.add_argument("--device", default="cpu",
                    help="cuda: time PyTorch fp32 / bf16 / fp16 on the GPU (--precisions fp32,bf16,fp16 "
                         "--matmul-n 8192); ONNX Runtime rows are CPU only")
    args = ap.parse_args()

    global SYNC
    if args.device != "cpu":
        SYNC = torch.cuda.synchronize
    torch.set_num_threads(args.threads)
    load1, _, _ = os.getloadavg()
    from cardiofusion.bundle.precision import cpu_supports_bf16

    print(f"machine    {cpu_name()}, {os.cpu_count()} cores, {args.threads} thread(s) per runtime, load average "
          f"{load1:.1f}, native bf16 {'yes' if cpu_supports_bf16() else 'no'}; torch {torch.__version__}, "
          f"onnxruntime {__import__('onnxruntime').__version__}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, **({"fp16": torch.float16} if args.device != "cpu" else {})}
    rates = {k: matmul_rate(d, args.matmul_n, device=args.device) for k, d in dtypes.items()}
    print("matmul     " + ", ".join(f"{k} {r / 1e9:.1f} GFLOP/s" for k, r in rates.items())
          + f" (torch.mm {args.matmul_n} x {args.matmul_n} on {args.device}, {args.threads} thread(s)); 'of floor' = "
          f"achieved FLOP/s over the rate of the row's precision (int8: over fp32)")
    names = ["bundle"] if args.bundle else ([args.model] if args.model else
                                            [m.strip() for m in args.models.split(",") if m.strip()])
    for name in names:
        bench_model(args, name, rates)
    if args.archive:
        if not args.bundle:
            raise SystemExit("--archive needs --bundle")
        bench_archive(args)


if __name__ == "__main__":
    main()
