"""The library's error types.

Every problem with an *input* (a file that cannot be read, a signal that is unusable, a table with a
missing column) raises :class:`ReadError`, whose message always starts with the offending path and
gives the reason in one line.  The command line turns it into ``cardiofusion: error: PATH: reason``
and a non-zero exit status, never a traceback.  Batch operations catch it, record ``(path, reason)``
and carry on.
"""

from __future__ import annotations

import os


class CardiofusionError(Exception):
    """Base class of every error the library raises on purpose."""


class ReadError(CardiofusionError):
    """An input file or table could not be used.

    Args:
        path: the file (or table) at fault.
        reason: one line saying what is wrong with it.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}" if self.path else self.reason)


class ConfigError(CardiofusionError):
    """A configuration value is invalid (bad threshold, unknown column mapping, ...)."""
