"""Reading settings files (JSON or YAML) the same way everywhere."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, ReadError


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


def reject_unknown_fields(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` naming the keys of ``values`` that are not fields of dataclass ``cls``.

    Used by every typed config's ``from_dict`` so that a misspelt setting in a saved or hand-written file
    is an error, never silently ignored.
    """
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {what} settings: {', '.join(map(str, unknown))}")


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dict keys as strings, tuples / arrays as lists, numpy scalars as Python
    numbers, NaN and infinities as None (JSON has none), paths as strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value

