"""What the Mesa models share: stepping on two backends and Mesa's step accounting.

:class:`DualBackendModel` keeps ``_dev_state``/``_dev_params``/``key`` for the JAX backend and
steps them with the jitted kernel step (``step()``: one call; ``run(n)``: one ``lax.scan``); the
kernel is :meth:`DualBackendModel._kernel_step` (its substrate value's ``step``: the engine's own
step, processes in the substrate's order), traced in the
reduction order the engine uses (:func:`sim.determinism.current`). A subclass implements
``_reference_step`` (one step of the plain-Python reference) and ``_export_reference`` (the
reference state as the engine's numpy PyTree) for the Mesa backend.
"""

from __future__ import annotations

import functools

import jax
import mesa
import numpy as np

from sim.errors import ConfigError

BACKENDS = ("jax", "mesa")


def _traced(kernel_step, fixed_order: bool):
    """``kernel_step`` traced inside :func:`sim.core.ops.reduction_order` ``(fixed_order)`` (as the
    engine traces its chunks), so the Mesa layer's JAX backend is the engine's arithmetic."""
    from sim.core import ops

    def step(state, params, key):
        with ops.reduction_order(fixed_order):
            return kernel_step(state, params, key)

    return step


@functools.lru_cache(maxsize=64)
def jit_step(kernel_step, fixed_order: bool = False):
    return jax.jit(_traced(kernel_step, fixed_order))


@functools.lru_cache(maxsize=64)
def jit_scan(kernel_step, n: int, fixed_order: bool = False):
    step = _traced(kernel_step, fixed_order)

    def run(state, params, key):
        def body(s, _):
            return step(s, params, key), None

        state, _ = jax.lax.scan(body, state, None, length=n)
        return state

    return jax.jit(run)


def resolve_run(backend, replicate, cfg: dict | None = None) -> tuple[str, int]:
    """(backend, replicate) from the arguments, else the (plain) config, else ("jax", 0); checked."""
    if cfg is not None:
        backend = backend if backend is not None else cfg.get("backend", "jax")
        replicate = replicate if replicate is not None else cfg.get("replicate", 0)
    backend = "jax" if backend is None else backend
    if backend not in BACKENDS:
        raise ConfigError("backend", backend, "one of " + ", ".join(BACKENDS))
    replicate = 0 if replicate is None else replicate
    if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)) or replicate < 0:
        raise ConfigError("replicate", replicate, "an integer >= 0")
    return backend, int(replicate)


class DualBackendModel(mesa.Model):
    def _init_common(self, cfg, model, backend, replicate, shuffle, collect_every, build_fn):
        """Resolve (config | built model), backend and replicate; set what both models keep.

        Returns the built model. ``cfg`` is a config (dict or DictConfig) or None; exactly one of
        ``cfg`` and ``model`` must be given.
        """
        from sim.api import as_plain

        if (cfg is None) == (model is None):
            raise TypeError(f"{type(self).__name__} needs exactly one of a config dict or model=")
        if cfg is not None:
            cfg = as_plain(cfg)
            backend, replicate = resolve_run(backend, replicate, cfg)
            model = build_fn(cfg)
        self._init_run(model, backend, replicate, shuffle, collect_every)
        return model

    def _init_run(self, model, backend, replicate, shuffle, collect_every) -> None:
        """Start the Mesa model (seeded with the model's seed) and keep what stepping needs:
        ``preset`` (the built model), ``params`` and ``_initial`` (numpy), the replicate's key."""
        from sim import determinism
        from sim.rng import replicate_keys

        backend, replicate = resolve_run(backend, replicate)
        mesa.Model.__init__(self, rng=int(model.seed))
        self.preset = model
        self.backend = backend
        self.replicate = int(replicate)
        self.seed = int(model.seed)
        self.shuffle = bool(shuffle)
        self.collect_every = int(collect_every)
        self.graph = model.graph
        self.params = jax.tree_util.tree_map(np.asarray, model.params)
        self._initial = jax.tree_util.tree_map(np.asarray, jax.device_get(model.state))
        # the engine's key of this replicate: fold_in(PRNGKey(seed), replicate)
        self.key = replicate_keys(self.seed, 1, self.replicate)[0]
        # the reduction order the engine would trace with in this process (sim.determinism)
        self.fixed_order = bool(determinism.current().fixed_order_sums)
        self._host = None  # numpy copy of the current state (built lazily)
        self._skip = 0  # Mesa step() calls that only account for steps already taken by run()
        self._t = int(np.asarray(self._initial.step))

    @property
    def state(self):
        """The current state as the engine's numpy PyTree (same structure on both backends)."""
        if self._host is None:
            self._host = jax.device_get(self._dev_state) if self.backend == "jax" else self._export_reference()
        return self._host

    @property
    def steps_taken(self) -> int:
        """Engine steps taken (``state.step``), which is what the random draws are keyed by."""
        return self._t

    def step(self) -> None:
        """One time step dt (both backends)."""
        if self._skip:  # Mesa's own step accounting for steps run() already took
            self._skip -= 1
            return
        self._advance(1)
        if self.collect_every > 0 and self.steps_taken % self.collect_every == 0:
            self.datacollector.collect(self)

    def run(self, n: int) -> None:
        """Advance ``n`` steps (JAX: one ``lax.scan`` call), then collect data once."""
        n = int(n)
        if n <= 0:
            return
        self._advance(n)
        # let Mesa count the steps (model.steps, and model.time on Mesa >= 3.5) without redoing them
        self._skip = n
        if hasattr(self, "_default_schedule") and hasattr(self, "run_for"):
            self.run_for(n)
        else:
            for _ in range(n):
                self.step()
        self._skip = 0
        if self.collect_every > 0:
            self.datacollector.collect(self)

    def _kernel_step(self):
        """The pure JAX step ``(state, params, key) -> state`` of the JAX backend."""
        raise NotImplementedError

    def _advance(self, n: int) -> None:
        if self.backend == "jax":
            kernel = self._kernel_step()
            fixed = getattr(self, "fixed_order", False)
            fn = jit_step(kernel, fixed) if n == 1 else jit_scan(kernel, n, fixed)
            self._dev_state = fn(self._dev_state, self._dev_params, self.key)
            self._t += n
        else:
            for _ in range(n):
                self._reference_step()
        self._host = None

    def _reference_step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _export_reference(self):  # pragma: no cover - abstract
        raise NotImplementedError
