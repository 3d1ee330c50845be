"""currency-sim: an agent-based simulator of currency economies (ATP in cells, tokens in LLM systems).

float64 is switched on at import: the engine is checked against the Mesa reference to 1e-9
relative and its ledgers must balance to round-off. ``precision=float32`` in a config casts the
state and parameters down for speed where that is wanted.
"""

import jax

jax.config.update("jax_enable_x64", True)

__all__ = ["simulate", "CurrencyModel", "load_sweep"]
__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing Mesa or xarray is not needed for the kernels
    if name == "simulate":
        from sim.api import simulate

        return simulate
    if name == "CurrencyModel":
        from sim.mesa_model import CurrencyModel

        return CurrencyModel
    if name == "load_sweep":  # a sweep folder -> (dataset stacked along job, typed table): sim.sweep_load
        from sim.sweep_load import load_sweep

        return load_sweep
    raise AttributeError(name)
