"""``cardiofusion inspect PATH``: show what the readers make of a file."""

from __future__ import annotations

import argparse
import json

from ..io import read


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="read any supported ECG or X-ray file and print what was read",
        description="Read one ECG (CSV, WFDB, CinC .mat, DICOM waveform, HDF5, NumPy) or chest X-ray "
        "(DICOM, PNG, JPEG) and print what was read. Exits non-zero with a one-line reason for a bad file.",
    )
    p.add_argument("path", help="file to read (for WFDB give the .hea or .dat file)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--fs", type=float, default=None, help="sampling rate (Hz) for headerless ECG files (CSV, NumPy)")
    p.add_argument("--units", choices=("mV", "uV", "counts"), default=None,
                   help="units of headerless ECG files (CSV default uV, NumPy default mV)")
    p.add_argument("--resolution-uv", type=float, default=None,
                   help="microvolts per count when --units counts (paper's export: 1.25)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    options = {k: v for k, v in (("fs", args.fs), ("units", args.units), ("resolution_uv", args.resolution_uv)) if v is not None}
    record = read(args.path, **options)
    info = record.summary()
    if args.json:
        print(json.dumps(info))
        return 0
    width = max(len(k) for k in info)
    print(f"{args.path}")
    for key, value in info.items():
        if isinstance(value, list):
            value = " ".join(map(str, value))
        print(f"  {key:<{width}}  {value}")
    return 0
