"""Experiment registry: ``experiment.kind`` -> a function ``cfg (plain dict) -> sim.api.RunOutput``.

The ``tissue`` kind is the plain run of ``sim.api``; other experiments register here with
``@register("name")`` and may return their own dataset, summary and figure writer.
"""

from __future__ import annotations

from collections.abc import Callable

REGISTRY: dict[str, Callable] = {}


def register(kind: str):
    def deco(fn):
        REGISTRY[kind] = fn
        return fn

    return deco


def load_all() -> None:
    """Import experiment modules so they register themselves (kept lazy: some import heavy deps)."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


def get(kind: str):
    load_all()
    return REGISTRY.get(kind)


def kinds() -> list[str]:
    load_all()
    return sorted(REGISTRY) + ["tissue"]
