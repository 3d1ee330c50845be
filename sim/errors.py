"""The project's own error types. A ConfigError names the key, the value and what is allowed."""

from __future__ import annotations


class SimError(Exception):
    """Base class of every error the simulator raises on purpose."""


class ConfigError(SimError, ValueError):
    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"invalid config: {key}={value!r}; allowed: {allowed}")


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by ``python -m sim`` so a terminated run ends like Ctrl-C:
    one line, ``summary.json`` saying ``interrupted`` and how to resume, the checkpoint kept."""

    signal_name = "SIGTERM"
    exit_code = 143  # 128 + 15


class NumericalError(SimError, FloatingPointError):
    """A NaN, Inf, negative or otherwise impossible value (an invariant of the substrate broke),
    with where it appeared: step, replicate, compartment (``cell``, called ``compartment`` in the
    message: "cell" for biology, "model instance" for LLM serving), quantity and process."""

    def __init__(self, step: int, cell: int, quantity: str, process: str, value: float, replicate: int = 0,
                 compartment: str = "cell"):
        self.step, self.cell, self.quantity, self.process, self.value = step, cell, quantity, process, value
        self.replicate, self.compartment = replicate, compartment
        where = f"cell {cell}" if compartment == "cell" else f"cell {cell} ({compartment})"
        super().__init__(
            f"numerical failure at step {step}, replicate {replicate}, {where}, quantity {quantity}, "
            f"process {process}: value {value!r}"
        )
