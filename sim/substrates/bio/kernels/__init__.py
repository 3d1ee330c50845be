"""Pure process functions of the JAX engine: each ``(state, params, key) -> state``."""

from sim.substrates.bio.kernels.step import step

__all__ = ["step"]
