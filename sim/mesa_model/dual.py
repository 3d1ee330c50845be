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
