"""currency-sim: an agent-based simulator of currency economies (ATP in cells, tokens in LLM systems).

Python API: ``sim.load_config(overrides)`` (the shipped configs, a plain dict), ``sim.simulate(cfg)``
or ``sim.simulate(overrides=[...])`` (an ``xarray.Dataset``), ``sim.CurrencyModel(**parameters)``
(a ``mesa.Model``; ``mesa.batch_run`` varies its keyword parameters), ``sim.load_sweep(folder)``.

``import sim`` sets one process-wide JAX flag, ``jax_enable_x64=True``, and it must stay
process-wide. The engine is checked against the plain-Python reference to ~1e-13 and its ledgers
balance to round-off, in float64; the state is numpy float64 turned into JAX arrays in many places
(the engine, the Mesa models' steps, the substrates' builders, the kernels the tests call
directly), and without the flag each of those silently becomes float32. ``jax.enable_x64`` scopes
the flag only to code run inside its ``with`` block, so every one of those entry points, and every
user call of a kernel, would have to enter it; a missed one gives float32 numbers without an error.
Other JAX code in the same process then also defaults to 64-bit types for Python scalars and
``jnp.arange`` / ``jnp.zeros`` without a dtype: give it ``dtype=jnp.float32`` explicitly, or run it
in another process. ``precision=float32`` in a config casts a run's state and parameters down.
"""

import jax

jax.config.update("jax_enable_x64", True)

__all__ = ["simulate", "load_config", "CurrencyModel", "load_sweep"]
__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing Mesa, Hydra or xarray is not needed for the kernels
    if name == "simulate":
        from sim.api import simulate

        return simulate
    if name == "load_config":
        from sim.core.config import load_config

        return load_config
    if name == "CurrencyModel":
        from sim.mesa_model import CurrencyModel

        return CurrencyModel
    if name == "load_sweep":  # a sweep folder -> (dataset stacked along job, typed table): sim.sweep_load
        from sim.sweep_load import load_sweep

        return load_sweep
    raise AttributeError(name)
