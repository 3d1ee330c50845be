"""Rows of a run spread over several JAX devices: ``devices: 1 | auto | N``.

A run's rows are its replicates, or, in a batched study (:mod:`sim.core.study`) and the other
batched experiments, parameter points x replicates: one leading axis that ``jax.vmap`` maps. Rows
never interact, so the axis splits over devices without communication: the state, the
per-replicate PRNG keys and the batched parameter leaves are laid out with a
:class:`jax.sharding.NamedSharding` over a one-axis :class:`jax.sharding.Mesh` (axis
:data:`AXIS`), unbatched parameter leaves are replicated, and the engine's
``jit(vmap(scan))`` is compiled with those input and output shardings (XLA's SPMD partitioner
then runs each device's rows as its own ``vmap(scan)``). Records come back to the host as before.

Choosing the devices. ``devices: 1`` (the default) is the engine as it always was: nothing here is
touched, no device is queried. ``auto`` takes every device of JAX's default backend (all GPUs of a
node; on a CPU one unless ``XLA_FLAGS=--xla_force_host_platform_device_count=N`` was set before
JAX started); ``N`` takes N of them and is refused (exit code 2, naming ``devices``) when fewer
are there. Rows are split evenly: a run uses the largest divisor of its row count that is at most
the devices chosen (8 replicates on 3 devices use 2; 7 replicates use 1), so every device has one
shape and the run compiles once. ``backend=mesa`` ignores the key.

Results. Each replicate draws from its own key whichever device runs it, so a sharded run is the
same simulation as a one-device run. The numbers agree to round-off (~1e-13 relative in float64):
each device runs a batch of R/N rows, and XLA's CPU code for a smaller batch may sum in another
order or contract ``a*b + c`` into one FMA where the larger batch does not (the same effect as
replicate k alone vs in a batch, :mod:`sim.determinism`). With ``deterministic_reductions=true``
(fixed-order sums, no FMA) they are bit for bit identical (``tests/test_sharding.py`` checks both).

The setting is per process, like the reduction order: :func:`configure` (called by ``sim.app``
for every job with the config's ``devices``) and ``engine.run(..., devices=None)`` reads it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sim.core.setting import ProcessSetting
from sim.errors import ConfigError

AXIS = "rows"  # the mesh axis name: replicates, or parameter points x replicates
AUTO = "auto"
ALLOWED = "auto or an integer >= 1 (the JAX devices a run's replicates are spread over)"


def parse(value):
    """``"auto"`` or an int >= 1 from a config value; ConfigError naming ``devices`` otherwise."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1:
        return int(value)
    raise ConfigError("devices", value, ALLOWED)


# this process's choice, read by ``engine.run`` when it is given no ``devices`` (1 if none)
_SETTING = ProcessSetting(parse, 1)
valid, configure, current = _SETTING.valid, _SETTING.configure, _SETTING.current


def largest_divisor(rows: int, at_most: int) -> int:
    """The largest divisor of ``rows`` not above ``at_most``."""
    for n in range(max(1, min(at_most, rows)), 0, -1):
        if rows % n == 0:
            return n
    return 1


def count(value, rows: int) -> int:
    """How many devices a run of ``rows`` rows uses for the config value ``value``."""
    value = parse(value)
    if value == 1:
        return 1  # the default: no device is queried
    import jax

    devices = jax.devices()
    if value != AUTO and value > len(devices):
        backend = devices[0].platform if devices else "?"
        raise ConfigError(
            "devices", value,
            f"auto or an integer in [1, {len(devices)}] (this process sees {len(devices)} {backend} device(s); "
            "more CPU devices: XLA_FLAGS=--xla_force_host_platform_device_count=N set before JAX starts)")
    return largest_divisor(rows, len(devices) if value == AUTO else value)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a run's arrays live: rows split over ``mesh``'s devices, the rest replicated."""

    mesh: object  # jax.sharding.Mesh, one axis named AXIS

    @property
    def key(self) -> tuple:
        """Hashable identity (part of the engine's executable-cache key)."""
        return AXIS, tuple(d.id for d in self.mesh.devices.flat)

    @property
    def n_devices(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def rows(self):
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec(AXIS))

    @property
    def replicated(self):
        from jax.sharding import NamedSharding, PartitionSpec

        return NamedSharding(self.mesh, PartitionSpec())

    def params_shardings(self, params_axes, params):
        """A sharding per parameter leaf: rows where ``params_axes`` batches it (0), else replicated."""
        import jax

        if params_axes is None or isinstance(params_axes, int):
            one = self.replicated if params_axes is None else self.rows
            return jax.tree_util.tree_map(lambda _: one, params)
        return jax.tree_util.tree_map(lambda a, _: self.replicated if a is None else self.rows, params_axes, params,
                                      is_leaf=lambda a: a is None)

    def in_shardings(self, state, params, keys, params_axes):
        import jax

        rows = lambda tree: jax.tree_util.tree_map(lambda _: self.rows, tree)  # noqa: E731
        return rows(state), self.params_shardings(params_axes, params), rows(keys)

    def jit_kwargs(self, state, params, keys, params_axes) -> dict:
        """``jax.jit`` arguments of the chunk function ``(state, params, keys) -> (state, records)``."""
        return {"in_shardings": self.in_shardings(state, params, keys, params_axes),
                "out_shardings": (self.rows, self.rows)}

    def place(self, state, params, keys, params_axes):
        """The three arguments laid out as the compiled chunk expects them."""
        import jax

        shardings = self.in_shardings(state, params, keys, params_axes)
        return tuple(jax.tree_util.tree_map(lambda s, x: jax.device_put(x, s), sh, tree)
                     for sh, tree in zip(shardings, (state, params, keys)))


def layout(value, rows: int) -> Layout | None:
    """The layout of a run of ``rows`` rows for the config value ``value``; None for one device
    (the engine then runs exactly as without this module)."""
    n = count(value, rows)
    if n == 1:
        return None
    import jax
    from jax.sharding import Mesh

    return Layout(Mesh(np.array(jax.devices()[:n]), (AXIS,)))
