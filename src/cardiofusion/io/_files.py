"""The checks every reader makes before it opens an input file: a regular file, not empty, not too large.

A device (``/dev/zero``, ``/dev/urandom``), a FIFO or a socket never ends, or never starts: reading one
hangs or fills memory.  Readers therefore refuse anything that is not a regular file (symlinks are
followed) and any file larger than :func:`max_input_bytes` -- 512 MiB unless the environment variable
``CARDIOFUSION_MAX_INPUT_BYTES`` says otherwise (a byte count; suffixes ``K``, ``M``, ``G`` accepted).
The same cap bounds what a compressed container (``.npz``, HDF5) may decompress to.
"""

from __future__ import annotations

import os

from ..configfile import check_regular_file, human_bytes
from ..errors import ConfigError, ReadError

#: Default cap on the bytes of one input file (and on what one decompresses to).
DEFAULT_MAX_INPUT_BYTES = 512 * 1024 * 1024
#: Environment variable overriding :data:`DEFAULT_MAX_INPUT_BYTES`.
MAX_INPUT_BYTES_ENV = "CARDIOFUSION_MAX_INPUT_BYTES"

_SUFFIXES = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024 ** 2, "mb": 1024 ** 2,
             "mib": 1024 ** 2, "g": 1024 ** 3, "gb": 1024 ** 3, "gib": 1024 ** 3}


def max_input_bytes() -> int:
    """The cap on one input file's size: ``$CARDIOFUSION_MAX_INPUT_BYTES`` or 512 MiB."""
    text = os.environ.get(MAX_INPUT_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_INPUT_BYTES
    number = text.rstrip("bBkKmMgGiI")
    suffix = text[len(number):].strip().lower()
    try:
        value = int(float(number) * _SUFFIXES[suffix])
    except (KeyError, ValueError):
        raise ConfigError(f"{MAX_INPUT_BYTES_ENV}={text!r} is not a byte count (e.g. 536870912 or 512M)") from None
    if value <= 0:
        raise ConfigError(f"{MAX_INPUT_BYTES_ENV}={text!r} must be > 0")
    return value


def check_input_file(path: str | os.PathLike, *, what: str = "file", allow_empty: bool = False,
                     max_bytes: int | None = None) -> int:
    """Refuse what a reader must not open; return the file's size in bytes.

    Args:
        path: the file (symlinks followed).
        what: what the file is, for messages (``"signal file x.dat"``).
        allow_empty: accept a zero-byte file.
        max_bytes: the cap (default :func:`max_input_bytes`).

    Raises:
        ReadError: missing, a directory, not a regular file (device, FIFO, socket), empty, or over the cap.
    """
    return check_regular_file(path, what, max_bytes=max_input_bytes() if max_bytes is None else max_bytes,
                              allow_empty=allow_empty,
                              limit_hint=f" for inputs (set {MAX_INPUT_BYTES_ENV} to raise it)")


def check_decoded_bytes(path: str | os.PathLike, n_bytes: int, what: str) -> None:
    """Refuse a compressed entry that would decompress to more than :func:`max_input_bytes`."""
    cap = max_input_bytes()
    if n_bytes > cap:
        raise ReadError(path, f"{what} decompresses to {human_bytes(int(n_bytes))}, over the limit of "
                              f"{human_bytes(cap)} for inputs (set {MAX_INPUT_BYTES_ENV} to raise it)")


__all__ = ["DEFAULT_MAX_INPUT_BYTES", "MAX_INPUT_BYTES_ENV", "check_decoded_bytes", "check_input_file",
           "max_input_bytes"]
