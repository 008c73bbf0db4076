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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f"cardiofusion.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
