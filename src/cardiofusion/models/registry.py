"""Small name -> factory registries (timm style) for ECG encoders, X-ray encoders and fusion heads.

Each registry maps a name to a factory (a function or a class) and is listed by a function, so that
training code builds components by name and never needs an ``if name == ...`` chain.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import ConfigError


class Registry:
    """A named collection of factories.

    Args:
        kind: what the registry holds ("ECG encoder", ...), used in error messages.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator registering a factory under ``name`` (default: the factory's ``__name__``)."""

        def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = name or fn.__name__
            if key in self._factories:
                raise ConfigError(f"{self.kind} {key!r} is already registered")
            self._factories[key] = fn
            return fn

        return deco

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., Any]:
        """The factory registered under ``name``; :class:`ConfigError` listing the known names if none."""
        try:
            return self._factories[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; registered: {', '.join(sorted(self._factories))}"
            ) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)


ECG_ENCODERS = Registry("ECG encoder")
CXR_ENCODERS = Registry("X-ray encoder")
FUSIONS = Registry("fusion head")


def register_ecg_encoder(name: str | None = None):
    """Register an ECG encoder factory ``fn(leads=..., **kw) -> nn.Module``."""
    return ECG_ENCODERS.register(name)


def register_ecg_preset(name: str, cls: Callable[..., Any], doc: str = "", **arch: Any) -> Callable[..., Any]:
    """Register ``name`` as ECG encoder ``cls(leads, **arch)``: an architecture preset (timm's ``_create_*`` habit).

    Keyword arguments given when building override the preset's; returns the registered factory.
    """
    from ..records import CANONICAL_LEADS

    def build(leads=CANONICAL_LEADS, **kw):
        return cls(leads, **{**arch, **kw})

    build.__name__ = name
    build.__doc__ = f"{name}: {doc + ' ' if doc else ''}{cls.__name__} with {arch} (keyword arguments override)."
    return register_ecg_encoder(name)(build)


def register_cxr_encoder(name: str | None = None):
    """Register an X-ray encoder factory ``fn(pretrained=False, in_chans=1, **kw) -> nn.Module``."""
    return CXR_ENCODERS.register(name)


def register_fusion(name: str | None = None):
    """Register a fusion head class ``cls(ecg_dim, cxr_dim, **kw)``."""
    return FUSIONS.register(name)
