"""The project's own error types. A ConfigError names the key, the value and what is allowed."""

from __future__ import annotations


class SimError(Exception):
    """Base class of every error the simulator raises on purpose."""


class ConfigError(SimError, ValueError):
    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")


class NumericalError(SimError, FloatingPointError):
    """A NaN, Inf or negative pool, with where it appeared."""

    def __init__(self, step: int, cell: int, species: str, process: str, value: float, replicate: int = 0):
        self.step, self.cell, self.species, self.process, self.value = step, cell, species, process, value
        self.replicate = replicate
        super().__init__(
            f"numerical failure at step {step}, replicate {replicate}, cell {cell}, species {species}, "
            f"process {process}: value {value!r}"
        )
