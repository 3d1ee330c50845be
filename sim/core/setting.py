"""A run option that a process sets once from its config and every later engine run reads unless the
call passes its own (``devices``: :mod:`sim.core.sharding`; ``vector_width``: :mod:`sim.core.codegen`)."""

from __future__ import annotations

from collections.abc import Callable

from sim.errors import ConfigError


class ProcessSetting:
    """``parse(value)`` returns the checked value or raises a ConfigError naming the key; ``default``
    is what :meth:`current` gives before any :meth:`configure` (and what ``configure(None)`` sets)."""

    def __init__(self, parse: Callable, default):
        self._parse, self._default, self._value = parse, default, default

    def valid(self, value) -> bool:
        try:
            self._parse(value)
        except ConfigError:
            return False
        return True

    def configure(self, value) -> None:
        """Set this process's choice. Kept as given and checked when a run uses it (validation
        names a bad one first)."""
        self._value = self._default if value is None else value

    def current(self):
        """The value of the last :meth:`configure` (the default if none)."""
        return self._value
