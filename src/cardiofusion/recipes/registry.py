"""The recipe registry: name -> (typed config, ``run(config, out_dir)``), as litgpt maps sub-commands to recipes.

A recipe is registered with :func:`register_recipe`::

    @dataclass
    class MyConfig(RecipeConfig):
        cohort: str = ""
        n_boot: int = 1000

    @register_recipe("my-recipe", MyConfig, "one line saying what it runs")
    def run_my_recipe(config: MyConfig, out_dir) -> Any: ...

``cardiofusion recipe list`` shows :func:`list_recipes`; ``cardiofusion recipe run NAME --config FILE.yaml
--set key=value --out DIR`` reads the config (:meth:`RecipeConfig.from_file`, unknown keys refused), applies
the overrides (:func:`apply_overrides`), saves it as ``DIR/recipe.yaml`` (:func:`save_recipe_config`) and
calls ``run``.  Every recipe composes the steps of :mod:`cardiofusion.recipes.steps`, so re-running the same
command reuses or resumes, and a changed config retrains what it changes.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..configfile import parse_scalar, read_mapping_file, reject_unknown_fields
from ..errors import ConfigError

#: the file a recipe run saves its resolved config in.
RECIPE_YAML = "recipe.yaml"


def _plain(value: Any) -> Any:
    """YAML-safe nested data: configs by their ``to_dict``, tuples as lists, paths as strings."""
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _plain(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    return value


def _nested_config_type(annotation: Any) -> type | None:
    """The config class (a dataclass with ``from_dict``) an annotation names, directly or in ``X | None``."""
    candidates = typing.get_args(annotation) or (annotation,)
    for c in candidates:
        if isinstance(c, type) and dataclasses.is_dataclass(c) and hasattr(c, "from_dict"):
            return c
    return None


class RecipeConfig:
    """Mixin of every recipe config dataclass: plain-data round trip and YAML files, unknown keys refused.

    Nested fields typed as another config class (a dataclass with ``from_dict``) are read from mappings.
    """

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Any:
        if not isinstance(values, Mapping):
            raise ConfigError(f"a {cls.__name__} needs a mapping of settings, got {type(values).__name__}")
        reject_unknown_fields(cls, values, "recipe")
        hints = typing.get_type_hints(cls)
        kw = {}
        for key, value in values.items():
            nested = _nested_config_type(hints.get(key))
            kw[key] = nested.from_dict(value) if nested is not None and isinstance(value, Mapping) else value
        try:
            return cls(**kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid recipe settings: {e}") from None

    @classmethod
    def from_file(cls, path: str | os.PathLike, recipe: str | None = None) -> Any:
        """Read a YAML (or JSON) file of settings (missing keys: defaults).  A saved ``recipe.yaml``
        (``recipe: NAME`` + ``config: {...}``) is read too; with ``recipe``, one of another recipe is refused."""
        data = read_mapping_file(path, "recipe config")
        if set(data) == {"recipe", "config"} and isinstance(data["config"], Mapping):
            if recipe is not None and data["recipe"] != recipe:
                raise ConfigError(f"{path}: a config of recipe {data['recipe']!r}, not {recipe!r}")
            data = dict(data["config"])
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None


@dataclass(frozen=True)
class Recipe:
    """A registered recipe: ``run(config, out_dir, **kw)`` with ``config`` a ``config_cls`` instance."""

    name: str
    config_cls: type
    run: Callable[..., Any]
    description: str

    def load_config(self, path: str | os.PathLike | None = None, overrides: Iterable[str] = ()) -> Any:
        """The config from ``path`` (default: the defaults) with ``KEY=VALUE`` overrides applied."""
        config = self.config_cls.from_file(path, self.name) if path is not None else self.config_cls()
        return apply_overrides(config, overrides)


_RECIPES: dict[str, Recipe] = {}


def register_recipe(name: str, config_cls: type, description: str | None = None) -> Callable[[Callable[..., Any]],
                                                                                          Callable[..., Any]]:
    """Decorator registering ``run(config, out_dir, **kw)`` as recipe ``name`` (description: one line;
    default: the first line of the function's docstring)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name in _RECIPES:
            raise ConfigError(f"recipe {name!r} is already registered")
        if not (dataclasses.is_dataclass(config_cls) and issubclass(config_cls, RecipeConfig)):
            raise ConfigError(f"recipe {name!r}: its config must be a RecipeConfig dataclass")
        doc = (fn.__doc__ or "").strip().splitlines()
        text = description or (doc[0] if doc else "")
        _RECIPES[name] = Recipe(name=name, config_cls=config_cls, run=fn, description=" ".join(text.split()))
        return fn

    return deco


def list_recipes() -> list[Recipe]:
    """Registered recipes, by name (the built-in ones register when :mod:`cardiofusion.recipes` is imported)."""
    return [_RECIPES[k] for k in sorted(_RECIPES)]


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``; :class:`ConfigError` listing the known ones otherwise."""
    try:
        return _RECIPES[name]
    except KeyError:
        raise ConfigError(f"unknown recipe {name!r}; registered: {', '.join(sorted(_RECIPES))}") from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=VALUE"`` -> ``(["a", "b"], value)``; the value is read as a YAML scalar (``3e-4`` a number,
    ``none`` / ``null`` None, ``[0, 1]`` a list)."""

    key, sep, raw = str(item).partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE (dotted keys for nested settings)")
    text = raw.strip()
    if text.lower() == "none":
        return key.split("."), None
    return key.split("."), parse_scalar(raw)


def apply_overrides(config: Any, overrides: Iterable[str] | Mapping[str, Any]) -> Any:
    """A copy of ``config`` with overrides, validated like a file: ``KEY=VALUE`` strings (:func:`parse_override`)
    or a ``{dotted.key: value}`` mapping; dotted keys reach nested settings."""
    if isinstance(overrides, Mapping):
        items = [(str(k), str(k).split("."), v) for k, v in overrides.items()]
    else:
        items = [(str(o), *parse_override(o)) for o in overrides]
    if not items:
        return config
    data = config.to_dict()
    for label, parts, value in items:
        if parts[0] not in data:
            raise ConfigError(f"--set {label!r}: unknown setting {parts[0]!r} (known: {', '.join(sorted(data))})")
        node = data
        for i, part in enumerate(parts[:-1]):
            if i > 0 and part not in node:  # a new entry of a free-form mapping (nested configs check their keys)
                node[part] = {}
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"--set {label!r}: {'.'.join(parts[:i + 1])!r} is not a nested setting")
            node = node[part]
        node[parts[-1]] = value
    try:
        return type(config).from_dict(data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid override(s): {e}") from None


def save_recipe_config(name: str, config: Any, out_dir: str | os.PathLike) -> Path:
    """Write ``OUT/recipe.yaml``: ``recipe: NAME`` and the resolved ``config`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / RECIPE_YAML
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(recipe_yaml(name, config), encoding="utf-8")
    os.replace(tmp, path)
    return path


def recipe_yaml(name: str, config: Any) -> str:
    """The text of a ``recipe.yaml``."""
    import yaml

    return yaml.safe_dump({"recipe": name, "config": _plain(config.to_dict())}, sort_keys=False)


__all__ = ["RECIPE_YAML", "Recipe", "RecipeConfig", "apply_overrides", "get_recipe", "list_recipes",
           "parse_override", "recipe_yaml", "register_recipe", "save_recipe_config"]
