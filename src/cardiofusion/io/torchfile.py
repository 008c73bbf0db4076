"""Opening PyTorch files (checkpoints, ``.pth`` weights) without unpickling what is not one.

``torch.load`` on an arbitrary file runs the unpickler over its bytes: random bytes can make the C
unpickler allocate gigabytes (``MemoryError``) and leave the interpreter printing ``SystemError``s on the
way out, and a foreign pickle runs code when ``weights_only=False``.  Every torch file the library opens
goes through :func:`check_torch_file` first, which accepts only the two layouts ``torch.save`` writes --
the zip archive (every torch >= 1.6, every Lightning checkpoint) and, for weights only, the legacy pickle
that begins with torch's magic number -- and refuses anything else by name before a byte is unpickled.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from ..configfile import check_regular_file
from ..errors import ReadError


def _legacy_header() -> bytes:
    import torch.serialization

    return pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


def check_torch_file(path: str | os.PathLike, *, what: str = "checkpoint", allow_legacy: bool = False) -> Path:
    """Refuse a file that ``torch.save`` did not write; return its path.

    Args:
        path: the file.
        what: what it should be, for messages.
        allow_legacy: also accept the pre-1.6 (non-zip) layout; only for ``weights_only`` loading.

    Raises:
        ReadError: missing, not a regular file, empty, or neither a torch zip archive nor (if allowed) a
            legacy torch pickle.
    """
    p = Path(path)
    check_regular_file(p, what, allow_empty=False)
    if zipfile.is_zipfile(p):
        return p
    if allow_legacy:
        header = _legacy_header()
        try:
            with open(p, "rb") as f:
                head = f.read(len(header))
        except OSError as e:
            raise ReadError(p, f"cannot read {what}: {e.strerror or e}") from None
        if head == header:
            return p
    kinds = "a torch zip archive or a legacy torch pickle" if allow_legacy else "a torch zip archive"
    raise ReadError(p, f"not a PyTorch {what}: neither {kinds} (not unpickled)")


def read_torch_file(path: str | os.PathLike, *, what: str = "checkpoint", weights_only: bool = True) -> Any:
    """``torch.load`` onto the CPU after :func:`check_torch_file`; any failure is a :class:`ReadError`.

    ``weights_only=False`` (full unpickling, Lightning checkpoints of the library's own runs) accepts only
    zip archives; ``weights_only=True`` also the legacy layout.
    """
    import torch

    p = check_torch_file(path, what=what, allow_legacy=weights_only)
    try:
        return torch.load(p, map_location="cpu", weights_only=weights_only)
    except Exception as e:  # noqa: BLE001 -- a damaged archive raises anything (RuntimeError, KeyError, ...)
        raise ReadError(p, f"cannot read {what} ({type(e).__name__}: {e})") from None


__all__ = ["check_torch_file", "read_torch_file"]
