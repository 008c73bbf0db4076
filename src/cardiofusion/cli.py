"""The ``cardiofusion`` command line: a thin layer over library functions.

Each sub-command lives in ``cardiofusion.commands.<name>`` and exposes ``add_parser(subparsers)``
(which registers the parser and sets ``func``).  Library errors become a one-line message and exit
status 2; nothing the user did wrong ever prints a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import CardiofusionError

#: sub-command modules, in the order ``--help`` lists them.
COMMANDS = ("inspect", "synth", "cohort", "cache", "train", "tune", "evaluate", "crossval", "explain", "faithfulness",
            "export", "predict", "serve", "demo", "adapt", "pairing", "benchmark", "recipe")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiofusion",
        description="Multimodal ECG + chest X-ray screening: readers, cohort building, caching, demo.",
    )
    parser.add_argument("--version", action="version", version=f"cardiofusion {__version__}")
    parser.add_argument("--verbose", action="store_true",
                        help="show Lightning's banners, tips, model summary and library warnings (off by default)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"cardiofusion.commands.{name}")
        module.add_parser(sub)
    return parser


def _set_output(verbose: bool) -> None:
    """Quiet by default: Lightning logs errors only and deprecation / library warnings are hidden; ``--verbose``
    (or ``CARDIOFUSION_VERBOSE=1``) restores them."""
    import logging
    import os
    import warnings

    if verbose:
        os.environ["CARDIOFUSION_VERBOSE"] = "1"
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")
    if os.environ.get("CARDIOFUSION_VERBOSE", "").strip().lower() in ("1", "true", "yes", "on"):
        for name in names:
            logging.getLogger(name).setLevel(logging.INFO)
        warnings.resetwarnings()
        return
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.simplefilter("ignore", DeprecationWarning)
    warnings.simplefilter("ignore", FutureWarning)
    warnings.filterwarnings("ignore", module=r"(lightning|pytorch_lightning|lightning_fabric|torch|timm)(\..*)?")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _set_output(bool(getattr(args, "verbose", False)))
    try:
        rc = args.func(args)
    except CardiofusionError as e:
        print(f"cardiofusion: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a path that cannot be created or written (below a file, no space, permissions)
        where = f"{e.filename}: " if e.filename else ""
        print(f"cardiofusion: error: {where}{' '.join(str(e.strerror or e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cardiofusion: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
