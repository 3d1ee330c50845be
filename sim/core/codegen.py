"""How wide the vector code XLA emits for a run's chunk on a CPU is: 256 or 512 bits (issue 10).

XLA:CPU vectorises a kernel's loops for 256-bit registers by default. On a CPU with AVX-512, 512-bit
code (``xla_cpu_prefer_vector_width=512``) runs the biology step 1.06-1.14x faster at every size
measured (100 to 40,000 cells, bit-identical results: the same operations on wider registers, no
reassociation; ``bench/bench_step_work.py ab``), and the LLM step at the same speed, but XLA takes
~0.8-0.9 s longer to compile the biology chunk (1,000 cells, trace included, fresh processes
alternating: 3.7 -> 4.5 s in one set of four, 3.8 -> 4.7 s in another). The saving
grows with the state and the number of steps, the compile cost does not, so ``auto`` (the default)
asks for wide code only when the run is long enough to pay for it:

    steps x bytes of the (batched) state >= PAYBACK_BYTE_STEPS

Measured on the 2-core AMD EPYC (Zen 4) of the README's tables, biology float64, wide against
narrow: 1,000 cells (1.3 MB of state) save 0.05 ms/step, 4,000 cells (5.1 MB) 0.1 ms/step, 40,000
cells (51 MB) 0.8 ms/step, so ~0.9 s of extra compile is paid back after ~18,000, ~9,000 and
~1,100 steps: 2.3e10, 4.6e10 and 5.6e10 byte-steps. A short or small run (the experiments' tissues,
the tests) compiles as before. Results are the same bits either way, so a resumed run that picks
the other width continues bit-identically. Off a CPU (a GPU lent to a run) nothing is asked.

The choice is the config key ``vector_width``: ``auto`` | ``256`` | ``512`` (checked here and by
``sim.config.validate``), set for a process by :func:`configure` like ``devices``
(:mod:`sim.core.sharding`); ``engine.run(vector_width=...)`` overrides it for one call.
"""

from __future__ import annotations

import numpy as np

from sim.core.setting import ProcessSetting
from sim.errors import ConfigError

AUTO = "auto"
NARROW, WIDE = 256, 512
ALLOWED = "auto, 256 or 512 (bits of the CPU vector code XLA emits; auto: 512 for long, large runs)"
# steps x state bytes from which 512-bit code pays for its longer compile (module doc: 2.3e10-5.6e10)
PAYBACK_BYTE_STEPS = 3e10


def parse(value):
    """``"auto"``, 256 or 512 from a config value; ConfigError naming ``vector_width`` otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and int(value) in (NARROW, WIDE):
        return int(value)
    raise ConfigError("vector_width", value, ALLOWED)


# this process's choice, read by ``engine.run`` when it is given no ``vector_width`` (auto if none)
_SETTING = ProcessSetting(parse, AUTO)
valid, configure, current = _SETTING.valid, _SETTING.configure, _SETTING.current


def state_bytes(tree) -> int:
    """Bytes of every leaf of ``tree`` (from shapes and dtypes: nothing is copied)."""
    import jax

    return int(sum(np.prod(np.shape(x), dtype=np.int64) * np.dtype(getattr(x, "dtype", np.float64)).itemsize
                   for x in jax.tree_util.tree_leaves(tree)))


def choose(value, steps: int, state) -> int:
    """The width (256 or 512) a run of ``steps`` steps of the batched ``state`` compiles with."""
    width = parse(value)
    if width == AUTO:
        width = WIDE if float(steps) * state_bytes(state) >= PAYBACK_BYTE_STEPS else NARROW
    if width == WIDE and not _on_cpu():
        return NARROW
    return width


def compile_options(width: int) -> dict:
    """The XLA compile options for ``width`` on top of ``sim.core.ops.COMPILE_OPTIONS`` (none for
    256, XLA's default, so a narrow program is the one compiled before this choice existed)."""
    return {} if int(width) == NARROW else {"xla_cpu_prefer_vector_width": int(width)}


def _on_cpu() -> bool:
    import jax

    return jax.default_backend() == "cpu"
