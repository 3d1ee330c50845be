"""JAX's persistent compilation cache: the second run of the same shapes, and every job of a sweep
after the first, loads its executables from disk instead of compiling them (4.3 s -> 0.7 s for the
default tissue run on this 2-core machine).

``compile_cache`` in the config: ``auto`` (default) is ``$XDG_CACHE_HOME/currency-sim/jax`` (or
``~/.cache/currency-sim/jax``), a path is used as given, ``null``/``false`` switches the cache off.
XLA's cache key covers the program, the compile options, the backend, the jax/jaxlib versions and
the XLA flags (so a run with ``deterministic_reductions`` and its no-FMA flag gets its own entries);
a cached executable is the same binary, so results are bit-identical with and without the cache.
Every executable is cached whatever its compile time (``min_compile_time_secs=0``): the small ones
(the guard's observation, the Mesa layer's step) add up at start-up too.

JAX's cache answers only after a program is traced and lowered; the engine's chunk program, whose
tracing is most of a warm start-up, is also kept whole (serialized executable) in the
``executables`` subfolder of the same folder (:func:`executables_dir`, :mod:`sim.core.executable_store`),
so a warm process does not trace it at all. Same switch: ``compile_cache=null`` turns both off;
``CURRENCY_SIM_EXECUTABLE_STORE=off`` turns off the executable store alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from sim.errors import ConfigError

_ACTIVE: list = [None]  # the cache folder this process uses (JAX reads the setting once)


def default_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "currency-sim" / "jax"


def resolve(setting) -> Path | None:
    """The folder a ``compile_cache`` setting names (None: off); refuses anything else."""
    if setting is None or setting is False:
        return None
    if setting == "auto" or setting is True:
        return default_dir()
    if isinstance(setting, str) and setting:
        return Path(setting).expanduser()
    raise ConfigError("compile_cache", setting, "auto, a folder path, or null (off)")


def executables_dir() -> Path | None:
    """The folder of the engine's serialized executables (``executables`` under the folder in use),
    None while no cache is configured in this process."""
    return None if _ACTIVE[0] is None else _ACTIVE[0] / "executables"


def configure(setting) -> Path | None:
    """Point JAX's persistent compilation cache at the folder of ``setting`` (once per process:
    JAX initialises its cache on the first compile, so a later, different folder is not switched to;
    the first one stays). Returns the folder in use."""
    folder = resolve(setting)
    if folder is None or _ACTIVE[0] is not None:
        return _ACTIVE[0]
    import jax

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("compile_cache", str(folder), f"a folder that can be created ({exc.strerror})") from None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _ACTIVE[0] = folder
    return folder
