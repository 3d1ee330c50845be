"""Presets turn the composed config into (initial state, params, metadata); shared by both backends."""

from sim.presets.build import Model, build

__all__ = ["Model", "build"]
