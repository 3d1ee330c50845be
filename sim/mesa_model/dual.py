"""What both Mesa models share: stepping on two backends and Mesa's step accounting.

A subclass sets ``KERNEL_STEP`` (the pure JAX step ``(state, params, key) -> state``), keeps
``_dev_state``/``_dev_params``/``key`` for the JAX backend, and implements ``_reference_step``
(one step agent by agent in plain Python) and ``_export_reference`` (the reference state as the
engine's numpy PyTree) for the Mesa backend.
"""

from __future__ import annotations

import functools

import jax
import mesa
import numpy as np

from sim.errors import ConfigError

BACKENDS = ("jax", "mesa")


@functools.lru_cache(maxsize=64)
def jit_step(kernel_step):
    return jax.jit(kernel_step)


@functools.lru_cache(maxsize=64)
def jit_scan(kernel_step, n: int):
    def run(state, params, key):
        def body(s, _):
            return kernel_step(s, params, key), None

        state, _ = jax.lax.scan(body, state, None, length=n)
        return state

    return jax.jit(run)


class DualBackendModel(mesa.Model):
    KERNEL_STEP = None  # set by subclasses

    def _init_common(self, cfg, model, backend, replicate, shuffle, collect_every, build_fn):
        """Resolve (config | built model), backend and replicate; set what both models keep.

        Returns the built model. ``cfg`` is a config (dict or DictConfig) or None; exactly one of
        ``cfg`` and ``model`` must be given.
        """
        from sim.api import as_plain
        from sim.engine import replicate_keys

        if (cfg is None) == (model is None):
            raise TypeError(f"{type(self).__name__} needs exactly one of a config dict or model=")
        if cfg is not None:
            cfg = as_plain(cfg)
            backend = backend if backend is not None else cfg.get("backend", "jax")
            replicate = replicate if replicate is not None else cfg.get("replicate", 0)
            model = build_fn(cfg)
        backend = "jax" if backend is None else backend
        if backend not in BACKENDS:
            raise ConfigError("backend", backend, "one of " + ", ".join(BACKENDS))
        replicate = 0 if replicate is None else replicate
        if isinstance(replicate, bool) or not isinstance(replicate, (int, np.integer)) or replicate < 0:
            raise ConfigError("replicate", replicate, "an integer >= 0")
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
        self._host = None  # numpy copy of the current state (built lazily)
        self._skip = 0  # Mesa step() calls that only account for steps already taken by run()
        self._t = int(np.asarray(self._initial.step))
        return model

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

    def _advance(self, n: int) -> None:
        if self.backend == "jax":
            kernel = type(self).KERNEL_STEP
            fn = jit_step(kernel) if n == 1 else jit_scan(kernel, n)
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
