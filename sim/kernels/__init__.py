"""Pure process functions of the JAX engine: each ``(state, params, key) -> state``."""

from sim.kernels.step import step

__all__ = ["step"]
