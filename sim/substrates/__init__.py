"""The registry of substrates: ``substrate=<name>`` in a config -> a :class:`sim.core.substrate.Substrate`.

The built-in substrates are imported on first use (one line each in :data:`BUILTIN`); a user's
substrate is added with :func:`register` and is then run by ``sim.simulate``, the command line and
the Mesa layer like the built-in ones.
"""

from __future__ import annotations

import importlib

from sim.core.substrate import Substrate
from sim.errors import ConfigError

BUILTIN = {  # name -> module defining SUBSTRATE
    "bio": "sim.substrates.bio",
    "llm": "sim.substrates.llm",
    "generic": "sim.substrates.generic",
}

_REGISTRY: dict[str, Substrate] = {}


def register(substrate: Substrate, *, replace: bool = False) -> Substrate:
    """Make ``substrate`` available as ``substrate=<substrate.name>``; refuses to shadow one
    silently (``replace=True`` to do it on purpose, e.g. a test that injects a fault)."""
    if not isinstance(substrate, Substrate):
        raise TypeError(f"register() takes a Substrate, not {type(substrate).__name__}")
    if substrate.name in _REGISTRY and _REGISTRY[substrate.name] is not substrate and not replace:
        raise ValueError(f"a substrate named {substrate.name!r} is registered already (pass replace=True)")
    _REGISTRY[substrate.name] = substrate
    return substrate


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_REGISTRY))


def get(name) -> Substrate:
    """The substrate registered as ``name`` (built-ins load on first use)."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if isinstance(name, str) and name in BUILTIN:
        module = importlib.import_module(BUILTIN[name])
        return _REGISTRY.setdefault(name, module.SUBSTRATE)
    raise ConfigError("substrate", name, "one of " + ", ".join(names()))


class override:
    """``with override(sub):`` makes ``sub`` the substrate registered under ``sub.name`` for the block
    (e.g. a copy with a fault injected into one process), restoring the previous one after."""

    def __init__(self, substrate: Substrate):
        self.substrate = substrate

    def __enter__(self) -> Substrate:
        self.previous = _REGISTRY.get(self.substrate.name)
        _REGISTRY[self.substrate.name] = self.substrate
        return self.substrate

    def __exit__(self, *exc) -> None:
        if self.previous is None:
            _REGISTRY.pop(self.substrate.name, None)
        else:
            _REGISTRY[self.substrate.name] = self.previous
