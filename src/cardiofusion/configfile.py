"""Reading settings files (JSON or YAML) the same way everywhere."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError, ReadError


#: Largest settings file (config, column map, manifest) read: such files are a few kilobytes.
MAX_SETTINGS_BYTES = 16 * 1024 * 1024


def human_bytes(n: int) -> str:
    """``n`` bytes for people (``512 MiB``)."""
    for unit, size in (("GiB", 1024 ** 3), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} bytes"


def check_regular_file(path: str | os.PathLike, what: str = "file", *, max_bytes: int | None = None,
                       allow_empty: bool = True, limit_hint: str = "") -> int:
    """Refuse what must not be opened for reading; return the file's size in bytes.

    A device (``/dev/zero``), FIFO or socket would hang a reader or fill memory, so only regular files
    (symlinks followed) pass; ``max_bytes`` caps the size.

    Raises:
        ReadError: missing, a directory, not a regular file, over ``max_bytes``, or empty (unless allowed).
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise ReadError(p, f"no such {what}") from None
    except (OSError, ValueError) as e:  # permission, name too long, NUL in the name...
        raise ReadError(p, f"cannot open {what} ({getattr(e, 'strerror', None) or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ReadError(p, "is a directory, not a file" if what == "file" else f"{what} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode)
                else "a device" if (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)) else "special")
        raise ReadError(p, f"{what} is not a regular file ({kind}); give a file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ReadError(p, f"{what} is {human_bytes(st.st_size)}, over the limit of "
                           f"{human_bytes(max_bytes)}{limit_hint}")
    if st.st_size == 0 and not allow_empty:
        raise ReadError(p, f"empty {what}")
    return st.st_size


def parse_json(text: str | bytes, path: str | os.PathLike, what: str) -> Any:
    """``json.loads`` whose every failure (syntax, nesting deep enough to exhaust recursion) is a
    one-line :class:`ReadError` naming ``path``."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ReadError(path, f"{what} is nested too deeply to be a real {what}") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError
        raise ReadError(path, f"{what} is not valid JSON: {e}") from None


def parse_yaml(text: str, path: str | os.PathLike, what: str) -> Any:
    """``yaml.safe_load`` with the failures of :func:`parse_json` as one-line :class:`ReadError`."""
    import yaml

    try:
        return yaml.safe_load(text)
    except RecursionError:
        raise ReadError(path, f"{what} is nested too deeply to be a real {what}") from None
    except Exception as e:  # yaml.YAMLError and its relatives
        raise ReadError(path, f"{what} is not valid YAML: {e}") from None


def read_settings_text(path: str | os.PathLike, what: str) -> str:
    """The UTF-8 text of a small settings file (regular file, at most :data:`MAX_SETTINGS_BYTES`)."""
    p = Path(path)
    check_regular_file(p, what, max_bytes=MAX_SETTINGS_BYTES)
    try:
        return p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ReadError(p, f"{what} is not UTF-8 text") from None
    except OSError as e:
        raise ReadError(p, f"cannot read {what}: {e.strerror or e}") from None


def read_mapping_file(path: str | os.PathLike, what: str) -> dict[str, Any]:
    """Load a JSON (``.json``) or YAML (anything else) file holding one mapping.

    Args:
        path: the file (a regular file of at most :data:`MAX_SETTINGS_BYTES`).
        what: what the file is, for error messages (e.g. ``"column map"``).

    Raises:
        ReadError: the file cannot be read, does not parse (including nesting too deep to parse), or
            does not hold a mapping.
    """
    p = Path(path)
    text = read_settings_text(p, what)
    is_json = p.suffix.lower() == ".json"
    data = parse_json(text, p, what) if is_json else parse_yaml(text, p, what)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ReadError(p, f"{what} must hold a mapping, not {type(data).__name__}")
    return data


def write_yaml(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as YAML to ``path`` atomically (a temporary file beside it, then renamed; keys in order);
    creates the parent folder. Returns the path."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)
    return path


def parse_scalar(raw: str) -> Any:
    """A command-line ``KEY=VALUE`` value read as YAML (``3e-4`` a number, ``null`` None, ``[0, 1]`` a list); text
    that is not valid YAML stays text, and an empty value is None."""
    import yaml

    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "3e-5" as a string
        try:
            value = float(value)
        except ValueError:
            pass
    return value


def reject_unknown_fields(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise :class:`ConfigError` naming the keys of ``values`` that are not fields of dataclass ``cls``.

    Used by every typed config's ``from_dict`` so that a misspelt setting in a saved or hand-written file
    is an error, never silently ignored.
    """
    unknown = sorted(set(values) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ConfigError(f"unknown {what} settings: {', '.join(map(str, unknown))}")


def require_positive_ints(obj: Any, names: tuple[str, ...] | list[str], what: str = "") -> None:
    """Check that each attribute ``names`` of ``obj`` is a whole number >= 1 and store it as ``int``; the
    :class:`ConfigError` names the setting (prefixed by ``what``)."""
    for name in names:
        value = getattr(obj, name)
        try:
            ok = int(value) == value and int(value) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"{what + ' ' if what else ''}{name} must be a positive integer, got {value}")
        setattr(obj, name, int(value))


class SettingsFile:
    """``from_dict`` (unknown keys refused), ``from_file`` (YAML or JSON) and ``save`` (YAML, atomic) for a
    settings dataclass with a ``to_dict``; ``SETTINGS_NAME`` names it in errors."""

    SETTINGS_NAME = "settings"

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        reject_unknown_fields(cls, values, cls.SETTINGS_NAME)
        return cls(**dict(values))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Any:
        """Read a file written by :meth:`save` or by hand (missing keys: defaults)."""
        return cls.from_dict(read_mapping_file(path, f"{cls.SETTINGS_NAME} config"))

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``to_dict()`` as YAML (atomically)."""
        return write_yaml(path, self.to_dict())  # type: ignore[attr-defined]


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

