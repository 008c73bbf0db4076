"""Quiet training output: Lightning's banners, tips, model summary and deprecation / "possible user" warnings are
off unless verbose output is asked for (``cardiofusion --verbose ...`` or ``CARDIOFUSION_VERBOSE=1``).

:func:`quiet_lightning` is the context every training entry point runs Lightning in; what is left is the one
progress bar per run (when ``progress``) and the library's own lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator

#: environment variable that turns verbose output on ("1", "true", "yes")
VERBOSE_ENV = "CARDIOFUSION_VERBOSE"
#: loggers Lightning prints its banners and tips through
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric")


def is_verbose() -> bool:
    """True when verbose output was asked for."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def set_verbose(flag: bool) -> None:
    """Turn verbose output on or off for this process (and the processes it starts)."""
    os.environ[VERBOSE_ENV] = "1" if flag else "0"


@contextlib.contextmanager
def quiet_lightning(verbose: bool | None = None) -> Iterator[None]:
    """Within the context, Lightning logs only errors and library warnings are not shown (unless verbose)."""
    if is_verbose() if verbose is None else verbose:
        yield
        return
    saved = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    for name in LIGHTNING_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", module=r"(lightning|pytorch_lightning|lightning_fabric|torch|timm)(\..*)?")
            warnings.filterwarnings("ignore", category=UserWarning, message=r".*(num_workers|LeafSpec|logging interval|"
                                    r"does not have many workers|smaller than the logging interval).*")
            yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


__all__ = ["LIGHTNING_LOGGERS", "VERBOSE_ENV", "is_verbose", "quiet_lightning", "set_verbose"]
