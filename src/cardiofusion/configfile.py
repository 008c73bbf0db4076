"""Reading settings files (JSON or YAML) the same way everywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import ReadError


def read_mapping_file(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Load a JSON (``.json``) or YAML (anything else) file holding one mapping.

    Args:
        path: the file.
        what: what the file is, for error messages (e.g. ``"column map"``).

    Raises:
        ReadError: the file cannot be read, does not parse, or does not hold a mapping.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ReadError(p, f"cannot read {what}: {e.strerror or e}") from None
    is_json = p.suffix.lower() == ".json"
    try:
        if is_json:
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # yaml.YAMLError / json.JSONDecodeError
        raise ReadError(p, f"{what} is not valid {'JSON' if is_json else 'YAML'}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReadError(p, f"{what} must hold a mapping, not {type(data).__name__}")
    return data
